package proxy_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestOutlierDetection covers passive health: consecutive 5xx eject a
// host (stats, /clusters flag, traffic avoids it), it returns after the
// ejection time; success-rate ejection; local-origin failures counted
// separately with split_external_local_origin_errors.
func TestOutlierDetection(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	mk := func(name string, flaky bool) *testutil.Upstream {
		return testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if flaky && failing.Load() {
				w.WriteHeader(500)
				return
			}
			w.Write([]byte(name))
		}))
	}
	a, b, bad := mk("a", false), mk("b", false), mk("bad", true)
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: od}}"),
		clusters: "[" + staticCluster("od", "outlier_detection: {consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 3s, max_ejection_percent: 50}",
			a.Addr, b.Addr, bad.Addr) + "]",
	})
	c := testutil.Client()
	fails := 0
	for i := 0; i < 30; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code == 500 {
			fails++
		}
	}
	if fails != 3 {
		t.Errorf("%d requests failed before the ejection, want exactly consecutive_5xx = 3", fails)
	}
	if got := p.Stat(t, "cluster.od.outlier_detection.ejections_enforced_consecutive_5xx"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %d, want 1", got)
	}
	if got := p.Stat(t, "cluster.od.outlier_detection.ejections_active"); got != 1 {
		t.Errorf("ejections_active = %d, want 1", got)
	}
	_, _, clusters := testutil.Get(t, c, "http://"+p.Admin+"/clusters")
	if !strings.Contains(clusters, bad.Addr+"::health_flags::/failed_outlier_check") {
		t.Errorf("/clusters does not flag the ejected host:\n%s", clusters)
	}
	// Recovered: back after base_ejection_time, traffic returns.
	failing.Store(false)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.od.outlier_detection.ejections_active") == 0 }, "host never returned from ejection")
	hits := bad.Hits()
	for i := 0; i < 9; i++ {
		testutil.Get(t, c, p.URL("http", "/"))
	}
	if bad.Hits() == hits {
		t.Error("the returned host gets no traffic")
	}
}

func TestOutlierSuccessRateAndLocalOrigin(t *testing.T) {
	var n atomic.Int64
	ok := func(name string) *testutil.Upstream { return testutil.StartUpstream(t, testutil.EchoHandler(name)) }
	a, b := ok("a"), ok("b")
	half := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte("half"))
	}))
	// A port nothing listens on: connection refused (local origin).
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /sr}, route: {cluster: sr}}", "{match: {prefix: /lo}, route: {cluster: lo, retry_policy: {retry_on: connect-failure, num_retries: 3}}}"),
		clusters: "[" + staticCluster("sr", "outlier_detection: {interval: 0.5s, base_ejection_time: 30s, max_ejection_percent: 50, enforcing_consecutive_5xx: 0, "+
			"success_rate_minimum_hosts: 3, success_rate_request_volume: 20, success_rate_stdev_factor: 1000}", a.Addr, b.Addr, half.Addr) + ", " +
			staticCluster("lo", "outlier_detection: {split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, interval: 1s, base_ejection_time: 30s, max_ejection_percent: 50}", a.Addr, dead) + "]",
	})
	c := testutil.Client()
	// Success rate: keep sending (about 30 requests per host per round)
	// until an interval has seen enough volume on every host.
	testutil.Eventually(t, 15*time.Second, func() bool {
		for i := 0; i < 90; i++ {
			testutil.Get(t, c, p.URL("http", "/sr"))
		}
		return p.Stat(t, "cluster.sr.outlier_detection.ejections_enforced_success_rate") == 1
	}, "the host failing half its requests was not ejected by success rate")
	for i := 0; i < 20; i++ {
		if code, _, body := testutil.Get(t, c, p.URL("http", "/sr")); code != 200 || body == "half" {
			t.Fatalf("request after success-rate ejection = %d %q", code, body)
		}
	}
	// Local origin: connection refusals eject the dead host; retries hide them.
	for i := 0; i < 10; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/lo")); code != 200 {
			t.Fatalf("request %d = %d; connect-failure retries should reach the live host", i, code)
		}
	}
	if got := p.Stat(t, "cluster.lo.outlier_detection.ejections_enforced_consecutive_local_origin_failure"); got != 1 {
		t.Errorf("ejections_enforced_consecutive_local_origin_failure = %d, want 1", got)
	}
	if got := p.Stat(t, "cluster.lo.outlier_detection.ejections_enforced_consecutive_5xx"); got != 0 {
		t.Errorf("split local-origin errors were counted as 5xx: %d", got)
	}
}

// TestCircuitBreakerOverflow: max_requests 1 with one slow request in
// flight → the next is a local 503 with flag UO and x-envoy-overloaded,
// counted in upstream_rq_pending_overflow.
func TestCircuitBreakerOverflow(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	}))
	defer once.Do(func() { close(release) })
	p := start(t, cfg{
		hcm:      `access_log: [{name: envoy.access_loggers.stdout, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: cb}}"),
		clusters: "[" + staticCluster("cb", "circuit_breakers: {thresholds: [{max_requests: 1, max_pending_requests: 1, max_connections: 1}]}", up.Addr) + "]",
	})
	c := testutil.Client()
	done := make(chan int)
	go func() {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/slow"))
		done <- code
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.cb.upstream_rq_active") == 1 }, "slow request never started")
	code, hdr, body := testutil.Get(t, testutil.Client(), p.URL("http", "/fast"))
	if code != 503 || hdr.Get("x-envoy-overloaded") != "true" {
		t.Errorf("request over max_requests = %d (x-envoy-overloaded %q) %q, want 503 with x-envoy-overloaded: true", code, hdr.Get("x-envoy-overloaded"), body)
	}
	if got := p.Stat(t, "cluster.cb.upstream_rq_pending_overflow"); got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %d, want 1", got)
	}
	once.Do(func() { close(release) })
	if code := <-done; code != 200 {
		t.Errorf("slow request = %d", code)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/fast")); code != 200 {
		t.Errorf("after the slow request, a request = %d, want 200", code)
	}
}

// TestCookieAffinity is Contour's Cookie strategy: ring hash on a cookie
// with ttl 0 → the proxy sets a session cookie (no Max-Age), and requests
// that carry it stick to one host.
func TestCookieAffinity(t *testing.T) {
	var addrs []string
	for _, n := range []string{"a", "b", "c"} {
		addrs = append(addrs, testutil.StartUpstream(t, testutil.EchoHandler(n)).Addr)
	}
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: sticky, hash_policy: [{cookie: {name: X-Contour-Session-Affinity, ttl: 0s, path: /}}]}}"),
		clusters: "[" + staticCluster("sticky", "lb_policy: RING_HASH", addrs...) + "]",
	})
	c := testutil.Client()
	_, hdr, body := testutil.Get(t, c, p.URL("http", "/"))
	sc := hdr.Get("Set-Cookie")
	if !strings.HasPrefix(sc, "X-Contour-Session-Affinity=") || strings.Contains(sc, "Max-Age") || !strings.Contains(sc, "Path=/") {
		t.Fatalf("Set-Cookie = %q, want a session cookie X-Contour-Session-Affinity with Path=/", sc)
	}
	first := upstreamOf(body)
	cookie := strings.SplitN(sc, ";", 2)[0]
	for i := 0; i < 20; i++ {
		_, h, b := testutil.Get(t, c, p.URL("http", "/"), "Cookie", cookie)
		if upstreamOf(b) != first {
			t.Fatalf("request %d with the cookie went to %q, the first to %q", i, upstreamOf(b), first)
		}
		if h.Get("Set-Cookie") != "" {
			t.Fatalf("a request that carries the cookie got a new one: %q", h.Get("Set-Cookie"))
		}
	}
}

// upstreamOf returns the "upstream=<name>" line of an echo response.
func upstreamOf(body string) string {
	l, _, _ := strings.Cut(body, "\n")
	return l
}

// TestGRPCAndHTTP2HealthChecks: grpc_health_check (grpc.health.v1 with a
// service name) ejects a NOT_SERVING host and restores it, writing Envoy's
// health check events to event_log_path; an HTTP health check with
// codec_client_type HTTP2 reaches an h2c upstream over HTTP/2.
func TestGRPCAndHTTP2HealthChecks(t *testing.T) {
	type backend struct {
		addr string
		hs   *health.Server
	}
	mk := func() backend {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(s, hs)
		go s.Serve(l)
		t.Cleanup(s.Stop)
		return backend{l.Addr().String(), hs}
	}
	a, b := mk(), mk()
	var h2seen atomic.Bool
	h2up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && r.ProtoMajor == 2 {
			h2seen.Store(true)
		}
	}))
	events := filepath.Join(t.TempDir(), "hc-events.log")
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: g}}"),
		clusters: "[" + staticCluster("g", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}, "+
			"health_checks: [{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 2, healthy_threshold: 1, event_log_path: "+events+", grpc_health_check: {service_name: echo}}]", a.addr, b.addr) + ", " +
			staticCluster("h2", "health_checks: [{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz, codec_client_type: HTTP2}}]", h2up.Addr) + "]",
	})
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 2 }, "gRPC-checked hosts never healthy")
	b.hs.SetServingStatus("echo", healthpb.HealthCheckResponse_NOT_SERVING)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 1 }, "NOT_SERVING host not ejected")
	b.hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.g.membership_healthy") == 2 }, "host not restored")
	log, _ := os.ReadFile(events)
	for _, want := range []string{`"health_checker_type":"GRPC"`, `"eject_unhealthy_event":{"failure_type":"ACTIVE"`, `"add_healthy_event":{"first_check":false}`, `"cluster_name":"g"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("event log lacks %s:\n%s", want, log)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.h2.membership_healthy") == 1 && h2seen.Load() }, "HTTP/2 health check never reached the h2c upstream over HTTP/2")
}

func endpoint(addr, extra string) string {
	h, p, _ := net.SplitHostPort(addr)
	if extra != "" {
		extra = ", " + extra
	}
	return fmt.Sprintf("{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}%s}", h, p, extra)
}

// TestPrioritiesPanicAndRetryHosts covers priority failover with EDS-style
// health_status, the healthy panic threshold, and retry_host_predicate
// previous_hosts.
func TestPrioritiesPanicAndRetryHosts(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	c := testutil.StartUpstream(t, testutil.EchoHandler("c"))
	bad := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(503)
		w.Write([]byte("bad"))
	}))
	sick := func(name string) *testutil.Upstream {
		return testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				w.WriteHeader(503)
				return
			}
			w.Write([]byte("upstream=" + name + "\n"))
		}))
	}
	s1, s2 := sick("s1"), sick("s2")
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /prio}, route: {cluster: prio}}",
			"{match: {prefix: /panic}, route: {cluster: panic}}",
			"{match: {prefix: /retry}, route: {cluster: retry, retry_policy: {retry_on: 5xx, num_retries: 2, retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], host_selection_retry_max_attempts: 5}}}",
		),
		clusters: fmt.Sprintf(`[
  {name: prio, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: prio, endpoints: [
    {priority: 0, lb_endpoints: [%s, %s]},
    {priority: 1, lb_endpoints: [%s]}]}},
  {name: panic, connect_timeout: 1s, type: STATIC, common_lb_config: {healthy_panic_threshold: {value: 50}},
   health_checks: [{timeout: 1s, interval: 0.1s, no_traffic_interval: 0.1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz}}],
   load_assignment: {cluster_name: panic, endpoints: [{lb_endpoints: [%s, %s]}]}},
  {name: retry, connect_timeout: 1s, type: STATIC, lb_policy: RANDOM, load_assignment: {cluster_name: retry, endpoints: [{lb_endpoints: [%s, %s]}]}}
]`, endpoint(a.Addr, "health_status: UNHEALTHY"), endpoint(bad.Addr, "health_status: DRAINING"), endpoint(b.Addr, ""),
			endpoint(s1.Addr, ""), endpoint(s2.Addr, ""),
			endpoint(bad.Addr, ""), endpoint(c.Addr, "")),
	})
	cl := testutil.Client()
	// Priority 0 has no healthy host (UNHEALTHY, DRAINING): all to priority 1.
	for i := 0; i < 10; i++ {
		if _, _, body := testutil.Get(t, cl, p.URL("http", "/prio")); upstreamOf(body) != "upstream=b" {
			t.Fatalf("request %d went to %q, want the priority 1 host b", i, upstreamOf(body))
		}
	}
	// Every host fails its health check: below the panic threshold the
	// balancer uses all hosts anyway.
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.panic.membership_healthy") == 0 }, "hosts never failed their checks")
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		code, _, body := testutil.Get(t, cl, p.URL("http", "/panic"))
		if code != 200 {
			t.Fatalf("panic mode request = %d", code)
		}
		seen[upstreamOf(body)]++
	}
	if len(seen) != 2 || p.Stat(t, "cluster.panic.lb_healthy_panic") < 10 {
		t.Errorf("panic mode spread %v, lb_healthy_panic = %d", seen, p.Stat(t, "cluster.panic.lb_healthy_panic"))
	}
	// previous_hosts: a retry never goes back to the host that failed.
	for i := 0; i < 30; i++ {
		if code, _, body := testutil.Get(t, cl, p.URL("http", "/retry")); code != 200 || upstreamOf(body) != "upstream=c" {
			t.Fatalf("request %d = %d %q: the retry went back to the failed host", i, code, upstreamOf(body))
		}
	}
}

// TestCircuitBreakerPrioritiesAndBudget: a HIGH-priority route uses the
// HIGH thresholds (open while DEFAULT is full), circuit_breakers gauges
// report open breakers and remaining capacity, and a retry budget caps
// retries.
func TestCircuitBreakerPrioritiesAndBudget(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			<-release
		}
		if strings.HasPrefix(r.URL.Path, "/fail") {
			w.WriteHeader(503)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer once.Do(func() { close(release) })
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /high}, route: {cluster: cb, priority: HIGH}}",
			"{match: {prefix: /fail}, route: {cluster: budget, retry_policy: {retry_on: 5xx, num_retries: 5, retry_back_off: {base_interval: 0.2s, max_interval: 0.2s}}}}",
			"{match: {prefix: /}, route: {cluster: cb}}"),
		clusters: "[" + staticCluster("cb", "circuit_breakers: {thresholds: [{max_requests: 1, track_remaining: true}, {priority: HIGH, max_requests: 5}]}", up.Addr) + ", " +
			staticCluster("budget", "circuit_breakers: {thresholds: [{retry_budget: {budget_percent: {value: 0}, min_retry_concurrency: 1}}]}", up.Addr) + "]",
	})
	c := testutil.Client()
	done := make(chan int)
	go func() {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/slow"))
		done <- code
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.cb.circuit_breakers.default.rq_open") == 1 }, "rq_open never set")
	if got := p.Stat(t, "cluster.cb.circuit_breakers.default.remaining_rq"); got != 0 {
		t.Errorf("remaining_rq = %d, want 0", got)
	}
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/x")); code != 503 {
		t.Errorf("DEFAULT request while full = %d, want 503", code)
	}
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/high")); code != 200 {
		t.Errorf("HIGH request while DEFAULT is full = %d, want 200 (HIGH thresholds)", code)
	}
	once.Do(func() { close(release) })
	<-done
	testutil.Eventually(t, 5*time.Second, func() bool {
		return p.Stat(t, "cluster.budget.circuit_breakers.default.rq_open") == 0 && p.Stat(t, "cluster.cb.circuit_breakers.default.rq_open") == 0
	}, "rq_open never cleared")
	// Budget 0% with min concurrency 1: two concurrent failing requests,
	// only one retry may be in back-off at a time.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			testutil.Get(t, testutil.Client(), p.URL("http", "/fail"))
		}()
	}
	wg.Wait()
	if got := p.Stat(t, "cluster.budget.upstream_rq_retry_overflow"); got == 0 {
		t.Errorf("upstream_rq_retry_overflow = 0: the retry budget did not cap concurrent retries")
	}
}

func overloadYAML(maxHeap int64, actions string) string {
	return fmt.Sprintf(`overload_manager:
  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.fixed_heap
    typed_config: {"@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig, max_heap_size_bytes: %d}
  actions: %s
`, maxHeap, actions)
}

// TestOverloadManager: Envoy's fixed_heap monitor and overload actions —
// over the threshold new requests get 503 "envoy overloaded" (flag OM),
// with disable_http_keepalive responses close the connection; under it
// requests pass.
func TestOverloadManager(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	trig := func(name string, v float64) string {
		return fmt.Sprintf("{name: %s, triggers: [{name: envoy.resource_monitors.fixed_heap, threshold: {value: %g}}]}", name, v)
	}
	// A 1 MiB budget: the proxy's heap is far above it.
	over := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra:    overloadYAML(1<<20, "["+trig("envoy.overload_actions.shrink_heap", 0.95)+", "+trig("envoy.overload_actions.stop_accepting_requests", 0.98)+"]"),
	})
	code, _, body := testutil.Get(t, testutil.Client(), over.URL("http", "/"))
	if code != 503 || body != "envoy overloaded" {
		t.Errorf("over the heap budget: %d %q, want 503 envoy overloaded", code, body)
	}
	for name, want := range map[string]int64{
		"overload.envoy.overload_actions.stop_accepting_requests.active": 1,
		"overload.envoy.overload_actions.shrink_heap.active":             1,
		"overload.envoy.resource_monitors.fixed_heap.pressure":           100,
		"http.ingress.downstream_rq_overload_close":                      1,
	} {
		if got := over.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	// A 64 GiB budget: nothing is shed; keep-alive off at pressure ≥ 0.
	under := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		extra:    overloadYAML(64<<30, "["+trig("envoy.overload_actions.stop_accepting_requests", 0.98)+", "+trig("envoy.overload_actions.disable_http_keepalive", 0)+"]"),
	})
	resp, err := testutil.Client().Get(under.URL("http", "/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("under the budget with disable_http_keepalive: %d, Connection close = %v; want 200 and close", resp.StatusCode, resp.Close)
	}
}

// TestHeadersWithUnderscores: common_http_protocol_options.
// headers_with_underscores_action REJECT_REQUEST answers 400 and closes;
// DROP_HEADER removes the header before the upstream sees it.
func TestHeadersWithUnderscores(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	for _, tc := range []struct {
		action string
		check  func(code int, body string) bool
		stat   string
	}{
		{"REJECT_REQUEST", func(code int, _ string) bool { return code == 400 }, "http.ingress.requests_rejected_with_underscores_in_headers"},
		{"DROP_HEADER", func(code int, body string) bool { return code == 200 && !strings.Contains(body, "x_bad") }, "http.ingress.dropped_headers_with_underscores"},
	} {
		p := start(t, cfg{
			hcm:      "common_http_protocol_options: {headers_with_underscores_action: " + tc.action + "}",
			vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
			clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		})
		code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x_bad", "1", "x-good", "1")
		if !tc.check(code, body) || p.Stat(t, tc.stat) != 1 {
			t.Errorf("%s: %d %q, %s = %d", tc.action, code, body, tc.stat, p.Stat(t, tc.stat))
		}
	}
}

// TestLocalRateLimit: envoy.filters.http.local_ratelimit — a token bucket
// of 2 answers the third request with 429 local_rate_limited (flag RL)
// and response_headers_to_add, counts ok/rate_limited/enforced, refills,
// and per-connection buckets are independent.
func TestLocalRateLimit(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	filter := func(perConn bool) string {
		return fmt.Sprintf(`http_filters: [{name: envoy.filters.http.local_ratelimit, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 0.5s}, filter_enabled: {runtime_key: rl_enabled, default_value: {numerator: 100, denominator: HUNDRED}}, filter_enforced: {runtime_key: rl_enforced, default_value: {numerator: 100, denominator: HUNDRED}}, response_headers_to_add: [{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-local-rate-limit, value: 'true'}}], local_rate_limit_per_downstream_connection: %v}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`, perConn)
	}
	p := start(t, cfg{
		hcm:      filter(false),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	var codes []int
	var limited http.Header
	for i := 0; i < 3; i++ {
		code, h, body := testutil.Get(t, c, p.URL("http", "/"))
		codes = append(codes, code)
		if code == 429 {
			limited = h
			if body != "local_rate_limited" {
				t.Errorf("429 body %q", body)
			}
		}
	}
	if fmt.Sprint(codes) != "[200 200 429]" || limited.Get("x-local-rate-limit") != "true" {
		t.Fatalf("codes %v, limited headers %v", codes, limited)
	}
	for name, want := range map[string]int64{"rl.http_local_rate_limit.ok": 2, "rl.http_local_rate_limit.rate_limited": 1, "rl.http_local_rate_limit.enforced": 1, "rl.http_local_rate_limit.enabled": 3} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		code, _, _ := testutil.Get(t, c, p.URL("http", "/"))
		return code == 200
	}, "the bucket never refilled")

	// Per downstream connection: a new connection has its own bucket.
	pc := start(t, cfg{
		hcm:      filter(true),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c1 := testutil.Client()
	codes = nil
	for i := 0; i < 3; i++ {
		code, _, _ := testutil.Get(t, c1, pc.URL("http", "/"))
		codes = append(codes, code)
	}
	if code, _, _ := testutil.Get(t, testutil.Client(), pc.URL("http", "/")); fmt.Sprint(codes) != "[200 200 429]" || code != 200 {
		t.Errorf("per-connection buckets: first connection %v, a second connection %d", codes, code)
	}
}

// TestHealthCheckFilter: envoy.filters.http.health_check answers
// /healthz itself — 200 while healthy, 503 with
// x-envoy-immediate-health-check-fail after /healthcheck/fail — and lets
// other requests through.
func TestHealthCheckFilter(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      `http_filters: [{name: envoy.filters.http.health_check, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck, pass_through_mode: false, headers: [{name: ":path", string_match: {exact: /healthz}}], cluster_min_healthy_percentages: {up: {value: 100}}}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/healthz")); code != 200 || up.Hits() != 0 {
		t.Errorf("/healthz = %d (upstream hits %d), want 200 answered locally", code, up.Hits())
	}
	if code, _, body := testutil.Get(t, c, p.URL("http", "/other")); code != 200 || !strings.Contains(body, "upstream=up") {
		t.Errorf("/other = %d %q, want the upstream", code, body)
	}
	resp, err := http.Post("http://"+p.Admin+"/healthcheck/fail", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, h, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/healthz"))
	if code != 503 || h.Get("x-envoy-immediate-health-check-fail") != "true" {
		t.Errorf("after /healthcheck/fail: %d %v, want 503 with x-envoy-immediate-health-check-fail", code, h)
	}
}
