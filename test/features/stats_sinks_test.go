// Stats sinks that export over gRPC: envoy.stat_sinks.metrics_service
// (io.prometheus.client.MetricFamily on
// envoy.service.metrics.v3.MetricsService.StreamMetrics) and
// envoy.stat_sinks.open_telemetry (OTLP metrics,
// opentelemetry.proto.collector.metrics.v1.MetricsService.Export), both
// received by a real grpc-go server on the official protos, flushed every
// stats_flush_interval; and a collector that is gone.

package features_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	metricsvcv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	promgo "github.com/prometheus/client_model/go"
	colmetricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	otlpmetricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/testutil"
)

// metricsCollector receives both services' metrics.
type metricsCollector struct {
	colmetricsv1.UnimplementedMetricsServiceServer
	addr string

	mu       sync.Mutex
	nodes    []string
	families []*promgo.MetricFamily
	otlp     []*otlpmetricsv1.Metric
}

func startMetricsCollector(t *testing.T) *metricsCollector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &metricsCollector{addr: ln.Addr().String()}
	s := grpc.NewServer()
	metricsvcv3.RegisterMetricsServiceServer(s, envoyMetrics{c})
	colmetricsv1.RegisterMetricsServiceServer(s, c)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return c
}

type envoyMetrics struct{ c *metricsCollector }

func (e envoyMetrics) StreamMetrics(s metricsvcv3.MetricsService_StreamMetricsServer) error {
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&metricsvcv3.StreamMetricsResponse{})
		}
		if err != nil {
			return err
		}
		e.c.mu.Lock()
		if id := m.GetIdentifier(); id != nil {
			e.c.nodes = append(e.c.nodes, id.GetNode().GetId())
		}
		e.c.families = append(e.c.families, m.GetEnvoyMetrics()...)
		e.c.mu.Unlock()
	}
}

func (c *metricsCollector) Export(_ context.Context, req *colmetricsv1.ExportMetricsServiceRequest) (*colmetricsv1.ExportMetricsServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rm := range req.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				c.otlp = append(c.otlp, proto.Clone(m).(*otlpmetricsv1.Metric))
			}
		}
	}
	return &colmetricsv1.ExportMetricsServiceResponse{}, nil
}

// promSum adds the counter values of every received family of that name
// and type whose labels include want.
func (c *metricsCollector) promSum(name string, typ promgo.MetricType, want map[string]string) (sum float64, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.families {
		if f.GetName() != name || f.GetType() != typ {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			n++
			switch typ {
			case promgo.MetricType_COUNTER:
				sum += m.GetCounter().GetValue()
			case promgo.MetricType_HISTOGRAM:
				sum += float64(m.GetHistogram().GetSampleCount())
			case promgo.MetricType_SUMMARY:
				sum += float64(m.GetSummary().GetSampleCount())
			}
		}
	}
	return sum, n
}

func hasLabels(m *promgo.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// otlpPoints returns the received OTLP metrics of a name.
func (c *metricsCollector) otlpMetrics(name string) []*otlpmetricsv1.Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*otlpmetricsv1.Metric
	for _, m := range c.otlp {
		if m.GetName() == name {
			out = append(out, m)
		}
	}
	return out
}

func statsSinkConfig(app, collector string) cfg {
	return cfg{
		vhosts:   vhost(`{match: {prefix: "/"}, route: {cluster: app}}`),
		clusters: fmt.Sprintf("[%s, %s]", staticCluster("app", "", app), staticCluster("collector", `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}`, collector)),
		extra: `node: {id: sink-node, cluster: sink-cluster}
stats_flush_interval: 0.2s
stats_sinks:
- name: envoy.stat_sinks.metrics_service
  typed_config:
    "@type": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig
    transport_api_version: V3
    grpc_service: {envoy_grpc: {cluster_name: collector}, timeout: 2s}
    report_counters_as_deltas: true
    emit_tags_as_labels: true
- name: envoy.stat_sinks.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig
    grpc_service: {envoy_grpc: {cluster_name: collector}, timeout: 2s}
    report_histograms_as_deltas: true
    prefix: legate
`,
	}
}

// TestGRPCStatsSinks: three requests through the proxy are reported by
// both sinks. The metrics service gets tag-extracted names with the tags
// as labels, counters as deltas (their sum over the flushes is the
// count) and each histogram as a summary and a histogram, on a stream
// whose first message names the node. The OpenTelemetry sink gets
// prefixed, tag-extracted names with the tags as attributes, counters as
// cumulative monotonic sums, histograms as deltas with Envoy's buckets.
func TestGRPCStatsSinks(t *testing.T) {
	col := startMetricsCollector(t)
	app := testutil.StartUpstream(t, testutil.EchoHandler("app"))
	p := start(t, statsSinkConfig(app.Addr, col.addr))
	c := testutil.Client()
	for i := 0; i < 3; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	cluster := map[string]string{"envoy.cluster_name": "app"}
	testutil.Eventually(t, 10*time.Second, func() bool {
		v, _ := col.promSum("cluster.upstream_rq_total", promgo.MetricType_COUNTER, cluster)
		return v >= 3
	}, "the metrics service did not receive cluster.upstream_rq_total{envoy.cluster_name=app} = 3")
	// Deltas: later flushes add nothing once traffic stopped.
	time.Sleep(500 * time.Millisecond)
	if v, n := col.promSum("cluster.upstream_rq_total", promgo.MetricType_COUNTER, cluster); v != 3 || n < 2 {
		t.Errorf("sum of upstream_rq_total deltas %v over %d flushes, want 3 over 2 or more", v, n)
	}
	if v, _ := col.promSum("cluster.upstream_rq_time", promgo.MetricType_HISTOGRAM, cluster); v != 3 {
		t.Errorf("upstream_rq_time histogram samples %v, want 3", v)
	}
	if v, _ := col.promSum("cluster.upstream_rq_time", promgo.MetricType_SUMMARY, cluster); v != 3 {
		t.Errorf("upstream_rq_time summary samples %v, want 3", v)
	}
	col.mu.Lock()
	nodes := append([]string(nil), col.nodes...)
	col.mu.Unlock()
	if len(nodes) != 1 || nodes[0] != "sink-node" {
		t.Errorf("stream identifiers %v, want one with node sink-node", nodes)
	}

	var last *otlpmetricsv1.Metric
	testutil.Eventually(t, 10*time.Second, func() bool {
		ms := col.otlpMetrics("legate.cluster.upstream_rq_total")
		for _, m := range ms {
			dp := m.GetSum().GetDataPoints()
			if len(dp) == 1 && dp[0].GetAsInt() == 3 && len(dp[0].GetAttributes()) > 0 {
				last = m
				return true
			}
		}
		return false
	}, "the OpenTelemetry sink did not report legate.cluster.upstream_rq_total = 3")
	s := last.GetSum()
	if !s.GetIsMonotonic() || s.GetAggregationTemporality() != otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
		t.Errorf("counter sum: monotonic %v temporality %v", s.GetIsMonotonic(), s.GetAggregationTemporality())
	}
	a := s.GetDataPoints()[0].GetAttributes()
	if len(a) != 1 || a[0].GetKey() != "envoy.cluster_name" || a[0].GetValue().GetStringValue() != "app" {
		t.Errorf("counter attributes %v, want envoy.cluster_name=app", a)
	}
	var samples uint64
	for _, m := range col.otlpMetrics("legate.cluster.upstream_rq_time") {
		h := m.GetHistogram()
		if h.GetAggregationTemporality() != otlpmetricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA {
			t.Fatalf("histogram temporality %v, want DELTA", h.GetAggregationTemporality())
		}
		for _, dp := range h.GetDataPoints() {
			var n uint64
			for _, b := range dp.GetBucketCounts() {
				n += b
			}
			if n != dp.GetCount() || len(dp.GetBucketCounts()) != len(dp.GetExplicitBounds())+1 {
				t.Errorf("histogram point: buckets %v (bounds %d) for count %d", dp.GetBucketCounts(), len(dp.GetExplicitBounds()), dp.GetCount())
			}
			samples += dp.GetCount()
		}
	}
	if samples != 3 {
		t.Errorf("upstream_rq_time delta histograms hold %d samples, want 3", samples)
	}
}

// TestGRPCStatsSinksCollectorGone: with the collector's port closed, or
// a collector that accepts connections and never answers, the proxy
// serves as usual and counts the lost flushes.
func TestGRPCStatsSinksCollectorGone(t *testing.T) {
	for name, addr := range map[string]string{"closed": fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), "hangs": startBlackHole(t)} {
		t.Run(name, func(t *testing.T) { statsSinksCollectorGone(t, addr) })
	}
}

func statsSinksCollectorGone(t *testing.T, collector string) {
	app := testutil.StartUpstream(t, testutil.EchoHandler("app"))
	p := start(t, statsSinkConfig(app.Addr, collector))
	c := testutil.Client()
	begin := time.Now()
	for i := 0; i < 10; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("10 requests took %v with the collector gone", d)
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return p.Stat(t, "stats.sink_flush_dropped") >= 2 },
		"stats.sink_flush_dropped did not count the failed flushes")
}
