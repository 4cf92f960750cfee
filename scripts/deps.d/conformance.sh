#!/usr/bin/env bash
# Builds what the Gateway API conformance suite (sigs.k8s.io/gateway-api
# v1.6.3) needs to run its backends in test/kubeenv — echo-basic (the
# suite's own echo server, conformance/echo-basic) and a CoreDNS v1.12.2
# with the plugins its coredns Deployment uses (tools/conformance/coredns) —
# into $CONFORMANCE_ASSETS, with the suite's base manifests and the Gateway
# API CRDs (standard and experimental channels) beside them:
#   echo-basic  coredns  base/manifests.yaml  crds/standard/  crds/experimental/
# Cold: ~45 s (2 cores, empty caches; ~140 MB of modules); warm: skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${CONFORMANCE_ASSETS:-${LEGATE_CACHE:-$HOME/.cache/legate}/conformance-v1.6.3}
mod="$root/tools/conformance"
stamp="$out/.built-from-$(cat "$mod/go.sum" "$mod/coredns/main.go" "$0" | sha256sum | cut -c1-16)"
if [ -x "$out/echo-basic" ] && [ -x "$out/coredns" ] && [ -e "$stamp" ]; then
  exit 0
fi
echo "deps: building echo-basic and coredns (Gateway API conformance v1.6.3) into $out (cold: ~45 s)"
mkdir -p "$out"
cd "$mod"
# The committed go.sum is complete (GOFLAGS=-mod=mod would rewrite it).
GOWORK=off go build -trimpath -ldflags="-s -w" -o "$out/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic
GOWORK=off go build -trimpath -ldflags="-s -w" -o "$out/coredns" ./coredns
conf=$(GOWORK=off go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api/conformance)
# The CRDs are in the root module of the same release (not a dependency of
# the tools module): go mod download checks it against the checksum database.
api=$(cd "$out" && GOWORK=off go mod download -json sigs.k8s.io/gateway-api@v1.6.3 | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
if [ ! -d "$api/config/crd/standard" ] || [ ! -f "$conf/base/manifests.yaml" ]; then
  echo "deps: Gateway API v1.6.3 files not found (module dirs: '$api', '$conf')" >&2
  exit 1
fi
rm -rf "$out/base" "$out/crds"
mkdir -p "$out/base" "$out/crds"
cp "$conf/base/manifests.yaml" "$out/base/"
cp -r "$api/config/crd/standard" "$api/config/crd/experimental" "$out/crds/"
chmod -R u+w "$out/base" "$out/crds"
rm -f "$out"/.built-from-*
touch "$stamp"
