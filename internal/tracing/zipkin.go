package tracing

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	zipkinpb "github.com/openzipkin/zipkin-go/proto/zipkin_proto3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// The Zipkin tracer's runtime defaults (Envoy's): tracing.zipkin.min_flush_spans,
// tracing.zipkin.flush_interval_ms and tracing.zipkin.request_timeout (ms).
const (
	zipkinMinFlush       = 5
	zipkinFlushInterval  = 5000
	zipkinRequestTimeout = 5000
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.tracers.zipkin", Category: extension.Tracer, Config: &tracev3.ZipkinConfig{},
		Factory: Factory(compileZipkin), Notes: "HTTP_JSON (Zipkin v2); B3 multi and single headers"})
}

// zipkin is the Zipkin driver: B3 propagation, v2 JSON spans sent in
// batches to a collector cluster, off the request path.
type zipkin struct {
	async                                                   *asyncclient.Client
	cluster                                                 string
	endpoint                                                string
	host                                                    string
	id128                                                   bool
	proto                                                   bool // HTTP_PROTO: zipkin.proto3.ListOfSpans
	shared                                                  bool
	service                                                 string
	rt                                                      *runtime.Loader
	mu                                                      sync.Mutex
	pending                                                 []map[string]any
	started                                                 bool
	sent, reportsSent, reportsFailed, dropped, timerFlushed *stats.Counter
}

func compileZipkin(ctx *Context, msg proto.Message, path string) (Driver, error) {
	c := msg.(*tracev3.ZipkinConfig)
	if err := config.CheckFields(c, path, "collector_cluster", "collector_endpoint", "trace_id_128bit", "shared_span_context",
		"collector_endpoint_version", "collector_hostname", "split_spans_for_request"); err != nil {
		return nil, err
	}
	switch c.GetCollectorEndpointVersion() {
	case tracev3.ZipkinConfig_HTTP_JSON, tracev3.ZipkinConfig_DEPRECATED_AND_UNAVAILABLE_DO_NOT_USE, tracev3.ZipkinConfig_HTTP_PROTO:
	default:
		return nil, config.Unsupported(config.Join(path, "collector_endpoint_version"), c.GetCollectorEndpointVersion().String(), "HTTP_JSON", "HTTP_PROTO")
	}
	if c.GetSplitSpansForRequest() {
		return nil, config.Unsupported(config.Join(path, "split_spans_for_request"), "split_spans_for_request")
	}
	sc := ctx.Stats.Scope("tracing.zipkin.")
	z := &zipkin{async: ctx.Async, cluster: c.GetCollectorCluster(), endpoint: c.GetCollectorEndpoint(), host: c.GetCollectorHostname(),
		id128: c.GetTraceId_128Bit(), proto: c.GetCollectorEndpointVersion() == tracev3.ZipkinConfig_HTTP_PROTO, shared: c.GetSharedSpanContext() == nil || c.GetSharedSpanContext().GetValue(),
		service: ctx.Node.GetCluster(), rt: ctx.Runtime,
		sent: sc.Counter("spans_sent"), reportsSent: sc.Counter("reports_sent"), reportsFailed: sc.Counter("reports_failed"),
		dropped: sc.Counter("reports_dropped"), timerFlushed: sc.Counter("timer_flushed")}
	if z.host == "" {
		z.host = z.cluster
	}
	if z.service == "" {
		z.service = "envoy" // Envoy uses the node's cluster name
	}
	return z, nil
}

// minFlush, flushInterval and requestTimeout read the runtime at each
// use, as Envoy's Zipkin driver does.
func (z *zipkin) minFlush() int {
	return int(max(z.rt.Snapshot().Integer("tracing.zipkin.min_flush_spans", zipkinMinFlush), 1))
}

func (z *zipkin) flushInterval() time.Duration {
	return time.Duration(max(z.rt.Snapshot().Integer("tracing.zipkin.flush_interval_ms", zipkinFlushInterval), 1)) * time.Millisecond
}

func (z *zipkin) requestTimeout() time.Duration {
	return time.Duration(max(z.rt.Snapshot().Integer("tracing.zipkin.request_timeout", zipkinRequestTimeout), 1)) * time.Millisecond
}

func (z *zipkin) spawnsChildren() {}
func (z *zipkin) logsEvents()     {}

func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type zspan struct {
	z                      *zipkin
	traceID, id, parent    string
	sampled, debug, shared bool
	name, kind             string
	start                  time.Time
	tags                   map[string]string
	annotations            []map[string]any
}

// Start reads B3 (x-b3-* or the single b3 header) and begins the span:
// with shared_span_context a server span keeps the caller's span id.
func (z *zipkin) Start(req *headers.Request, name string, egress, sampled bool) Span {
	s := &zspan{z: z, name: strings.Clone(name), kind: "SERVER", start: time.Now(), sampled: sampled, tags: map[string]string{}}
	if egress {
		s.kind = "CLIENT"
	}
	traceID, spanID, parent, smp := req.Map.Get("x-b3-traceid"), req.Map.Get("x-b3-spanid"), req.Map.Get("x-b3-parentspanid"), req.Map.Get("x-b3-sampled")
	if b3 := req.Map.Get("b3"); b3 != "" && traceID == "" {
		// b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]], or just a
		// sampling state.
		parts := strings.Split(b3, "-")
		switch {
		case len(parts) == 1:
			smp = parts[0]
		case len(parts) >= 2:
			traceID, spanID = parts[0], parts[1]
			if len(parts) >= 3 {
				smp = parts[2]
			}
			if len(parts) >= 4 {
				parent = parts[3]
			}
		}
	}
	switch smp {
	case "1", "true", "d":
		s.sampled = true
		s.debug = smp == "d" || req.Map.Get("x-b3-flags") == "1"
	case "0", "false":
		s.sampled = false
	}
	if validHex(traceID) && validHex(spanID) {
		// Copies: the span outlives the request's header bytes.
		traceID, spanID, parent = strings.Clone(traceID), strings.Clone(spanID), strings.Clone(parent)
		s.traceID = traceID
		if z.shared && !egress {
			s.id, s.parent, s.shared = spanID, parent, true
		} else {
			s.id, s.parent = newID(8), spanID
		}
	} else {
		s.traceID, s.id = newID(8), newID(8)
		if z.id128 {
			s.traceID = newID(16)
		}
	}
	return s
}

func validHex(s string) bool {
	if len(s) != 16 && len(s) != 32 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func (s *zspan) Inject(m *headers.Map) {
	m.Set("x-b3-traceid", s.traceID)
	m.Set("x-b3-spanid", s.id)
	if s.parent != "" {
		m.Set("x-b3-parentspanid", s.parent)
	} else {
		m.Del("x-b3-parentspanid")
	}
	if s.sampled {
		m.Set("x-b3-sampled", "1")
	} else {
		m.Set("x-b3-sampled", "0")
	}
	m.Del("b3")
}

// SpawnChild starts the span of the upstream request (Envoy's
// ZipkinSpan::spawnChild with the router's start_child_span).
func (s *zspan) SpawnChild(name string) Span { return s.spawnChild(name, false) }

// spawnChild is Envoy's Tracer::startSpan with a previous context: with
// spawn_upstream_span (upstreamSpan) or on an egress listener the child is
// a client span with an id of its own, the parent this span; otherwise a
// server span that, with shared_span_context, shares this span's id.
func (s *zspan) spawnChild(name string, upstreamSpan bool) Span {
	c := &zspan{z: s.z, traceID: s.traceID, sampled: s.sampled, debug: s.debug, name: strings.Clone(name),
		kind: "SERVER", start: time.Now(), tags: map[string]string{}}
	client := upstreamSpan || s.kind == "CLIENT"
	if client {
		c.kind = "CLIENT"
	}
	if client || !s.z.shared {
		c.id, c.parent = newID(8), s.id
	} else {
		c.id, c.parent, c.shared = s.id, s.parent, true
	}
	return c
}

// SetOperation renames the span.
func (s *zspan) SetOperation(name string) { s.name = strings.Clone(name) }

// Log adds an annotation (Envoy's ZipkinSpan::log).
func (s *zspan) Log(t time.Time, event string) {
	s.annotations = append(s.annotations, map[string]any{"timestamp": t.UnixMicro(), "value": event})
}

// SetTag copies the value: spans are exported after the request, whose
// header bytes (http1's zero-copy parse) are reused by then.
func (s *zspan) SetTag(k, v string) { s.tags[k] = strings.Clone(v) }

func (s *zspan) Sampled() bool { return s.sampled }

func (s *zspan) Finish() {
	if !s.sampled {
		return
	}
	span := map[string]any{
		"traceId": s.traceID, "id": s.id, "name": s.name, "kind": s.kind,
		"timestamp": s.start.UnixMicro(), "duration": max(time.Since(s.start).Microseconds(), 1),
		"localEndpoint": map[string]any{"serviceName": s.z.service},
		"tags":          s.tags,
	}
	if s.parent != "" {
		span["parentId"] = s.parent
	}
	if s.shared {
		span["shared"] = true
	}
	if s.debug {
		span["debug"] = true
	}
	if len(s.annotations) > 0 {
		span["annotations"] = s.annotations
	}
	s.z.add(span)
}

// add queues a span; a full batch is sent at once, the rest by the timer.
// The queue is bounded: spans beyond it are dropped and counted.
func (z *zipkin) add(span map[string]any) {
	z.mu.Lock()
	if !z.started {
		z.started = true
		go z.timer()
	}
	if len(z.pending) >= 10000 {
		z.mu.Unlock()
		z.dropped.Inc()
		return
	}
	z.pending = append(z.pending, span)
	var batch []map[string]any
	if len(z.pending) >= z.minFlush() {
		batch, z.pending = z.pending, nil
	}
	z.mu.Unlock()
	if batch != nil {
		go z.send(batch)
	}
}

// timer sends what is pending every flush interval; it ends when an
// interval passed with nothing to send (add starts it again), so that a
// driver replaced by a config update leaves no goroutine behind.
func (z *zipkin) timer() {
	for {
		time.Sleep(z.flushInterval())
		z.mu.Lock()
		batch := z.pending
		z.pending = nil
		if len(batch) == 0 {
			z.started = false
			z.mu.Unlock()
			return
		}
		z.mu.Unlock()
		if z.timerFlushed != nil {
			z.timerFlushed.Inc()
		}
		z.send(batch)
	}
}

func (z *zipkin) send(batch []map[string]any) {
	contentType := "application/json"
	var body []byte
	var err error
	if z.proto {
		// HTTP_PROTO: the Zipkin v2 protobuf (zipkin.proto3.ListOfSpans),
		// as Envoy's collector_endpoint_version HTTP_PROTO sends it.
		contentType = "application/x-protobuf"
		body, err = protoSpans(batch)
	} else {
		body, err = json.Marshal(batch)
	}
	if err != nil {
		z.reportsFailed.Inc()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), z.requestTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+z.host+z.endpoint, bytes.NewReader(body))
	if err != nil {
		z.reportsFailed.Inc()
		return
	}
	req.Host = z.host
	req.Header.Set("Content-Type", contentType)
	resp, err := z.async.Do(ctx, z.cluster, req)
	if err != nil {
		z.reportsFailed.Inc()
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		z.reportsFailed.Inc()
		return
	}
	z.reportsSent.Inc()
	z.sent.Add(uint64(len(batch)))
}

var zipkinKinds = map[string]zipkinpb.Span_Kind{
	"CLIENT": zipkinpb.Span_CLIENT, "SERVER": zipkinpb.Span_SERVER,
	"PRODUCER": zipkinpb.Span_PRODUCER, "CONSUMER": zipkinpb.Span_CONSUMER,
}

// protoSpans encodes a batch of v2 spans (the JSON model Finish builds)
// as a zipkin.proto3.ListOfSpans: ids as their bytes, times in
// microseconds.
func protoSpans(batch []map[string]any) ([]byte, error) {
	list := &zipkinpb.ListOfSpans{Spans: make([]*zipkinpb.Span, 0, len(batch))}
	for _, m := range batch {
		sp := &zipkinpb.Span{Name: m["name"].(string), Kind: zipkinKinds[m["kind"].(string)],
			Timestamp: uint64(m["timestamp"].(int64)), Duration: uint64(m["duration"].(int64)),
			Tags: m["tags"].(map[string]string)}
		var err error
		if sp.TraceId, err = hex.DecodeString(m["traceId"].(string)); err != nil {
			return nil, fmt.Errorf("trace id: %w", err)
		}
		// A 64-bit id goes out as 16 bytes with a zero high half: the same
		// id in Zipkin's model, and the length the Zipkin receivers built on
		// zipkin-go's decoder (OpenTelemetry Collector, Jaeger) require,
		// though the proto allows 8.
		if len(sp.TraceId) == 8 {
			sp.TraceId = append(make([]byte, 8, 16), sp.TraceId...)
		}
		if sp.Id, err = hex.DecodeString(m["id"].(string)); err != nil {
			return nil, fmt.Errorf("span id: %w", err)
		}
		if p, ok := m["parentId"].(string); ok {
			if sp.ParentId, err = hex.DecodeString(p); err != nil {
				return nil, fmt.Errorf("parent id: %w", err)
			}
		}
		if ep, ok := m["localEndpoint"].(map[string]any); ok {
			sp.LocalEndpoint = &zipkinpb.Endpoint{ServiceName: ep["serviceName"].(string)}
		}
		if as, ok := m["annotations"].([]map[string]any); ok {
			for _, a := range as {
				sp.Annotations = append(sp.Annotations, &zipkinpb.Annotation{Timestamp: uint64(a["timestamp"].(int64)), Value: a["value"].(string)})
			}
		}
		sp.Shared, _ = m["shared"].(bool)
		sp.Debug, _ = m["debug"].(bool)
		list.Spans = append(list.Spans, sp)
	}
	return proto.Marshal(list)
}
