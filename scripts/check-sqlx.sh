#!/usr/bin/env bash
# Fails when the committed .sqlx/ query cache differs from what the current queries need.
# It rebuilds the cache against a scratch database migrated from migrations/, like
# `cargo sqlx prepare --check`, without needing sqlx-cli. With --write it updates .sqlx/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SIGMA_ROOT"
db=sigma_sqlx_$$
psql -q -h 127.0.0.1 -U postgres -d postgres -c "create database $db" >/dev/null
trap 'psql -q -h 127.0.0.1 -U postgres -d postgres -c "drop database if exists $db" >/dev/null' EXIT
for f in migrations/*.sql; do psql -q -h 127.0.0.1 -U postgres -d "$db" -v ON_ERROR_STOP=1 -f "$f" >/dev/null; done
out=$(mktemp -d)
# The macros write one file per query into SQLX_OFFLINE_DIR when they run online; force them to run.
# clippy rather than check: it reuses the artifacts of the lint step that runs just before.
touch shared/src/lib.rs activities/src/lib.rs api/src/lib.rs src/main.rs tests/it/main.rs testkit/src/lib.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
  cargo clippy -q --workspace --all-targets
if [[ "${1:-}" == "--write" ]]; then
  rm -rf .sqlx && mkdir .sqlx && cp "$out"/*.json .sqlx/
  echo "wrote $(ls .sqlx | wc -l) queries to .sqlx/"
else
  diff -r .sqlx "$out" >/dev/null || { echo ".sqlx/ is stale: run scripts/check-sqlx.sh --write" >&2; diff -r .sqlx "$out" | head -20 >&2; exit 1; }
  echo ".sqlx/ is up to date"
fi
rm -rf "$out"
