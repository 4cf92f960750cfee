#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, cached where possible:
# Debian packages (curl, h2load, openssl), Go tools (staticcheck, helm) into
# $LEGATE_CACHE/bin, the Kubernetes test binaries (kube-apiserver,
# kube-controller-manager, etcd, kubectl) built from Go modules into
# $KUBE_BIN_DIR, and the Gateway API conformance backends (echo-basic, coredns)
# into $CONFORMANCE_ASSETS (scripts/deps.d). Re-running is cheap.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${LEGATE_CACHE:-$HOME/.cache/legate}
bin=$cache/bin
mkdir -p "$bin"

need=()
command -v curl >/dev/null || need+=(curl)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v openssl >/dev/null || need+=(openssl)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

gotool() { # gotool NAME MODULE@VERSION
  if [ ! -x "$bin/$1" ] || [ "$(cat "$bin/.$1.version" 2>/dev/null)" != "$2" ]; then
    echo "deps: go install $2"
    GOBIN=$bin go install "$2"
    echo "$2" > "$bin/.$1.version"
  fi
}
gotool staticcheck honnef.co/go/tools/cmd/staticcheck@v0.8.2
gotool controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen@v0.21.0
for hook in "$root"/scripts/deps.d/*.sh; do
  [ -e "$hook" ] || continue
  bash "$hook"
done
