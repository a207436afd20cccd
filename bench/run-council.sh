#!/usr/bin/env bash
# Prints the council's fan-out figure: per phase, wall time over the slowest single provider call,
# with a scripted provider that takes 500 ms per call.
# Usage: bench/run-council.sh [submissions=10] [panel=3] [delay_ms=500]
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$SIGMA_ROOT"
run_release_bench council-bench "$@"
