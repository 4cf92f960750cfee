// Tracing with envoy.tracers.datadog: spans reach a Datadog agent's trace
// API (POST /v0.4/traces, msgpack) — here a real HTTP server on loopback
// that decodes the payload as the agent does, since no agent runs here —
// and the trace context propagates to the upstream in Datadog headers and
// W3C trace context.

package features_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/legateproxy/legate/internal/testutil"
)

// agentSpan is a span as the agent's v0.4 endpoint decodes it.
type agentSpan struct {
	Service  string             `msgpack:"service"`
	Name     string             `msgpack:"name"`
	Resource string             `msgpack:"resource"`
	TraceID  uint64             `msgpack:"trace_id"`
	SpanID   uint64             `msgpack:"span_id"`
	ParentID uint64             `msgpack:"parent_id"`
	Start    int64              `msgpack:"start"`
	Duration int64              `msgpack:"duration"`
	Error    int32              `msgpack:"error"`
	Meta     map[string]string  `msgpack:"meta"`
	Metrics  map[string]float64 `msgpack:"metrics"`
}

// ddAgent is the trace intake of a Datadog agent.
type ddAgent struct {
	mu      sync.Mutex
	spans   []agentSpan
	headers []http.Header
	bad     []string
}

func (a *ddAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.URL.Path != "/v0.4/traces" || (r.Method != "POST" && r.Method != "PUT") || r.Header.Get("Content-Type") != "application/msgpack" {
		a.bad = append(a.bad, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		w.WriteHeader(404)
		return
	}
	var traces [][]agentSpan
	if err := msgpack.Unmarshal(body, &traces); err != nil {
		a.bad = append(a.bad, "decode: "+err.Error())
		w.WriteHeader(400)
		return
	}
	if n, _ := strconv.Atoi(r.Header.Get("X-Datadog-Trace-Count")); n != len(traces) {
		a.bad = append(a.bad, fmt.Sprintf("X-Datadog-Trace-Count %q for %d traces", r.Header.Get("X-Datadog-Trace-Count"), len(traces)))
	}
	for _, t := range traces {
		a.spans = append(a.spans, t...)
	}
	a.headers = append(a.headers, r.Header.Clone())
	w.Write([]byte(`{"rate_by_service":{"service:,env:":1}}`))
}

func (a *ddAgent) byTrace(id uint64) []agentSpan {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []agentSpan
	for _, s := range a.spans {
		if s.TraceID == id {
			out = append(out, s)
		}
	}
	return out
}

// headerRecorder records the last request's headers and answers 200
// (503 for /fail).
type headerRecorder struct {
	mu   sync.Mutex
	last http.Header
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.last = r.Header.Clone()
	h.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/fail") {
		w.WriteHeader(503)
		return
	}
	w.Write([]byte("ok"))
}

func (h *headerRecorder) get(k string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last.Get(k)
}

func datadogConfig(app, agent string, spawn bool) cfg {
	return cfg{
		hcm:      fmt.Sprintf(`tracing: {random_sampling: {value: 100}, spawn_upstream_span: %v, provider: {name: envoy.tracers.datadog, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: dd_agent, service_name: legate-dd, collector_hostname: agent.local}}}`, spawn),
		vhosts:   vhost(`{match: {prefix: "/"}, route: {cluster: app}, decorator: {operation: checkout}}`),
		clusters: fmt.Sprintf("[%s, %s]", staticCluster("app", "", app), staticCluster("dd_agent", "", agent)),
	}
}

// TestDatadogTracing: a request carrying Datadog headers continues the
// caller's trace: the upstream gets that trace id, the proxy's span as
// parent, the caller's priority and origin, in Datadog headers and a
// traceparent/tracestate of the same trace; the agent receives the span
// named envoy.proxy with the decorator as resource, the service, Envoy's
// tags, the sampling priority metric and the origin. A W3C traceparent
// is extracted when there are no Datadog headers; a 503 marks the span
// as an error; a new trace is kept with priority 1.
func TestDatadogTracing(t *testing.T) {
	agent := &ddAgent{}
	ag := testutil.StartUpstream(t, agent)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	p := start(t, datadogConfig(app.Addr, ag.Addr, false))
	c := testutil.Client()

	code, _, _ := testutil.Get(t, c, p.URL("http", "/cart"), "x-datadog-trace-id", "12345", "x-datadog-parent-id", "67890",
		"x-datadog-sampling-priority", "2", "x-datadog-origin", "synthetics")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if v := rec.get("x-datadog-trace-id"); v != "12345" {
		t.Errorf("upstream x-datadog-trace-id %q, want 12345", v)
	}
	if v := rec.get("x-datadog-sampling-priority"); v != "2" {
		t.Errorf("upstream x-datadog-sampling-priority %q, want 2", v)
	}
	if v := rec.get("x-datadog-origin"); v != "synthetics" {
		t.Errorf("upstream x-datadog-origin %q, want synthetics", v)
	}
	parent, err := strconv.ParseUint(rec.get("x-datadog-parent-id"), 10, 64)
	if err != nil || parent == 67890 || parent == 0 {
		t.Errorf("upstream x-datadog-parent-id %q: want the proxy's span id", rec.get("x-datadog-parent-id"))
	}
	tp := rec.get("traceparent")
	if want := fmt.Sprintf("00-%032x-%016x-01", 12345, parent); tp != want {
		t.Errorf("upstream traceparent %q, want %q", tp, want)
	}
	if ts := rec.get("tracestate"); !strings.HasPrefix(ts, "dd=s:2;p:") || !strings.Contains(ts, ";o:synthetics") {
		t.Errorf("upstream tracestate %q, want a dd member with s:2 and o:synthetics", ts)
	}

	var spans []agentSpan
	testutil.Eventually(t, 10*time.Second, func() bool { spans = agent.byTrace(12345); return len(spans) == 1 },
		"the agent did not receive the span of trace 12345")
	s := spans[0]
	if s.Name != "envoy.proxy" || s.Resource != "checkout" || s.Service != "legate-dd" {
		t.Errorf("span name %q resource %q service %q, want envoy.proxy, checkout, legate-dd", s.Name, s.Resource, s.Service)
	}
	if s.ParentID != 67890 || s.SpanID != parent {
		t.Errorf("span id %d parent %d, want %d and 67890", s.SpanID, s.ParentID, parent)
	}
	if s.Metrics["_sampling_priority_v1"] != 2 || s.Meta["_dd.origin"] != "synthetics" {
		t.Errorf("priority %v origin %q", s.Metrics["_sampling_priority_v1"], s.Meta["_dd.origin"])
	}
	if s.Meta["http.status_code"] != "200" || s.Meta["component"] != "proxy" || s.Meta["upstream_cluster"] != "app" || s.Error != 0 {
		t.Errorf("span tags %v error %d", s.Meta, s.Error)
	}
	if s.Start == 0 || s.Duration <= 0 {
		t.Errorf("span start %d duration %d", s.Start, s.Duration)
	}
	agent.mu.Lock()
	if len(agent.bad) > 0 {
		t.Errorf("agent rejected: %v", agent.bad)
	}
	if h := agent.headers[0]; h.Get("Datadog-Meta-Tracer-Version") == "" {
		t.Errorf("agent request headers %v", h)
	}
	agent.mu.Unlock()

	// W3C trace context only, the upstream answering 503.
	code, _, _ = testutil.Get(t, c, p.URL("http", "/fail"), "traceparent", "00-0000000000000000000000000000abcd-00000000000000ef-01")
	if code != 503 {
		t.Fatalf("status %d", code)
	}
	if v := rec.get("x-datadog-trace-id"); v != strconv.Itoa(0xabcd) {
		t.Errorf("upstream x-datadog-trace-id %q, want %d", v, 0xabcd)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { spans = agent.byTrace(0xabcd); return len(spans) == 1 },
		"the agent did not receive the span of the W3C trace")
	if s := spans[0]; s.ParentID != 0xef || s.Error != 1 || s.Metrics["_sampling_priority_v1"] != 1 {
		t.Errorf("W3C span: parent %d error %d priority %v", s.ParentID, s.Error, s.Metrics["_sampling_priority_v1"])
	}

	// A new trace.
	testutil.Get(t, c, p.URL("http", "/new"))
	id, _ := strconv.ParseUint(rec.get("x-datadog-trace-id"), 10, 64)
	if id == 0 || rec.get("x-datadog-sampling-priority") != "1" || !strings.Contains(rec.get("x-datadog-tags"), "_dd.p.dm=-0") {
		t.Errorf("new trace headers: id %q priority %q tags %q", rec.get("x-datadog-trace-id"), rec.get("x-datadog-sampling-priority"), rec.get("x-datadog-tags"))
	}
	testutil.Eventually(t, 10*time.Second, func() bool { spans = agent.byTrace(id); return len(spans) == 1 },
		"the agent did not receive the new trace")
	if s := spans[0]; s.ParentID != 0 || s.Meta["_dd.p.dm"] != "-0" || s.Meta["_dd.p.tid"] == "" {
		t.Errorf("new trace root: parent %d meta %v", s.ParentID, s.Meta)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "tracing.datadog.reports_sent") >= 1 },
		"tracing.datadog.reports_sent stays 0")
}

// TestDatadogTracingUpstreamSpan: with spawn_upstream_span the segment
// has two spans — the request's and the upstream request's, its child —
// sent together; the upstream sees the child as parent.
func TestDatadogTracingUpstreamSpan(t *testing.T) {
	agent := &ddAgent{}
	ag := testutil.StartUpstream(t, agent)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	p := start(t, datadogConfig(app.Addr, ag.Addr, true))
	testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x-datadog-trace-id", "777", "x-datadog-parent-id", "1")
	var spans []agentSpan
	testutil.Eventually(t, 10*time.Second, func() bool { spans = agent.byTrace(777); return len(spans) == 2 },
		"the agent did not receive two spans of trace 777")
	var root, child agentSpan
	for _, s := range spans {
		if s.ParentID == 1 {
			root = s
		} else {
			child = s
		}
	}
	if child.ParentID != root.SpanID || root.SpanID == 0 {
		t.Errorf("child parent %d, root id %d", child.ParentID, root.SpanID)
	}
	if got := rec.get("x-datadog-parent-id"); got != strconv.FormatUint(child.SpanID, 10) {
		t.Errorf("upstream parent %s, want the upstream span %d", got, child.SpanID)
	}
}

// TestDatadogTracingAgentGone: with the agent's port closed, or an agent
// that accepts connections and never answers, requests are served as
// usual and the failed reports counted.
func TestDatadogTracingAgentGone(t *testing.T) {
	for name, addr := range map[string]string{"closed": fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "hangs": startBlackHole(t)} {
		t.Run(name, func(t *testing.T) { datadogAgentGone(t, addr) })
	}
}

func datadogAgentGone(t *testing.T, agent string) {
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	p := start(t, datadogConfig(app.Addr, agent, false))
	c := testutil.Client()
	begin := time.Now()
	for i := 0; i < 10; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("10 requests took %v with the agent gone", d)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "tracing.datadog.reports_failed") >= 1 },
		"tracing.datadog.reports_failed stays 0")
}
