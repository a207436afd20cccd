#!/usr/bin/env bash
# Runs the whole test suite against real servers: installs what is missing, starts s3s-fs, maildev
# and the local LLM on test ports (each test starts its own Temporal dev server and database),
# checks formatting, lints, the committed .sqlx/ and openapi.json, then runs every test.
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
