#!/usr/bin/env bash
# Prints the public plane's figures: `verify` over 10,000 signed certificates versus the same
# server's health endpoint, requests/s and p50/p99 at 64 connections with wrk.
# Usage: bench/run-public.sh [certificates=10000] [seconds=10] [connections=64]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
bash scripts/install-tools.sh
command -v wrk >/dev/null || { step "installing wrk"; apt-get install -y -q wrk || { apt-get update -q && apt-get install -y -q wrk; }; }
start_test_servers
step "building the benchmark (release)"
SQLX_OFFLINE=true cargo build --release -q -p sigma-bench --bin public-bench
"$CARGO_TARGET_DIR/release/public-bench" "$@"
