#!/usr/bin/env bash
# Prints how long one monitor sweep takes for 10,000 monitored certificates due at once: the
# sweep starting one check workflow each, then every check probing its endpoint on a local
# server and recording its result; on real servers (Temporal dev server, PostgreSQL, s3s-fs,
# maildev).
# Usage: bench/run-monitor.sh [certificates=10000]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
run_release_bench monitor-bench "$@"
