#!/usr/bin/env bash
# The whole SIGMA system on this machine, in one command: installs what is missing (Temporal CLI,
# s3s-fs, maildev, llama.cpp + SmolLM2; PostgreSQL if absent), builds `sigma`, then `sigma dev`
# starts or reuses every server, migrates, seeds validators and tokens, and runs the API and all
# workers. Re-running is harmless; Ctrl-C stops everything it started.
# Usage: scripts/dev.sh [sigma dev options, e.g. --no-llm]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) first" >&2; exit 1; }
bash scripts/install-tools.sh --with-llm
step "building sigma (the first build takes about 10 minutes on 2 cores)"
SQLX_OFFLINE=true cargo build --bin sigma
exec "$CARGO_TARGET_DIR/debug/sigma" --config config/dev.toml dev "$@"
