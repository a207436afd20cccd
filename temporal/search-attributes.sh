#!/usr/bin/env bash
# Registers SIGMA's search attributes with the temporal CLI. Usage: search-attributes.sh [ADDRESS] [NAMESPACE]
set -euo pipefail
address=${1:-127.0.0.1:7233}
namespace=${2:-default}
for name in SigmaSubmissionId SigmaStage SigmaCategory SigmaOutcome; do
  temporal operator search-attribute create --address "$address" --namespace "$namespace" \
    --name "$name" --type Keyword 2>&1 | grep -v "already exists" || true
done
temporal operator search-attribute list --address "$address" --namespace "$namespace" | grep Sigma
