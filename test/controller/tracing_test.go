package controller

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/controller/contourconfig"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestContourTracing: Contour's tracing block (an ExtensionService of a
// real Jaeger's OTLP/gRPC receiver) makes every connection manager trace
// with OpenTelemetry: a request through Legate's proxy reaches Jaeger as a
// trace of service "shop" whose spans carry the custom tags (a literal,
// a request header, and Contour's podName from the proxy's HOSTNAME),
// with an upstream span (spawn_upstream_span) under the proxy's span.
func TestContourTracing(t *testing.T) {
	if !inNetns(t) {
		return
	}
	j := testutil.StartJaeger(t)
	t.Setenv("HOSTNAME", "legate-proxy-0")
	startEchoAt(t, backendA, "a")
	otlpHost, otlpPort, _ := net.SplitHostPort(j.OTLPGRPCAddr)
	dir := t.TempDir()
	objs := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: otel, namespace: tracing}
spec: {ports: [{name: grpc, port: %[2]s}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: otel-1, namespace: tracing, labels: {kubernetes.io/service-name: otel}}
addressType: IPv4
ports: [{name: grpc, port: %[2]s}]
endpoints: [{addresses: [%[1]s], conditions: {ready: true}}]
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: otel, namespace: tracing}
spec:
  services: [{name: otel, port: %[2]s}]
  protocol: h2c
---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: tracing}
spec: {ports: [{name: http, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: app-1, namespace: tracing, labels: {kubernetes.io/service-name: app}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [%[3]s], conditions: {ready: true}}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: shop, namespace: tracing}
spec:
  virtualhost: {fqdn: shop.example.com}
  routes: [{services: [{name: app, port: 8080}]}]
`, otlpHost, otlpPort, backendA)
	if err := os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(objs), 0o644); err != nil {
		t.Fatal(err)
	}
	conf, err := contourconfig.Parse(strings.NewReader(`tracing:
  extensionService: tracing/otel
  serviceName: shop
  customTags:
  - {tagName: team, literal: checkout}
  - {tagName: agent, requestHeaderName: user-agent}
`))
	if err != nil {
		t.Fatal(err)
	}
	o, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := source.NewStore()
	st.Replace(o)
	x := startCP(t, st, cpOptions{contour: conf})
	startProxy(t, x)

	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://127.0.0.1:" + strconv.Itoa(x.httpPort) + "/checkout"
	testutil.Eventually(t, 20*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", url, "shop.example.com", "User-Agent", "tracing-test")
		return code == 200
	}, "the proxy never served shop.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	var found testutil.JaegerTrace
	testutil.Eventually(t, 30*time.Second, func() bool {
		trs, err := j.Traces("shop")
		if err != nil || len(trs) == 0 {
			return false
		}
		found = trs[0]
		return len(found.Spans) >= 2
	}, "Jaeger never got a trace of service shop with the proxy's and the upstream span")
	var root, up *testutil.JaegerSpan
	for i := range found.Spans {
		s := &found.Spans[i]
		if s.Parent() == "" {
			root = s
		}
	}
	for i := range found.Spans {
		if s := &found.Spans[i]; root != nil && s.Parent() == root.SpanID {
			up = s
		}
	}
	if root == nil || up == nil {
		t.Fatalf("trace %+v: want a root span and an upstream span under it", found.Spans)
	}
	for k, want := range map[string]string{"team": "checkout", "agent": "tracing-test", "podName": "legate-proxy-0"} {
		if got := root.Tag(k); got != want {
			t.Errorf("root span tag %s = %q, want %q (tags %v)", k, got, want, root.Tags)
		}
	}
	if !strings.Contains(root.Tag("http.url"), "/checkout") {
		t.Errorf("root span http.url = %q", root.Tag("http.url"))
	}
}
