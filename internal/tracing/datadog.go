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
	"strconv"
	"strings"
	"sync"
	"time"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.tracers.datadog", Category: extension.Tracer, Config: &tracev3.DatadogConfig{},
		Factory: Factory(compileDatadog),
		Notes:   "Datadog and W3C tracecontext propagation; msgpack /v0.4/traces to the agent; no remote_config"})
}

// The Datadog tracer's defaults: dd-trace-cpp's, which Envoy links.
const (
	// ddService is the service when service_name is empty (Envoy's).
	ddService = "envoy"
	// ddSpanName is every span's name: Envoy's operation name is the
	// Datadog resource, the span name the kind of work.
	ddSpanName = "envoy.proxy"
	// ddTracesPath is the agent's trace API endpoint.
	ddTracesPath = "/v0.4/traces"
	// ddFlushInterval is dd-trace-cpp's flush_interval_milliseconds.
	ddFlushInterval = 2 * time.Second
	// ddMaxPending bounds the finished traces waiting for a flush: beyond
	// it, traces are dropped and counted (traces_dropped), so an agent
	// that is slow or gone costs bounded memory.
	ddMaxPending = 1024
	// ddTimeout bounds one POST to the agent (dd-trace-cpp's request
	// deadline is 2 s as well).
	ddTimeout = 2 * time.Second
)

// Sampling priorities (dd-trace-cpp's SamplingPriority).
const (
	ddUserDrop = -1
	ddAutoKeep = 1
)

// datadog is the Datadog driver: Datadog and W3C trace context
// propagation (extracted and injected in that order, dd-trace-cpp's
// default styles), spans sent to the agent as msgpack traces, batched off
// the request path.
type datadog struct {
	async   *asyncclient.Client
	cluster string
	host    string
	service string
	log     *slog.Logger

	mu      sync.Mutex
	pending [][]*ddSpan
	running bool

	sent, dropped, failed, noCluster, tracesDropped *stats.Counter
}

func compileDatadog(ctx *Context, msg proto.Message, path string) (Driver, error) {
	c := msg.(*tracev3.DatadogConfig)
	// remote_config makes the tracer poll the agent for sampling rules:
	// refused with its path by CheckFields.
	if err := config.CheckFields(c, path, "collector_cluster", "service_name", "collector_hostname"); err != nil {
		return nil, err
	}
	if c.GetCollectorCluster() == "" {
		return nil, config.Errorf(config.Join(path, "collector_cluster"), "a cluster is required")
	}
	log := ctx.Log
	if log == nil {
		log = slog.Default()
	}
	sc := ctx.Stats.Scope("tracing.datadog.")
	d := &datadog{async: ctx.Async, cluster: c.GetCollectorCluster(), host: c.GetCollectorHostname(), service: c.GetServiceName(), log: log,
		sent: sc.Counter("reports_sent"), dropped: sc.Counter("reports_dropped"), failed: sc.Counter("reports_failed"),
		noCluster: sc.Counter("reports_skipped_no_cluster"), tracesDropped: sc.Counter("traces_dropped")}
	// Envoy's makeCollectorReferenceHost: the Host of agent requests.
	if d.host == "" {
		d.host = d.cluster
	}
	if d.service == "" {
		d.service = ddService
	}
	return d, nil
}

func (d *datadog) spawnsChildren() {}

// ddSpan is a span as the agent's v0.4 trace API decodes it.
type ddSpan struct {
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
	Type     string             `msgpack:"type"`
}

// ddSegment is the part of a trace this proxy made (dd-trace-cpp's
// trace segment): its spans are sent together once every one finished,
// with the sampling decision and propagated tags on the local root.
type ddSegment struct {
	d                *datadog
	traceHi, traceLo uint64
	priority         int
	origin           string
	// tags are the propagated _dd.p.* trace tags, in order.
	tags []ddTag
	// tracestate holds the other vendors' tracestate members.
	tracestate string

	mu    sync.Mutex
	open  int
	spans []*ddSpan
}

type ddTag struct{ k, v string }

type datadogSpan struct {
	seg      *ddSegment
	s        *ddSpan
	start    time.Time
	root     bool
	finished bool
}

// Start extracts the caller's context — Datadog headers first, then W3C
// trace context — or begins a trace. Without an extracted sampling
// decision, Envoy's decision gives the priority: kept (AUTO_KEEP, by the
// default sampler) or dropped by the user (USER_DROP), as Envoy's
// Datadog tracer does.
func (d *datadog) Start(req *headers.Request, name string, egress, sampled bool) Span {
	seg := &ddSegment{d: d}
	var parent uint64
	havePriority := false
	if ok, p, hasP := seg.extractDatadog(req, &parent); ok {
		seg.priority, havePriority = p, hasP
	} else if ok, p := seg.extractW3C(req, &parent); ok {
		seg.priority, havePriority = p, true
	}
	if seg.traceLo == 0 {
		// A new trace: 128-bit ids, the high half carried in _dd.p.tid
		// (dd-trace-cpp's default, trace_id_128_bit).
		seg.traceHi = uint64(time.Now().Unix()) << 32
		seg.traceLo = nonZero()
		parent = 0
	}
	if !havePriority {
		if sampled {
			seg.priority = ddAutoKeep
			seg.setTag("_dd.p.dm", "-0") // decided by the default sampler
		} else {
			seg.priority = ddUserDrop
		}
	}
	if seg.traceHi != 0 {
		seg.setTag("_dd.p.tid", fmt.Sprintf("%016x", seg.traceHi))
	}
	return seg.newSpan(name, parent, true)
}

// nonZero is a random span or trace id: dd-trace-cpp keeps ids within
// 63 bits, for the agents whose decoders read them as signed.
func nonZero() uint64 {
	for {
		if v := rand.Uint64() >> 1; v != 0 {
			return v
		}
	}
}

func (seg *ddSegment) setTag(k, v string) {
	for i := range seg.tags {
		if seg.tags[i].k == k {
			seg.tags[i].v = v
			return
		}
	}
	seg.tags = append(seg.tags, ddTag{k, v})
}

// extractDatadog reads x-datadog-trace-id (decimal, the low 64 bits),
// x-datadog-parent-id, x-datadog-sampling-priority, x-datadog-origin and
// x-datadog-tags (the _dd.p.* trace tags, _dd.p.tid the high 64 bits).
func (seg *ddSegment) extractDatadog(req *headers.Request, parent *uint64) (ok bool, priority int, hasPriority bool) {
	tid, err := strconv.ParseUint(req.Map.Get("x-datadog-trace-id"), 10, 64)
	if err != nil || tid == 0 {
		return false, 0, false
	}
	pid, err := strconv.ParseUint(req.Map.Get("x-datadog-parent-id"), 10, 64)
	if err != nil {
		return false, 0, false
	}
	seg.traceLo, *parent = tid, pid
	if p, err := strconv.Atoi(req.Map.Get("x-datadog-sampling-priority")); err == nil {
		priority, hasPriority = p, true
	}
	seg.origin = strings.Clone(req.Map.Get("x-datadog-origin"))
	for _, kv := range strings.Split(req.Map.Get("x-datadog-tags"), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || !strings.HasPrefix(k, "_dd.p.") {
			continue
		}
		if k == "_dd.p.tid" {
			if hi, err := strconv.ParseUint(v, 16, 64); err == nil {
				seg.traceHi = hi
			}
			continue
		}
		seg.setTag(strings.Clone(k), strings.Clone(v))
	}
	return true, priority, hasPriority
}

// extractW3C reads traceparent and the "dd" member of tracestate
// (s: sampling priority, o: origin, t.<k>: the trace tag _dd.p.<k>);
// without a dd member the priority is the sampled flag (1 or 0).
func (seg *ddSegment) extractW3C(req *headers.Request, parent *uint64) (bool, int) {
	tp, ok := ParseTraceparent(req.Map.Get("traceparent"))
	if !ok || len(req.Map.Values("traceparent")) != 1 {
		return false, 0
	}
	seg.traceHi, seg.traceLo = getUint64(tp.TraceID[:8]), getUint64(tp.TraceID[8:])
	*parent = getUint64(tp.SpanID[:])
	priority := 0
	if tp.Sampled {
		priority = 1
	}
	var others []string
	for _, member := range strings.Split(strings.Join(req.Map.Values("tracestate"), ","), ",") {
		member = strings.TrimSpace(member)
		dd, ok := strings.CutPrefix(member, "dd=")
		if !ok {
			if member != "" {
				others = append(others, strings.Clone(member))
			}
			continue
		}
		for _, f := range strings.Split(dd, ";") {
			k, v, _ := strings.Cut(f, ":")
			switch {
			case k == "s":
				// The flag wins when the two disagree (the spec's rule).
				if p, err := strconv.Atoi(v); err == nil && (p > 0) == tp.Sampled {
					priority = p
				}
			case k == "o":
				seg.origin = strings.Clone(v)
			case strings.HasPrefix(k, "t."):
				seg.setTag("_dd.p."+k[2:], strings.Clone(strings.ReplaceAll(v, "~", "=")))
			}
		}
	}
	seg.tracestate = strings.Join(others, ",")
	return true, priority
}

func getUint64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func (seg *ddSegment) newSpan(resource string, parent uint64, root bool) *datadogSpan {
	seg.mu.Lock()
	seg.open++
	seg.mu.Unlock()
	now := time.Now()
	return &datadogSpan{seg: seg, start: now, root: root, s: &ddSpan{Service: seg.d.service, Name: ddSpanName,
		Resource: strings.Clone(resource), TraceID: seg.traceLo, SpanID: nonZero(), ParentID: parent,
		Meta: map[string]string{}, Metrics: map[string]float64{}}}
}

// Inject writes the Datadog headers and W3C trace context for the
// request going upstream, this span as the parent.
func (s *datadogSpan) Inject(m *headers.Map) {
	seg := s.seg
	m.Set("x-datadog-trace-id", strconv.FormatUint(seg.traceLo, 10))
	m.Set("x-datadog-parent-id", strconv.FormatUint(s.s.SpanID, 10))
	m.Set("x-datadog-sampling-priority", strconv.Itoa(seg.priority))
	if seg.origin != "" {
		m.Set("x-datadog-origin", seg.origin)
	} else {
		m.Del("x-datadog-origin")
	}
	var tags []string
	for _, t := range seg.tags {
		tags = append(tags, t.k+"="+t.v)
	}
	if len(tags) > 0 {
		m.Set("x-datadog-tags", strings.Join(tags, ","))
	} else {
		m.Del("x-datadog-tags")
	}
	var tid [16]byte
	putUint64(tid[:8], seg.traceHi)
	putUint64(tid[8:], seg.traceLo)
	var sid [8]byte
	putUint64(sid[:], s.s.SpanID)
	flags := "00"
	if seg.priority > 0 {
		flags = "01"
	}
	m.Set("traceparent", "00-"+hex.EncodeToString(tid[:])+"-"+hex.EncodeToString(sid[:])+"-"+flags)
	// The dd member first (the W3C rule for the vendor that updated the
	// context), then the other vendors' members.
	dd := "dd=s:" + strconv.Itoa(seg.priority) + ";p:" + hex.EncodeToString(sid[:])
	if seg.origin != "" {
		dd += ";o:" + seg.origin
	}
	for _, t := range seg.tags {
		if k, ok := strings.CutPrefix(t.k, "_dd.p."); ok && k != "tid" {
			dd += ";t." + k + ":" + strings.ReplaceAll(t.v, "=", "~")
		}
	}
	if seg.tracestate != "" {
		dd += "," + seg.tracestate
	}
	m.Set("tracestate", dd)
}

// SpawnChild starts the upstream request's span in the same segment.
func (s *datadogSpan) SpawnChild(name string) Span {
	return s.seg.newSpan(name, s.s.SpanID, false)
}

// SetOperation sets the resource (Envoy's operation name is Datadog's
// resource name).
func (s *datadogSpan) SetOperation(name string) { s.s.Resource = strings.Clone(name) }

// SetTag records a tag as Envoy's Datadog span does: "resource.name"
// sets the resource, "error" = "true" marks the span as an error,
// "error.reason" is also the error message.
func (s *datadogSpan) SetTag(k, v string) {
	switch k {
	case "resource.name":
		s.s.Resource = strings.Clone(v)
	case "error":
		if v == "true" {
			s.s.Error = 1
		}
	case "error.reason":
		s.s.Meta["error.message"] = strings.Clone(v)
		s.s.Meta[strings.Clone(k)] = strings.Clone(v)
	default:
		s.s.Meta[strings.Clone(k)] = strings.Clone(v)
	}
}

// Sampled says the trace is kept (a positive priority). Dropped traces
// are sent to the agent too, as dd-trace-cpp does: the agent counts them.
func (s *datadogSpan) Sampled() bool { return s.seg.priority > 0 }

// Finish ends the span; the last span of the segment to finish queues
// the segment, the local root carrying the sampling priority, origin and
// trace tags.
func (s *datadogSpan) Finish() {
	if s.finished {
		return
	}
	s.finished = true
	seg := s.seg
	s.s.Start = s.start.UnixNano()
	s.s.Duration = int64(time.Since(s.start))
	if s.root {
		s.s.Metrics["_sampling_priority_v1"] = float64(seg.priority)
		for _, t := range seg.tags {
			s.s.Meta[t.k] = t.v
		}
		if seg.origin != "" {
			s.s.Meta["_dd.origin"] = seg.origin
		}
	}
	seg.mu.Lock()
	seg.spans = append(seg.spans, s.s)
	seg.open--
	done := seg.open == 0
	spans := seg.spans
	seg.mu.Unlock()
	if done {
		seg.d.add(spans)
	}
}

func (d *datadog) add(trace []*ddSpan) {
	d.mu.Lock()
	if len(d.pending) >= ddMaxPending {
		d.mu.Unlock()
		d.tracesDropped.Inc()
		return
	}
	d.pending = append(d.pending, trace)
	if !d.running {
		d.running = true
		go d.loop()
	}
	d.mu.Unlock()
}

// loop sends what finished every flush interval; it ends when a tick
// finds nothing, so an idle tracer (or a replaced one) holds no
// goroutine.
func (d *datadog) loop() {
	t := time.NewTicker(ddFlushInterval)
	defer t.Stop()
	failing := false
	for range t.C {
		d.mu.Lock()
		batch := d.pending
		d.pending = nil
		if len(batch) == 0 {
			d.running = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		err := d.send(batch)
		// One line when the agent becomes unreachable, one when it is
		// back: never one per flush or per request.
		switch {
		case err != nil && !failing:
			d.log.Warn("Datadog agent unreachable; traces are dropped until it answers (tracing.datadog.reports_failed)",
				"cluster", d.cluster, "error", err)
			failing = true
		case err == nil && failing:
			d.log.Info("Datadog agent reachable again", "cluster", d.cluster)
			failing = false
		}
	}
}

// send POSTs one batch of traces to the agent, with the headers
// dd-trace-cpp sends, counting as Envoy's AgentHTTPClient: a 200 is
// reports_sent, another status reports_dropped, no answer
// reports_failed, a missing cluster reports_skipped_no_cluster.
func (d *datadog) send(traces [][]*ddSpan) error {
	body, err := msgpack.Marshal(traces)
	if err != nil {
		return fmt.Errorf("encode traces: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ddTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+d.host+ddTracesPath, bytes.NewReader(body))
	if err != nil {
		d.failed.Inc()
		return err
	}
	req.Host = d.host
	req.Header.Set("Content-Type", "application/msgpack")
	req.Header.Set("Datadog-Meta-Lang", "go")
	req.Header.Set("Datadog-Meta-Tracer-Version", legateVersion())
	req.Header.Set("X-Datadog-Trace-Count", strconv.Itoa(len(traces)))
	resp, err := d.async.Do(ctx, d.cluster, req)
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			d.noCluster.Inc()
		} else {
			d.failed.Inc()
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		d.dropped.Inc()
		return fmt.Errorf("the agent answered %d", resp.StatusCode)
	}
	d.sent.Inc()
	return nil
}
