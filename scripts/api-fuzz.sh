#!/usr/bin/env bash
# The API contract under a property-based tester: starts a real local system of its own on free
# ports (a fresh PostgreSQL database, a Temporal dev server, s3s-fs, maildev, `sigma api` and
# `sigma worker`), signs in on every plane, seeds a few resources, then runs schemathesis against
# the served OpenAPI document once without credentials and once per credential (developer API
# token, portal session, operator token, console session). Fails on any server error, status code
# the document does not declare, wrong content type, response that breaks its schema, or
# schema-valid request that is rejected. Stops and drops everything it started on exit.
#
# Usage: scripts/api-fuzz.sh
#   SIGMA_BIN=PATH               the sigma binary to run (default: build it)
#   SIGMA_FUZZ_MAX_EXAMPLES=N    fuzzing examples per operation and run (default 30; about 2 minutes in all)
#   SIGMA_FUZZ_PHASES=LIST       schemathesis phases (default examples,coverage,fuzzing)
#   SIGMA_FUZZ_WORKERS=N         concurrent schemathesis workers (default 2)
#   SIGMA_FUZZ_SEED=N            seed, to repeat a run exactly (default: random, printed)
#   SIGMA_FUZZ_RUNS=LIST         runs to do (default anonymous,developer-token,developer-session,operator-token,operator-session)
#   SIGMA_FUZZ_OUT=DIR           where logs, reports and failure reproductions go (default: a new /tmp/sigma-api-fuzz.*)
#   SIGMA_FUZZ_HOLD=1            keep the system up after the runs (until Ctrl-C), to reproduce a failure with
#                                the curl line schemathesis printed; DIR/env has its URL and credentials
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${SIGMA_FUZZ_MAX_EXAMPLES:-30}
PHASES=${SIGMA_FUZZ_PHASES:-examples,coverage,fuzzing}
WORKERS=${SIGMA_FUZZ_WORKERS:-2}
SEED=${SIGMA_FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}
RUNS=${SIGMA_FUZZ_RUNS:-anonymous,developer-token,developer-session,operator-token,operator-session}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance
HELPER=(python3 "$SIGMA_ROOT/scripts/api-fuzz.py")
START=$SECONDS

# --- tools -------------------------------------------------------------------------------------
bash scripts/install-tools.sh
if [[ "$("$SIGMA_TOOLS/venv/bin/st" --version 2>/dev/null)" != *"$SCHEMATHESIS_VERSION"* ]]; then
  step "installing schemathesis $SCHEMATHESIS_VERSION"
  "$SIGMA_TOOLS/venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
ST="$SIGMA_TOOLS/venv/bin/st"
if [[ -z "${SIGMA_BIN:-}" ]]; then
  step "building sigma"
  SQLX_OFFLINE=true cargo build --bin sigma
  SIGMA_BIN="$CARGO_TARGET_DIR/debug/sigma"
fi
[[ -x "$SIGMA_BIN" ]] || { echo "no sigma binary at $SIGMA_BIN" >&2; exit 1; }

# --- the run's own servers, stopped (by pid) and dropped on exit --------------------------------
WORK=$(mktemp -d /tmp/sigma-fuzz-work.XXXXXX)
OUT=${SIGMA_FUZZ_OUT:-$(mktemp -d /tmp/sigma-api-fuzz.XXXXXX)}
mkdir -p "$OUT/reports" "$OUT/events" "$OUT/logs"
DB_NAME="sigma_fuzz_$$_$(date +%s)"
PIDS=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q -h 127.0.0.1 -U postgres -d postgres -c "drop database if exists \"$DB_NAME\" with (force)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "${HELPER[@]}" free-port; }

# Starts a server in the background; it counts as up when `ready` succeeds while the process is
# still alive, and still alive a moment later (a server that lost its port to another process
# exits, and then `ready` may have been answered by the other one). Sets STARTED_PID.
# Usage: start NAME SECONDS 'ready command' command args...
start() {
  local name=$1 timeout=$2 ready=$3; shift 3
  "$@" >"$OUT/logs/$name.log" 2>&1 &
  local pid=$! deadline=$((SECONDS + timeout))
  PIDS+=("$pid")
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if eval "$ready" >/dev/null 2>&1; then
      sleep 0.5
      if kill -0 "$pid" 2>/dev/null; then STARTED_PID=$pid; return 0; fi
      break
    fi
    if ((SECONDS >= deadline)); then kill "$pid" 2>/dev/null || true; break; fi
    sleep 0.2
  done
  wait "$pid" 2>/dev/null || true
  echo "  $name did not come up; the end of its log:" >&2
  tail -n 5 "$OUT/logs/$name.log" >&2
  return 1
}

# Picks free ports and starts a server with them, up to three times.
# Usage: with_ports NAME N start-function   (the function gets the N ports as arguments)
with_ports() {
  local name=$1 n=$2 fn=$3 attempt ports
  for attempt in 1 2 3; do
    ports=()
    for ((k = 0; k < n; k++)); do ports+=("$(free_port)"); done
    if "$fn" "${ports[@]}"; then return 0; fi
    echo "  retrying $name on other ports ($attempt/3)" >&2
  done
  echo "$name could not be started" >&2
  exit 1
}

ensure_postgres

start_temporal() {
  TEMPORAL_PORT=$1
  start temporal 60 "$TEMPORAL_CLI operator cluster health --address 127.0.0.1:$1 | grep -q SERVING" \
    "$TEMPORAL_CLI" server start-dev --headless --ip 127.0.0.1 --port "$1" --http-port "$2" \
    --metrics-port "$3" --log-level warn $(temporal_dynamic_config)
}
start_s3() {
  S3_PORT=$1
  mkdir -p "$WORK/s3"
  start s3s-fs 30 "curl -s -o /dev/null http://127.0.0.1:$1" \
    s3s-fs --host 127.0.0.1 --port "$1" --access-key sigma --secret-key sigma-fuzz-secret "$WORK/s3"
}
start_maildev() {
  SMTP_PORT=$1 MAILDEV_PORT=$2
  start maildev 60 "curl -sf http://127.0.0.1:$2/api/healthz" \
    maildev --ip 127.0.0.1 --web-ip 127.0.0.1 -s "$1" -w "$2"
}
step "starting Temporal, s3s-fs and maildev on free ports (logs in $OUT/logs)"
with_ports temporal 3 start_temporal
with_ports s3s-fs 1 start_s3
with_ports maildev 2 start_maildev

# Outbound calls (GitHub raw files, git archives, the manifest LLM) go to a port nothing listens on.
CLOSED="http://127.0.0.1:$(free_port)"
"$SIGMA_BIN" keygen --dir "$WORK/keys" --name fuzz >/dev/null
export SIGMA__DATABASE__URL="postgres://postgres@127.0.0.1:5432/$DB_NAME"
export SIGMA__TEMPORAL__ADDRESS="http://127.0.0.1:$TEMPORAL_PORT"
export SIGMA__BLOB__ENDPOINT="http://127.0.0.1:$S3_PORT" SIGMA__BLOB__BUCKET=sigma
export SIGMA__BLOB__ACCESS_KEY=sigma SIGMA__BLOB__SECRET_KEY=sigma-fuzz-secret
export SIGMA__SMTP__HOST=127.0.0.1 SIGMA__SMTP__PORT="$SMTP_PORT"
export SIGMA__SIGNING__KEY_DIR="$WORK/keys" SIGMA__SIGNING__ACTIVE_KEY=fuzz
export SIGMA__PORTAL__SECURE_COOKIES=false
export SIGMA__PORTAL__MANIFEST_LLM_URL="$CLOSED/v1" SIGMA__PORTAL__MANIFEST_TIMEOUT_SECS=5
export SIGMA__PUBLIC__GITHUB_RAW_BASE_URL="$CLOSED" SIGMA__SANDBOX__GIT_ARCHIVE_BASE_URL="$CLOSED"
export SIGMA__API__INTAKE_ANSWER_SECS=5
export SIGMA__LOG__FORMAT=json SIGMA__LOG__FILTER=warn

step "preparing database $DB_NAME, bucket and search attributes"
"$SIGMA_BIN" setup >"$OUT/logs/setup.log" 2>&1 || { cat "$OUT/logs/setup.log" >&2; exit 1; }
DEV_TOKEN=$("$SIGMA_BIN" developer create-token --email fuzz-dev@sigma.local --label api-fuzz 2>>"$OUT/logs/setup.log" | tail -n 1)
OP_TOKEN=$("$SIGMA_BIN" operator create-token --name fuzz-operator 2>>"$OUT/logs/setup.log" | tail -n 1)
export SIGMA_FUZZ_CONSOLE_NAME=fuzz-console SIGMA_FUZZ_CONSOLE_PASSWORD="fuzz-$(free_port)-$RANDOM$RANDOM"
"$SIGMA_BIN" operator create-login --name "$SIGMA_FUZZ_CONSOLE_NAME" --password-env SIGMA_FUZZ_CONSOLE_PASSWORD 2>>"$OUT/logs/setup.log"

start_api() {
  API_URL="http://127.0.0.1:$1"
  export SIGMA__API__BIND="127.0.0.1:$1" SIGMA__API__PUBLIC_BASE_URL="$API_URL"
  export SIGMA__PORTAL__PORTAL_BASE_URL="$API_URL/portal"
  # Up when its own log says it listens on this port: then no other process answered.
  SIGMA__LOG__FILTER=info,sqlx=warn,temporalio_sdk_core=warn start api 60 "grep -q '\"addr\":\"127.0.0.1:$1\"' '$OUT/logs/api.log'" "$SIGMA_BIN" api
}
step "starting sigma api and sigma worker"
with_ports api 1 start_api
"$SIGMA_BIN" worker --queue sandbox --queue audit --queue ops >"$OUT/logs/worker.log" 2>&1 &
PIDS+=($!)
sleep 1
kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "sigma worker exited:" >&2; tail -n 5 "$OUT/logs/worker.log" >&2; exit 1; }

step "signing in on every plane and seeding resources"
SIGMA_FUZZ_API="$API_URL" SIGMA_FUZZ_MAILDEV="http://127.0.0.1:$MAILDEV_PORT" \
  SIGMA_FUZZ_DEV_TOKEN="$DEV_TOKEN" SIGMA_FUZZ_OP_TOKEN="$OP_TOKEN" "${HELPER[@]}" seed "$OUT"
DEV_SESSION=$(cat "$OUT/developer-session")
OP_SESSION=$(cat "$OUT/operator-session")
cat >"$OUT/env" <<EOF
API=$API_URL
MAILDEV=http://127.0.0.1:$MAILDEV_PORT
TEMPORAL=127.0.0.1:$TEMPORAL_PORT
DATABASE=$SIGMA__DATABASE__URL
DEV_TOKEN=$DEV_TOKEN
DEV_SESSION=$DEV_SESSION
OP_TOKEN=$OP_TOKEN
OP_SESSION=$OP_SESSION
EOF

# --- schemathesis --------------------------------------------------------------------------------
# One run: NAME TOKEN ARGS...  (an empty TOKEN sends no credentials). A run in which schemathesis
# itself errs (an error, not a check failure: seen once as a CPython SystemError inside its
# coverage phase) runs once more with the same seed; an error that repeats is reported as before.
fuzz() {
  fuzz_once "$@"
  local name=$1 errors
  if [[ -s "$OUT/reports/$name.json" ]] && ! errors=$("${HELPER[@]}" run-errors "$OUT/reports/$name.json"); then
    echo "  schemathesis erred ($errors); running $name once more with the same seed" >&2
    mv "$OUT/$name.log" "$OUT/$name.erred.txt"
    fuzz_once "$@"
  fi
}
fuzz_once() {
  local name=$1 token=$2; shift 2
  local auth=()
  [[ -n "$token" ]] && auth=(-H "Authorization: Bearer $token")
  step "schemathesis: $name"
  local t0=$SECONDS rc=0
  "$ST" --config-file "$OUT/schemathesis.toml" --no-color run "$API_URL/api/v1/openapi.json" \
    --checks "$CHECKS" --phases "$PHASES" --max-examples "$MAX_EXAMPLES" --workers "$WORKERS" \
    --seed "$SEED" --request-timeout 30 --suppress-health-check all --continue-on-failure \
    --output-sanitize false \
    --report json,ndjson --report-json-path "$OUT/reports/$name.json" \
    --report-ndjson-path "$OUT/events/$name.ndjson" \
    "${auth[@]}" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  echo "  exit $rc in $((SECONDS - t0))s; output in $OUT/$name.log" >&2
  if [[ $rc != 0 && ! -s "$OUT/reports/$name.json" ]]; then
    echo "  schemathesis wrote no report:" >&2
    tail -n 20 "$OUT/$name.log" >&2
    CRASHED=1
  fi
}
CRASHED=0
# Logging out ends the session the other operations use: each session's logout is tried last.
NOT_LOGOUT=(--exclude-path-regex '/auth/logout$')
IFS=, read -ra runs <<<"$RUNS"
for run in "${runs[@]}"; do
  case "$run" in
    none) ;;
    anonymous) fuzz anonymous "" ;;
    developer-token) fuzz developer-token "$DEV_TOKEN" --include-path-regex '^/api/v1/sigma/dev/' "${NOT_LOGOUT[@]}" ;;
    developer-session)
      fuzz developer-session "$DEV_SESSION" --include-path-regex '^/api/v1/sigma/dev/' "${NOT_LOGOUT[@]}"
      fuzz developer-session-logout "$DEV_SESSION" --include-path-regex '^/api/v1/sigma/dev/auth/logout$' ;;
    operator-token) fuzz operator-token "$OP_TOKEN" --include-path-regex '^/api/v1/sigma/operator/' "${NOT_LOGOUT[@]}" ;;
    operator-session)
      fuzz operator-session "$OP_SESSION" --include-path-regex '^/api/v1/sigma/operator/' "${NOT_LOGOUT[@]}"
      fuzz operator-session-logout "$OP_SESSION" --include-path-regex '^/api/v1/sigma/operator/auth/logout$' ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
done

for name in api worker; do
  if grep -q '"level":"ERROR"' "$OUT/logs/$name.log"; then
    echo "sigma $name logged errors ($OUT/logs/$name.log):"
    "${HELPER[@]}" log-errors "$OUT/logs/$name.log"
  fi
done
echo "seed $SEED, $MAX_EXAMPLES examples per operation, phases $PHASES; details in $OUT"
rc=0
"${HELPER[@]}" summary "$OUT/reports" "$((SECONDS - START))" || rc=$?
[[ $CRASHED == 0 ]] || rc=1
if [[ "${SIGMA_FUZZ_HOLD:-}" == 1 ]]; then
  echo "the system stays up until Ctrl-C; its URL and credentials are in $OUT/env (sessions may be logged out)" >&2
  while :; do sleep 3600; done
fi
exit "$rc"
