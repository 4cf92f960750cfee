package statsink

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/config/metrics/v3"
	otelsinkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/stat_sinks/open_telemetry/v3"
	metricsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	promgo "github.com/prometheus/client_model/go"
	colmetricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	otlpmetricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.stat_sinks.metrics_service", Category: extension.StatSink,
		Config: &metricsv3.MetricsServiceConfig{}, Factory: factory(compileMetricsService), Notes: "envoy_grpc only"})
	extension.Register(extension.Extension{Name: "envoy.stat_sinks.open_telemetry", Category: extension.StatSink,
		Config: &otelsinkv3.SinkConfig{}, Factory: factory(compileOTelSink),
		Notes: "OTLP/gRPC over envoy_grpc; no http_service, resource_detectors, custom_metric_conversions or max_data_points_per_request"})
}

// round is one flush: what every sink of the flush reports.
type round struct {
	at, last time.Time // this flush and the previous one
	store    *stats.Store
	counters []counterPoint
	gauges   []*stats.Gauge
	hists    []histPoint
}

type counterPoint struct {
	c            *stats.Counter
	value, delta uint64
}

// histPoint is a histogram's cumulative statistics and those of the
// interval since the last flush; cum and icum are cumulative counts per
// bound of h.Buckets() (stats.DefaultBuckets unless
// histogram_bucket_settings gives others).
type histPoint struct {
	h             *stats.Histogram
	count, icount uint64
	sum, isum     float64
	cum, icum     []uint64
}

// services are what the gRPC sinks reach their collector with, created
// when the first flush needs them (compiling dials nothing).
type services struct {
	clusters *upstream.Manager
	node     *corev3.Node
	log      *slog.Logger

	once  sync.Once
	async *asyncclient.Client
}

func (s *services) client() *asyncclient.Client {
	s.once.Do(func() { s.async = asyncclient.New(s.clusters) })
	return s.async
}

func (s *services) close() {
	s.once.Do(func() {}) // no client after this
	if s.async != nil {
		s.async.Close()
	}
}

func (s *services) logger() *slog.Logger {
	if s.log != nil {
		return s.log
	}
	return slog.Default()
}

// grpcSink is a sink that exports a round over gRPC, on the flusher's
// goroutine (never a request's): one send per flush interval, bounded by
// the grpc_service timeout.
type grpcSink interface {
	init(svc *services, st *stats.Store)
	flush(r *round)
	// stop releases the sink's stream (the flusher stopped).
	stop()
}

// defaultTimeout bounds one send when grpc_service sets no timeout.
const defaultTimeout = 5 * time.Second

// target is a compiled GrpcService (envoy_grpc or google_grpc).
type target = asyncclient.GRPCService

func compileTarget(gs *corev3.GrpcService, path string) (*target, error) {
	return asyncclient.CompileGRPCService(gs, path, defaultTimeout)
}

// failLog logs a sink's failures: the first at warning level, then
// nothing until the sink recovers (it flushes once per interval, so a
// collector that is down writes one line, not one per flush).
type failLog struct {
	what    string
	failing bool
}

func (l *failLog) result(svc *services, dropped *stats.Counter, err error) {
	if err == nil {
		if l.failing {
			svc.logger().Info(l.what + " exports again")
		}
		l.failing = false
		return
	}
	dropped.Inc()
	if !l.failing {
		svc.logger().Warn(l.what+" export failed; flushes are dropped until it succeeds (counter stats.sink_flush_dropped)", "error", err)
	}
	l.failing = true
}

// --- envoy.stat_sinks.metrics_service ---

// metricsService streams io.prometheus.client.MetricFamily lists on
// envoy.service.metrics.v3.MetricsService.StreamMetrics, as Envoy's
// MetricsFlusher and GrpcMetricsStreamerImpl.
type metricsService struct {
	target        *target
	deltas        bool
	labels        bool
	summary, hist bool
	batch         int

	svc     *services
	dropped *stats.Counter
	fail    failLog
	stream  metricsvcv3.MetricsService_StreamMetricsClient
	cancel  context.CancelFunc
}

func compileMetricsService(msg proto.Message, path string) (*sink, error) {
	c := msg.(*metricsv3.MetricsServiceConfig)
	if err := config.CheckFields(c, path, "grpc_service", "transport_api_version", "report_counters_as_deltas",
		"emit_tags_as_labels", "histogram_emit_mode", "batch_size"); err != nil {
		return nil, err
	}
	if c.GetTransportApiVersion() == corev3.ApiVersion_V2 {
		return nil, config.Errorf(config.Join(path, "transport_api_version"), "V2 is no longer supported; use V3")
	}
	t, err := compileTarget(c.GetGrpcService(), config.Join(path, "grpc_service"))
	if err != nil {
		return nil, err
	}
	m := &metricsService{target: t, deltas: c.GetReportCountersAsDeltas().GetValue(), labels: c.GetEmitTagsAsLabels(),
		batch: int(c.GetBatchSize()), fail: failLog{what: "metrics service sink (cluster " + t.Target.String() + ")"}}
	switch c.GetHistogramEmitMode() {
	case metricsv3.HistogramEmitMode_SUMMARY_AND_HISTOGRAM:
		m.summary, m.hist = true, true
	case metricsv3.HistogramEmitMode_SUMMARY:
		m.summary = true
	case metricsv3.HistogramEmitMode_HISTOGRAM:
		m.hist = true
	}
	return &sink{grpc: m}, nil
}

func (m *metricsService) init(svc *services, st *stats.Store) {
	m.svc, m.dropped = svc, st.Counter("stats.sink_flush_dropped")
}

// supportedQuantiles are Envoy's HistogramStatisticsImpl quantiles.
var supportedQuantiles = []float64{0, 0.25, 0.5, 0.75, 0.90, 0.95, 0.99, 0.995, 0.999, 1}

// families converts a round as Envoy's MetricsFlusher::flush: counters
// (the total, or the delta with report_counters_as_deltas), gauges, and
// for each histogram a summary and/or a histogram of the interval's
// samples, every metric stamped with the flush time; with
// emit_tags_as_labels the name is the tag-extracted one and the tags are
// labels.
func (m *metricsService) families(r *round) []*promgo.MetricFamily {
	ts := r.at.UnixMilli()
	var out []*promgo.MetricFamily
	fam := func(name string, typ promgo.MetricType) (*promgo.MetricFamily, *promgo.Metric) {
		pm := &promgo.Metric{TimestampMs: proto.Int64(ts)}
		if m.labels {
			n, tags := r.store.ExtractTags(name)
			name = n
			for _, t := range tags {
				pm.Label = append(pm.Label, &promgo.LabelPair{Name: proto.String(t.Name), Value: proto.String(t.Value)})
			}
		}
		f := &promgo.MetricFamily{Name: proto.String(name), Type: typ.Enum(), Metric: []*promgo.Metric{pm}}
		out = append(out, f)
		return f, pm
	}
	for _, c := range r.counters {
		_, pm := fam(c.c.Name(), promgo.MetricType_COUNTER)
		v := c.value
		if m.deltas {
			v = c.delta
		}
		pm.Counter = &promgo.Counter{Value: proto.Float64(float64(v))}
	}
	for _, g := range r.gauges {
		_, pm := fam(g.Name(), promgo.MetricType_GAUGE)
		pm.Gauge = &promgo.Gauge{Value: proto.Float64(float64(g.Value()))}
	}
	for _, h := range r.hists {
		if m.summary {
			_, pm := fam(h.h.Name(), promgo.MetricType_SUMMARY)
			s := &promgo.Summary{SampleCount: proto.Uint64(h.icount), SampleSum: proto.Float64(h.isum)}
			for _, q := range supportedQuantiles {
				s.Quantile = append(s.Quantile, &promgo.Quantile{Quantile: proto.Float64(q), Value: proto.Float64(quantileIn(h.h.Buckets(), h.icum, h.icount, q))})
			}
			pm.Summary = s
		}
		if m.hist {
			_, pm := fam(h.h.Name(), promgo.MetricType_HISTOGRAM)
			hg := &promgo.Histogram{SampleCount: proto.Uint64(h.icount), SampleSum: proto.Float64(h.isum)}
			for i, b := range h.h.Buckets() {
				hg.Bucket = append(hg.Bucket, &promgo.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(h.icum[i])})
			}
			pm.Histogram = hg
		}
	}
	return out
}

// quantile estimates the q-quantile of the samples whose cumulative
// bucket counts are cum (total samples in all, the rest above the last
// bound) by interpolating inside the bucket, as the stats store does;
// NaN when there are none (Envoy reports nan for an empty interval).
func quantile(cum []uint64, total uint64, q float64) float64 {
	return quantileIn(stats.DefaultBuckets, cum, total, q)
}

// quantileIn is quantile over the bucket bounds of a histogram.
func quantileIn(bounds []float64, cum []uint64, total uint64, q float64) float64 {
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	lower, prev := 0.0, uint64(0)
	for i, c := range cum {
		upper := bounds[i]
		n := c - prev
		if n > 0 && float64(c) >= rank {
			return lower + (upper-lower)*(rank-float64(prev))/float64(n)
		}
		prev, lower = c, upper
	}
	return lower
}

func (m *metricsService) flush(r *round) {
	fams := m.families(r)
	if len(fams) == 0 {
		return
	}
	batch := m.batch
	if batch <= 0 {
		batch = len(fams)
	}
	var err error
	for i := 0; i < len(fams) && err == nil; i += batch {
		err = m.send(fams[i:min(i+batch, len(fams))])
	}
	m.fail.result(m.svc, m.dropped, err)
}

// send writes one StreamMetricsMessage; the first of a stream carries
// the identifier (the node), as Envoy sends it only when the stream is
// established. A send that does not complete within the timeout resets
// the stream.
func (m *metricsService) send(fams []*promgo.MetricFamily) error {
	msg := &metricsvcv3.StreamMetricsMessage{EnvoyMetrics: fams}
	if m.stream == nil {
		cc, err := m.svc.client().GRPCTo(m.target.Target)
		if err != nil {
			return err
		}
		ctx, cancel := m.target.Context(context.Background())
		watchdog := time.AfterFunc(m.target.Timeout, cancel)
		s, err := metricsvcv3.NewMetricsServiceClient(cc).StreamMetrics(ctx)
		watchdog.Stop()
		if err != nil {
			cancel()
			return err
		}
		m.stream, m.cancel = s, cancel
		msg.Identifier = &metricsvcv3.StreamMetricsMessage_Identifier{Node: m.svc.node}
	}
	watchdog := time.AfterFunc(m.target.Timeout, m.cancel)
	err := m.stream.Send(msg)
	if !watchdog.Stop() && err == nil {
		err = fmt.Errorf("send timed out after %v", m.target.Timeout)
	}
	if err != nil {
		m.cancel()
		m.stream, m.cancel = nil, nil
	}
	return err
}

func (m *metricsService) stop() {
	if m.stream != nil {
		m.stream.CloseSend()
		m.cancel()
		m.stream, m.cancel = nil, nil
	}
}

// --- envoy.stat_sinks.open_telemetry ---

// otelSink exports OTLP metrics with MetricsService.Export, as Envoy's
// OtlpMetricsFlusherImpl (without custom_metric_conversions: one metric
// per stat).
type otelSink struct {
	target       *target
	counterDelta bool
	histDelta    bool
	tags         bool
	extracted    bool
	prefix       string

	svc     *services
	dropped *stats.Counter
	fail    failLog
}

func compileOTelSink(msg proto.Message, path string) (*sink, error) {
	c := msg.(*otelsinkv3.SinkConfig)
	// http_service, resource_detectors, custom_metric_conversions and
	// max_data_points_per_request are refused with their path.
	if err := config.CheckFields(c, path, "grpc_service", "report_counters_as_deltas", "report_histograms_as_deltas",
		"emit_tags_as_attributes", "use_tag_extracted_name", "prefix"); err != nil {
		return nil, err
	}
	t, err := compileTarget(c.GetGrpcService(), config.Join(path, "grpc_service"))
	if err != nil {
		return nil, err
	}
	o := &otelSink{target: t, counterDelta: c.GetReportCountersAsDeltas(), histDelta: c.GetReportHistogramsAsDeltas(),
		// PROTOBUF_GET_WRAPPED_OR_DEFAULT(..., true) for both.
		tags:      c.GetEmitTagsAsAttributes() == nil || c.GetEmitTagsAsAttributes().GetValue(),
		extracted: c.GetUseTagExtractedName() == nil || c.GetUseTagExtractedName().GetValue(),
		fail:      failLog{what: "OpenTelemetry stats sink (cluster " + t.Target.String() + ")"}}
	if c.GetPrefix() != "" {
		o.prefix = c.GetPrefix() + "."
	}
	return &sink{grpc: o}, nil
}

func (o *otelSink) init(svc *services, st *stats.Store) {
	o.svc, o.dropped = svc, st.Counter("stats.sink_flush_dropped")
}

// request builds the export: gauges, counters (Sum, monotonic,
// cumulative or delta), histograms (explicit buckets, disjoint counts
// with the overflow bucket last, cumulative or delta), every point
// stamped with this flush's time and starting at the previous flush's.
func (o *otelSink) request(r *round) *colmetricsv1.ExportMetricsServiceRequest {
	now, start := uint64(r.at.UnixNano()), uint64(r.last.UnixNano())
	nameAttrs := func(name string) (string, []*commonv1.KeyValue) {
		ext, tags := r.store.ExtractTags(name)
		var attrs []*commonv1.KeyValue
		if o.tags {
			for _, t := range tags {
				attrs = append(attrs, &commonv1.KeyValue{Key: t.Name, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: t.Value}}})
			}
		}
		if o.extracted {
			name = ext
		}
		return o.prefix + name, attrs
	}
	var ms []*otlpmetricsv1.Metric
	for _, g := range r.gauges {
		name, attrs := nameAttrs(g.Name())
		ms = append(ms, &otlpmetricsv1.Metric{Name: name, Data: &otlpmetricsv1.Metric_Gauge{Gauge: &otlpmetricsv1.Gauge{
			DataPoints: []*otlpmetricsv1.NumberDataPoint{{Attributes: attrs, StartTimeUnixNano: start, TimeUnixNano: now,
				Value: &otlpmetricsv1.NumberDataPoint_AsInt{AsInt: g.Value()}}}}}})
	}
	ct := otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	if o.counterDelta {
		ct = otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	}
	for _, c := range r.counters {
		name, attrs := nameAttrs(c.c.Name())
		v := c.value
		if o.counterDelta {
			v = c.delta
		}
		ms = append(ms, &otlpmetricsv1.Metric{Name: name, Data: &otlpmetricsv1.Metric_Sum{Sum: &otlpmetricsv1.Sum{
			IsMonotonic: true, AggregationTemporality: ct,
			DataPoints: []*otlpmetricsv1.NumberDataPoint{{Attributes: attrs, StartTimeUnixNano: start, TimeUnixNano: now,
				Value: &otlpmetricsv1.NumberDataPoint_AsInt{AsInt: int64(v)}}}}}})
	}
	ht := otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	if o.histDelta {
		ht = otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	}
	for _, h := range r.hists {
		name, attrs := nameAttrs(h.h.Name())
		count, sum, cum := h.count, h.sum, h.cum
		if o.histDelta {
			count, sum, cum = h.icount, h.isum, h.icum
		}
		dp := &otlpmetricsv1.HistogramDataPoint{Attributes: attrs, StartTimeUnixNano: start, TimeUnixNano: now,
			Count: count, Sum: proto.Float64(sum), ExplicitBounds: append([]float64(nil), h.h.Buckets()...)}
		prev := uint64(0)
		for _, c := range cum {
			dp.BucketCounts = append(dp.BucketCounts, c-prev)
			prev = c
		}
		dp.BucketCounts = append(dp.BucketCounts, count-min(prev, count)) // above the last bound
		ms = append(ms, &otlpmetricsv1.Metric{Name: name, Data: &otlpmetricsv1.Metric_Histogram{Histogram: &otlpmetricsv1.Histogram{
			AggregationTemporality: ht, DataPoints: []*otlpmetricsv1.HistogramDataPoint{dp}}}})
	}
	if len(ms) == 0 {
		return nil
	}
	return &colmetricsv1.ExportMetricsServiceRequest{ResourceMetrics: []*otlpmetricsv1.ResourceMetrics{{
		Resource:     &resourcev1.Resource{},
		ScopeMetrics: []*otlpmetricsv1.ScopeMetrics{{Metrics: ms}},
	}}}
}

func (o *otelSink) flush(r *round) {
	req := o.request(r)
	if req == nil {
		return
	}
	err := func() error {
		cc, err := o.svc.client().GRPCTo(o.target.Target)
		if err != nil {
			return err
		}
		ctx, cancel := o.target.Context(context.Background())
		defer cancel()
		ctx, cancel2 := context.WithTimeout(ctx, o.target.Timeout)
		defer cancel2()
		_, err = colmetricsv1.NewMetricsServiceClient(cc).Export(ctx, req)
		return err
	}()
	o.fail.result(o.svc, o.dropped, err)
}

func (o *otelSink) stop() {}
