#!/usr/bin/env bash
# Runs the whole test suite against real servers: installs what is missing, starts one Temporal
# dev server, s3s-fs, maildev and the local LLM on free ports (each test isolates itself on them
# by task-queue prefix, database and bucket), checks formatting, lints, the committed .sqlx/ and
# openapi.json, runs every test, then holds a running system to its OpenAPI document with
# schemathesis (scripts/api-fuzz.sh, a fixed seed so a failure repeats).
# Usage: scripts/test.sh [extra cargo test/nextest arguments]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"

bash scripts/install-tools.sh --with-llm

start_test_servers --with-llm
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

if [[ $# -eq 0 ]]; then
  step "the API contract under schemathesis"
  SIGMA_BIN="$CARGO_TARGET_DIR/debug/sigma" SIGMA_FUZZ_SEED="${SIGMA_FUZZ_SEED:-1}" bash scripts/api-fuzz.sh
fi
