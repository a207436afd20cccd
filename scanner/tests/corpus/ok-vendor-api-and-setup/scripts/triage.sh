#!/bin/sh
# Lists open issues and prints the stale ones.
curl -s -H "Authorization: Bearer $GITHUB_TOKEN" "https://api.github.com/repos/$REPO/issues?state=open" | jq -r '.[] | select(.updated_at < "2026-01-01") | .number'
