package tracing_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// proxy renders a proxy with Zipkin tracing routing everything to
// cluster "next" (the next hop) and sending spans to "zipkin".
const proxyCfg = `
node: {id: {{.Node}}, cluster: {{.Node}}-cluster}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    traffic_direction: {{.Direction}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          tracing:
            random_sampling: {value: {{.Sampling}}}
            custom_tags: [{tag: team, literal: {value: edge}}, {tag: client, request_header: {name: x-client, default_value: none}}]
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: "/api/v2/spans"
                collector_endpoint_version: HTTP_JSON
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: next}, decorator: {operation: {{.Op}}}}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: next
    type: STATIC
    load_assignment: {cluster_name: next, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Next}}}}}}]}]}
  - name: zipkin
    type: STATIC
    load_assignment: {cluster_name: zipkin, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Zipkin}}}}}}]}]}
`

type span struct {
	TraceID  string            `json:"traceId"`
	ID       string            `json:"id"`
	ParentID string            `json:"parentId"`
	Name     string            `json:"name"`
	Kind     string            `json:"kind"`
	Shared   bool              `json:"shared"`
	Tags     map[string]string `json:"tags"`
	Local    struct {
		ServiceName string `json:"serviceName"`
	} `json:"localEndpoint"`
}

// A Zipkin v2 collector: POST /api/v2/spans with a JSON list of spans.
type collector struct {
	mu    sync.Mutex
	spans []span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v2/spans" || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad report", 400)
		return
	}
	var batch []span
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &batch); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.mu.Lock()
	c.spans = append(c.spans, batch...)
	c.mu.Unlock()
	w.WriteHeader(202)
}

func (c *collector) all() []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]span(nil), c.spans...)
}

func TestZipkinAcrossTwoProxies(t *testing.T) {
	col := &collector{}
	zs := testutil.StartUpstream(t, col)
	var seen http.Header
	app := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }))
	_, zport := zs.Host()
	_, aport := app.Host()
	back := testutil.StartProxy(t, proxyCfg, map[string]string{"Node": "back", "Direction": "INBOUND", "Sampling": "100", "Op": "backend-call", "Next": aport, "Zipkin": zport})
	_, bport, _ := strings.Cut(back.Addr("http"), ":")
	front := testutil.StartProxy(t, proxyCfg, map[string]string{"Node": "front", "Direction": "OUTBOUND", "Sampling": "100", "Op": "to-backend", "Next": bport, "Zipkin": zport})
	// Five requests fill a batch (Envoy's min_flush_spans).
	for i := 0; i < 5; i++ {
		if code, _, _ := testutil.Get(t, testutil.Client(), front.URL("http", "/trace"), "x-client", "c1"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(col.all()) >= 10 }, "the collector got %d spans", len(col.all()))
	// Pair each request's spans by trace: the two proxies' batches arrive
	// in any order.
	var client, server span
	for _, c := range col.all() {
		if c.Kind != "CLIENT" || c.Local.ServiceName != "front-cluster" {
			continue
		}
		for _, s := range col.all() {
			if s.Kind == "SERVER" && s.Local.ServiceName == "back-cluster" && s.TraceID == c.TraceID {
				client, server = c, s
			}
		}
	}
	if client.TraceID == "" || server.TraceID != client.TraceID {
		t.Fatalf("no trace spans both proxies: %+v", col.all())
	}
	// shared_span_context (default): the server span keeps the caller's id.
	if server.ID != client.ID || !server.Shared {
		t.Errorf("server span %s (shared %v), client span %s", server.ID, server.Shared, client.ID)
	}
	if client.Name != "to-backend" || server.Name != "backend-call" {
		t.Errorf("span names %q %q (the route decorators)", client.Name, server.Name)
	}
	for k, v := range map[string]string{"component": "proxy", "http.status_code": "200", "upstream_cluster": "next", "http.method": "GET",
		"node_id": "front", "team": "edge", "client": "c1"} {
		if client.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q", k, client.Tags[k], v)
		}
	}
	if client.Tags["guid:x-request-id"] == "" || !strings.HasPrefix(client.Tags["http.url"], "http://") {
		t.Errorf("tags %v", client.Tags)
	}
	// The application sees a propagated context (of the last request).
	if len(seen.Get("x-b3-traceid")) != 16 || len(seen.Get("x-b3-spanid")) != 16 || seen.Get("x-b3-sampled") != "1" {
		t.Errorf("application headers %v", seen)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return front.Stat(t, "tracing.zipkin.spans_sent") >= 5 }, "spans_sent = %d", front.Stat(t, "tracing.zipkin.spans_sent"))
}

func TestZipkinSamplingDecisions(t *testing.T) {
	col := &collector{}
	zs := testutil.StartUpstream(t, col)
	app := testutil.StartUpstream(t, testutil.EchoHandler("app"))
	_, zport := zs.Host()
	_, aport := app.Host()
	p := testutil.StartProxy(t, proxyCfg, map[string]string{"Node": "p", "Direction": "INBOUND", "Sampling": "0", "Op": "op", "Next": aport, "Zipkin": zport})
	// random_sampling 0: nothing is sampled, but the context still goes on.
	_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
	if !strings.Contains(body, "header:x-b3-sampled=0") || !strings.Contains(body, "header:x-b3-traceid=") {
		t.Errorf("unsampled request:\n%s", body)
	}
	// An incoming sampled context is honoured (the caller decided).
	_, _, body = testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "1")
	if !strings.Contains(body, "header:x-b3-traceid=463ac35c9f6413ad48485a3953bb6124") || !strings.Contains(body, "header:x-b3-sampled=1") {
		t.Errorf("incoming context:\n%s", body)
	}
	// A single b3 header too.
	_, _, body = testutil.Get(t, testutil.Client(), p.URL("http", "/"), "b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	if !strings.Contains(body, "header:x-b3-traceid=80f198ee56343ba864fe8b2a57d3eff7") {
		t.Errorf("b3 single header:\n%s", body)
	}
}
