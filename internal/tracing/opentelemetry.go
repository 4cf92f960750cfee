package tracing

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	detectorsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/resource_detectors/v3"
	samplersv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/tracers/opentelemetry/samplers/v3"
	coltracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	otlptracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.tracers.opentelemetry", Category: extension.Tracer, Config: &tracev3.OpenTelemetryConfig{},
		Factory: Factory(compileOTel),
		Notes: "W3C trace context; OTLP/gRPC (envoy_grpc) and OTLP/HTTP protobuf export; " +
			"no custom exporter or formatters in http_service headers"})
	extension.Register(extension.Extension{Name: "envoy.tracers.opentelemetry.samplers.always_on", Category: extension.OTelSampler,
		Config: &samplersv3.AlwaysOnSamplerConfig{}, Factory: otelSampler(func(proto.Message) bool { return true })})
	extension.Register(extension.Extension{Name: "envoy.tracers.opentelemetry.resource_detectors.environment", Category: extension.OTelResourceDetector,
		Config: &detectorsv3.EnvironmentResourceDetectorConfig{}, Factory: otelDetector(func(_ proto.Message, attrs map[string]string) {
			for k, v := range parseResourceAttributes(os.Getenv("OTEL_RESOURCE_ATTRIBUTES")) {
				attrs[k] = v
			}
		})})
	extension.Register(extension.Extension{Name: "envoy.tracers.opentelemetry.resource_detectors.static_config", Category: extension.OTelResourceDetector,
		Config: &detectorsv3.StaticConfigResourceDetectorConfig{}, Factory: otelDetector(func(cfg proto.Message, attrs map[string]string) {
			for k, v := range cfg.(*detectorsv3.StaticConfigResourceDetectorConfig).GetAttributes() {
				attrs[k] = v
			}
		})})
}

// otelSampler is the factory of a sampler extension: whether every span is
// sampled regardless of the connection manager's decision (always_on).
type otelSampler func(cfg proto.Message) bool

// otelDetector is the factory of a resource detector extension: it adds
// its attributes to the resource's.
type otelDetector func(cfg proto.Message, attrs map[string]string)

// The OpenTelemetry tracer's defaults (Envoy's).
const (
	// otelServiceName is service.name when service_name is empty.
	otelServiceName = "unknown_service:envoy"
	// otelMaxCache is max_cache_size's default: spans buffered for export.
	otelMaxCache = 1024
	// otelMinFlush and otelFlushInterval are the runtime defaults of
	// tracing.opentelemetry.min_flush_spans and flush_interval_ms.
	otelMinFlush      = 5
	otelFlushInterval = 5000
	// otelExportTimeout bounds an export whose grpc_service sets no
	// timeout, so that a collector that never answers holds no export
	// slot forever (spans pile up to max_cache_size, then drop).
	otelExportTimeout = 5 * time.Second
	// otelSDKName and otelScopeName are telemetry.sdk.name and the
	// instrumentation scope's name, as Envoy sets them.
	otelSDKName   = "envoy"
	otelScopeName = "envoy"
)

// otelExporter sends one ExportTraceServiceRequest.
type otelExporter interface {
	export(req *coltracev1.ExportTraceServiceRequest)
}

// otel is the OpenTelemetry driver: W3C trace context propagation, spans
// buffered (bounded by max_cache_size) and exported in batches over
// OTLP, off the request path.
type otel struct {
	exp      otelExporter
	resource *resourcev1.Resource
	scope    *commonv1.InstrumentationScope
	alwaysOn bool
	maxCache int
	rt       *runtime.Loader
	log      *slog.Logger

	mu      sync.Mutex
	pending []*otlptracev1.Span
	running bool
	kick    chan struct{}

	sent, timerFlushed, dropped *stats.Counter
}

// compileOTel compiles an OpenTelemetryConfig: every field Envoy knows is
// implemented or refused here with its path, none is ignored.
func compileOTel(ctx *Context, msg proto.Message, path string) (Driver, error) {
	c := msg.(*tracev3.OpenTelemetryConfig)
	if err := config.CheckFields(c, path, "grpc_service", "http_service", "service_name", "resource_detectors", "sampler",
		"max_cache_size", "set_telemetry_sdk_resource_attributes", "set_service_name_resource_attribute", "set_instrumentation_scope"); err != nil {
		return nil, err
	}
	if c.GetGrpcService() != nil && c.GetHttpService() != nil {
		return nil, config.Errorf(path, "OpenTelemetry Tracer cannot have both gRPC and HTTP exporters configured")
	}
	log := ctx.Log
	if log == nil {
		log = slog.Default()
	}
	sc := ctx.Stats.Scope("tracing.opentelemetry.")
	o := &otel{maxCache: otelMaxCache, rt: ctx.Runtime, log: log, kick: make(chan struct{}, 1),
		sent: sc.Counter("spans_sent"), timerFlushed: sc.Counter("timer_flushed"), dropped: sc.Counter("spans_dropped")}
	if v := c.GetMaxCacheSize(); v != nil {
		o.maxCache = int(v.GetValue())
	}
	var err error
	switch {
	case c.GetGrpcService() != nil:
		o.exp, err = compileOTLPGRPC(ctx, c.GetGrpcService(), config.Join(path, "grpc_service"), log)
	case c.GetHttpService() != nil:
		o.exp, err = compileOTLPHTTP(ctx, c.GetHttpService(), config.Join(path, "http_service"), sc, log)
	default:
		// Envoy's docs: leaving both empty disables reporting.
		log.Warn("the OpenTelemetry tracer has no exporter (grpc_service or http_service): its spans are not reported", "path", path)
	}
	if err != nil {
		return nil, err
	}
	attrs, err := otelResource(c, path)
	if err != nil {
		return nil, err
	}
	o.resource = &resourcev1.Resource{Attributes: attrs}
	if c.GetSetInstrumentationScope() == nil || c.GetSetInstrumentationScope().GetValue() {
		o.scope = &commonv1.InstrumentationScope{Name: otelScopeName, Version: legateVersion()}
	}
	if s := c.GetSampler(); s != nil {
		r, err := extension.Lookup(extension.OTelSampler, s.GetTypedConfig(), config.Join(path, "sampler.typed_config"))
		if err != nil {
			return nil, err
		}
		o.alwaysOn = r.Ext.Factory.(otelSampler)(r.Config)
	}
	return o, nil
}

// otelResource builds the resource attributes as Envoy's resource
// provider does: service.name and telemetry.sdk.*, then each resource
// detector's attributes in order, a later one overriding an earlier one.
func otelResource(c *tracev3.OpenTelemetryConfig, path string) ([]*commonv1.KeyValue, error) {
	attrs := map[string]string{}
	if c.GetSetServiceNameResourceAttribute() == nil || c.GetSetServiceNameResourceAttribute().GetValue() {
		attrs["service.name"] = or(c.GetServiceName(), otelServiceName)
	}
	if c.GetSetTelemetrySdkResourceAttributes() == nil || c.GetSetTelemetrySdkResourceAttributes().GetValue() {
		// Envoy says cpp; this SDK is written in Go.
		attrs["telemetry.sdk.language"] = "go"
		attrs["telemetry.sdk.name"] = otelSDKName
		attrs["telemetry.sdk.version"] = legateVersion()
	}
	for i, d := range c.GetResourceDetectors() {
		dp := config.Index(config.Join(path, "resource_detectors"), i)
		r, err := extension.Lookup(extension.OTelResourceDetector, d.GetTypedConfig(), config.Join(dp, "typed_config"))
		if err != nil {
			return nil, err
		}
		r.Ext.Factory.(otelDetector)(r.Config, attrs)
	}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	kvs := make([]*commonv1.KeyValue, 0, len(keys))
	for _, k := range keys {
		kvs = append(kvs, stringKV(k, attrs[k]))
	}
	return kvs, nil
}

// parseResourceAttributes reads OTEL_RESOURCE_ATTRIBUTES: comma separated
// key=value pairs, values percent-encoded (the OpenTelemetry SDK
// environment spec). A malformed pair is skipped.
func parseResourceAttributes(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			continue
		}
		if dv, err := percentDecode(v); err == nil {
			v = dv
		}
		out[k] = v
	}
	return out
}

func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape in %q", s)
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", fmt.Errorf("bad escape in %q: %w", s, err)
		}
		b.Write(v)
		i += 2
	}
	return b.String(), nil
}

// legateVersion is telemetry.sdk.version and the scope's version.
func legateVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func stringKV(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

func (o *otel) spawnsChildren() {}
func (o *otel) logsEvents()     {}

// otelSpan is one span. It is a plain struct until it is finished: an
// unsampled span allocates no protobuf.
type otelSpan struct {
	o                *otel
	traceID          [16]byte
	id, parent       [8]byte
	hasParent        bool
	sampled          bool
	kind             otlptracev1.Span_SpanKind
	name, traceState string
	start            time.Time
	attrs            []*commonv1.KeyValue
	status           otlptracev1.Status_StatusCode
	events           []*otlptracev1.Span_Event
	finished         bool
}

// Log adds a span event (Envoy's Span::log, the events verbose writes).
func (s *otelSpan) Log(t time.Time, event string) {
	s.events = append(s.events, &otlptracev1.Span_Event{TimeUnixNano: uint64(t.UnixNano()), Name: event})
}

// Start reads the W3C trace context (traceparent, tracestate) and begins
// the span: in the caller's trace, as a child of its span, when the
// traceparent is valid; as a new trace's root otherwise. A malformed
// traceparent is ignored, and the tracestate with it, as the W3C Trace
// Context spec says (Envoy answers it with a span that traces nothing).
func (o *otel) Start(req *headers.Request, name string, egress, sampled bool) Span {
	var tp Traceparent
	valid := false
	// Two traceparent fields are as malformed as one bad one.
	if v := req.Map.Get("traceparent"); v != "" {
		tp, valid = ParseTraceparent(v)
		valid = valid && len(req.Map.Values("traceparent")) == 1
	}
	// The caller's decision, unless the connection manager said no
	// (Envoy's applyTracingDecision); the always_on sampler samples
	// whatever the caller said.
	if valid && !o.alwaysOn {
		sampled = tp.Sampled && sampled
	}
	var traceState string
	if valid {
		// Several tracestate fields are one list (RFC 7230 3.2.2).
		traceState = strings.Clone(strings.Join(req.Map.Values("tracestate"), ","))
	}
	if !sampled {
		// A span nothing exports needs only its context, for the
		// traceparent the upstream gets: no clock read, no attributes.
		u := &otelUnsampled{id: newSpanID(), traceState: traceState}
		if valid {
			u.traceID = tp.TraceID
		} else {
			u.traceID = newTraceID()
		}
		return u
	}
	// The name is copied when a sampled span is exported (Finish): an
	// unsampled span never outlives the request's bytes.
	s := &otelSpan{o: o, name: name, start: time.Now(), kind: otlptracev1.Span_SPAN_KIND_SERVER, sampled: true, traceState: traceState}
	if egress {
		s.kind = otlptracev1.Span_SPAN_KIND_CLIENT
	}
	s.id = newSpanID()
	if valid {
		s.traceID, s.parent, s.hasParent = tp.TraceID, tp.SpanID, true
	} else {
		s.traceID = newTraceID()
	}
	return s
}

// otelUnsampled is a span the sampling decision turned down: it carries
// the trace context upstream (sampled flag 0) and records nothing.
type otelUnsampled struct {
	traceID    [16]byte
	id         [8]byte
	traceState string
}

// Inject writes traceparent with the sampled flag off, and the
// tracestate the span carries.
func (u *otelUnsampled) Inject(m *headers.Map) {
	injectTraceContext(m, &u.traceID, &u.id, false, u.traceState)
}

// SetTag does nothing: the span is not exported.
func (u *otelUnsampled) SetTag(string, string) {}

// Finish does nothing: the span is not exported.
func (u *otelUnsampled) Finish() {}

// Sampled is false.
func (u *otelUnsampled) Sampled() bool { return false }

// SpawnChild is the upstream request's span, unsampled too, in the same
// trace.
func (u *otelUnsampled) SpawnChild(string) Span {
	return &otelUnsampled{traceID: u.traceID, id: newSpanID(), traceState: u.traceState}
}

// Traceparent is a parsed W3C traceparent header.
type Traceparent struct {
	TraceID [16]byte
	SpanID  [8]byte
	Sampled bool
}

// ParseTraceparent parses a W3C traceparent header
// ("00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>"), reporting
// false for a malformed one: wrong length or separators, hex that is not
// lower case, an all-zero trace or parent id, version ff, or version 00
// with anything after the flags. A later version may append fields after
// a '-' (the spec's forward compatibility).
func ParseTraceparent(v string) (Traceparent, bool) {
	var tp Traceparent
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return tp, false
	}
	ver, tid, sid, flags := v[0:2], v[3:35], v[36:52], v[53:55]
	if !lowerHex(ver) || !lowerHex(tid) || !lowerHex(sid) || !lowerHex(flags) || ver == "ff" {
		return tp, false
	}
	if len(v) > 55 && (ver == "00" || v[55] != '-') {
		return tp, false
	}
	hex.Decode(tp.TraceID[:], []byte(tid))
	hex.Decode(tp.SpanID[:], []byte(sid))
	if tp.TraceID == [16]byte{} || tp.SpanID == [8]byte{} {
		return tp, false
	}
	f, _ := strconv.ParseUint(flags, 16, 8)
	tp.Sampled = f&1 == 1
	return tp, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func newTraceID() (id [16]byte) {
	for id == [16]byte{} {
		putUint64(id[:8], rand.Uint64())
		putUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() (id [8]byte) {
	for id == [8]byte{} {
		putUint64(id[:], rand.Uint64())
	}
	return id
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}

// Inject writes traceparent (version 00, this span as the parent) and the
// tracestate it carries.
func (s *otelSpan) Inject(m *headers.Map) {
	injectTraceContext(m, &s.traceID, &s.id, s.sampled, s.traceState)
}

// injectTraceContext writes the W3C trace context of span id in trace
// traceID: traceparent, and tracestate when there is one (a tracestate
// the request came with and the span does not carry is removed).
func injectTraceContext(m *headers.Map, traceID *[16]byte, id *[8]byte, sampled bool, traceState string) {
	flags := "00"
	if sampled {
		flags = "01"
	}
	// One allocation: the 55 bytes written in place (W3C trace context
	// section 3.2: version-traceid-parentid-flags).
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], traceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], id[:])
	b[52] = '-'
	copy(b[53:], flags)
	m.Set("traceparent", string(b[:]))
	if traceState != "" {
		m.Set("tracestate", traceState)
	} else {
		m.Del("tracestate")
	}
}

// SpawnChild starts the upstream request's span: a client span of the
// same trace, this span its parent, with its sampling and tracestate.
func (s *otelSpan) SpawnChild(name string) Span {
	return &otelSpan{o: s.o, traceID: s.traceID, id: newSpanID(), parent: s.id, hasParent: true, sampled: s.sampled,
		kind: otlptracev1.Span_SPAN_KIND_CLIENT, name: strings.Clone(name), traceState: s.traceState, start: time.Now()}
}

// SetOperation renames the span.
func (s *otelSpan) SetOperation(name string) { s.name = strings.Clone(name) }

// SetTag records a string attribute (a key set twice keeps the last
// value) and derives the span's status as Envoy does: http.status_code
// 5xx is an error, and so is 4xx on a client span; grpc.status_code maps
// as the OpenTelemetry semantic conventions say. Values are copied: spans
// are exported after the request's header bytes were reused.
func (s *otelSpan) SetTag(k, v string) {
	if k == "" {
		return
	}
	switch k {
	case "http.status_code":
		if code, err := strconv.Atoi(v); err == nil && (code >= 500 || (code >= 400 && s.kind == otlptracev1.Span_SPAN_KIND_CLIENT)) {
			s.status = otlptracev1.Status_STATUS_CODE_ERROR
		}
	case "grpc.status_code":
		s.status = grpcStatusCode(s.kind, v)
	}
	for _, kv := range s.attrs {
		if kv.Key == k {
			kv.Value.Value = &commonv1.AnyValue_StringValue{StringValue: strings.Clone(v)}
			return
		}
	}
	s.attrs = append(s.attrs, stringKV(strings.Clone(k), strings.Clone(v)))
}

// grpcStatusCode maps a gRPC status to the span status
// (https://opentelemetry.io/docs/specs/semconv/rpc/grpc/#grpc-status):
// any non-OK code is an error on a client span; on a server span only
// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
// DATA_LOSS are.
func grpcStatusCode(kind otlptracev1.Span_SpanKind, v string) otlptracev1.Status_StatusCode {
	code, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return otlptracev1.Status_STATUS_CODE_UNSET
	}
	if kind == otlptracev1.Span_SPAN_KIND_CLIENT {
		if code == 0 {
			return otlptracev1.Status_STATUS_CODE_UNSET
		}
		return otlptracev1.Status_STATUS_CODE_ERROR
	}
	switch code {
	case 2, 4, 12, 13, 14, 15:
		return otlptracev1.Status_STATUS_CODE_ERROR
	}
	return otlptracev1.Status_STATUS_CODE_UNSET
}

// Sampled says the span is exported.
func (s *otelSpan) Sampled() bool { return s.sampled }

// Finish ends the span and queues a sampled one for export.
func (s *otelSpan) Finish() {
	if s.finished {
		return
	}
	s.finished = true
	if !s.sampled {
		return
	}
	sp := &otlptracev1.Span{
		TraceId: append([]byte(nil), s.traceID[:]...), SpanId: append([]byte(nil), s.id[:]...),
		TraceState: s.traceState, Name: strings.Clone(s.name), Kind: s.kind,
		StartTimeUnixNano: uint64(s.start.UnixNano()), EndTimeUnixNano: uint64(time.Now().UnixNano()),
		Attributes: s.attrs, Events: s.events,
	}
	if s.hasParent {
		sp.ParentSpanId = append([]byte(nil), s.parent[:]...)
	}
	if s.status != otlptracev1.Status_STATUS_CODE_UNSET {
		sp.Status = &otlptracev1.Status{Code: s.status}
	}
	s.o.add(sp)
}

// add buffers a finished span. The buffer holds max_cache_size spans:
// beyond that spans are dropped (spans_dropped), so a collector that is
// slow or gone costs memory up to that bound and never blocks a request.
// min_flush_spans buffered spans are sent at once, the rest every
// flush_interval_ms; one export runs at a time.
func (o *otel) add(sp *otlptracev1.Span) {
	o.mu.Lock()
	if len(o.pending) >= o.maxCache {
		o.mu.Unlock()
		o.dropped.Inc()
		return
	}
	o.pending = append(o.pending, sp)
	n := len(o.pending)
	if !o.running {
		o.running = true
		go o.loop()
	}
	o.mu.Unlock()
	if n >= o.minFlush() {
		select {
		case o.kick <- struct{}{}:
		default:
		}
	}
}

func (o *otel) minFlush() int {
	return int(max(o.rt.Snapshot().Integer("tracing.opentelemetry.min_flush_spans", otelMinFlush), 1))
}

func (o *otel) flushInterval() time.Duration {
	return time.Duration(max(o.rt.Snapshot().Integer("tracing.opentelemetry.flush_interval_ms", otelFlushInterval), 1)) * time.Millisecond
}

// loop exports batches: when min_flush_spans are buffered and when the
// flush timer fires. It runs while spans are buffered and ends once a
// timer tick finds none, so an idle tracer (or one replaced by a config
// update) holds no goroutine.
func (o *otel) loop() {
	timer := time.NewTimer(o.flushInterval())
	defer timer.Stop()
	for {
		byTimer := false
		select {
		case <-o.kick:
		case <-timer.C:
			byTimer = true
		}
		o.mu.Lock()
		var batch []*otlptracev1.Span
		if byTimer || len(o.pending) >= o.minFlush() {
			batch, o.pending = o.pending, nil
		}
		if byTimer && len(batch) == 0 {
			o.running = false
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		if byTimer {
			o.timerFlushed.Inc()
			timer.Reset(o.flushInterval())
		}
		if len(batch) > 0 {
			o.flush(batch)
		}
	}
}

// flush exports one batch as one ResourceSpans (the tracer's resource)
// with one ScopeSpans.
func (o *otel) flush(batch []*otlptracev1.Span) {
	if o.exp == nil {
		return
	}
	req := &coltracev1.ExportTraceServiceRequest{ResourceSpans: []*otlptracev1.ResourceSpans{{
		Resource:   o.resource,
		ScopeSpans: []*otlptracev1.ScopeSpans{{Scope: o.scope, Spans: batch}},
	}}}
	o.sent.Add(uint64(len(batch)))
	o.exp.export(req)
}

// otlpGRPC exports with TraceService.Export over an envoy_grpc cluster.
type otlpGRPC struct {
	async *asyncclient.Client
	svc   *asyncclient.GRPCService
	log   *slog.Logger
}

func compileOTLPGRPC(ctx *Context, gs *corev3.GrpcService, path string, log *slog.Logger) (otelExporter, error) {
	svc, err := asyncclient.CompileGRPCService(gs, path, otelExportTimeout)
	if err != nil {
		return nil, err
	}
	return &otlpGRPC{async: ctx.Async, svc: svc, log: log}, nil
}

// export runs in the tracer's flush loop, never on a request's path.
// Envoy counts no failure of gRPC exports; they are logged.
func (e *otlpGRPC) export(req *coltracev1.ExportTraceServiceRequest) {
	ctx, cancel := e.svc.Context(context.Background())
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, e.svc.Timeout)
	defer cancelT()
	cc, err := e.async.GRPCTo(e.svc.Target)
	if err == nil {
		_, err = coltracev1.NewTraceServiceClient(cc).Export(ctx, req)
	}
	if err != nil {
		e.log.Debug("OpenTelemetry gRPC export failed", "target", e.svc.Target.String(), "error", err)
	}
}

// otlpHTTP POSTs OTLP/HTTP protobuf to an http_service.
type otlpHTTP struct {
	async                    *asyncclient.Client
	cluster, host, path      string
	timeout                  time.Duration
	headers                  []otelHeader
	log                      *slog.Logger
	reportsSent, success, ko *stats.Counter
}

type otelHeader struct {
	name, value string
	action      corev3.HeaderValueOption_HeaderAppendAction
}

func compileOTLPHTTP(ctx *Context, hs *corev3.HttpService, path string, sc stats.Scope, log *slog.Logger) (otelExporter, error) {
	if err := config.CheckFields(hs, path, "http_uri", "request_headers_to_add"); err != nil {
		return nil, err
	}
	up := config.Join(path, "http_uri")
	u := hs.GetHttpUri()
	if err := config.CheckFields(u, up, "uri", "cluster", "timeout"); err != nil {
		return nil, err
	}
	if u.GetCluster() == "" {
		return nil, config.Errorf(config.Join(up, "cluster"), "a cluster is required")
	}
	e := &otlpHTTP{async: ctx.Async, cluster: u.GetCluster(), timeout: u.GetTimeout().AsDuration(), log: log,
		reportsSent: sc.Counter("http_reports_sent"), success: sc.Counter("http_reports_success"), ko: sc.Counter("http_reports_failed")}
	if u.GetTimeout() == nil || e.timeout <= 0 {
		return nil, config.Errorf(config.Join(up, "timeout"), "a timeout greater than 0 is required")
	}
	e.host, e.path = asyncclient.HostPath(u.GetUri())
	for i, h := range hs.GetRequestHeadersToAdd() {
		hp := config.Index(config.Join(path, "request_headers_to_add"), i)
		if err := config.CheckFields(h, hp, "header", "append_action"); err != nil {
			return nil, err
		}
		name, value, err := asyncclient.ServiceHeader(h, hp)
		if err != nil {
			return nil, err
		}
		e.headers = append(e.headers, otelHeader{name: name, value: value, action: h.GetAppendAction()})
	}
	return e, nil
}

// export POSTs the batch (OTLP/HTTP, binary protobuf), in the tracer's
// flush loop. As Envoy, a response of any status counts as
// http_reports_success (a status other than 2xx is logged), a request
// that got no response as http_reports_failed.
func (e *otlpHTTP) export(req *coltracev1.ExportTraceServiceRequest) {
	body, err := proto.Marshal(req)
	if err != nil {
		e.log.Warn("OpenTelemetry export: cannot encode the request", "error", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, "POST", "http://"+e.host+e.path, bytes.NewReader(body))
	if err != nil {
		e.ko.Inc()
		return
	}
	hr.Host = e.host
	hr.Header.Set("Content-Type", "application/x-protobuf")
	// The OTLP exporter spec's User-Agent, as Envoy's.
	hr.Header.Set("User-Agent", "OTel-OTLP-Exporter-Envoy/"+legateVersion())
	for _, h := range e.headers {
		k := http.CanonicalHeaderKey(h.name)
		_, exists := hr.Header[k]
		switch h.action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			hr.Header.Add(k, h.value)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				hr.Header.Set(k, h.value)
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			hr.Header.Set(k, h.value)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				hr.Header.Set(k, h.value)
			}
		}
	}
	e.reportsSent.Inc()
	resp, err := e.async.Do(ctx, e.cluster, hr)
	if err != nil {
		e.ko.Inc()
		e.log.Debug("OpenTelemetry HTTP export failed", "cluster", e.cluster, "error", err)
		return
	}
	// Read the (small) answer so the connection can serve the next export.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	e.success.Inc()
	if resp.StatusCode/100 != 2 {
		e.log.Warn("OpenTelemetry HTTP export: the collector answered "+strconv.Itoa(resp.StatusCode), "cluster", e.cluster)
	}
}
