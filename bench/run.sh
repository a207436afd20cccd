#!/usr/bin/env bash
# Prints the pipeline benchmark figures: POST-to-certificate latency (median, p95) over sequential
# submissions and sustained throughput with concurrent clients, on real Temporal, PostgreSQL,
# s3s-fs and maildev, with an instant scripted LLM so the figures measure SIGMA, not a model.
# Usage: bench/run.sh [sequential=20] [clients=4] [per_client=10]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
bash scripts/install-tools.sh
start_test_servers
step "building the benchmark (release)"
SQLX_OFFLINE=true cargo build --release -q -p sigma-bench
"$CARGO_TARGET_DIR/release/pipeline-bench" "$@"
