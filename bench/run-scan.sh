#!/usr/bin/env bash
# Prints the scanner's throughput on one core: MB/s of the rule pass and of the whole scan, for a
# 512 KB bundle and a 20 MB corpus, and the most expensive rules. No servers needed.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
step "building the scanner benchmark (release)"
SQLX_OFFLINE=true cargo build --release -q -p sigma-bench --bin scan-bench
# One core: the target is per core, and a second core would only add noise.
if command -v taskset >/dev/null; then
  taskset -c 0 "$CARGO_TARGET_DIR/release/scan-bench"
else
  "$CARGO_TARGET_DIR/release/scan-bench"
fi
