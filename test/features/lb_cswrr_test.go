// Client-side weighted round robin: typed load_balancing_policy
// client_side_weighted_round_robin weighs hosts by the ORCA load reports
// real upstreams send (per request in the endpoint-load-metrics response
// header, or out of band over grpc-go's OpenRcaService), and wrr_locality
// picks localities by weight first.

package features_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/orca"

	"github.com/legateproxy/legate/internal/testutil"
)

const cswrrType = `"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin`

// orcaUpstream is a real upstream that sends the ORCA report it is told to
// in the endpoint-load-metrics response header ("" sends none).
type orcaUpstream struct {
	*testutil.Upstream
	report atomic.Pointer[string]
}

func startORCAUpstream(t *testing.T, name, report string) *orcaUpstream {
	u := &orcaUpstream{}
	u.setReport(report)
	u.Upstream = testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		if rep := *u.report.Load(); rep != "" {
			w.Header().Set("endpoint-load-metrics", rep)
		}
		fmt.Fprintf(w, "upstream=%s\n", name)
	}))
	return u
}

func (u *orcaUpstream) setReport(r string) { u.report.Store(&r) }

func cswrrCluster(name, policy string, addrs ...string) string {
	return staticCluster(name, `load_balancing_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.client_side_weighted_round_robin, typed_config: {`+cswrrType+`, `+policy+`}}}]}`, addrs...)
}

// split sends n requests to path and returns each upstream's share.
func split(t *testing.T, c *http.Client, url string, n int) map[string]float64 {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		code, h, body := testutil.Get(t, c, url)
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		counts[h.Get("x-upstream")]++
	}
	shares := map[string]float64{}
	for k, v := range counts {
		shares[k] = float64(v) / float64(n)
	}
	return shares
}

func near(got, want map[string]float64, tol float64) bool {
	for k, w := range want {
		if math.Abs(got[k]-w) > tol {
			return false
		}
	}
	return true
}

// awaitSplit sends batches until the split is near want (the weights are
// recomputed every weight_update_period once the blackout passed), then
// checks a large batch with generous bounds. Time bounds only the wait.
func awaitSplit(t *testing.T, c *http.Client, url string, want map[string]float64, what string) {
	t.Helper()
	var last map[string]float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = split(t, c, url, 70)
		if near(last, want, 0.1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the split %v never came near %v", what, last, want)
		}
	}
	if got := split(t, c, url, 1400); !near(got, want, 0.06) {
		t.Fatalf("%s: split %v, want about %v", what, got, want)
	}
}

// TestCSWRRFollowsReportedUtilization: three upstreams report 100 qps at
// CPU 0.2, 0.4 and 0.8, so their weights are 500, 250 and 125 (qps /
// utilization) and they get 4/7, 2/7 and 1/7 of the traffic once the
// blackout period passed. When they stop reporting, the weights expire
// and traffic is even again. A cluster whose blackout never ends keeps
// an even split despite the reports.
func TestCSWRRFollowsReportedUtilization(t *testing.T) {
	a := startORCAUpstream(t, "a", "TEXT rps_fractional=100, cpu_utilization=0.2")
	b := startORCAUpstream(t, "b", "TEXT rps_fractional=100, cpu_utilization=0.4")
	// JSON reports are read too (one of Envoy's three formats).
	cc := startORCAUpstream(t, "c", `JSON {"rps_fractional": 100, "cpu_utilization": 0.8}`)
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /blackout}, route: {cluster: blackout}}", "{match: {prefix: /}, route: {cluster: web}}"),
		clusters: "[" + cswrrCluster("web", "blackout_period: 0.3s, weight_update_period: 0.1s, weight_expiration_period: 1s", a.Addr, b.Addr, cc.Addr) + ", " +
			cswrrCluster("blackout", "blackout_period: 3600s, weight_update_period: 0.1s", a.Addr, b.Addr, cc.Addr) + "]",
	})
	c := testutil.Client()
	awaitSplit(t, c, p.URL("http", "/"), map[string]float64{"a": 4.0 / 7, "b": 2.0 / 7, "c": 1.0 / 7}, "reported utilization")
	// /clusters shows the weights in use, as Envoy's.
	_, _, clusters := testutil.Get(t, c, "http://"+p.Admin+"/clusters")
	for _, want := range []string{"web::" + a.Addr + "::weight::500", "web::" + b.Addr + "::weight::250", "web::" + cc.Addr + "::weight::125"} {
		if !strings.Contains(clusters, want) {
			t.Errorf("/clusters lacks %q", want)
		}
	}

	// In blackout, every host has the default weight: plain round robin.
	if got := split(t, c, p.URL("http", "/blackout"), 300); !near(got, map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3}, 0.01) {
		t.Errorf("during the blackout period the split is %v, want even", got)
	}

	// Reports stop: after weight_expiration_period the weights are stale
	// and every host falls back to the default weight.
	for _, u := range []*orcaUpstream{a, b, cc} {
		u.setReport("")
	}
	awaitSplit(t, c, p.URL("http", "/"), map[string]float64{"a": 1.0 / 3, "b": 1.0 / 3, "c": 1.0 / 3}, "expired weights")

	// Malformed reports are counted, not used.
	a.setReport("TEXT cpu_utilization=lots")
	testutil.Get(t, c, p.URL("http", "/"))
	testutil.Get(t, c, p.URL("http", "/"))
	testutil.Get(t, c, p.URL("http", "/"))
	if got := p.Stat(t, "cluster.web.lb_orca_report_invalid"); got < 1 {
		t.Errorf("cluster.web.lb_orca_report_invalid = %d, want at least 1", got)
	}
}

// TestCSWRRErrorPenalty: two upstreams report the same load, one with 100
// errors per second. With error_utilization_penalty 1 its utilization is
// 0.5 + 100/100 = 1.5 against 0.5: it gets a quarter of the traffic. With
// penalty 0 the errors do not count and the split is even.
func TestCSWRRErrorPenalty(t *testing.T) {
	ok := startORCAUpstream(t, "ok", "TEXT rps_fractional=100, cpu_utilization=0.5")
	bad := startORCAUpstream(t, "bad", "TEXT rps_fractional=100, cpu_utilization=0.5, eps=100")
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /nopenalty}, route: {cluster: nopenalty}}", "{match: {prefix: /}, route: {cluster: penalty}}"),
		clusters: "[" + cswrrCluster("penalty", "blackout_period: 0s, weight_update_period: 0.1s", ok.Addr, bad.Addr) + ", " +
			cswrrCluster("nopenalty", "blackout_period: 0s, weight_update_period: 0.1s, error_utilization_penalty: 0", ok.Addr, bad.Addr) + "]",
	})
	c := testutil.Client()
	awaitSplit(t, c, p.URL("http", "/"), map[string]float64{"ok": 0.75, "bad": 0.25}, "error penalty 1")
	// Both hosts have equal weights (200): give the weights time to be
	// computed by sending traffic, then the split must be even.
	awaitSplit(t, c, p.URL("http", "/nopenalty"), map[string]float64{"ok": 0.5, "bad": 0.5}, "error penalty 0")
}

// TestWrrLocality: localities by load_balancing_weight (3:1), hosts
// within one by their reported weights (400:133).
func TestWrrLocality(t *testing.T) {
	a1 := startORCAUpstream(t, "a1", "TEXT rps_fractional=100, application_utilization=0.25, cpu_utilization=0.9")
	a2 := startORCAUpstream(t, "a2", "TEXT rps_fractional=100, application_utilization=0.75")
	b1 := startORCAUpstream(t, "b1", "TEXT rps_fractional=100, cpu_utilization=0.01")
	ep := func(u *orcaUpstream) string {
		h, port := u.Host()
		return fmt.Sprintf("{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}", h, port)
	}
	cluster := fmt.Sprintf(`{name: web, connect_timeout: 1s, type: STATIC,
  load_assignment: {cluster_name: web, endpoints: [
    {locality: {zone: a}, load_balancing_weight: 3, lb_endpoints: [%s, %s]},
    {locality: {zone: b}, load_balancing_weight: 1, lb_endpoints: [%s]}]},
  load_balancing_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.wrr_locality, typed_config: {
    "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality,
    endpoint_picking_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.client_side_weighted_round_robin, typed_config: {%s, blackout_period: 0s, weight_update_period: 0.1s}}}]}}}}]}}`,
		ep(a1), ep(a2), ep(b1), cswrrType)
	p := start(t, cfg{vhosts: vhost("{match: {prefix: /}, route: {cluster: web}}"), clusters: "[" + cluster + "]"})
	awaitSplit(t, testutil.Client(), p.URL("http", "/"), map[string]float64{"a1": 0.75 * 0.75, "a2": 0.75 * 0.25, "b1": 0.25}, "wrr_locality")
}

// TestCSWRROutOfBand: with enable_oob_load_report the proxy opens grpc-go's
// OpenRcaService stream to every host (on the host's own address, served
// by grpc-go's orca package next to the HTTP handler) and weighs hosts by
// what the streams report; the HTTP responses carry no report. A host
// whose gRPC server lacks the service (UNIMPLEMENTED) gets the median
// weight of the others.
func TestCSWRROutOfBand(t *testing.T) {
	start1 := func(name string, cpu float64) *testutil.Upstream {
		gs := grpc.NewServer()
		if cpu > 0 {
			rec := orca.NewServerMetricsRecorder()
			rec.SetQPS(100)
			rec.SetCPUUtilization(cpu)
			if err := orca.Register(gs, orca.ServiceOptions{ServerMetricsProvider: rec}); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(gs.Stop)
		return testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("content-type"), "application/grpc") {
				gs.ServeHTTP(w, r)
				return
			}
			w.Header().Set("x-upstream", name)
			fmt.Fprintf(w, "upstream=%s\n", name)
		}))
	}
	a, b, none := start1("a", 0.2), start1("b", 0.6), start1("none", 0)
	// grpc-go's service sends a report when the stream opens, then every
	// 30s at the most often: blackout 0 uses the first one.
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: web}}"),
		clusters: "[" + cswrrCluster("web", "enable_oob_load_report: true, oob_reporting_period: 1s, blackout_period: 0s, weight_update_period: 0.1s", a.Addr, b.Addr, none.Addr) + "]",
	})
	// Weights 500 and 166; the host without ORCA gets their median, 333.
	awaitSplit(t, testutil.Client(), p.URL("http", "/"), map[string]float64{"a": 500.0 / 999, "b": 166.0 / 999, "none": 333.0 / 999}, "out-of-band reports")
	testutil.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(p.Logs.String(), "does not serve ORCA out-of-band reports")
	}, "no log line for the host without OpenRcaService")
}

// TestCSWRRGRPCTrailers: gRPC upstreams (grpc-go with its per-call ORCA
// recorder) send their report in the endpoint-load-metrics-bin trailer of
// every response; the HTTP/2 cluster weighs them by it.
func TestCSWRRGRPCTrailers(t *testing.T) {
	start1 := func(cpu float64) *testutil.Upstream {
		rec := orca.NewServerMetricsRecorder()
		rec.SetQPS(100)
		rec.SetCPUUtilization(cpu)
		// grpc-go sends the trailer only for calls whose handler took the
		// call's recorder; this inner interceptor takes it for every call.
		touch := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			orca.CallMetricsRecorderFromContext(ctx)
			return h(ctx, req)
		})
		gs := grpc.NewServer(orca.CallMetricsServerOption(rec), touch)
		healthpb.RegisterHealthServer(gs, health.NewServer())
		t.Cleanup(gs.Stop)
		return testutil.StartUpstream(t, gs)
	}
	a, b := start1(0.2), start1(0.6)
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: grpc}}"),
		clusters: "[" + staticCluster("grpc", h2+`, load_balancing_policy: {policies: [{typed_extension_config: {name: c, typed_config: {`+cswrrType+`, blackout_period: 0s, weight_update_period: 0.1s}}}]}`, a.Addr, b.Addr) + "]",
	})
	cc, err := grpc.NewClient(p.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	batch := func(n int) float64 {
		a0 := a.Hits()
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		return float64(a.Hits()-a0) / float64(n)
	}
	deadline := time.Now().Add(20 * time.Second)
	for math.Abs(batch(70)-0.75) > 0.1 {
		if time.Now().After(deadline) {
			t.Fatal("the split never followed the trailers' reports")
		}
	}
	if got := batch(1000); math.Abs(got-0.75) > 0.06 {
		t.Fatalf("host a got %.3f of the calls, want about 0.75 (weights 500:166)", got)
	}
}
