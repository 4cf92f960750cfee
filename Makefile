# Legate build, test and benchmark entry points.
#   make quickstart   run the proxy on the embedded demo config with two demo backends
#   make test         install what the tests need, lint, and run every test (this is what CI runs)
#   make bench        compare Legate with nginx and HAProxy on this machine
SHELL := /bin/bash
export LEGATE_CACHE ?= $(HOME)/.cache/legate
export KUBE_BIN_DIR ?= $(LEGATE_CACHE)/kube-bin-v1.36.3
export KUBEBUILDER_ASSETS ?= $(KUBE_BIN_DIR)
export CONFORMANCE_ASSETS ?= $(LEGATE_CACHE)/conformance-v1.6.3
TOOLS_BIN := $(LEGATE_CACHE)/bin
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: build quickstart deps lint test test-short bench bench-filters bench-mesh bench-scale bench-tracing soak docs generate catalog

build:
	go build -o bin/legate ./cmd/legate

quickstart: build
	./bin/legate quickstart

deps:
	scripts/deps.sh

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	staticcheck ./...

# The security tests need a private network namespace (unshare -rn); in
# make test a missing one is a failure, not a skip.
test: lint
	LEGATE_REQUIRE_NETNS=1 go test -race -count=1 -timeout 40m ./...

# test-short skips the tests that need the Kubernetes binaries or long runs.
test-short:
	go test -short -count=1 ./...

bench:
	bench/run.sh

# bench-tracing measures what tracing costs a request it does not sample (1 %
# sampling) and one it samples, in process (bench/results/tracing.md).
bench-tracing:
	go test -run XXX -bench BenchmarkUnsampled -benchtime 300000x -count 3 ./internal/tracing/

# bench-scale measures the controller at scale: 1,000 HTTPProxies and 5,000
# HTTPRoutes with 10,000 endpoints (first build, push to a Legate proxy,
# heap, an endpoint change and a route edit reaching the proxy).
bench-scale:
	go test -run XXX -bench 'BenchmarkScale' -benchtime 1x ./test/controller/

# bench-mesh measures what two sidecars add per request (pod A → sidecar →
# sidecar → pod B over mTLS, against A calling B directly) and a sidecar's
# memory with 100 Services in the mesh; writes bench/results/mesh.md.
bench-mesh:
	LEGATE_MESH_BENCH=1 go test -count=1 -v ./test/meshe2e -run TestMeshCost

# bench-filters measures the CPU per request that cors, rbac, jwt_authn and the
# gzip compressor add to the router (wrk, 64 keep-alive connections), checks
# that compression streams, and writes bench/results/filtercost.md. The
# router-only variant also runs on Legate built from FILTERCOST_BASELINE (the
# commit of bench/results/latest.json, before the HTTP filter chain existed;
# empty skips it). Needs nginx and wrk (make bench installs them). Not in CI.
FILTERCOST_BASELINE ?= dab21e0
bench-filters: build
	go build -o bin/filtercost ./bench/cmd/filtercost
	@set -e; flags=""; \
	if [ -n "$(FILTERCOST_BASELINE)" ]; then \
	  d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	  git archive $(FILTERCOST_BASELINE) | tar -x -C "$$d"; \
	  (cd "$$d" && go build -o "$(CURDIR)/bin/legate-$(FILTERCOST_BASELINE)" ./cmd/legate); \
	  flags="-baseline bin/legate-$(FILTERCOST_BASELINE) -baseline-name $(FILTERCOST_BASELINE)"; \
	fi; \
	bin/filtercost -legate bin/legate $$flags $(FILTERCOST_FLAGS)

# soak runs legate proxy for SOAK_DURATION (default 30m) under load, config
# churn, upstream kills and HTTP/2 floods, in a private network namespace,
# and writes bench/results/soak.md (RSS over time, failed requests). Not in CI.
soak: build
	go build -o bin/soak ./bench/cmd/soak
	unshare -rn sh -c 'ip link set lo up && bin/soak -duration $${SOAK_DURATION:-30m}'

# docs regenerates docs/compatibility.md from the conformance corpus and
# docs/extensions.md from the extension registry.
docs:
	go test -count=1 ./test/conformance -run TestCompatibility -update
	go test -count=1 ./internal/server -run TestExtensionsDoc -update

# catalog regenerates the catalog of Envoy's extension types from
# go-control-plane (after upgrading it; tools/gencatalog is its own module).
catalog:
	tools/gencatalog/gen-imports.sh
	cd tools/gencatalog && go run . > ../../internal/extension/catalog/catalog_gen.go.new
	mv internal/extension/catalog/catalog_gen.go.new internal/extension/catalog/catalog_gen.go

# generate regenerates the DeepCopy methods and the CRDs from api/ (controller-gen),
# then deploy/quickstart.yaml and the Helm chart's CRDs.
generate: deps
	controller-gen object paths=./api/... crd:crdVersions=v1 output:crd:dir=./deploy/crds
	scripts/gen-quickstart.sh
