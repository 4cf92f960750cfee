// Tracing as Envoy decides and reports it, through real proxies with
// envoy.tracers.zipkin reporting v2 JSON to a collector in the test: the
// sampling decision derived from x-request-id and packed into it (so a
// second proxy keeps the first one's decision), request_id_extension,
// x-envoy-force-trace and x-client-trace-id, metadata custom tags,
// verbose annotations, child spans (spawn_upstream_span and the router's
// start_child_span) and the Zipkin flush runtime keys.

package features_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// zSpan is a Zipkin v2 span as the collector decodes it.
type zSpan struct {
	TraceID     string            `json:"traceId"`
	ID          string            `json:"id"`
	ParentID    string            `json:"parentId"`
	Name        string            `json:"name"`
	Kind        string            `json:"kind"`
	Shared      bool              `json:"shared"`
	Tags        map[string]string `json:"tags"`
	Annotations []struct {
		Timestamp int64  `json:"timestamp"`
		Value     string `json:"value"`
	} `json:"annotations"`
}

// zipkinCollector is a Zipkin v2 JSON collector (POST /api/v2/spans).
type zipkinCollector struct {
	mu      sync.Mutex
	spans   []zSpan
	reports int
}

func (c *zipkinCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var batch []zSpan
	b, _ := io.ReadAll(r.Body)
	if r.URL.Path != "/api/v2/spans" || json.Unmarshal(b, &batch) != nil {
		http.Error(w, "bad report", 400)
		return
	}
	c.mu.Lock()
	c.spans = append(c.spans, batch...)
	c.reports++
	c.mu.Unlock()
	w.WriteHeader(202)
}

func (c *zipkinCollector) all() []zSpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]zSpan(nil), c.spans...)
}

// byRequestID is the spans tagged with this guid:x-request-id.
func (c *zipkinCollector) byRequestID(id string) []zSpan {
	var out []zSpan
	for _, s := range c.all() {
		if s.Tags["guid:x-request-id"] == id {
			out = append(out, s)
		}
	}
	return out
}

// zipkinTracing renders a connection manager tracing block for Zipkin,
// with more tracing fields in extra.
func zipkinTracing(sampling, extra string) string {
	return `tracing: {random_sampling: {value: ` + sampling + `}` + extra + `, provider: {name: envoy.tracers.zipkin, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: zipkin, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON}}}`
}

// flushAtOnce is a runtime making each finished Zipkin span go out alone.
const flushAtOnce = "layered_runtime: {layers: [{name: static, static_layer: {tracing.zipkin.min_flush_spans: 1}}]}\n"

func zipkinCfg(hcm, app, collector string) cfg {
	return cfg{
		hcm:      hcm,
		vhosts:   vhost(`{match: {prefix: "/"}, route: {cluster: app}}`),
		clusters: fmt.Sprintf("[%s, %s]", staticCluster("app", "", app), staticCluster("zipkin", "", collector)),
		extra:    flushAtOnce,
	}
}

// requestIDs are version-4 UUIDs (the trace nibble '4': no decision yet).
func requestIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%08x-1b2c-4d3e-8f40-%012x", uint32(i)*2654435761, i)
	}
	return out
}

// sampledAt is Envoy's decision for a request id at a random_sampling
// percentage: the first 8 hex digits mod 10000 against percent × 100.
func sampledAt(id string, percent int) bool {
	n, _ := strconv.ParseUint(id[:8], 16, 64)
	return n%10000 < uint64(percent*100)
}

func packed(id string, c byte) string { return id[:14] + string(c) + id[15:] }

// TestTracingSamplingFromRequestID: at random_sampling 50 %, whether a
// request is traced is a function of its x-request-id — the same id gets
// the same decision every time, and it is the decision Envoy computes
// (the id's first 8 hex digits mod 10000). The upstream receives the id
// with the decision packed into its version nibble ('9' sampled, '4'
// not), the B3 sampled flag agreeing; only sampled requests reach the
// collector.
func TestTracingSamplingFromRequestID(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	p := start(t, zipkinCfg(zipkinTracing("50", ""), app.Addr, zs.Addr))
	c := testutil.Client()
	sampled, unsampled := 0, 0
	for _, id := range requestIDs(40) {
		want := sampledAt(id, 50)
		for round := 0; round < 2; round++ {
			if code, _, _ := testutil.Get(t, c, p.URL("http", "/s"), "x-request-id", id); code != 200 {
				t.Fatalf("status %d", code)
			}
			wantID, wantFlag := packed(id, '4'), "0"
			if want {
				wantID, wantFlag = packed(id, '9'), "1"
			}
			if got := rec.get("x-request-id"); got != wantID {
				t.Errorf("%s (round %d): upstream x-request-id %s, want %s", id, round, got, wantID)
			}
			if got := rec.get("x-b3-sampled"); got != wantFlag {
				t.Errorf("%s (round %d): x-b3-sampled %s, want %s", id, round, got, wantFlag)
			}
		}
		if want {
			sampled++
		} else {
			unsampled++
		}
	}
	if sampled == 0 || unsampled == 0 {
		t.Fatalf("the ids do not exercise both decisions (%d sampled, %d not)", sampled, unsampled)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(col.all()) >= 2*sampled }, "collector got %d spans, want %d", len(col.all()), 2*sampled)
	time.Sleep(200 * time.Millisecond)
	for _, id := range requestIDs(40) {
		n := len(col.byRequestID(packed(id, '9')))
		if sampledAt(id, 50) && n != 2 {
			t.Errorf("%s: %d spans, want 2", id, n)
		}
		if !sampledAt(id, 50) && (n != 0 || len(col.byRequestID(packed(id, '4'))) != 0) {
			t.Errorf("%s was exported though not sampled", id)
		}
	}
}

// TestTracingDecisionCarriedAcrossProxies: a front proxy sampling
// everything packs its decision into x-request-id; the back proxy, which
// samples nothing itself, traces the request because the id says so
// (Envoy's "do not apply tracing transformations if we are currently
// tracing"), and the two spans share the trace. An id that already says
// "sampled" is traced at 0 %; with request_id_extension's
// pack_trace_reason false the packed reason is neither read nor written.
func TestTracingDecisionCarriedAcrossProxies(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	back := start(t, zipkinCfg(zipkinTracing("0", ""), app.Addr, zs.Addr))
	front := start(t, zipkinCfg(zipkinTracing("100", ""), back.Addr("http"), zs.Addr))
	c := testutil.Client()
	id := "0000abcd-1b2c-4d3e-8f40-000000000001"
	if code, _, _ := testutil.Get(t, c, front.URL("http", "/chain"), "x-request-id", id); code != 200 {
		t.Fatalf("status %d", code)
	}
	if got := rec.get("x-request-id"); got != packed(id, '9') || rec.get("x-b3-sampled") != "1" {
		t.Fatalf("upstream x-request-id %s sampled %s", got, rec.get("x-b3-sampled"))
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(col.byRequestID(packed(id, '9'))) == 2 },
		"spans of the chained request: %+v", col.all())
	sp := col.byRequestID(packed(id, '9'))
	if sp[0].TraceID != sp[1].TraceID {
		t.Errorf("the two proxies' spans are in traces %s and %s", sp[0].TraceID, sp[1].TraceID)
	}

	// Straight to the back proxy (0 %): a sampled id is traced, a fresh one not.
	pre := "0000abce-1b2c-9d3e-8f40-000000000002"
	testutil.Get(t, c, back.URL("http", "/pre"), "x-request-id", pre)
	if rec.get("x-b3-sampled") != "1" || rec.get("x-request-id") != pre {
		t.Errorf("pre-sampled id: sampled %s, id %s", rec.get("x-b3-sampled"), rec.get("x-request-id"))
	}
	fresh := "0000abcf-1b2c-4d3e-8f40-000000000003"
	testutil.Get(t, c, back.URL("http", "/fresh"), "x-request-id", fresh)
	if rec.get("x-b3-sampled") != "0" || rec.get("x-request-id") != fresh {
		t.Errorf("fresh id: sampled %s, id %s", rec.get("x-b3-sampled"), rec.get("x-request-id"))
	}

	// pack_trace_reason: false — 100 % sampling leaves the id as it came,
	// and at 0 % a '9' in the id means nothing.
	noPack := `request_id_extension: {typed_config: {"@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, pack_trace_reason: false}}`
	all := start(t, zipkinCfg(zipkinTracing("100", "")+"\n"+noPack, app.Addr, zs.Addr))
	testutil.Get(t, c, all.URL("http", "/np"), "x-request-id", fresh)
	if rec.get("x-request-id") != fresh || rec.get("x-b3-sampled") != "1" {
		t.Errorf("pack_trace_reason false: upstream id %s sampled %s", rec.get("x-request-id"), rec.get("x-b3-sampled"))
	}
	none := start(t, zipkinCfg(zipkinTracing("0", "")+"\n"+noPack, app.Addr, zs.Addr))
	testutil.Get(t, c, none.URL("http", "/np"), "x-request-id", pre)
	if rec.get("x-b3-sampled") != "0" {
		t.Errorf("pack_trace_reason false: a packed '9' was honoured")
	}

	// use_request_id_for_trace_sampling: false — traced whatever the id.
	noRID := `request_id_extension: {typed_config: {"@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, use_request_id_for_trace_sampling: false}}`
	any := start(t, zipkinCfg(zipkinTracing("0", "")+"\n"+noRID, app.Addr, zs.Addr))
	testutil.Get(t, c, any.URL("http", "/nr"), "x-request-id", fresh)
	if rec.get("x-b3-sampled") != "1" || rec.get("x-request-id") != fresh {
		t.Errorf("use_request_id_for_trace_sampling false: sampled %s id %s", rec.get("x-b3-sampled"), rec.get("x-request-id"))
	}

	// Another request id extension is refused with its path.
	_, err := testutil.TryStartProxy(t, zipkinCfg(zipkinTracing("0", "")+"\n"+`request_id_extension: {typed_config: {"@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig, pack_trace_reason: true}}`, app.Addr, zs.Addr).String(), nil)
	if err != nil {
		t.Errorf("UuidRequestIdConfig refused: %v", err)
	}
	_, err = testutil.TryStartProxy(t, zipkinCfg(zipkinTracing("0", "")+"\n"+`request_id_extension: {typed_config: {"@type": type.googleapis.com/google.protobuf.Struct}}`, app.Addr, zs.Addr).String(), nil)
	if err == nil || !strings.Contains(err.Error(), "request_id_extension.typed_config") {
		t.Errorf("a foreign request id extension: %v", err)
	}
}

// TestTracingForcedAndClientReasons: with random_sampling 0, an internal
// caller's x-envoy-force-trace traces the request (reason 'a', and the
// response carries the x-request-id, as Envoy's mutateResponseHeaders);
// x-client-trace-id traces it at client_sampling 100 (reason 'b');
// overall_sampling 0 untraces both.
func TestTracingForcedAndClientReasons(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	// use_remote_address: loopback callers are internal (x-envoy-force-trace is kept).
	p := start(t, zipkinCfg("use_remote_address: true\n"+zipkinTracing("0", ""), app.Addr, zs.Addr))
	c := testutil.Client()
	id := "0000abd0-1b2c-4d3e-8f40-000000000004"
	_, h, _ := testutil.Get(t, c, p.URL("http", "/force"), "x-request-id", id, "x-envoy-force-trace", "1")
	if got := rec.get("x-request-id"); got != packed(id, 'a') || rec.get("x-b3-sampled") != "1" {
		t.Errorf("forced: upstream id %s sampled %s", got, rec.get("x-b3-sampled"))
	}
	if h.Get("x-request-id") != packed(id, 'a') {
		t.Errorf("forced: response x-request-id %q", h.Get("x-request-id"))
	}
	testutil.Get(t, c, p.URL("http", "/client"), "x-request-id", id, "x-client-trace-id", "cli-1")
	if got := rec.get("x-request-id"); got != packed(id, 'b') || rec.get("x-b3-sampled") != "1" {
		t.Errorf("client: upstream id %s sampled %s", got, rec.get("x-b3-sampled"))
	}
	off := start(t, zipkinCfg("use_remote_address: true\n"+zipkinTracing("100", ", overall_sampling: {value: 0}"), app.Addr, zs.Addr))
	testutil.Get(t, c, off.URL("http", "/off"), "x-request-id", id, "x-envoy-force-trace", "1")
	if got := rec.get("x-request-id"); got != id || rec.get("x-b3-sampled") != "0" {
		t.Errorf("overall 0: upstream id %s sampled %s", got, rec.get("x-b3-sampled"))
	}
}

// TestTracingRuntimeSamplingKeys: tracing.random_sampling in the runtime
// overrides random_sampling (an integer percentage is over 100, applied
// to the id's value mod 10000 as Envoy's featureEnabled does).
func TestTracingRuntimeSamplingKeys(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	c0 := zipkinCfg(zipkinTracing("0", ""), app.Addr, zs.Addr)
	c0.extra = "layered_runtime: {layers: [{name: static, static_layer: {tracing.zipkin.min_flush_spans: 1, tracing.random_sampling: 100}}]}\n"
	p := start(t, c0)
	id := "0000abd1-1b2c-4d3e-8f40-000000000005"
	testutil.Get(t, testutil.Client(), p.URL("http", "/rt"), "x-request-id", id)
	if rec.get("x-b3-sampled") != "1" || rec.get("x-request-id") != packed(id, '9') {
		t.Errorf("runtime 100 %%: sampled %s id %s", rec.get("x-b3-sampled"), rec.get("x-request-id"))
	}
}

// TestTracingMetadataCustomTags: custom tags of kind request (dynamic
// metadata from set_metadata), route, cluster and host appear on the
// exported span with their values, a list as JSON, a nested path, and a
// missing key as its default_value; verbose adds Envoy's timing
// annotations to the Zipkin span.
func TestTracingMetadataCustomTags(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	app := testutil.StartUpstream(t, &headerRecorder{})
	tags := `, verbose: true, custom_tags: [
  {tag: req, metadata: {kind: {request: {}}, metadata_key: {key: acme, path: [{key: tier}]}}},
  {tag: route, metadata: {kind: {route: {}}, metadata_key: {key: team, path: [{key: owner}, {key: name}]}}},
  {tag: cluster, metadata: {kind: {cluster: {}}, metadata_key: {key: ops, path: [{key: zones}]}}},
  {tag: host, metadata: {kind: {host: {}}, metadata_key: {key: hw, path: [{key: cores}]}}},
  {tag: missing, metadata: {kind: {route: {}}, metadata_key: {key: team, path: [{key: nope}]}, default_value: dflt}},
  {tag: nodefault, metadata: {kind: {request: {}}, metadata_key: {key: nothere, path: [{key: x}]}}}]`
	hcm := zipkinTracing("100", strings.ReplaceAll(tags, "\n", "")) + "\n" +
		`http_filters: [{name: envoy.filters.http.set_metadata, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config, metadata: [{metadata_namespace: acme, value: {tier: gold}}]}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
	h, port, _ := strings.Cut(app.Addr, ":")
	c := cfg{
		hcm:    hcm,
		vhosts: vhost(`{match: {prefix: "/"}, route: {cluster: app}, metadata: {filter_metadata: {team: {owner: {name: payments}}}}}`),
		clusters: fmt.Sprintf(`[{name: app, connect_timeout: 1s, type: STATIC, metadata: {filter_metadata: {ops: {zones: [a, b]}}}, load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}, metadata: {filter_metadata: {hw: {cores: 8}}}}]}]}}, %s]`,
			h, port, staticCluster("zipkin", "", zs.Addr)),
		extra: flushAtOnce,
	}
	p := start(t, c)
	id := "0000abd2-1b2c-4d3e-8f40-000000000006"
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/meta"), "x-request-id", id); code != 200 {
		t.Fatalf("status %d", code)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(col.byRequestID(packed(id, '9'))) == 1 }, "no span: %+v", col.all())
	s := col.byRequestID(packed(id, '9'))[0]
	for k, v := range map[string]string{"req": "gold", "route": "payments", "cluster": `["a","b"]`, "host": "8", "missing": "dflt"} {
		if s.Tags[k] != v {
			t.Errorf("tag %s = %q, want %q (tags %v)", k, s.Tags[k], v, s.Tags)
		}
	}
	if _, ok := s.Tags["nodefault"]; ok {
		t.Errorf("a tag without value or default was set: %q", s.Tags["nodefault"])
	}
	events := map[string]bool{}
	for _, a := range s.Annotations {
		events[a.Value] = true
	}
	for _, e := range []string{"first_upstream_tx_byte_sent", "first_upstream_rx_byte_received", "last_downstream_tx_byte_sent"} {
		if !events[e] {
			t.Errorf("verbose: no %s annotation (%v)", e, s.Annotations)
		}
	}
}

// TestTracingZipkinChildSpans: with spawn_upstream_span the Zipkin
// tracer gives the upstream request a CLIENT span "router app egress",
// child of the SERVER downstream span, whose context goes upstream; the
// router's start_child_span does the same on an ingress listener with a
// child that shares the downstream span's id (shared_span_context), as
// Envoy's Zipkin getAnnotation does.
func TestTracingZipkinChildSpans(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	c := testutil.Client()

	p := start(t, zipkinCfg(zipkinTracing("100", ", spawn_upstream_span: true"), app.Addr, zs.Addr))
	id := "0000abd3-1b2c-4d3e-8f40-000000000007"
	testutil.Get(t, c, p.URL("http", "/spawn"), "x-request-id", id)
	// The upstream span carries no guid:x-request-id (Envoy's
	// finalizeUpstreamSpan): it is found by trace.
	byTrace := func(id string) []zSpan {
		var out []zSpan
		for _, d := range col.byRequestID(id) {
			for _, s := range col.all() {
				if s.TraceID == d.TraceID {
					out = append(out, s)
				}
			}
		}
		return out
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(byTrace(packed(id, '9'))) == 2 }, "spans: %+v", col.all())
	var down, up zSpan
	for _, s := range byTrace(packed(id, '9')) {
		if s.Kind == "CLIENT" {
			up = s
		} else {
			down = s
		}
	}
	if down.Kind != "SERVER" || up.Name != "router app egress" || up.ParentID != down.ID || up.TraceID != down.TraceID || up.ID == down.ID {
		t.Errorf("spawn_upstream_span: downstream %+v, upstream %+v", down, up)
	}
	if rec.get("x-b3-spanid") != up.ID || rec.get("x-b3-parentspanid") != down.ID {
		t.Errorf("upstream B3 span %s parent %s, want %s %s", rec.get("x-b3-spanid"), rec.get("x-b3-parentspanid"), up.ID, down.ID)
	}
	if up.Tags["upstream_address"] != app.Addr || up.Tags["http.status_code"] != "200" {
		t.Errorf("upstream span tags %v", up.Tags)
	}

	routerChild := zipkinCfg(zipkinTracing("100", "")+"\n"+`http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, start_child_span: true}}]`, app.Addr, zs.Addr)
	q := start(t, routerChild)
	id2 := "0000abd4-1b2c-4d3e-8f40-000000000008"
	testutil.Get(t, c, q.URL("http", "/child"), "x-request-id", id2, "x-b3-traceid", "463ac35c9f6413ad", "x-b3-spanid", "a2fb4a1d1a96d312", "x-b3-sampled", "1")
	testutil.Eventually(t, 10*time.Second, func() bool { return len(byTrace(packed(id2, '9'))) == 2 }, "spans: %+v", col.all())
	names := map[string]zSpan{}
	for _, s := range byTrace(packed(id2, '9')) {
		names[s.Name] = s
	}
	child, ok := names["router app egress"]
	if !ok || child.Kind != "SERVER" || child.TraceID != "463ac35c9f6413ad" || child.ID != "a2fb4a1d1a96d312" || !child.Shared {
		t.Errorf("start_child_span: spans %+v", names)
	}
}

// TestTracingZipkinFlushRuntime: tracing.zipkin.min_flush_spans and
// tracing.zipkin.flush_interval_ms are read from the runtime: with 3 and
// an interval of 10 minutes, two finished spans wait, the third sends
// all three in one report.
func TestTracingZipkinFlushRuntime(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	app := testutil.StartUpstream(t, &headerRecorder{})
	c := zipkinCfg(zipkinTracing("100", ""), app.Addr, zs.Addr)
	c.extra = "layered_runtime: {layers: [{name: static, static_layer: {tracing.zipkin.min_flush_spans: 3, tracing.zipkin.flush_interval_ms: 600000, tracing.zipkin.request_timeout: 2000}}]}\n"
	p := start(t, c)
	cl := testutil.Client()
	for i := 0; i < 2; i++ {
		testutil.Get(t, cl, p.URL("http", "/f"))
	}
	time.Sleep(700 * time.Millisecond)
	if n := len(col.all()); n != 0 {
		t.Fatalf("%d spans sent before min_flush_spans (3) were finished", n)
	}
	testutil.Get(t, cl, p.URL("http", "/f"))
	testutil.Eventually(t, 5*time.Second, func() bool { return len(col.all()) == 3 }, "collector has %d spans", len(col.all()))
	col.mu.Lock()
	reports := col.reports
	col.mu.Unlock()
	if reports != 1 {
		t.Errorf("%d reports, want one batch of 3", reports)
	}
}

// TestTracingVerboseRefusedWithDatadog: Datadog spans carry no events,
// so verbose is refused with its path rather than ignored.
func TestTracingVerboseRefusedWithDatadog(t *testing.T) {
	c := cfg{
		hcm:      `tracing: {verbose: true, provider: {name: envoy.tracers.datadog, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: app, service_name: s}}}`,
		vhosts:   vhost(`{match: {prefix: "/"}, route: {cluster: app}}`),
		clusters: "[" + staticCluster("app", "", "127.0.0.1:1") + "]",
	}
	_, err := testutil.TryStartProxy(t, c.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "tracing.verbose") {
		t.Fatalf("error %v, want one naming tracing.verbose", err)
	}
}

// TestTracingSpanPerAttempt: with spawn_upstream_span every upstream
// request gets its own span, a retried one too (Envoy's router spans each
// UpstreamRequest): the first attempt's span has the upstream's 503 and
// the second's the 200, each with its own span id sent upstream.
func TestTracingSpanPerAttempt(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	var n atomic.Int32
	var sent sync.Map
	app := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := n.Add(1)
		sent.Store(k, r.Header.Get("x-b3-spanid"))
		if k == 1 {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte("ok"))
	}))
	c := zipkinCfg(zipkinTracing("100", ", spawn_upstream_span: true"), app.Addr, zs.Addr)
	c.vhosts = vhost(`{match: {prefix: "/"}, route: {cluster: app, retry_policy: {retry_on: 5xx, num_retries: 1}}}`)
	p := start(t, c)
	id := "0000abd5-1b2c-4d3e-8f40-000000000009"
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/retry"), "x-request-id", id); code != 200 {
		t.Fatalf("status %d, want the retry's 200", code)
	}
	var trace string
	testutil.Eventually(t, 10*time.Second, func() bool {
		d := col.byRequestID(packed(id, '9'))
		if len(d) == 0 {
			return false
		}
		trace = d[0].TraceID
		k := 0
		for _, s := range col.all() {
			if s.TraceID == trace && s.Kind == "CLIENT" {
				k++
			}
		}
		return k == 2
	}, "spans: %+v", col.all())
	byID := map[string]zSpan{}
	for _, s := range col.all() {
		if s.TraceID == trace && s.Kind == "CLIENT" {
			byID[s.ID] = s
		}
	}
	first, _ := sent.Load(int32(1))
	second, _ := sent.Load(int32(2))
	a, b := byID[first.(string)], byID[second.(string)]
	if a.Tags["http.status_code"] != "503" || b.Tags["http.status_code"] != "200" || a.ID == b.ID {
		t.Errorf("attempt spans: first %+v, second %+v", a, b)
	}
	if b.Tags["retry.count"] != "1" {
		t.Errorf("the retry's span has retry.count %q, want 1", b.Tags["retry.count"])
	}
}

// TestTracingRouteOverrides: a route's tracing replaces the connection
// manager's sampling percentages for its requests (an unset one is
// 100 %, as Envoy's RouteTracingImpl), and its custom tags are set after
// the connection manager's, a tag of the same name winning — the route
// tracing Istio writes on every route.
func TestTracingRouteOverrides(t *testing.T) {
	col := &zipkinCollector{}
	zs := testutil.StartUpstream(t, col)
	rec := &headerRecorder{}
	app := testutil.StartUpstream(t, rec)
	c := zipkinCfg(zipkinTracing("0", `, custom_tags: [{tag: team, literal: {value: hcm}}, {tag: kept, literal: {value: yes}}, {tag: kept, literal: {value: second}}, {tag: gone, literal: {value: hcm}}, {tag: empty, request_header: {name: x-none}}]`), app.Addr, zs.Addr)
	c.vhosts = vhost(`{match: {prefix: "/all"}, route: {cluster: app}, tracing: {custom_tags: [{tag: team, literal: {value: route}}, {tag: who, request_header: {name: x-who, default_value: anon}}, {tag: gone, metadata: {kind: {request: {}}, metadata_key: {key: nope, path: [{key: x}]}}}]}},
	  {match: {prefix: "/none"}, route: {cluster: app}, tracing: {random_sampling: {numerator: 0}, overall_sampling: {numerator: 100}}},
	  {match: {prefix: "/half"}, route: {cluster: app}, tracing: {random_sampling: {numerator: 5000, denominator: TEN_THOUSAND}}},
	  {match: {prefix: "/"}, route: {cluster: app}}`)
	p := start(t, c)
	cl := testutil.Client()
	get := func(path, id string, hdr ...string) {
		t.Helper()
		if code, _, _ := testutil.Get(t, cl, p.URL("http", path), append([]string{"x-request-id", id}, hdr...)...); code != 200 {
			t.Fatalf("%s: status %d", path, code)
		}
	}
	ids := requestIDs(24)
	// /all: the route's unset random_sampling is 100 % (the connection
	// manager's is 0).
	get("/all", ids[0], "x-who", "ana")
	if got := rec.get("x-request-id"); got != packed(ids[0], '9') {
		t.Errorf("/all: upstream x-request-id %s, want it sampled (%s)", got, packed(ids[0], '9'))
	}
	// / has no route tracing: the connection manager's 0 %.
	get("/", ids[1])
	if got := rec.get("x-request-id"); got != packed(ids[1], '4') {
		t.Errorf("/: upstream x-request-id %s, want it not sampled", got)
	}
	// /none: the route's random_sampling 0 % (its overall_sampling
	// 100 %): a fresh id is not sampled.
	get("/none", ids[2])
	if got := rec.get("x-request-id"); got != packed(ids[2], '4') {
		t.Errorf("/none: upstream x-request-id %s, want it not sampled", got)
	}
	// /half: the route's 50 % decides, as Envoy computes it.
	sampled := 0
	for _, id := range ids[3:] {
		get("/half", id)
		want := packed(id, '4')
		if sampledAt(id, 50) {
			want = packed(id, '9')
			sampled++
		}
		if got := rec.get("x-request-id"); got != want {
			t.Errorf("/half %s: upstream x-request-id %s, want %s", id, got, want)
		}
	}
	if sampled == 0 || sampled == len(ids)-3 {
		t.Fatalf("the ids do not exercise both decisions at 50 %% (%d of %d sampled)", sampled, len(ids)-3)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(col.byRequestID(packed(ids[0], '9'))) == 1 }, "no span for /all: %+v", col.all())
	s := col.byRequestID(packed(ids[0], '9'))[0]
	for k, v := range map[string]string{"team": "route", "kept": "yes", "who": "ana"} {
		if s.Tags[k] != v {
			t.Errorf("/all span tag %s = %q, want %q (tags %v)", k, s.Tags[k], v, s.Tags)
		}
	}
	// The route's "gone" has no value: it still takes the place of the
	// connection manager's; an empty header value sets no tag.
	for _, k := range []string{"gone", "empty"} {
		if v, ok := s.Tags[k]; ok {
			t.Errorf("/all span has tag %s = %q, want none", k, v)
		}
	}
}
