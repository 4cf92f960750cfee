#!/usr/bin/env bash
# Installs what the global rate limiting tests need: redis-server (the
# Debian package) and Envoy's Rate Limit Service (github.com/envoyproxy/
# ratelimit), built from the Go module proxy into $LEGATE_CACHE/bin as
# "ratelimit" — only when it is missing or its pinned version changed.
# internal/testutil (StartRateLimitService) runs both on loopback.
# Cold: about 1-2 minutes of compiling; warm: skipped.
set -euo pipefail
bin=${LEGATE_CACHE:-$HOME/.cache/legate}/bin
mkdir -p "$bin"

if ! command -v redis-server >/dev/null; then
  echo "deps: installing Debian package redis-server"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # The package starts a system redis on port 6379; the tests start their
  # own on free ports and need none.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo_cmd systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

# The version `go list -m github.com/envoyproxy/ratelimit@latest` reports
# (the project tags no releases for its main branch); bump it here.
want=github.com/envoyproxy/ratelimit/src/service_cmd@v1.4.1-0.20260122083618-3fb702589d36
if [ -x "$bin/ratelimit" ] && [ "$(cat "$bin/.ratelimit.version" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "deps: go install $want (as $bin/ratelimit)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# go install builds the command in module mode with its own go.mod (it has
# no replace directives); GOFLAGS=-mod=mod keeps a caller's -mod=vendor out.
GOBIN=$tmp GOFLAGS=-mod=mod go install "$want"
mv "$tmp/service_cmd" "$bin/ratelimit"
echo "$want" > "$bin/.ratelimit.version"
