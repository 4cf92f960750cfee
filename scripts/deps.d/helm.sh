#!/usr/bin/env bash
# Builds helm from the Go module proxy into $LEGATE_CACHE/bin (once), for
# the chart tests (helm lint, helm template).
set -euo pipefail
bin=${LEGATE_CACHE:-$HOME/.cache/legate}/bin
want=helm.sh/helm/v3/cmd/helm@v3.22.0
if [ -x "$bin/helm" ] && [ "$(cat "$bin/.helm.version" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "deps: go install $want"
mkdir -p "$bin"
GOBIN=$bin GOFLAGS=-mod=mod go install "$want"
echo "$want" > "$bin/.helm.version"
