#!/usr/bin/env bash
# The whole SIGMA system on this machine, in one command: installs what is missing (Temporal CLI,
# s3s-fs, maildev, llama.cpp + SmolLM2; PostgreSQL if absent), builds `sigma`, then `sigma dev`
# starts every server (or adopts those a killed run left: pid files in .dev/run), migrates, seeds
# validators and tokens, and runs the API and all workers. Re-running is harmless; Ctrl-C (or
# SIGTERM) stops everything the run owns.
# Usage: scripts/dev.sh [sigma dev options, e.g. --no-llm]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"
command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs) first" >&2; exit 1; }
bash scripts/install-tools.sh --with-llm
step "building sigma (15-20 minutes the first time on 2 cores; a fresh clone rebuilds the workspace crates, ~3 minutes)"
SQLX_OFFLINE=true cargo build --bin sigma
step "running $CARGO_TARGET_DIR/debug/sigma dev (the tools are in $SIGMA_TOOLS; source scripts/lib.sh to get them on PATH)"
exec "$CARGO_TARGET_DIR/debug/sigma" --config config/dev.toml dev "$@"
