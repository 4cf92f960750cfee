// Circuit breakers: thresholds per priority, overflow, gauges, retry
// budgets.

package features_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

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

// TestCircuitBreakerPerHost: per_host_thresholds max_connections 1 keeps
// one connection per host however far the cluster's own limit is (Envoy's
// HostImpl::canCreateConnection): a second request while the first holds
// the connection waits as pending (upstream_cx_overflow) and reuses the
// connection when it is released; with max_pending_requests 0 it is a
// local 503 with x-envoy-overloaded instead.
func TestCircuitBreakerPerHost(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	seen := map[string]bool{}
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = true
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/slow") {
			<-release
		}
		w.Write([]byte("ok"))
	}))
	defer once.Do(func() { close(release) })
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /zero}, route: {cluster: nopending}}",
			"{match: {prefix: /}, route: {cluster: perhost}}"),
		clusters: "[" + staticCluster("perhost", "circuit_breakers: {thresholds: [{max_connections: 100}], per_host_thresholds: [{max_connections: 1}]}", up.Addr) + ", " +
			staticCluster("nopending", "circuit_breakers: {thresholds: [{max_pending_requests: 0}], per_host_thresholds: [{max_connections: 1}]}", up.Addr) + "]",
	})
	slow := func(path string) chan int {
		done := make(chan int, 1)
		go func() {
			code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", path))
			done <- code
		}()
		return done
	}
	slowDone := slow("/slow")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.perhost.upstream_rq_active") == 1 }, "slow request never started")
	fastDone := slow("/fast")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.perhost.upstream_rq_pending_active") == 1 }, "the second request never became pending")
	mu.Lock()
	early := seen["/fast"]
	mu.Unlock()
	if early {
		t.Error("the second request reached the host over its per-host connection limit")
	}

	zeroDone := slow("/zero/slow")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.nopending.upstream_rq_active") == 1 }, "slow request of nopending never started")
	code, hdr, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/zero/fast"))
	if code != 503 || hdr.Get("x-envoy-overloaded") != "true" {
		t.Errorf("nopending over its per-host limit = %d (x-envoy-overloaded %q), want 503 with x-envoy-overloaded", code, hdr.Get("x-envoy-overloaded"))
	}

	once.Do(func() { close(release) })
	for name, ch := range map[string]chan int{"/slow": slowDone, "/fast": fastDone, "/zero/slow": zeroDone} {
		if code := <-ch; code != 200 {
			t.Errorf("%s = %d, want 200", name, code)
		}
	}
	for name, want := range map[string]int64{
		"cluster.perhost.upstream_cx_total":              1,
		"cluster.perhost.upstream_cx_overflow":           1,
		"cluster.nopending.upstream_rq_pending_overflow": 1,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}
