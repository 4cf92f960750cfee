#!/usr/bin/env bash
# make bench: compare Legate with nginx and HAProxy on this machine.
#
# Installs what is missing (Debian packages nginx, haproxy, wrk,
# nghttp2-client for h2load, util-linux for taskset, openssl for the TLS
# checks), builds bin/legate,
# bin/benchrun and bin/idleconns, and runs bin/benchrun, which starts the
# upstream and the proxies on 127.0.0.1, measures them and writes
# bench/results/latest.{md,json}. About 10 minutes with the defaults.
# Extra arguments go to benchrun, e.g.:
#   bench/run.sh -duration 2s -rounds 1          # a quick look
#   bench/run.sh -scenarios h1-keepalive-64      # one scenario
# benchrun stops everything it starts, by PID; this script stops benchrun
# (by PID) if it is interrupted.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=$PATH:/usr/sbin:/sbin

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The Debian packages start system services; the benchmark runs its own.
  for svc in nginx haproxy; do
    if [[ " ${need[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null; then
      $sudo_cmd systemctl stop "$svc" 2>/dev/null || true
    fi
  done
fi

echo "bench: building bin/legate, bin/benchrun, bin/idleconns" >&2
go build -o bin/legate ./cmd/legate
go build -o bin/benchrun ./bench/cmd/benchrun
go build -o bin/idleconns ./bench/cmd/idleconns

pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bin/benchrun -legate bin/legate -idleconns bin/idleconns "$@" &
pid=$!
status=0
wait "$pid" || status=$?
pid=""
exit "$status"
