// Retries: retry_policy (retry_on, num_retries, back-off) and its stats.

package features_test

import (
	"fmt"
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

// TestRetryHostPredicatesAndPriority covers the omit_canary_hosts and
// omit_host_metadata retry host predicates (a retry's pick that lands on
// such a host is made again; the first attempt is not judged, as Envoy's
// shouldSelectAnotherHost) and the previous_priorities retry priority (a
// retry leaves the priority level it failed on while another has health).
func TestRetryHostPredicatesAndPriority(t *testing.T) {
	var badCalls atomic.Int32
	bad := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		badCalls.Add(1)
		w.WriteHeader(503)
		w.Write([]byte("upstream=bad\n"))
	}))
	good := testutil.StartUpstream(t, testutil.EchoHandler("good"))
	const retry = "retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s}"
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /canary}, route: {cluster: canary, retry_policy: {"+retry+", host_selection_retry_max_attempts: 40, "+
				"retry_host_predicate: [{name: envoy.retry_host_predicates.omit_canary_hosts, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.omit_canary_hosts.v3.OmitCanaryHostsPredicate}}]}}}",
			"{match: {prefix: /metadata}, route: {cluster: canary, retry_policy: {"+retry+", host_selection_retry_max_attempts: 40, "+
				"retry_host_predicate: [{name: envoy.retry_host_predicates.omit_host_metadata, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.host.omit_host_metadata.v3.OmitHostMetadataConfig, metadata_match: {filter_metadata: {envoy.lb: {version: old}}}}}]}}}",
			"{match: {prefix: /priorities}, route: {cluster: prio, retry_policy: {"+retry+", "+
				"retry_priority: {name: envoy.retry_priorities.previous_priorities, typed_config: {'@type': type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig, update_frequency: 1}}}}}",
			"{match: {prefix: /plain}, route: {cluster: prio, retry_policy: {"+retry+"}}}",
		),
		clusters: fmt.Sprintf(`[
  {name: canary, connect_timeout: 1s, type: STATIC, lb_policy: RANDOM, load_assignment: {cluster_name: canary, endpoints: [{lb_endpoints: [%s, %s]}]}},
  {name: prio, connect_timeout: 1s, type: STATIC, load_assignment: {cluster_name: prio, endpoints: [
    {priority: 0, lb_endpoints: [%s]}, {priority: 1, lb_endpoints: [%s]}]}}
]`, endpoint(bad.Addr, "metadata: {filter_metadata: {envoy.lb: {canary: true, version: old}}}"), endpoint(good.Addr, ""),
			endpoint(bad.Addr, ""), endpoint(good.Addr, "")),
	})
	c := testutil.Client()
	for _, path := range []string{"/canary", "/metadata"} {
		badCalls.Store(0)
		for i := 0; i < 20; i++ {
			// The first attempt may land on the omitted host (RANDOM); the
			// retry's 41 picks never keep it. Without the predicate a
			// retry would fail half the time.
			if code, _, body := testutil.Get(t, c, p.URL("http", path)); code != 200 || upstreamOf(body) != "upstream=good" {
				t.Fatalf("%s request %d = %d %q", path, i, code, body)
			}
		}
		if n := badCalls.Load(); n > 20 {
			t.Errorf("%s: the omitted host got %d requests, more than one per request", path, n)
		}
	}
	// Priority 0 is healthy (no health check) but fails every request: the
	// first attempt goes there, the retry to priority 1 only with
	// previous_priorities.
	badCalls.Store(0)
	for i := 0; i < 10; i++ {
		if code, _, body := testutil.Get(t, c, p.URL("http", "/priorities")); code != 200 || upstreamOf(body) != "upstream=good" {
			t.Fatalf("previous_priorities request %d = %d %q", i, code, body)
		}
	}
	if n := badCalls.Load(); n != 10 {
		t.Errorf("priority 0 got %d first attempts, want 10", n)
	}
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/plain")); code != 503 {
		t.Errorf("without previous_priorities the retry stays on priority 0: got %d, want 503", code)
	}
}
