package statsink

import (
	"math"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	promgo "github.com/prometheus/client_model/go"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

func TestQuantile(t *testing.T) {
	// Buckets 0.5, 1, 5, …: 2 samples in (0, 0.5], 2 in (1, 5].
	cum := make([]uint64, len(stats.DefaultBuckets))
	for i := range cum {
		cum[i] = 4
	}
	cum[0], cum[1] = 2, 2
	for _, tc := range []struct {
		q, want float64
	}{
		{0, 0}, {0.25, 0.25}, {0.5, 0.5}, {0.75, 3}, {1, 5},
	} {
		if got := quantile(cum, 4, tc.q); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if !math.IsNaN(quantile(make([]uint64, len(stats.DefaultBuckets)), 0, 0.5)) {
		t.Error("an empty interval's quantile is not NaN")
	}
}

func compileSinks(t *testing.T, y string) (*Flusher, error) {
	t.Helper()
	b := &bootstrapv3.Bootstrap{}
	if _, err := config.Decode([]byte(y), b, ""); err != nil {
		t.Fatal(err)
	}
	return Compile(b, stats.NewStore(), nil, nil)
}

// TestCompileGRPCSinks: accepted and refused fields, with their paths.
func TestCompileGRPCSinks(t *testing.T) {
	const ms = "stats_sinks: [{name: envoy.stat_sinks.metrics_service, typed_config: {\"@type\": type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig, "
	const ot = "stats_sinks: [{name: envoy.stat_sinks.open_telemetry, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.stat_sinks.open_telemetry.v3.SinkConfig, "
	for _, tc := range []struct{ name, yaml, err string }{
		{"metrics service", ms + "grpc_service: {envoy_grpc: {cluster_name: c}}, transport_api_version: V3, histogram_emit_mode: HISTOGRAM}}]", ""},
		{"metrics service google_grpc", ms + "grpc_service: {google_grpc: {target_uri: x, stat_prefix: s}}}}]", ""},
		{"metrics service google default credentials", ms + "grpc_service: {google_grpc: {target_uri: x, stat_prefix: s, channel_credentials: {google_default: {}}}}}}]", "channel_credentials"},
		{"metrics service no service", ms + "emit_tags_as_labels: true}}]", "grpc_service"},
		{"otel", ot + "grpc_service: {envoy_grpc: {cluster_name: c}}, prefix: p, report_counters_as_deltas: true}}]", ""},
		{"otel http", ot + "http_service: {http_uri: {uri: x, cluster: c, timeout: 1s}}}}]", "http_service"},
		{"otel max points", ot + "grpc_service: {envoy_grpc: {cluster_name: c}}, max_data_points_per_request: 10}}]", "max_data_points_per_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileSinks(t, tc.yaml)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one naming %q", err, tc.err)
			}
		})
	}
}

// TestMetricFamilies: names, labels, deltas and histogram modes of the
// metrics service sink.
func TestMetricFamilies(t *testing.T) {
	st := stats.NewStore()
	f := &Flusher{store: st, lastCounters: map[*stats.Counter]uint64{}, lastHist: map[*stats.Histogram]histState{}, lastFlush: time.Now()}
	c := st.Counter("cluster.app.upstream_rq_total")
	h := st.Histogram("cluster.app.upstream_rq_time")
	c.Add(5)
	h.Record(3)
	f.collect()
	c.Add(2)
	h.Record(7)
	h.Record(700)
	r := f.collect()
	for _, tc := range []struct {
		name           string
		m              metricsService
		counter        float64
		counterName    string
		summary, histo bool
		labels         int
	}{
		{"totals", metricsService{summary: true, hist: true}, 7, "cluster.app.upstream_rq_total", true, true, 0},
		{"deltas and labels", metricsService{deltas: true, labels: true, hist: true}, 2, "cluster.upstream_rq_total", false, true, 1},
		{"summary only", metricsService{summary: true}, 7, "cluster.app.upstream_rq_total", true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotSummary, gotHist bool
			for _, fam := range tc.m.families(r) {
				m := fam.GetMetric()[0]
				switch fam.GetType() {
				case promgo.MetricType_COUNTER:
					if fam.GetName() != tc.counterName || m.GetCounter().GetValue() != tc.counter || len(m.GetLabel()) != tc.labels {
						t.Errorf("counter %s = %v labels %v", fam.GetName(), m.GetCounter().GetValue(), m.GetLabel())
					}
				case promgo.MetricType_SUMMARY:
					gotSummary = true
					if m.GetSummary().GetSampleCount() != 2 || len(m.GetSummary().GetQuantile()) != len(supportedQuantiles) {
						t.Errorf("summary %v", m.GetSummary())
					}
				case promgo.MetricType_HISTOGRAM:
					gotHist = true
					hg := m.GetHistogram()
					// The interval's two samples: 7 and 700.
					if hg.GetSampleCount() != 2 || hg.GetSampleSum() != 707 || hg.GetBucket()[3].GetCumulativeCount() != 1 {
						t.Errorf("histogram %v", hg)
					}
				}
				if m.GetTimestampMs() == 0 {
					t.Errorf("%s has no timestamp", fam.GetName())
				}
			}
			if gotSummary != tc.summary || gotHist != tc.histo {
				t.Errorf("summary %v histogram %v, want %v %v", gotSummary, gotHist, tc.summary, tc.histo)
			}
		})
	}
}
