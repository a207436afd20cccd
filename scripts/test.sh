#!/usr/bin/env bash
# Runs the whole test suite against real servers: installs what is missing, starts s3s-fs, maildev
# and the local LLM on test ports (each test starts its own Temporal dev server and database),
# checks formatting, lints, the committed .sqlx/ and openapi.json, then runs every test.
# Usage: scripts/test.sh [extra cargo test/nextest arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"

bash scripts/install-tools.sh --with-llm

work=$(mktemp -d /tmp/sigma-test.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # name url seconds
  local deadline=$((SECONDS + $3))
  until curl -s -o /dev/null "$2"; do
    (( SECONDS < deadline )) || { echo "$1 did not start; log:" >&2; cat "$work/$1.log" >&2; exit 1; }
    sleep 0.2
  done
}

step "starting test servers (s3s-fs :8114, maildev :1125/:1180, SmolLM2 :8191)"
mkdir -p "$work/s3"
s3s-fs --host 127.0.0.1 --port 8114 --access-key sigma --secret-key sigma-test-secret "$work/s3" >"$work/s3s-fs.log" 2>&1 &
pids+=($!)
maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s 1125 -w 1180 >"$work/maildev.log" 2>&1 &
pids+=($!)
"$SIGMA_TOOLS/llm/bin/python" -m llama_cpp.server --model "$SIGMA_LLM_MODEL" --model_alias smollm2 \
  --host 127.0.0.1 --port 8191 --n_ctx 2048 --n_threads 2 >"$work/llm.log" 2>&1 &
pids+=($!)
wait_http s3s-fs http://127.0.0.1:8114 30
wait_http maildev http://127.0.0.1:1180/api/healthz 60
wait_http llm http://127.0.0.1:8191/v1/models 120

export SIGMA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
export SIGMA_TEST_S3_ENDPOINT=http://127.0.0.1:8114 SIGMA_TEST_S3_SECRET_KEY=sigma-test-secret
export SIGMA_TEST_SMTP_PORT=1125 SIGMA_TEST_MAILDEV_URL=http://127.0.0.1:1180
export SIGMA_TEST_LLM_URL=http://127.0.0.1:8191/v1

# Databases of earlier runs (each test makes its own).
psql -qAt -h 127.0.0.1 -U postgres -d postgres -c \
  "select 'drop database \"' || datname || '\";' from pg_database where datname like 'sigma_test_%'" \
  | psql -q -h 127.0.0.1 -U postgres -d postgres >/dev/null

export SQLX_OFFLINE=true
step "checking formatting, lints, the sqlx query cache and the OpenAPI document"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
bash scripts/check-sqlx.sh
cargo run -q -- openapi | diff -u openapi.json - || { echo "openapi.json is stale: cargo run -- openapi > openapi.json" >&2; exit 1; }

check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
python3 scripts/check-compose.py docker-compose.yml

step "running the tests"
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
