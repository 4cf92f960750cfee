package controller

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// scrape reads the text exposition of h's /metrics as series → value,
// a series written as Prometheus does: name{label="value",...}, labels
// sorted by name.
func scrape(t *testing.T, c *Controller, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(c.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

const metricsManifests = `
apiVersion: v1
kind: Service
metadata: {name: s, namespace: a}
spec: {ports: [{port: 80}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: root, namespace: a}
spec:
  virtualhost: {fqdn: one.example.com}
  includes: [{name: child, conditions: [{prefix: /c}]}, {name: bad-child, conditions: [{prefix: /b}]}]
  routes: [{services: [{name: s, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: child, namespace: a}
spec: {routes: [{services: [{name: s, port: 80}]}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: bad-child, namespace: a}
spec: {routes: [{services: [{name: missing, port: 80}]}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: orphan, namespace: a}
spec: {routes: [{services: [{name: s, port: 80}]}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: broken, namespace: b}
spec:
  virtualhost: {fqdn: two.example.com}
  routes: [{services: [{name: missing, port: 80}]}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: direct, namespace: b}
spec:
  virtualhost: {fqdn: three.example.com}
  routes: [{directResponsePolicy: {statusCode: 200}}]
`

// TestContourMetrics: the controller's /metrics has Contour's HTTPProxy,
// DAG rebuild and build info series, with Contour's labels and the
// values Contour's calculateRouteMetric gives the same HTTPProxies, on
// the leader only; Legate's own series stay.
func TestContourMetrics(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(metricsManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	proxies := map[string]float64{
		`contour_httpproxy{namespace="a"}`:                                     4,
		`contour_httpproxy{namespace="b"}`:                                     2,
		`contour_httpproxy_root{namespace="a"}`:                                1,
		`contour_httpproxy_root{namespace="b"}`:                                2,
		`contour_httpproxy_orphaned{namespace="a"}`:                            1,
		`contour_httpproxy_valid{namespace="a",vhost="one.example.com"}`:       1,
		`contour_httpproxy_valid{namespace="a",vhost=""}`:                      1, // child: included proxies have no vhost
		`contour_httpproxy_invalid{namespace="a",vhost=""}`:                    1, // bad-child
		`contour_httpproxy_invalid{namespace="b",vhost="two.example.com"}`:     1,
		`contour_httpproxy_valid{namespace="b",vhost="three.example.com"}`:     1,
		`contour_build_info{branch="main",revision="abc123",version="v1.2.3"}`: 1,
	}
	for _, leader := range []bool{true, false} {
		t.Run("leader "+strconv.FormatBool(leader), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			st := source.NewStore()
			st.Replace(objs)
			c := New(st, xdsserver.New(log, xdsserver.NewMetrics(reg)), Options{Log: log, Registry: reg,
				IsLeader: func() bool { return leader }, BuildInfo: BuildInfo{Branch: "main", Revision: "abc123", Version: "v1.2.3"}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			before := time.Now().Unix()
			go c.Run(ctx)
			deadline := time.Now().Add(10 * time.Second)
			for !c.Ready() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !c.Ready() {
				t.Fatal("no build")
			}
			got := scrape(t, c, reg)
			var series []string
			for s := range got {
				if strings.HasPrefix(s, "contour_httpproxy") {
					series = append(series, s)
				}
			}
			for s, want := range proxies {
				if !leader && strings.HasPrefix(s, "contour_httpproxy") {
					continue
				}
				if v, ok := got[s]; !ok || v != want {
					t.Errorf("%s = %v (exported %v), want %v", s, v, ok, want)
				}
			}
			if n := len(proxies) - 1; leader && len(series) != n || !leader && len(series) != 0 {
				t.Errorf("contour_httpproxy* series = %v, want %d", series, map[bool]int{true: n}[leader])
			}
			if got["contour_dagrebuild_total"] != 1 || got["contour_dagrebuild_seconds_count"] != 1 || got["contour_cachehandler_onupdate_duration_seconds_count"] != 1 {
				t.Errorf("rebuild total %v, seconds count %v, onupdate count %v: want 1 build", got["contour_dagrebuild_total"],
					got["contour_dagrebuild_seconds_count"], got["contour_cachehandler_onupdate_duration_seconds_count"])
			}
			if _, ok := got[`contour_dagrebuild_seconds{quantile="0.99"}`]; !ok {
				t.Error("contour_dagrebuild_seconds is not a summary with Contour's quantiles")
			}
			if ts := got["contour_dagrebuild_timestamp"]; ts < float64(before) {
				t.Errorf("contour_dagrebuild_timestamp = %v, want the build's time (≥ %d)", ts, before)
			}
			if got[`contour_dag_cache_object{kind="HTTPProxy"}`] != 6 || got[`contour_dag_cache_object{kind="Service"}`] != 1 {
				t.Errorf("contour_dag_cache_object HTTPProxy %v, Service %v; want 6, 1", got[`contour_dag_cache_object{kind="HTTPProxy"}`], got[`contour_dag_cache_object{kind="Service"}`])
			}
			// Legate's own names are still there (dashboards and alerts use them).
			if got[`legate_controller_httpproxies{status="valid"}`] != 3 || got["legate_controller_builds_total"] != 1 {
				t.Errorf("legate_controller_httpproxies valid = %v, builds = %v", got[`legate_controller_httpproxies{status="valid"}`], got["legate_controller_builds_total"])
			}
		})
	}
}

// TestContourMetricsGone: the label sets of the previous build that the
// next one does not have are deleted (as Contour does), and a replica
// that stops leading exports none.
func TestContourMetricsGone(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newContourMetrics(BuildInfo{})
	reg.MustRegister(m.collectors()...)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(metricsManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	series := func() []string {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range fams {
			if !strings.HasPrefix(f.GetName(), "contour_httpproxy") {
				continue
			}
			for _, mt := range f.GetMetric() {
				var ls []string
				for _, l := range mt.GetLabel() {
					ls = append(ls, l.GetName()+"="+l.GetValue())
				}
				out = append(out, f.GetName()+"{"+strings.Join(ls, ",")+"}")
			}
		}
		return out
	}
	m.setProxies(model.Build(objs, model.Options{}))
	if n := len(series()); n != 10 {
		t.Fatalf("%d series, want 10: %v", n, series())
	}
	for k := range objs.HTTPProxies {
		if k.Namespace == "b" {
			delete(objs.HTTPProxies, k)
		}
	}
	m.setProxies(model.Build(objs, model.Options{}))
	for _, s := range series() {
		if strings.Contains(s, "namespace=b") {
			t.Errorf("%s still exported after namespace b's HTTPProxies went away", s)
		}
	}
	if n := len(series()); n != 6 {
		t.Errorf("%d series, want namespace a's 6: %v", n, series())
	}
	m.setProxies(nil)
	if s := series(); len(s) != 0 {
		t.Errorf("series without a model (not the leader): %v", s)
	}
}
