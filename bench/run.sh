#!/usr/bin/env bash
# make bench: installs what is missing (nginx, haproxy, wrk, h2load), builds
# legate and runs bench/cmd/benchrun, which compares Legate with nginx and
# HAProxy on 127.0.0.1 and writes bench/results/latest.{json,md}. It stops
# everything it starts; about 6 minutes with the defaults. Extra arguments
# go to benchrun (e.g. -duration 2s -rounds 1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
go build -o bin/legate ./cmd/legate
go run ./bench/cmd/benchrun "$@"
