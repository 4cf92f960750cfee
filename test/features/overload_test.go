// The overload manager: resource monitors and overload actions.

package features_test

import (
	"fmt"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

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
