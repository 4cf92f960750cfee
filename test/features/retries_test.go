// Retries: retry_policy (retry_on, num_retries, back-off) and its stats.

package features_test

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRetries(t *testing.T) {
	var calls atomic.Int32
	flaky := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%3 != 0 {
			w.WriteHeader(503)
			w.Write([]byte("busy"))
			return
		}
		w.Write([]byte("ok"))
	}))
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /retry}, route: {cluster: flaky, retry_policy: {retry_on: 5xx, num_retries: 3, retry_back_off: {base_interval: 0.001s}}}}",
			"{match: {prefix: /once}, route: {cluster: flaky, retry_policy: {retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s}}}}",
			"{match: {prefix: /none}, route: {cluster: flaky}}",
		),
		clusters: "[" + staticCluster("flaky", "", flaky.Addr) + "]",
	})
	c := testutil.Client()
	calls.Store(0)
	if code, _, body := testutil.Get(t, c, p.URL("http", "/retry")); code != 200 || body != "ok" {
		t.Fatalf("with retries: %d %q", code, body)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("upstream saw %d attempts, want 3", n)
	}
	calls.Store(0)
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/once")); code != 503 {
		t.Fatalf("retry limit exceeded: got %d, want the last 503", code)
	}
	calls.Store(0)
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/none")); code != 503 {
		t.Fatalf("no retry policy: got %d", code)
	}
	if got := p.Stat(t, "cluster.flaky.upstream_rq_retry"); got != 3 {
		t.Errorf("upstream_rq_retry = %d, want 3", got)
	}
	if got := p.Stat(t, "cluster.flaky.upstream_rq_retry_success"); got != 1 {
		t.Errorf("upstream_rq_retry_success = %d, want 1", got)
	}
}
