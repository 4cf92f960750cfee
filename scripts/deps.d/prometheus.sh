#!/usr/bin/env bash
# Builds Prometheus (github.com/prometheus/prometheus/cmd/prometheus; the
# v3 server is the module's v0.3xx.y versions) from the Go module proxy
# into $LEGATE_CACHE/bin as "prometheus" — only when it is missing or its
# pinned version changed. internal/testutil (StartPrometheus) runs it on a
# loopback port for test/dashboards, which scrapes a running Legate and
# evaluates every Grafana panel query and alert rule of deploy/.
# Built without the web UI's assets (the builtinassets tag needs npm): the
# HTTP API, which the test uses, is complete.
# Cold: several minutes of compiling on two cores; warm: skipped.
set -euo pipefail
bin=${LEGATE_CACHE:-$HOME/.cache/legate}/bin
mkdir -p "$bin"

want=github.com/prometheus/prometheus/cmd/prometheus@v0.316.0
if [ -x "$bin/prometheus" ] && [ "$(cat "$bin/.prometheus.version" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "deps: building $want (as $bin/prometheus)"
start=$(date +%s)
# GOFLAGS=-mod=mod keeps a caller's -mod=vendor out; GOWORK=off keeps a
# caller's go.work out. Installing into a temporary GOBIN and moving the
# binary keeps a failed build from leaving a half-written one behind.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOFLAGS=-mod=mod GOWORK=off GOBIN=$tmp go install "$want"
mv "$tmp/prometheus" "$bin/prometheus"
echo "$want" > "$bin/.prometheus.version"
echo "deps: built prometheus in $(( $(date +%s) - start ))s"
