package tracing

import (
	"bytes"
	"sync"
	"testing"
	"time"

	coltracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	otlptracev1 "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

// fakeExporter records export requests; block, while open, holds every
// export (a collector that never answers).
type fakeExporter struct {
	mu    sync.Mutex
	reqs  []*coltracev1.ExportTraceServiceRequest
	block chan struct{}
}

func (f *fakeExporter) export(req *coltracev1.ExportTraceServiceRequest) {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
}

func (f *fakeExporter) spans() []*otlptracev1.Span {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*otlptracev1.Span
	for _, r := range f.reqs {
		for _, rs := range r.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				out = append(out, ss.GetSpans()...)
			}
		}
	}
	return out
}

func newTestOTel(exp otelExporter, maxCache int) (*otel, *stats.Store) {
	st := stats.NewStore()
	sc := st.Scope("tracing.opentelemetry.")
	return &otel{exp: exp, maxCache: maxCache, log: nil, kick: make(chan struct{}, 1),
		sent: sc.Counter("spans_sent"), timerFlushed: sc.Counter("timer_flushed"), dropped: sc.Counter("spans_dropped")}, st
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Five finished spans (min_flush_spans) go out at once in one batch.
func TestOTelBatchOfMinFlushSpans(t *testing.T) {
	exp := &fakeExporter{}
	o, _ := newTestOTel(exp, 1024)
	for i := 0; i < otelMinFlush; i++ {
		o.Start(&headers.Request{}, "op", false, true).Finish()
	}
	waitFor(t, 2*time.Second, func() bool { return len(exp.spans()) == otelMinFlush }, "a batch of 5 spans")
	exp.mu.Lock()
	n := len(exp.reqs)
	exp.mu.Unlock()
	if n != 1 || o.sent.Value() != otelMinFlush {
		t.Errorf("%d export requests, spans_sent %d", n, o.sent.Value())
	}
	// Unsampled spans are not exported.
	o.Start(&headers.Request{}, "op", false, false).Finish()
	o.mu.Lock()
	pending := len(o.pending)
	o.mu.Unlock()
	if pending != 0 {
		t.Errorf("an unsampled span was buffered")
	}
}

// While the collector holds an export, finished spans wait in a buffer of
// max_cache_size; the rest are dropped and counted, and Finish never
// blocks.
func TestOTelBoundedBufferDrops(t *testing.T) {
	exp := &fakeExporter{block: make(chan struct{})}
	o, _ := newTestOTel(exp, otelMinFlush)
	start := time.Now()
	// The first five fill a batch that the blocked export holds.
	for i := 0; i < otelMinFlush; i++ {
		o.Start(&headers.Request{}, "op", false, true).Finish()
	}
	waitFor(t, 2*time.Second, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.pending) == 0 && o.sent.Value() == otelMinFlush
	}, "the first batch to be taken")
	for i := 0; i < 10; i++ {
		o.Start(&headers.Request{}, "op", false, true).Finish()
	}
	if time.Since(start) > time.Second {
		t.Errorf("finishing spans took %v with a stuck collector", time.Since(start))
	}
	if got := o.dropped.Value(); got != 5 {
		t.Errorf("spans_dropped %d, want 5 (10 spans, room for 5)", got)
	}
	close(exp.block)
}

func TestOTelSpanStatusAndAttributes(t *testing.T) {
	exp := &fakeExporter{}
	o, _ := newTestOTel(exp, 1024)
	server := o.Start(&headers.Request{}, "ingress", false, true).(*otelSpan)
	server.SetTag("http.status_code", "404")
	server.SetTag("a", "1")
	server.SetTag("a", "2")
	server.SetTag("", "dropped")
	client := server.SpawnChild("router backend egress").(*otelSpan)
	client.SetTag("http.status_code", "404")
	grpcServer := o.Start(&headers.Request{}, "ingress", false, true).(*otelSpan)
	grpcServer.SetTag("grpc.status_code", "5") // NOT_FOUND: not a server error
	grpcUnavailable := o.Start(&headers.Request{}, "ingress", false, true).(*otelSpan)
	grpcUnavailable.SetTag("grpc.status_code", "14")
	five := o.Start(&headers.Request{}, "egress", true, true).(*otelSpan)
	five.SetTag("http.status_code", "503")
	for _, s := range []*otelSpan{server, client, grpcServer, grpcUnavailable, five} {
		s.Finish()
	}
	waitFor(t, 2*time.Second, func() bool { return len(exp.spans()) == 5 }, "5 spans")
	byID := map[string]*otlptracev1.Span{}
	for _, s := range exp.spans() {
		byID[string(s.GetSpanId())] = s
	}
	got := func(s *otelSpan) *otlptracev1.Span { return byID[string(s.id[:])] }
	if st := got(server).GetStatus().GetCode(); st != otlptracev1.Status_STATUS_CODE_UNSET {
		t.Errorf("server span with 404: status %v (4xx is no server error)", st)
	}
	if st := got(client).GetStatus().GetCode(); st != otlptracev1.Status_STATUS_CODE_ERROR {
		t.Errorf("client span with 404: status %v", st)
	}
	if got(grpcServer).GetStatus().GetCode() != otlptracev1.Status_STATUS_CODE_UNSET ||
		got(grpcUnavailable).GetStatus().GetCode() != otlptracev1.Status_STATUS_CODE_ERROR {
		t.Errorf("grpc statuses %v %v", got(grpcServer).GetStatus(), got(grpcUnavailable).GetStatus())
	}
	if got(five).GetStatus().GetCode() != otlptracev1.Status_STATUS_CODE_ERROR || got(five).GetKind() != otlptracev1.Span_SPAN_KIND_CLIENT {
		t.Errorf("egress 503: %v %v", got(five).GetStatus(), got(five).GetKind())
	}
	attrs := map[string]string{}
	for _, kv := range got(server).GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if len(attrs) != 2 || attrs["a"] != "2" || len(got(server).GetAttributes()) != 2 {
		t.Errorf("attributes %v", got(server).GetAttributes())
	}
	c := got(client)
	if !bytes.Equal(c.GetTraceId(), got(server).GetTraceId()) || !bytes.Equal(c.GetParentSpanId(), got(server).GetSpanId()) ||
		c.GetKind() != otlptracev1.Span_SPAN_KIND_CLIENT || c.GetName() != "router backend egress" || len(got(server).GetParentSpanId()) != 0 {
		t.Errorf("child span %v of %v", c, got(server))
	}
}

// An idle tracer's flush loop ends: replaced configs leave no goroutine.
// The runtime's tracing.opentelemetry.flush_interval_ms sets the timer.
func TestOTelFlushLoopEndsWhenIdle(t *testing.T) {
	exp := &fakeExporter{}
	o, _ := newTestOTel(exp, 1024)
	rt, err := runtime.New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.SetAdmin(map[string]string{"tracing.opentelemetry.flush_interval_ms": "100"}); err != nil {
		t.Fatal(err)
	}
	o.rt = rt
	start := time.Now()
	o.Start(&headers.Request{}, "op", false, true).Finish()
	o.mu.Lock()
	running := o.running
	o.mu.Unlock()
	if !running {
		t.Fatal("no flush loop after a span")
	}
	// The timer flushes the lone span, then the next tick finds nothing
	// and the loop ends.
	waitFor(t, 3*time.Second, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return !o.running
	}, "the flush loop to end")
	if len(exp.spans()) != 1 || o.timerFlushed.Value() != 1 {
		t.Errorf("%d spans exported, timer_flushed %d", len(exp.spans()), o.timerFlushed.Value())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the 100 ms flush interval took %v (the 5 s default?)", d)
	}
}

// The runtime's tracing.opentelemetry.min_flush_spans: 1 sends each span
// at once.
func TestOTelRuntimeMinFlushSpans(t *testing.T) {
	exp := &fakeExporter{}
	o, _ := newTestOTel(exp, 1024)
	rt, err := runtime.New(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.SetAdmin(map[string]string{"tracing.opentelemetry.min_flush_spans": "1"}); err != nil {
		t.Fatal(err)
	}
	o.rt = rt
	o.Start(&headers.Request{}, "op", false, true).Finish()
	waitFor(t, time.Second, func() bool { return len(exp.spans()) == 1 }, "the span (before the 5 s timer)")
	if o.timerFlushed.Value() != 0 {
		t.Errorf("timer_flushed %d", o.timerFlushed.Value())
	}
}
