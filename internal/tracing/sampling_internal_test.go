package tracing

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

const zipkinProvider = `provider: {name: envoy.tracers.zipkin, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: z, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON}}`

func compileYAML(t *testing.T, y string, rt *runtime.Loader) (*Config, error) {
	t.Helper()
	var tr hcmv3.HttpConnectionManager_Tracing
	if _, err := config.Decode([]byte(y), &tr, "tracing"); err != nil {
		t.Fatal(err)
	}
	return Compile(&tr, "tracing", &Context{Stats: stats.NewStore(), Runtime: rt}, false)
}

func mustCompile(t *testing.T, y string, rt *runtime.Loader) *Config {
	t.Helper()
	c, err := compileYAML(t, y, rt)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRequestIDPacking(t *testing.T) {
	for _, tc := range []struct {
		id     string
		n      uint64
		ok     bool
		reason Reason
	}{
		{"0000abcd-1b2c-4d3e-8f40-000000000001", 0xabcd, true, NotTraceable},
		{"0000abcd-1b2c-9d3e-8f40-000000000001", 0xabcd, true, Sampling},
		{"0000abcd-1b2c-ad3e-8f40-000000000001", 0xabcd, true, ServiceForced},
		{"0000abcd-1b2c-bd3e-8f40-000000000001", 0xabcd, true, ClientForced},
		{"ffffffff", 0xffffffff, true, NotTraceable}, // an integer, no reason (not 36 long)
		{"short", 0, false, NotTraceable},
		{"zzzzzzzz-1b2c-9d3e-8f40-000000000001", 0, false, Sampling},
		{"", 0, false, NotTraceable},
	} {
		n, ok := RequestIDInteger(tc.id)
		if n != tc.n || ok != tc.ok {
			t.Errorf("RequestIDInteger(%q) = %d %v, want %d %v", tc.id, n, ok, tc.n, tc.ok)
		}
		if r := TraceReasonOf(tc.id); r != tc.reason {
			t.Errorf("TraceReasonOf(%q) = %v, want %v", tc.id, r, tc.reason)
		}
	}
	id := "0000abcd-1b2c-4d3e-8f40-000000000001"
	for r, c := range map[Reason]byte{Sampling: '9', ServiceForced: 'a', ClientForced: 'b', NotTraceable: '4'} {
		got := WithTraceReason(id, r)
		if got[14] != c || got[:14] != id[:14] || got[15:] != id[15:] || TraceReasonOf(got) != r {
			t.Errorf("WithTraceReason(%v) = %s", r, got)
		}
	}
	if got := WithTraceReason("not-a-uuid", Sampling); got != "not-a-uuid" {
		t.Errorf("a non-UUID id was changed: %s", got)
	}
}

// Decide is Envoy's mutateTracingRequestHeader, case by case.
func TestDecide(t *testing.T) {
	fresh := "00001388-1b2c-4d3e-8f40-000000000001" // 0x1388 = 5000: result 5000
	low := "00000064-1b2c-4d3e-8f40-000000000001"   // 100: result 100
	for _, tc := range []struct {
		name, tracing string
		runtime       map[string]string
		hdrs          []string
		internal      bool
		pack, rid     bool
		want          Reason
		wantID        string
	}{
		{name: "100 % samples, packed", tracing: "random_sampling: {value: 100}", hdrs: []string{"x-request-id", fresh}, want: Sampling, wantID: WithTraceReason(fresh, Sampling)},
		{name: "50 % and result 5000 is not sampled", tracing: "random_sampling: {value: 50}", hdrs: []string{"x-request-id", fresh}, want: NotTraceable, wantID: fresh},
		{name: "50.01 % and result 5000 is sampled", tracing: "random_sampling: {value: 50.01}", hdrs: []string{"x-request-id", fresh}, want: Sampling, wantID: WithTraceReason(fresh, Sampling)},
		{name: "1 % and result 100 is not", tracing: "random_sampling: {value: 1}", hdrs: []string{"x-request-id", low}, want: NotTraceable, wantID: low},
		{name: "1.01 % and result 100 is", tracing: "random_sampling: {value: 1.01}", hdrs: []string{"x-request-id", low}, want: Sampling, wantID: WithTraceReason(low, Sampling)},
		{name: "a packed decision is kept at 0 %", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", WithTraceReason(fresh, Sampling)}, want: Sampling, wantID: WithTraceReason(fresh, Sampling)},
		{name: "packed, but pack_trace_reason off", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", WithTraceReason(fresh, Sampling)}, pack: false, rid: true, want: NotTraceable, wantID: WithTraceReason(fresh, Sampling)},
		{name: "pack off: nothing written", tracing: "random_sampling: {value: 100}", hdrs: []string{"x-request-id", fresh}, pack: false, rid: true, want: Sampling, wantID: fresh},
		{name: "no request id", tracing: "random_sampling: {value: 100}", want: NotTraceable},
		{name: "not hex", tracing: "random_sampling: {value: 100}", hdrs: []string{"x-request-id", "request-one"}, want: NotTraceable, wantID: "request-one"},
		{name: "not a UUID, sampled, unchanged", tracing: "random_sampling: {value: 100}", hdrs: []string{"x-request-id", "00000001"}, want: Sampling, wantID: "00000001"},
		{name: "use_request_id_for_trace_sampling off", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", fresh}, pack: true, rid: false, want: Sampling, wantID: fresh},
		{name: "client trace id", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", fresh, "x-client-trace-id", "c"}, want: ClientForced, wantID: WithTraceReason(fresh, ClientForced)},
		{name: "client trace id at client_sampling 0", tracing: "random_sampling: {value: 0}\nclient_sampling: {value: 0}", hdrs: []string{"x-request-id", fresh, "x-client-trace-id", "c"}, want: NotTraceable, wantID: fresh},
		{name: "force trace, internal", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", fresh, "x-envoy-force-trace", "1"}, internal: true, want: ServiceForced, wantID: WithTraceReason(fresh, ServiceForced)},
		{name: "force trace, external", tracing: "random_sampling: {value: 0}", hdrs: []string{"x-request-id", fresh, "x-envoy-force-trace", "1"}, want: NotTraceable, wantID: fresh},
		{name: "overall 0 untraces, repacks", tracing: "overall_sampling: {value: 0}", hdrs: []string{"x-request-id", WithTraceReason(fresh, ServiceForced)}, want: NotTraceable, wantID: fresh},
		{name: "runtime random_sampling integer", tracing: "random_sampling: {value: 0}", runtime: map[string]string{"tracing.random_sampling": "100"}, hdrs: []string{"x-request-id", fresh}, want: Sampling, wantID: WithTraceReason(fresh, Sampling)},
		{name: "runtime random_sampling 50 (of 100: 5000 % 100 = 0)", tracing: "random_sampling: {value: 0}", runtime: map[string]string{"tracing.random_sampling": "50"}, hdrs: []string{"x-request-id", fresh}, want: Sampling, wantID: WithTraceReason(fresh, Sampling)},
		{name: "runtime global_enabled 0", tracing: "random_sampling: {value: 100}", runtime: map[string]string{"tracing.global_enabled": "0"}, hdrs: []string{"x-request-id", fresh}, want: NotTraceable, wantID: fresh},
		{name: "runtime client_enabled 0", tracing: "random_sampling: {value: 0}", runtime: map[string]string{"tracing.client_enabled": "0"}, hdrs: []string{"x-request-id", fresh, "x-client-trace-id", "c"}, want: NotTraceable, wantID: fresh},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rt *runtime.Loader
			if tc.runtime != nil {
				var err error
				if rt, err = runtime.New(nil, nil); err != nil {
					t.Fatal(err)
				}
				if err := rt.SetAdmin(tc.runtime); err != nil {
					t.Fatal(err)
				}
			}
			c := mustCompile(t, tc.tracing+"\n"+zipkinProvider, rt)
			if tc.pack || tc.rid {
				c.SetRequestID(tc.pack, tc.rid)
			}
			var m headers.Map
			for i := 0; i+1 < len(tc.hdrs); i += 2 {
				m.Add(tc.hdrs[i], tc.hdrs[i+1])
			}
			for round := 0; round < 2; round++ { // the same id, the same decision
				mm := m.Clone()
				if got := c.Decide(&mm, tc.internal); got != tc.want {
					t.Errorf("round %d: reason %v, want %v", round, got, tc.want)
				}
				if got := mm.Get("x-request-id"); got != tc.wantID {
					t.Errorf("round %d: x-request-id %q, want %q", round, got, tc.wantID)
				}
			}
		})
	}
}

func TestMetadataCustomTagValues(t *testing.T) {
	dyn, _ := structpb.NewStruct(map[string]any{"s": "v", "b": true, "n": 1.5, "i": 42.0, "big": 1e7, "l": []any{"a", 1.0}, "o": map[string]any{"k": "x"}, "null": nil})
	route, _ := structpb.NewStruct(map[string]any{"a": map[string]any{"b": "deep"}})
	info := &streaminfo.Info{DynamicMetadata: map[string]*structpb.Struct{"ns": dyn}}
	tc := &TagContext{RouteMetadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"r": route}}}
	for _, c := range []struct {
		tag, want string
		set       bool
	}{
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: s}]}}}", "v", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: b}]}}}", "true", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: n}]}}}", "1.5", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: i}]}}}", "42", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: big}]}}}", "1e+07", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: l}]}}}", `["a",1]`, true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: o}]}}}", `{"k":"x"}`, true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: 'null'}]}, default_value: d}}", "d", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: ns, path: [{key: s}, {key: deeper}]}, default_value: d}}", "d", true},
		{"{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: other}}}", "", false},
		{"{tag: t, metadata: {kind: {route: {}}, metadata_key: {key: r, path: [{key: a}, {key: b}]}}}", "deep", true},
		{"{tag: t, metadata: {kind: {cluster: {}}, metadata_key: {key: c}, default_value: no-host}}", "no-host", true},
		{"{tag: t, metadata: {kind: {host: {}}, metadata_key: {key: h}}}", "", false},
	} {
		cfg := mustCompile(t, "custom_tags: ["+c.tag+"]\n"+zipkinProvider, nil)
		got, ok := cfg.metaValue(cfg.tags[0], info, tc)
		if got != c.want || ok != c.set {
			t.Errorf("%s: %q %v, want %q %v", c.tag, got, ok, c.want, c.set)
		}
	}
}

func TestCompileRefusals(t *testing.T) {
	for _, tc := range []struct{ y, path string }{
		{"custom_tags: [{tag: t, metadata: {metadata_key: {key: k}}}]\n" + zipkinProvider, "tracing.custom_tags[0].metadata.kind"},
		{"custom_tags: [{tag: t, metadata: {kind: {host: {}}}}]\n" + zipkinProvider, "tracing.custom_tags[0].metadata.metadata_key.key"},
		{"custom_tags: [{tag: t, value: '%REQ(:METHOD)%'}]\n" + zipkinProvider, "tracing.custom_tags[0]"},
		{"verbose: true\nprovider: {name: envoy.tracers.datadog, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: dd, service_name: s}}", "tracing.verbose"},
	} {
		_, err := compileYAML(t, tc.y, nil)
		if err == nil || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%q: error %v, want one naming %s", tc.y, err, tc.path)
		}
	}
	for _, y := range []string{
		"verbose: true\n" + zipkinProvider,
		"spawn_upstream_span: true\n" + zipkinProvider,
		"spawn_upstream_span: true\nprovider: {name: envoy.tracers.datadog, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: dd, service_name: s}}",
	} {
		if _, err := compileYAML(t, y, nil); err != nil {
			t.Errorf("%q refused: %v", y, err)
		}
	}
	c := mustCompile(t, "provider: {name: envoy.tracers.datadog, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.DatadogConfig, collector_cluster: dd, service_name: s}}", nil)
	if err := c.SetStartChildSpan("x.start_child_span"); err != nil || !c.SpawnUpstream() {
		t.Errorf("start_child_span with Datadog: %v", err)
	}
}

// Zipkin's child spans follow Envoy's getAnnotation and shared context.
func TestZipkinSpawnChild(t *testing.T) {
	z := &zipkin{shared: true}
	req := &headers.Request{}
	req.Map.Add("x-b3-traceid", "463ac35c9f6413ad")
	req.Map.Add("x-b3-spanid", "a2fb4a1d1a96d312")
	req.Map.Add("x-b3-sampled", "1")
	for _, tc := range []struct {
		name                   string
		shared, egress, upSpan bool
		kind                   string
		sameID, parentIsParent bool
	}{
		{"spawn_upstream_span: client, own id", true, false, true, "CLIENT", false, true},
		{"start_child_span, ingress, shared: server, same id", true, false, false, "SERVER", true, false},
		{"start_child_span, ingress, not shared: server, own id", false, false, false, "SERVER", false, true},
		{"start_child_span, egress: client", true, true, false, "CLIENT", false, true},
	} {
		z.shared = tc.shared
		parent := z.Start(req, "down", tc.egress, true).(*zspan)
		child := parent.spawnChild("router c egress", tc.upSpan).(*zspan)
		if child.kind != tc.kind || child.traceID != parent.traceID || !child.sampled || child.name != "router c egress" {
			t.Errorf("%s: child %+v", tc.name, child)
		}
		if (child.id == parent.id) != tc.sameID {
			t.Errorf("%s: child id %s, parent id %s", tc.name, child.id, parent.id)
		}
		if tc.parentIsParent && child.parent != parent.id {
			t.Errorf("%s: child's parent %s, want %s", tc.name, child.parent, parent.id)
		}
	}
}

// The Zipkin runtime keys and annotations.
func TestZipkinRuntimeKeysAndAnnotations(t *testing.T) {
	z := &zipkin{}
	if z.minFlush() != 5 || z.flushInterval() != 5*time.Second || z.requestTimeout() != 5*time.Second {
		t.Errorf("defaults %d %v %v", z.minFlush(), z.flushInterval(), z.requestTimeout())
	}
	rt, err := runtime.New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.SetAdmin(map[string]string{"tracing.zipkin.min_flush_spans": "2", "tracing.zipkin.flush_interval_ms": "250", "tracing.zipkin.request_timeout": "1500"}); err != nil {
		t.Fatal(err)
	}
	z.rt = rt
	if z.minFlush() != 2 || z.flushInterval() != 250*time.Millisecond || z.requestTimeout() != 1500*time.Millisecond {
		t.Errorf("runtime %d %v %v", z.minFlush(), z.flushInterval(), z.requestTimeout())
	}
	s := &zspan{z: z, traceID: "463ac35c9f6413ad", id: "a2fb4a1d1a96d312", name: "n", kind: "SERVER", start: time.Now(), sampled: true, tags: map[string]string{}}
	at := time.UnixMicro(1700000000000000)
	s.Log(at, "first_upstream_tx_byte_sent")
	s.Finish() // queued; one span is below min_flush_spans 2
	z.mu.Lock()
	got := z.pending
	// Nothing left for the flush timer, which would send through the
	// async client this driver lacks.
	z.pending = nil
	z.mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("%d spans pending", len(got))
	}
	as, _ := got[0]["annotations"].([]map[string]any)
	if len(as) != 1 || as[0]["value"] != "first_upstream_tx_byte_sent" || as[0]["timestamp"] != at.UnixMicro() {
		t.Errorf("annotations %v", got[0]["annotations"])
	}
	b, err := protoSpans(got)
	if err != nil || len(b) == 0 {
		t.Errorf("proto encoding with annotations: %v", err)
	}
}

// verbose writes the stream's milestones as events; OpenTelemetry spans
// carry them as span events.
func TestVerboseEvents(t *testing.T) {
	c := mustCompile(t, "verbose: true\nrandom_sampling: {value: 100}\n"+zipkinProvider, nil)
	c.driver = &otel{maxCache: 10, kick: make(chan struct{}, 1), sent: stats.NewStore().Counter("a"), timerFlushed: stats.NewStore().Counter("b"), dropped: stats.NewStore().Counter("c")}
	req := &headers.Request{Method: "GET", Path: "/"}
	req.Map.Add("x-request-id", "00000001-1b2c-4d3e-8f40-000000000001")
	info := &streaminfo.Info{StartTime: time.Now(), FirstUpstreamTxByte: time.Millisecond, LastDownstreamTxByte: 3 * time.Millisecond}
	sp := c.Start(req, info, "", true).(*otelSpan)
	c.Finish(sp, req, info)
	if len(sp.events) != 2 || sp.events[0].Name != "first_upstream_tx_byte_sent" || sp.events[1].Name != "last_downstream_tx_byte_sent" {
		t.Fatalf("events %v", sp.events)
	}
	if want := uint64(info.StartTime.Add(time.Millisecond).UnixNano()); sp.events[0].TimeUnixNano != want {
		t.Errorf("event time %d, want %d", sp.events[0].TimeUnixNano, want)
	}
}

// TestDecideRoute: a route's tracing replaces the connection manager's
// sampling percentages (an unset one is 100 %: Envoy's RouteTracingImpl),
// still under the runtime keys.
func TestDecideRoute(t *testing.T) {
	fresh := "00001388-1b2c-4d3e-8f40-000000000001" // result 5000
	for _, tc := range []struct {
		name, hcm, route string
		hdrs             []string
		want             Reason
	}{
		{"unset route percentages are 100 %", "random_sampling: {value: 0}", "{}", nil, Sampling},
		{"route random 0 over the manager's 100", "random_sampling: {value: 100}", "random_sampling: {numerator: 0}", nil, NotTraceable},
		{"route 50 of HUNDRED: 5000 % 100 = 0 < 50", "random_sampling: {value: 0}", "random_sampling: {numerator: 50}", nil, Sampling},
		{"route 5000 of TEN_THOUSAND: 5000 is not below", "random_sampling: {value: 100}", "random_sampling: {numerator: 5000, denominator: TEN_THOUSAND}", nil, NotTraceable},
		{"route overall 0 untraces", "random_sampling: {value: 100}", "overall_sampling: {numerator: 0}", nil, NotTraceable},
		{"route client 0", "random_sampling: {value: 0}", "{random_sampling: {numerator: 0}, client_sampling: {numerator: 0}}", []string{"x-client-trace-id", "c"}, NotTraceable},
		{"route client 100 (unset)", "random_sampling: {value: 0}\nclient_sampling: {value: 0}", "random_sampling: {numerator: 0}", []string{"x-client-trace-id", "c"}, ClientForced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustCompile(t, tc.hcm+"\n"+zipkinProvider, nil)
			var rt routev3.Tracing
			if _, err := config.Decode([]byte(tc.route), &rt, "tracing"); err != nil {
				t.Fatal(err)
			}
			r, err := CompileRoute(&rt, "route.tracing")
			if err != nil {
				t.Fatal(err)
			}
			m := headers.Map{}
			m.Add("x-request-id", fresh)
			for i := 0; i+1 < len(tc.hdrs); i += 2 {
				m.Add(tc.hdrs[i], tc.hdrs[i+1])
			}
			if got := c.DecideRoute(&m, false, r); got != tc.want {
				t.Errorf("reason %v, want %v", got, tc.want)
			}
		})
	}
	var bad routev3.Tracing
	if _, err := config.Decode([]byte("random_sampling: {numerator: 1, denominator: 7}"), &bad, "t"); err == nil {
		if _, err := CompileRoute(&bad, "route.tracing"); err == nil || !strings.Contains(err.Error(), "route.tracing.random_sampling") {
			t.Errorf("an unknown denominator: %v", err)
		}
	}
}
