#!/usr/bin/env bash
# Prints the pipeline benchmark figures, twice: with the API and the three queues' workers in one
# process, then as separate processes (`sigma api`, `sigma worker --queue ops|sandbox|audit`), the
# shape a deployment scales out. Each run: POST-to-certificate latency (median, p95) over
# sequential submissions with the breakdown of where that time goes (read from the runs' Temporal
# histories by bench/history-breakdown.py), then sustained throughput and latency under load with
# 4 and 16 concurrent clients. Real Temporal (dev server with temporal/dev-server.dynamic-config),
# PostgreSQL, s3s-fs and maildev; an instant scripted LLM, so the figures measure SIGMA and
# Temporal rather than a model.
# Usage: bench/run.sh [pipeline-bench arguments, e.g. --sequential 30 --clients 4,16 --seconds 20]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
bash scripts/install-tools.sh
start_test_servers
step "building the benchmark and sigma (release)"
SQLX_OFFLINE=true cargo build --release -q -p sigma-bench --bin pipeline-bench -p sigma --bin sigma
step "one process"
"$CARGO_TARGET_DIR/release/pipeline-bench" "$@"
step "separate processes"
"$CARGO_TARGET_DIR/release/pipeline-bench" --split "$CARGO_TARGET_DIR/release/sigma" "$@"
