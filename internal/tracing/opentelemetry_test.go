package tracing_test

import (
	"encoding/hex"
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/tracing"
)

// compileOTel compiles an HCM tracing block (YAML) whose provider is the
// OpenTelemetry tracer with the given typed_config fields.
func compileOTel(t *testing.T, tracingFields, otelFields string) (*tracing.Config, error) {
	t.Helper()
	y := tracingFields + `
provider:
  name: envoy.tracers.opentelemetry
  typed_config:
    "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
` + indent(otelFields, "    ")
	var tr hcmv3.HttpConnectionManager_Tracing
	if _, err := config.Decode([]byte(y), &tr, "tracing"); err != nil {
		t.Fatalf("decode %s: %v", y, err)
	}
	return tracing.Compile(&tr, "tracing", &tracing.Context{Stats: stats.NewStore()}, false)
}

func indent(s, by string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

const grpcService = `grpc_service: {envoy_grpc: {cluster_name: otel}, timeout: 1s}`

func TestOpenTelemetryConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, tracing, otel, want string
	}{
		{"both exporters", "", grpcService + "\nhttp_service: {http_uri: {uri: 'http://c/v1/traces', cluster: otel, timeout: 1s}}",
			"cannot have both gRPC and HTTP exporters"},
		{"google_grpc default credentials", "", `grpc_service: {google_grpc: {target_uri: "127.0.0.1:4317", stat_prefix: otel, channel_credentials: {google_default: {}}}}`,
			"tracing.provider.typed_config.grpc_service.google_grpc.channel_credentials"},
		{"no cluster", "", `grpc_service: {envoy_grpc: {cluster_name: ""}}`, "grpc_service.envoy_grpc.cluster_name"},
		{"grpc retry policy", "", `grpc_service: {envoy_grpc: {cluster_name: otel}, retry_policy: {num_retries: 2}}`,
			"grpc_service.retry_policy"},
		{"http without timeout", "", `http_service: {http_uri: {uri: 'http://c/v1/traces', cluster: otel}}`,
			"http_service.http_uri.timeout"},
		{"http formatter header", "", "http_service:\n  http_uri: {uri: 'http://c/v1/traces', cluster: otel, timeout: 1s}\n  request_headers_to_add: [{header: {key: authorization, value: '%ENV(TOKEN)%'}}]",
			"http_service.request_headers_to_add[0].header.value: substitution formatters"},
		{"custom exporter", "", "exporter: {name: x, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig}}",
			"tracing.provider.typed_config.exporter"},
		{"ratio sampler", "", grpcService + "\nsampler: {name: envoy.tracers.opentelemetry.samplers.trace_id_ratio_based, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.TraceIdRatioBasedSamplerConfig, sampling_percentage: {numerator: 50}}}",
			"tracing.provider.typed_config.sampler.typed_config: @type envoy.extensions.tracers.opentelemetry.samplers.v3.TraceIdRatioBasedSamplerConfig (Envoy extension envoy.tracers.opentelemetry.samplers) is not implemented by legate"},
		{"dynatrace detector", "", grpcService + "\nresource_detectors: [{name: envoy.tracers.opentelemetry.resource_detectors.dynatrace, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.DynatraceResourceDetectorConfig}}]",
			"tracing.provider.typed_config.resource_detectors[0].typed_config: @type envoy.extensions.tracers.opentelemetry.resource_detectors.v3.DynatraceResourceDetectorConfig (Envoy extension envoy.tracers.opentelemetry.resource_detectors) is not implemented by legate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := compileOTel(t, c.tracing, c.otel)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestOpenTelemetryConfigAccepted(t *testing.T) {
	for name, otel := range map[string]string{
		"grpc":        grpcService + "\nservice_name: edge\nmax_cache_size: 10",
		"http":        "http_service:\n  http_uri: {uri: 'http://collector:4318/v1/traces', cluster: otel, timeout: 1s}\n  request_headers_to_add: [{header: {key: x-tenant, value: a}}]",
		"no exporter": "service_name: quiet",
		"detectors": grpcService + "\nresource_detectors:\n- {name: envoy.tracers.opentelemetry.resource_detectors.environment, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.EnvironmentResourceDetectorConfig}}\n" +
			"- {name: envoy.tracers.opentelemetry.resource_detectors.static_config, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.StaticConfigResourceDetectorConfig, attributes: {k8s.pod.name: p1}}}",
		"always on": grpcService + "\nsampler: {name: envoy.tracers.opentelemetry.samplers.always_on, typed_config: {'@type': type.googleapis.com/envoy.extensions.tracers.opentelemetry.samplers.v3.AlwaysOnSamplerConfig}}",
	} {
		if _, err := compileOTel(t, "spawn_upstream_span: true", otel); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The Zipkin tracer spawns child spans too: spawn_upstream_span with it
// is accepted, and the upstream request gets a span of its own.
func TestSpawnUpstreamSpanWithZipkin(t *testing.T) {
	var tr hcmv3.HttpConnectionManager_Tracing
	y := "spawn_upstream_span: true\nprovider: {name: envoy.tracers.zipkin, typed_config: {'@type': type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: z, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON}}"
	if _, err := config.Decode([]byte(y), &tr, "tracing"); err != nil {
		t.Fatal(err)
	}
	c, err := tracing.Compile(&tr, "tracing", &tracing.Context{Stats: stats.NewStore()}, false)
	if err != nil || !c.SpawnUpstream() {
		t.Fatalf("error %v", err)
	}
}

func TestParseTraceparent(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, c := range []struct {
		v       string
		ok      bool
		sampled bool
	}{
		{"00-" + tid + "-" + sid + "-01", true, true},
		{"00-" + tid + "-" + sid + "-00", true, false},
		// Only the sampled bit of the flags counts.
		{"00-" + tid + "-" + sid + "-03", true, true},
		{"00-" + tid + "-" + sid + "-02", true, false},
		// A later version may carry more fields after a '-'.
		{"01-" + tid + "-" + sid + "-01-what-the-future-brings", true, true},
		{"cc-" + tid + "-" + sid + "-01", true, true},
		// Malformed: ignored.
		{"", false, false},
		{"00-" + tid + "-" + sid + "-01-extra", false, false}, // version 00 has exactly four fields
		{"01-" + tid + "-" + sid + "-01x", false, false},      // a later version's extra fields follow a '-'
		{"ff-" + tid + "-" + sid + "-01", false, false},       // version ff is invalid
		{"00-" + strings.ToUpper(tid) + "-" + sid + "-01", false, false},
		{"00-" + tid + "-" + strings.ToUpper(sid) + "-01", false, false},
		{"00-00000000000000000000000000000000-" + sid + "-01", false, false},
		{"00-" + tid + "-0000000000000000-01", false, false},
		{"00-" + tid[:31] + "-" + sid + "-01", false, false},
		{"00-" + tid + "-" + sid + "-1", false, false},
		{"00_" + tid + "-" + sid + "-01", false, false},
		{"0x-" + tid + "-" + sid + "-01", false, false},
		{"00-" + tid + "-" + sid + "-0g", false, false},
		{"00-" + tid + "x" + sid[1:] + "-01", false, false},
		{"invalid00-0000000000000003-01", false, false},
	} {
		tp, ok := tracing.ParseTraceparent(c.v)
		if ok != c.ok {
			t.Errorf("%q: ok %v, want %v", c.v, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		if tp.Sampled != c.sampled || hex.EncodeToString(tp.TraceID[:]) != tid || hex.EncodeToString(tp.SpanID[:]) != sid {
			t.Errorf("%q: parsed %x %x sampled %v", c.v, tp.TraceID, tp.SpanID, tp.Sampled)
		}
	}
}

// request builds a request with the given headers (name, value pairs).
// request is a request with headers and the x-request-id the connection
// manager gives every request (the sampling decision is derived from it).
func request(hdr ...string) *headers.Request {
	r := &headers.Request{Method: "GET", Path: "/p", Authority: "svc"}
	r.Map.Add("x-request-id", "6f1a0f4e-7a1b-4c9e-9d7e-0f7c1e2d3a4b")
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Map.Add(hdr[i], hdr[i+1])
	}
	return r
}

// traceparent splits an injected traceparent into trace id, span id and
// flags, failing the test on a malformed one.
func traceparent(t *testing.T, r *headers.Request) (tid, sid, flags string) {
	t.Helper()
	v := r.Map.Get("traceparent")
	if _, ok := tracing.ParseTraceparent(v); !ok || !strings.HasPrefix(v, "00-") {
		t.Fatalf("injected traceparent %q", v)
	}
	p := strings.Split(v, "-")
	return p[1], p[2], p[3]
}

func TestOpenTelemetryPropagation(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cfg, err := compileOTel(t, "random_sampling: {value: 100}", grpcService)
	if err != nil {
		t.Fatal(err)
	}
	info := &streaminfo.Info{}

	// A valid context: same trace, a new span id, the caller's flags and
	// tracestate (two fields joined as one list).
	r := request("traceparent", "00-"+tid+"-"+sid+"-01", "tracestate", "a=1", "tracestate", "b=2")
	sp := cfg.Start(r, info, "", false)
	gotT, gotS, flags := traceparent(t, r)
	if gotT != tid || gotS == sid || flags != "01" || !sp.Sampled() {
		t.Errorf("continued trace: traceparent %q (sampled %v)", r.Map.Get("traceparent"), sp.Sampled())
	}
	if r.Map.Get("tracestate") != "a=1,b=2" {
		t.Errorf("tracestate %q", r.Map.Values("tracestate"))
	}

	// The caller did not sample: neither does the proxy.
	r = request("traceparent", "00-"+tid+"-"+sid+"-00")
	sp = cfg.Start(r, info, "", false)
	if _, _, flags := traceparent(t, r); flags != "00" || sp.Sampled() {
		t.Errorf("unsampled caller: %q sampled %v", r.Map.Get("traceparent"), sp.Sampled())
	}

	// Malformed: ignored, with its tracestate; a new trace starts.
	for _, bad := range []string{"00-" + strings.ToUpper(tid) + "-" + sid + "-01", "garbage", "00-" + tid + "-0000000000000000-01"} {
		r = request("traceparent", bad, "tracestate", "a=1")
		sp = cfg.Start(r, info, "", false)
		gotT, _, flags := traceparent(t, r)
		if gotT == tid || gotT == strings.ToUpper(tid) || flags != "01" || !sp.Sampled() || r.Map.Has("tracestate") {
			t.Errorf("malformed %q: sent %q tracestate %q", bad, r.Map.Get("traceparent"), r.Map.Values("tracestate"))
		}
	}
	// Two traceparent fields are malformed too.
	r = request("traceparent", "00-"+tid+"-"+sid+"-01", "traceparent", "00-"+tid+"-"+sid+"-01")
	cfg.Start(r, info, "", false)
	if gotT, _, _ := traceparent(t, r); gotT == tid || len(r.Map.Values("traceparent")) != 1 {
		t.Errorf("duplicate traceparent: %q", r.Map.Values("traceparent"))
	}

	// The connection manager's "no" wins over a sampled caller.
	off, err := compileOTel(t, "random_sampling: {value: 0}", grpcService)
	if err != nil {
		t.Fatal(err)
	}
	r = request("traceparent", "00-"+tid+"-"+sid+"-01")
	sp = off.Start(r, info, "", false)
	if gotT, _, flags := traceparent(t, r); gotT != tid || flags != "00" || sp.Sampled() {
		t.Errorf("random_sampling 0: %q sampled %v", r.Map.Get("traceparent"), sp.Sampled())
	}
	// x-envoy-force-trace (internal request) samples anyway.
	r = request("x-envoy-force-trace", "1")
	if sp = off.Start(r, info, "", true); !sp.Sampled() {
		t.Errorf("x-envoy-force-trace was not sampled: %q", r.Map.Get("traceparent"))
	}
}

// With spawn_upstream_span the upstream request carries the child span's
// id, not the downstream span's.
func TestOpenTelemetryUpstreamSpanContext(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cfg, err := compileOTel(t, "spawn_upstream_span: true", grpcService)
	if err != nil {
		t.Fatal(err)
	}
	r := request("traceparent", "00-"+tid+"-"+sid+"-01")
	sp := cfg.Start(r, &streaminfo.Info{}, "", false)
	// Nothing is injected until the upstream span exists.
	if r.Map.Get("traceparent") != "00-"+tid+"-"+sid+"-01" {
		t.Fatalf("traceparent changed before the upstream span: %q", r.Map.Get("traceparent"))
	}
	up := cfg.StartUpstream(sp, r, "backend")
	if up == nil {
		t.Fatal("no upstream span")
	}
	gotT, upID, _ := traceparent(t, r)
	down := request()
	sp.Inject(&down.Map)
	_, downID, _ := traceparent(t, down)
	if gotT != tid || upID == downID || upID == sid {
		t.Errorf("upstream traceparent %q, downstream span %s", r.Map.Get("traceparent"), downID)
	}
}
