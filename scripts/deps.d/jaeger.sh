#!/usr/bin/env bash
# Builds Jaeger (github.com/jaegertracing/jaeger, the all-in-one "jaeger"
# command, which receives OTLP over gRPC and HTTP and serves the query API)
# from the Go module proxy into $LEGATE_CACHE/bin as "jaeger" — only when it
# is missing or its pinned version changed. internal/testutil (StartJaeger)
# runs it on loopback ports for the OpenTelemetry tracer's feature tests.
# Cold: several minutes of compiling on two cores; warm: skipped.
set -euo pipefail
bin=${LEGATE_CACHE:-$HOME/.cache/legate}/bin
mkdir -p "$bin"

want=github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0
if [ -x "$bin/jaeger" ] && [ "$(cat "$bin/.jaeger.version" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "deps: building $want (as $bin/jaeger)"
start=$(date +%s)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Plain `go install module@version` refuses Jaeger: its go.mod has replace
# directives. A throwaway module that requires it as a tool builds it with
# the versions its go.mod asks for (minus those replaces, which only
# concern its own development). GOFLAGS=-mod=mod keeps a caller's
# -mod=vendor out; GOWORK=off keeps a caller's go.work out.
(
  cd "$tmp"
  export GOFLAGS=-mod=mod GOWORK=off
  go mod init tmp >/dev/null 2>&1
  # go get lists every module it adds: keep that for a failure only.
  go get -tool "$want" >get.log 2>&1 || { cat get.log >&2; exit 1; }
  go build -trimpath -o "$tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger
)
mv "$tmp/jaeger" "$bin/jaeger"
echo "$want" > "$bin/.jaeger.version"
echo "deps: built jaeger in $(( $(date +%s) - start ))s"
