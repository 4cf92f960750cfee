// Failover: retries, outlier detection and health checks together while
// an upstream dies and comes back under load.

package features_test

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// restartable is an upstream that can be killed and brought back on the
// same address.
type restartable struct {
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func (r *restartable) start(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	srv := &http.Server{Handler: testutil.EchoHandler(r.addr)}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func (r *restartable) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.srv.Close()
}

// TestFailoverUnderLoad kills one of three upstreams while a bounded load
// runs: retries absorb its failures (zero failed requests reach the
// client), outlier detection and active health checks eject it, and when
// it comes back on the same address it returns to rotation. The measured
// ejection and recovery times are logged (assertions use generous bounds).
func TestFailoverUnderLoad(t *testing.T) {
	ups := []*restartable{{addr: "127.0.0.1:0"}, {addr: "127.0.0.1:0"}, {addr: "127.0.0.1:0"}}
	var addrs []string
	for _, u := range ups {
		u.start(t)
		addrs = append(addrs, u.addr)
	}
	victim := ups[1]
	p := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, route: {cluster: svc, retry_policy: {retry_on: '5xx,connect-failure,reset', num_retries: 3, " +
			"retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}], host_selection_retry_max_attempts: 5, " +
			"retry_back_off: {base_interval: 0.005s, max_interval: 0.02s}}}}"),
		clusters: "[" + staticCluster("svc", "outlier_detection: {consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 0.5s, max_ejection_percent: 50}, "+
			"health_checks: [{timeout: 0.2s, interval: 0.2s, no_traffic_interval: 0.2s, unhealthy_threshold: 2, healthy_threshold: 1, tcp_health_check: {}}]", addrs...) + "]",
	})
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster.svc.membership_healthy") == 3 }, "hosts never healthy")

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testutil.Client()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get(p.URL("http", "/"))
				if err != nil {
					failed.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	victim.kill()
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.svc.membership_healthy") == 2 }, "the killed host was never ejected")
	ejected := time.Since(killed)
	time.Sleep(500 * time.Millisecond)
	revived := time.Now()
	victim.start(t)
	testutil.Eventually(t, 10*time.Second, func() bool { return p.Stat(t, "cluster.svc.membership_healthy") == 3 }, "the revived host never came back")
	recovered := time.Since(revived)
	hitsBefore := ok.Load()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d requests failed at the client; retries should absorb every failure", f, f+ok.Load())
	}
	if ok.Load() <= hitsBefore {
		t.Error("no requests completed after recovery")
	}
	if ejected > 5*time.Second || recovered > 5*time.Second {
		t.Errorf("ejection took %v, recovery %v: far beyond the configured intervals", ejected, recovered)
	}
	t.Logf("%d requests, 0 failed; host removed from the healthy set %v after it was killed; back %v after it restarted (retries: %d, outlier ejections: %d)",
		ok.Load(), ejected.Round(time.Millisecond), recovered.Round(time.Millisecond),
		p.Stat(t, "cluster.svc.upstream_rq_retry"), p.Stat(t, "cluster.svc.outlier_detection.ejections_enforced_total"))
}
