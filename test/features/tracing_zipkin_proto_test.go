// Tracing with envoy.tracers.zipkin and collector_endpoint_version
// HTTP_PROTO, end to end against a real Jaeger whose Zipkin receiver
// takes zipkin.proto3.ListOfSpans (Content-Type application/x-protobuf)
// at /api/v2/spans; the test reads the trace back from Jaeger's query
// API. Zipkin fields Legate does not implement are refused.

package features_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// b3Recorder records the B3 headers of the last request.
type b3Recorder struct {
	mu   sync.Mutex
	last http.Header
}

func (r *b3Recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.last = req.Header.Clone()
	r.mu.Unlock()
	w.Write([]byte("ok"))
}

func (r *b3Recorder) get(k string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last.Get(k)
}

func zipkinProtoConfig(app, collector, extra string) cfg {
	return cfg{
		hcm:      `tracing: {random_sampling: {value: 100}, custom_tags: [{tag: team, literal: {value: edge}}], provider: {name: envoy.tracers.zipkin, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: zipkin, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_PROTO, trace_id_128bit: true, collector_hostname: zipkin.local` + extra + `}}}`,
		vhosts:   vhost(`{match: {prefix: "/"}, route: {cluster: app}, decorator: {operation: zipkin-op}}`),
		clusters: fmt.Sprintf("[%s, %s]", staticCluster("app", "", app), staticCluster("zipkin", "", collector)),
		extra:    "node: {id: zipkin-node, cluster: zipkin-svc}\n",
	}
}

// TestZipkinProtoWithJaeger: a request starts a 128-bit trace; the
// upstream gets its B3 headers; Jaeger receives the span in protobuf
// and shows it under the node's cluster as service, with the decorator
// as operation and Envoy's tags.
func TestZipkinProtoWithJaeger(t *testing.T) {
	j := testutil.StartJaeger(t)
	rec := &b3Recorder{}
	app := testutil.StartUpstream(t, rec)
	p := start(t, zipkinProtoConfig(app.Addr, j.ZipkinAddr, ""))
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/zp")); code != 200 {
		t.Fatalf("status %d", code)
	}
	traceID, spanID := rec.get("x-b3-traceid"), rec.get("x-b3-spanid")
	if len(traceID) != 32 || len(spanID) != 16 || rec.get("x-b3-sampled") != "1" {
		t.Fatalf("upstream B3 headers: trace %q span %q sampled %q", traceID, spanID, rec.get("x-b3-sampled"))
	}
	tr := j.WaitTrace(t, traceID, 1, 30*time.Second)
	if len(tr.Spans) != 1 {
		t.Fatalf("trace %s has %d spans", traceID, len(tr.Spans))
	}
	s := tr.Spans[0]
	if s.SpanID != spanID || s.OperationName != "zipkin-op" || tr.Service(s) != "zipkin-svc" {
		t.Errorf("span %s %q of %q, want %s zipkin-op of zipkin-svc", s.SpanID, s.OperationName, tr.Service(s), spanID)
	}
	for k, v := range map[string]string{"team": "edge", "http.status_code": "200", "component": "proxy", "upstream_cluster": "app", "span.kind": "server"} {
		if got := s.Tag(k); got != v {
			t.Errorf("tag %s = %q, want %q", k, got, v)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "tracing.zipkin.reports_sent") >= 1 },
		"tracing.zipkin.reports_sent stays 0")
}

// TestZipkinUnsupportedFields: Zipkin fields that change behaviour and
// are not implemented are refused with their path.
func TestZipkinUnsupportedFields(t *testing.T) {
	for _, tc := range []struct{ extra, field string }{
		{", split_spans_for_request: true", "split_spans_for_request"},
		{", trace_context_option: USE_B3_WITH_W3C_PROPAGATION", "trace_context_option"},
		{", collector_service: {http_uri: {uri: http://z/api/v2/spans, cluster: zipkin, timeout: 1s}}", "collector_service"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, zipkinProtoConfig("127.0.0.1:1", "127.0.0.1:2", tc.extra).String(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			}
		})
	}
}
