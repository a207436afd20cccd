#!/usr/bin/env bash
# Prints how long one renewal sweep takes to find and start the renewals of 10,000 certificates
# due at once, on real servers (Temporal dev server, PostgreSQL, s3s-fs, maildev).
# Usage: bench/run-renewal.sh [certificates=10000]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
run_release_bench renewal-bench "$@"
