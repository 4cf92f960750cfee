package stats

import (
	"bytes"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func TestExtractTags(t *testing.T) {
	cases := []struct {
		in   string
		name string
		tags []Tag
	}{
		{"cluster.web.upstream_rq_200", "cluster.upstream_rq", []Tag{{"envoy.response_code", "200"}, {"envoy.cluster_name", "web"}}},
		{"cluster.web.upstream_rq_2xx", "cluster.upstream_rq_xx", []Tag{{"envoy.response_code_class", "2"}, {"envoy.cluster_name", "web"}}},
		{"cluster.web.upstream_cx_total", "cluster.upstream_cx_total", []Tag{{"envoy.cluster_name", "web"}}},
		{"http.ingress_http.downstream_rq_total", "http.downstream_rq_total", []Tag{{"envoy.http_conn_manager_prefix", "ingress_http"}}},
		{"http.ingress_http.downstream_rq_5xx", "http.downstream_rq_xx", []Tag{{"envoy.response_code_class", "5"}, {"envoy.http_conn_manager_prefix", "ingress_http"}}},
		{"listener.0.0.0.0_10000.downstream_cx_total", "listener.downstream_cx_total", []Tag{{"envoy.listener_address", "0.0.0.0_10000"}}},
		{"listener.0.0.0.0_10000.http.ingress_http.downstream_rq_2xx", "listener.http.downstream_rq_xx", []Tag{{"envoy.response_code_class", "2"}, {"envoy.http_conn_manager_prefix", "ingress_http"}, {"envoy.listener_address", "0.0.0.0_10000"}}},
		{"tcp.db.downstream_cx_total", "tcp.downstream_cx_total", []Tag{{"envoy.tcp_prefix", "db"}}},
		{"server.live", "server.live", nil},
	}
	for _, tc := range cases {
		n, tags := ExtractTags(tc.in)
		if n != tc.name || !reflect.DeepEqual(tags, tc.tags) {
			t.Errorf("%s: got %s %v, want %s %v", tc.in, n, tags, tc.name, tc.tags)
		}
	}
}

func TestRender(t *testing.T) {
	s := NewStore()
	s.Counter("cluster.web.upstream_rq_total").Add(3)
	sc := NewStatusCounters(s.Scope("cluster.web."), "upstream_rq", true)
	sc.Inc(200)
	sc.Inc(503)
	s.Gauge("cluster.web.upstream_cx_active").Set(2)
	h := s.Histogram("cluster.web.upstream_rq_time")
	for _, v := range []float64{1, 2, 3, 40} {
		h.Record(v)
	}
	var b bytes.Buffer
	s.WriteText(&b, Filter{})
	for _, want := range []string{"cluster.web.upstream_rq_total: 3\n", "cluster.web.upstream_rq_200: 1\n", "cluster.web.upstream_rq_5xx: 1\n", "cluster.web.upstream_cx_active: 2\n", "cluster.web.upstream_rq_time: P0(nan,"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	s.WritePrometheus(&b, Filter{})
	for _, want := range []string{
		"# TYPE envoy_cluster_upstream_rq counter\n",
		`envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="web"} 1`,
		`envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="web"} 1`,
		`envoy_cluster_upstream_rq_total{envoy_cluster_name="web"} 3`,
		"# TYPE envoy_cluster_upstream_cx_active gauge\n",
		`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="web",le="5"} 3`,
		`envoy_cluster_upstream_rq_time_count{envoy_cluster_name="web"} 4`,
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("prometheus output lacks %q:\n%s", want, b.String())
		}
	}
	if q := h.Quantile(0.5); q < 1 || q > 5 {
		t.Errorf("median %v out of its bucket", q)
	}
}

func TestConfiguredTags(t *testing.T) {
	st := NewStore()
	lookahead, err := NewTagRule("http_conn_manager_listener_prefix", `^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)`)
	if err != nil {
		t.Fatal(err)
	}
	cluster, _ := NewTagRule("cluster_name", `^cluster(\.(.+);)`)
	if _, err := NewTagRule("x", `(?<=a)b`); err == nil {
		t.Error("a lookbehind RE2 cannot run must be an error")
	}
	st.Configure([]TagRule{cluster, lookahead, FixedTag("mesh", "m1")}, false, func(n string) bool { return !strings.HasPrefix(n, "hidden.") })
	for _, tc := range []struct {
		in, name string
		tags     string
	}{
		{"cluster.xds;.upstream_cx_total", "cluster.upstream_cx_total", "cluster_name=xds mesh=m1"},
		{"listener.0.0.0.0_15006.http.10.0.0.1_80.downstream_rq_total", "listener.0.0.0.0_15006.http.downstream_rq_total", "http_conn_manager_listener_prefix=10.0.0.1_80 mesh=m1"},
		// use_all_default_tags false: no envoy.cluster_name.
		{"cluster.web.upstream_rq_total", "cluster.web.upstream_rq_total", "mesh=m1"},
	} {
		n, tags := st.ExtractTags(tc.in)
		var got []string
		for _, tg := range tags {
			got = append(got, tg.Name+"="+tg.Value)
		}
		sort.Strings(got)
		if n != tc.name || strings.Join(got, " ") != tc.tags {
			t.Errorf("%s: %s %v, want %s %s", tc.in, n, got, tc.name, tc.tags)
		}
	}
	st.Counter("hidden.x").Inc()
	st.Counter("shown.x").Inc()
	snap := st.Snapshot()
	if len(snap.Counters) != 1 || snap.Counters[0].Name() != "shown.x" {
		t.Errorf("stats_matcher: snapshot has %d counters", len(snap.Counters))
	}
}
