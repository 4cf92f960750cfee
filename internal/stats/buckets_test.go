package stats

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestHistogramBucketSettings: the first rule matching a histogram's name
// gives its bounds (sorted), others keep Envoy's defaults; values land in
// the configured buckets and Prometheus renders those bounds.
func TestHistogramBucketSettings(t *testing.T) {
	s := NewStore()
	s.SetHistogramBuckets([]BucketRule{
		{Match: func(n string) bool { return strings.HasPrefix(n, "cluster.") }, Buckets: []float64{100, 1, 10}},
		{Match: func(n string) bool { return strings.HasPrefix(n, "cluster.b.") }, Buckets: []float64{7}}, // shadowed
		{Match: func(n string) bool { return n == "http.ingress.downstream_rq_time" }, Buckets: []float64{0.25}},
	})
	cases := []struct {
		name string
		want []float64
	}{
		{"cluster.a.upstream_rq_time", []float64{1, 10, 100}},
		{"cluster.b.upstream_rq_time", []float64{1, 10, 100}},
		{"http.ingress.downstream_rq_time", []float64{0.25}},
		{"listener.x.downstream_cx_length_ms", DefaultBuckets},
	}
	for _, tc := range cases {
		if got := s.Histogram(tc.name).Buckets(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: buckets %v, want %v", tc.name, got, tc.want)
		}
	}
	h := s.Histogram("cluster.a.upstream_rq_time")
	for _, v := range []float64{0.5, 5, 5, 50, 500} {
		h.Record(v)
	}
	if got, want := h.Cumulative(), []uint64{1, 3, 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("cumulative %v, want %v", got, want)
	}
	if q := h.Quantile(0.5); q < 1 || q > 10 {
		t.Errorf("median %v, want within the (1, 10] bucket", q)
	}
	var b bytes.Buffer
	if err := s.WritePrometheus(&b, Filter{}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="1"} 1`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="10"} 3`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="100"} 4`,
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="+Inf"} 5`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("prometheus output lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="0.5"}`) {
		t.Errorf("a configured histogram still has the default bounds:\n%s", out)
	}
}
