// Subset load balancing: lb_subset_config with routes' metadata_match.

package features_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// subsetCluster renders a STATIC cluster whose endpoints carry envoy.lb
// metadata (flow-style YAML maps, one per address).
func subsetCluster(name, subset string, addrs []string, mds []string) string {
	var eps []string
	for i, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		eps = append(eps, fmt.Sprintf("{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}, metadata: {filter_metadata: {envoy.lb: %s}}}", h, p, mds[i]))
	}
	return fmt.Sprintf("{name: %s, connect_timeout: 1s, type: STATIC, lb_subset_config: %s, load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [%s]}]}}",
		name, subset, name, strings.Join(eps, ", "))
}

func mm(kv string) string { return "metadata_match: {filter_metadata: {envoy.lb: {" + kv + "}}}" }

func TestSubsetLoadBalancing(t *testing.T) {
	var addrs []string
	for _, n := range []string{"v1-prod", "v1-canary", "v2-prod", "v2-canary"} {
		addrs = append(addrs, testutil.StartUpstream(t, testutil.EchoHandler(n)).Addr)
	}
	mds := []string{"{version: v1, stage: prod}", "{version: v1, stage: canary}", "{version: v2, stage: prod}", "{version: v2, stage: canary}"}
	sel := "subset_selectors: [{keys: [version]}, {keys: [version, stage]}]"
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /v1}, route: {cluster: web, "+mm("version: v1")+"}}",
			"{match: {prefix: /v2canary}, route: {cluster: web, "+mm("version: v2, stage: canary")+"}}",
			"{match: {prefix: /v3}, route: {cluster: web, "+mm("version: v3")+"}}",
			"{match: {prefix: /none}, route: {cluster: web}}",
			"{match: {prefix: /def}, route: {cluster: def, "+mm("version: v3")+"}}",
			"{match: {prefix: /any}, route: {cluster: any, "+mm("version: v3")+"}}",
			// The weighted cluster's stage merges over the route's version.
			"{match: {prefix: /w}, route: {"+mm("version: v2, stage: prod")+", weighted_clusters: {clusters: [{name: web, weight: 1, "+mm("stage: canary")+"}]}}}",
		),
		clusters: "[" + subsetCluster("web", "{"+sel+"}", addrs, mds) + ", " +
			subsetCluster("def", "{fallback_policy: DEFAULT_SUBSET, default_subset: {version: v1, stage: canary}, "+sel+"}", addrs, mds) + ", " +
			subsetCluster("any", "{fallback_policy: ANY_ENDPOINT, "+sel+"}", addrs, mds) + "]",
	})
	c := testutil.Client()
	get := func(path string, n int) map[string]int {
		seen := map[string]int{}
		for i := 0; i < n; i++ {
			code, h, body := testutil.Get(t, c, p.URL("http", path))
			if code != 200 {
				seen[fmt.Sprintf("%d %s %s", code, h.Get("x-envoy-response-flags"), strings.TrimSpace(body))]++
				continue
			}
			seen[h.Get("x-upstream")]++
		}
		return seen
	}
	if got := get("/v1", 20); got["v1-prod"] != 10 || got["v1-canary"] != 10 {
		t.Errorf("/v1 answered by %v, want v1-prod and v1-canary 10 each", got)
	}
	if got := get("/v2canary", 5); got["v2-canary"] != 5 {
		t.Errorf("/v2canary answered by %v", got)
	}
	if got := get("/w", 5); got["v2-canary"] != 5 {
		t.Errorf("/w (merged metadata_match) answered by %v", got)
	}
	// NO_FALLBACK: no subset → "no healthy upstream", as if the cluster had no hosts.
	for _, path := range []string{"/v3", "/none"} {
		code, _, body := testutil.Get(t, c, p.URL("http", path))
		if code != 503 || body != "no healthy upstream" {
			t.Errorf("%s: %d %q, want 503 no healthy upstream", path, code, body)
		}
	}
	if got := get("/def", 5); got["v1-canary"] != 5 {
		t.Errorf("/def (DEFAULT_SUBSET) answered by %v", got)
	}
	if got := get("/any", 40); len(got) != 4 {
		t.Errorf("/any (ANY_ENDPOINT) answered by %v, want all four", got)
	}
	for stat, want := range map[string]int{
		"cluster.web.lb_subsets_active":        6, // v1, v2 and four (version, stage) pairs
		"cluster.web.lb_subsets_created":       6,
		"cluster.web.lb_subsets_removed":       0,
		"cluster.web.lb_subsets_selected":      30,
		"cluster.web.lb_subsets_fallback":      0,
		"cluster.web.upstream_cx_none_healthy": 2,
		"cluster.def.lb_subsets_fallback":      5,
		"cluster.any.lb_subsets_fallback":      40,
	} {
		if got := p.Stat(t, stat); got != int64(want) {
			t.Errorf("%s = %d, want %d", stat, got, want)
		}
	}
}

func TestSubsetConfigRefused(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	conf := cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: web}}"),
		clusters: "[" + subsetCluster("web", "{scale_locality_weight: true}", []string{a.Addr}, []string{"{}"}) + "]",
	}
	_, err := testutil.TryStartProxy(t, conf.String(), nil)
	if err == nil || !strings.Contains(err.Error(), "lb_subset_config.scale_locality_weight") {
		t.Fatalf("error %v, want lb_subset_config.scale_locality_weight refused", err)
	}
}
