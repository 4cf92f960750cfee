// Load balancing: round robin, weighted clusters, least request, ring hash
// cookie affinity, priorities and the healthy panic threshold.

package features_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRoundRobinAndEnvoyHeaders(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: web, timeout: 3s}}"),
		clusters: "[" + staticCluster("web", "", a.Addr, b.Addr) + "]",
	})
	c := testutil.Client()
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		code, h, body := testutil.Get(t, c, p.URL("http", "/hello?x=1"))
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		seen[h.Get("x-upstream")]++
		for _, want := range []string{"path=/hello?x=1", "header:x-forwarded-proto=http", "header:x-envoy-expected-rq-timeout-ms=3000"} {
			if !strings.Contains(body, want) {
				t.Errorf("upstream did not see %q:\n%s", want, body)
			}
		}
		if !strings.Contains(body, "header:x-request-id=") {
			t.Errorf("no x-request-id generated:\n%s", body)
		}
		if h.Get("server") != "envoy" || h.Get("date") == "" || h.Get("x-envoy-upstream-service-time") == "" {
			t.Errorf("missing Envoy response headers: %v", h)
		}
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("round robin split %v, want 5/5", seen)
	}
	if got := p.Stat(t, "cluster.web.upstream_rq_200"); got != 10 {
		t.Errorf("cluster.web.upstream_rq_200 = %d, want 10", got)
	}
	if got := p.Stat(t, "http.ingress.downstream_rq_2xx"); got != 10 {
		t.Errorf("http.ingress.downstream_rq_2xx = %d, want 10", got)
	}
}

func TestWeightedClustersAndLeastRequest(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /w}, route: {weighted_clusters: {clusters: [{name: a, weight: 80}, {name: b, weight: 20}]}}}",
			"{match: {prefix: /lr}, route: {cluster: lr}}",
		),
		clusters: "[" + staticCluster("a", "", a.Addr) + ", " + staticCluster("b", "", b.Addr) + ", " +
			staticCluster("lr", "lb_policy: LEAST_REQUEST, least_request_lb_config: {choice_count: 2}", a.Addr, b.Addr) + "]",
	})
	c := testutil.Client()
	seen := map[string]int{}
	for i := 0; i < 500; i++ {
		_, h, _ := testutil.Get(t, c, p.URL("http", "/w"))
		seen[h.Get("x-upstream")]++
	}
	if seen["a"] < 350 || seen["a"] > 450 {
		t.Errorf("80/20 weights gave %v", seen)
	}
	seen = map[string]int{}
	for i := 0; i < 100; i++ {
		_, h, _ := testutil.Get(t, c, p.URL("http", "/lr"))
		seen[h.Get("x-upstream")]++
	}
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("least request used one host only: %v", seen)
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
