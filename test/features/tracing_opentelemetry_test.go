// Tracing with envoy.tracers.opentelemetry, end to end against a real
// Jaeger (internal/testutil.StartJaeger) that receives OTLP: two proxies
// chained in front of an upstream, spans exported over OTLP/gRPC and
// OTLP/HTTP through clusters, then read back from Jaeger's query API; and
// a collector that is gone or hangs, which must not slow requests.

package features_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// otelProxy renders a proxy whose listener "http" routes / to cluster
// "next" (decorator .Op) and /down to a cluster with no hosts, traced by
// the OpenTelemetry tracer (.Exporter: its grpc_service or http_service)
// reporting to the collector at 127.0.0.1:.Collector. The runtime makes
// every finished span go out at once (min_flush_spans 1).
const otelProxy = `
node: {id: {{.Node}}, cluster: {{.Node}}-cluster}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
layered_runtime:
  layers:
  - name: static
    static_layer: {tracing.opentelemetry.min_flush_spans: 1, tracing.opentelemetry.flush_interval_ms: 200}
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
            random_sampling: {value: 100}
            spawn_upstream_span: {{.Spawn}}
            custom_tags: [{tag: team, literal: {value: edge}}, {tag: client, request_header: {name: x-client, default_value: none}}]
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: {{.Service}}
                {{.Exporter}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - {match: {prefix: "/down"}, route: {cluster: dead}}
              - {match: {prefix: "/"}, route: {cluster: next}, decorator: {operation: {{.Op}}}}
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  clusters:
  - name: next
    type: STATIC
    load_assignment: {cluster_name: next, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Next}}}}}}]}]}
  - name: dead
    type: STATIC
    load_assignment: {cluster_name: dead, endpoints: []}
  - name: otlp_grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: otlp_grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Collector}}}}}}]}]}
  - name: otlp_http
    type: STATIC
    load_assignment: {cluster_name: otlp_http, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Collector}}}}}}]}]}
`

// otelGRPC and otelHTTP are the two exporters' configs (one line each of
// the typed_config above).
const (
	otelGRPC = `grpc_service: {envoy_grpc: {cluster_name: otlp_grpc}, timeout: 2s}`
	otelHTTP = `http_service: {http_uri: {uri: "http://otlp-collector/v1/traces", cluster: otlp_http, timeout: 2s}, request_headers_to_add: [{header: {key: x-tenant, value: legate}}]}`
)

// traceparentRecorder is an upstream that records the traceparent of
// every request and answers 200 (503 for /fail).
type traceparentRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *traceparentRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.seen = append(r.seen, req.Header.Get("traceparent"))
	r.mu.Unlock()
	if strings.HasPrefix(req.URL.Path, "/fail") {
		w.WriteHeader(503)
		return
	}
	w.Write([]byte("ok"))
}

func (r *traceparentRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return ""
	}
	return r.seen[len(r.seen)-1]
}

// TestOpenTelemetryTracingWithJaeger: front (outbound, a client span) →
// back (inbound, spawn_upstream_span: a server span and the upstream
// request's client span) → the application. One request makes one trace
// of three spans in Jaeger, linked parent to child, with Envoy's names
// and tags; the application receives a traceparent of that trace whose
// parent is back's upstream span. Once with OTLP/gRPC, once with
// OTLP/HTTP.
func TestOpenTelemetryTracingWithJaeger(t *testing.T) {
	j := testutil.StartJaeger(t)
	for _, c := range []struct{ name, exporter, collector string }{
		{"grpc", otelGRPC, j.OTLPGRPCAddr},
		{"http", otelHTTP, j.OTLPHTTPAddr},
	} {
		t.Run(c.name, func(t *testing.T) {
			app := &traceparentRecorder{}
			up := testutil.StartUpstream(t, app)
			_, aport := up.Host()
			frontSvc, backSvc := "front-"+c.name, "back-"+c.name
			back := testutil.StartProxy(t, otelProxy, map[string]string{"Node": "back", "Service": backSvc, "Direction": "INBOUND", "Spawn": "true",
				"Op": "backend-call", "Next": aport, "Exporter": c.exporter, "Collector": portOf(c.collector)})
			front := testutil.StartProxy(t, otelProxy, map[string]string{"Node": "front", "Service": frontSvc, "Direction": "OUTBOUND", "Spawn": "false",
				"Op": "to-backend", "Next": portOf(back.Addr("http")), "Exporter": c.exporter, "Collector": portOf(c.collector)})

			code, _, _ := testutil.Get(t, testutil.Client(), front.URL("http", "/trace?x=1"), "x-client", "c1")
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			// The application got the trace's context.
			tp := app.last()
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || parts[3] != "01" {
				t.Fatalf("the application got traceparent %q", tp)
			}
			traceID, appParent := parts[1], parts[2]

			tr := j.WaitTrace(t, traceID, 3, 20*time.Second)
			if len(tr.Spans) != 3 {
				t.Fatalf("trace %s has %d spans: %+v", traceID, len(tr.Spans), tr.Spans)
			}
			spans := map[string]testutil.JaegerSpan{}
			for _, s := range tr.Spans {
				if s.TraceID != traceID {
					t.Errorf("span %s in trace %s", s.SpanID, s.TraceID)
				}
				spans[tr.Service(s)+" "+s.OperationName] = s
			}
			frontSpan, ok1 := spans[frontSvc+" to-backend"]
			backSpan, ok2 := spans[backSvc+" backend-call"]
			upSpan, ok3 := spans[backSvc+" router next egress"]
			if !ok1 || !ok2 || !ok3 {
				t.Fatalf("spans by service and name: %v", keys(spans))
			}
			// Parent → child: front → back's server span → back's upstream
			// span → the application.
			if frontSpan.Parent() != "" || backSpan.Parent() != frontSpan.SpanID || upSpan.Parent() != backSpan.SpanID || appParent != upSpan.SpanID {
				t.Errorf("links: front %s (parent %q), back %s (parent %s), upstream %s (parent %s), application's parent %s",
					frontSpan.SpanID, frontSpan.Parent(), backSpan.SpanID, backSpan.Parent(), upSpan.SpanID, upSpan.Parent(), appParent)
			}
			for s, kind := range map[*testutil.JaegerSpan]string{&frontSpan: "client", &backSpan: "server", &upSpan: "client"} {
				if got := s.Tag("span.kind"); got != kind {
					t.Errorf("%s: span.kind %q, want %q", s.OperationName, got, kind)
				}
			}
			want := map[string]string{
				"component": "proxy", "node_id": "front", "http.method": "GET", "http.protocol": "HTTP/1.1",
				"http.status_code": "200", "upstream_cluster": "next", "upstream_cluster.name": "next",
				"response_flags": "-", "downstream_cluster": "-", "team": "edge", "client": "c1",
				"upstream_address": "127.0.0.1:" + portOf(back.Addr("http")), "peer.address": "127.0.0.1",
			}
			for k, v := range want {
				if got := frontSpan.Tag(k); got != v {
					t.Errorf("front span tag %s = %q, want %q", k, got, v)
				}
			}
			if u := frontSpan.Tag("http.url"); !strings.HasSuffix(u, "/trace?x=1") || !strings.HasPrefix(u, "http://") {
				t.Errorf("http.url %q", u)
			}
			if frontSpan.Tag("guid:x-request-id") == "" || frontSpan.Tag("request_size") == "" || frontSpan.Tag("response_size") == "" {
				t.Errorf("front span tags %v", frontSpan.Tags)
			}
			if backSpan.Tag("node_id") != "back" || backSpan.Tag("http.status_code") != "200" || backSpan.Tag("upstream_cluster") != "next" {
				t.Errorf("back span tags %v", backSpan.Tags)
			}
			// The upstream span: Envoy's finalizeUpstreamSpan tags.
			for k, v := range map[string]string{"component": "proxy", "http.protocol": "HTTP/1.1", "upstream_cluster": "next",
				"http.status_code": "200", "upstream_address": up.Addr, "peer.address": up.Addr, "node_id": "back"} {
				if got := upSpan.Tag(k); got != v {
					t.Errorf("upstream span tag %s = %q, want %q", k, got, v)
				}
			}
			if frontSpan.Tag("otel.status_code") != "" || upSpan.Tag("error") != "" {
				t.Errorf("a 200 is no error: %v / %v", frontSpan.Tags, upSpan.Tags)
			}
			// The resource: service.name and the SDK's attributes.
			p := tr.Processes[frontSpan.ProcessID]
			if p.ServiceName != frontSvc || p.Tag("telemetry.sdk.name") != "envoy" || p.Tag("telemetry.sdk.language") != "go" {
				t.Errorf("front process %+v", p)
			}

			// An upstream 5xx is an error span; a local reply carries its
			// response flag.
			if code, _, _ := testutil.Get(t, testutil.Client(), front.URL("http", "/fail")); code != 503 {
				t.Fatalf("/fail: status %d", code)
			}
			failID := strings.Split(app.last(), "-")[1]
			ftr := j.WaitTrace(t, failID, 3, 20*time.Second)
			for _, s := range ftr.Spans {
				if s.Tag("http.status_code") != "503" || s.Tag("otel.status_code") != "ERROR" {
					t.Errorf("/fail span %s (%s): status_code %q, otel.status_code %q", s.OperationName, ftr.Service(s),
						s.Tag("http.status_code"), s.Tag("otel.status_code"))
				}
			}
			if code, _, _ := testutil.Get(t, testutil.Client(), front.URL("http", "/down")); code != 503 {
				t.Fatalf("/down: status %d", code)
			}
			var down testutil.JaegerSpan
			testutil.Eventually(t, 20*time.Second, func() bool {
				trs, err := j.Traces(frontSvc)
				if err != nil {
					return false
				}
				for _, tr := range trs {
					for _, s := range tr.Spans {
						if strings.HasSuffix(s.Tag("http.url"), "/down") {
							down = s
							return true
						}
					}
				}
				return false
			}, "no span of /down in jaeger")
			if down.Tag("response_flags") != "UH" || down.Tag("http.status_code") != "503" || down.Tag("otel.status_code") != "ERROR" || down.OperationName != "egress "+strings.TrimPrefix(front.URL("http", ""), "http://") {
				t.Errorf("/down span %s: %v", down.OperationName, down.Tags)
			}
			testutil.Eventually(t, 5*time.Second, func() bool { return front.Stat(t, "tracing.opentelemetry.spans_sent") >= 3 },
				"front spans_sent = %d", front.Stat(t, "tracing.opentelemetry.spans_sent"))
			if c.name == "http" {
				testutil.Eventually(t, 5*time.Second, func() bool { return back.Stat(t, "tracing.opentelemetry.http_reports_success") >= 2 },
					"back http_reports_success = %d", back.Stat(t, "tracing.opentelemetry.http_reports_success"))
				if n := back.Stat(t, "tracing.opentelemetry.http_reports_failed"); n != 0 {
					t.Errorf("http_reports_failed = %d", n)
				}
			}
		})
	}
}

func keys(m map[string]testutil.JaegerSpan) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// timedGet sends GET url and fails the test if it does not answer 200
// within limit.
func timedGet(t *testing.T, url string, limit time.Duration) {
	t.Helper()
	start := time.Now()
	code, _, _ := testutil.Get(t, testutil.Client(), url)
	if d := time.Since(start); code != 200 || d > limit {
		t.Fatalf("GET %s: status %d in %v (limit %v)", url, code, d, limit)
	}
}

// TestOpenTelemetryCollectorDown: when the collector is gone or never
// answers, requests are as fast as ever; the tracer counts the failed
// reports (OTLP/HTTP, Jaeger stopped) and drops what its bounded buffer
// cannot hold (OTLP/gRPC, a collector that accepts connections and never
// answers, max_cache_size 3).
func TestOpenTelemetryCollectorDown(t *testing.T) {
	t.Run("http, jaeger stopped", func(t *testing.T) {
		j := testutil.StartJaeger(t)
		app := testutil.StartUpstream(t, testutil.EchoHandler("app"))
		_, aport := app.Host()
		p := testutil.StartProxy(t, otelProxy, map[string]string{"Node": "p", "Service": "lonely", "Direction": "INBOUND", "Spawn": "false",
			"Op": "op", "Next": aport, "Exporter": otelHTTP, "Collector": portOf(j.OTLPHTTPAddr)})
		timedGet(t, p.URL("http", "/"), 2*time.Second)
		testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "tracing.opentelemetry.http_reports_success") == 1 },
			"http_reports_success = %d before Jaeger stops", p.Stat(t, "tracing.opentelemetry.http_reports_success"))
		j.Stop()
		for i := 0; i < 10; i++ {
			timedGet(t, p.URL("http", "/"), 2*time.Second)
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "tracing.opentelemetry.http_reports_failed") >= 1 },
			"http_reports_failed = %d", p.Stat(t, "tracing.opentelemetry.http_reports_failed"))
		if n := p.Stat(t, "tracing.opentelemetry.http_reports_success"); n != 1 {
			t.Errorf("http_reports_success = %d after Jaeger stopped", n)
		}
	})
	t.Run("grpc, collector hangs", func(t *testing.T) {
		// A collector that accepts connections and never says a word.
		collector := startBlackHole(t)
		app := testutil.StartUpstream(t, testutil.EchoHandler("app"))
		_, aport := app.Host()
		// Each export waits for its 5 s timeout: a request that waited for
		// one would miss timedGet's limit.
		exporter := `grpc_service: {envoy_grpc: {cluster_name: otlp_grpc}, timeout: 5s}` + "\n                max_cache_size: 3"
		p := testutil.StartProxy(t, otelProxy, map[string]string{"Node": "p", "Service": "stuck", "Direction": "INBOUND", "Spawn": "true",
			"Op": "op", "Next": aport, "Exporter": exporter, "Collector": portOf(collector)})
		start := time.Now()
		for i := 0; i < 20; i++ {
			timedGet(t, p.URL("http", "/"), 2*time.Second)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("20 requests took %v with a hung collector", d)
		}
		// 40 spans (a server and an upstream span each): one export holds
		// at most a few, the buffer 3; the rest are dropped.
		testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "tracing.opentelemetry.spans_dropped") >= 20 },
			"spans_dropped = %d", p.Stat(t, "tracing.opentelemetry.spans_dropped"))
	})
}
