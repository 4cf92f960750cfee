package upstream

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

func TestLoadBalancingPolicy(t *testing.T) {
	const base = `
name: web
type: STATIC
load_assignment: {cluster_name: web, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
`
	for _, tc := range []struct {
		name, yaml, local string
		policy            LBPolicy
		err               string
	}{
		{name: "least request", policy: LeastRequest, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: lr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest, choice_count: 3}}}]}`},
		{name: "first implemented policy wins", policy: RoundRobin, yaml: `
load_balancing_policy: {policies: [
  {typed_extension_config: {name: pf, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst}}},
  {typed_extension_config: {name: rr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin}}}]}`},
		{name: "none implemented", err: "is not implemented by legate", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: pf, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst}}}]}`},
		{name: "maglev", policy: Maglev, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: m, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev, table_size: 65537}}}]}`},
		{name: "zone aware elsewhere", err: "zone-aware load balancing is not supported", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: lr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest, locality_lb_config: {zone_aware_lb_config: {min_cluster_size: 1}}}}}]}`},
		{name: "zone aware on the local cluster", local: "web", policy: LeastRequest, yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: lr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest, locality_lb_config: {zone_aware_lb_config: {min_cluster_size: 1}}}}}]}`},
		{name: "cluster provided on a STATIC cluster", err: "CLUSTER_PROVIDED is only for clusters that choose their hosts themselves", yaml: `
load_balancing_policy: {policies: [{typed_extension_config: {name: cp, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.cluster_provided.v3.ClusterProvided}}}]}`},
		{name: "both forms", err: "set either lb_policy or load_balancing_policy", yaml: `
lb_policy: RANDOM
load_balancing_policy: {policies: [{typed_extension_config: {name: rr, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin}}}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := &clusterv3.Cluster{}
			if _, err := config.Decode([]byte(base+tc.yaml), pc, "cluster"); err != nil {
				t.Fatal(err)
			}
			c, err := Compile(pc, "cluster", Deps{Stats: stats.NewStore(), LocalCluster: tc.local})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.lb.policy != tc.policy {
				t.Errorf("policy %v, want %v", c.lb.policy, tc.policy)
			}
			if c.Proto.GetLoadBalancingPolicy() == nil {
				t.Error("the config dump should keep the original load_balancing_policy")
			}
		})
	}
}

// TestClusterProvidedPolicy: envoy.load_balancing_policies.cluster_provided
// is lb_policy CLUSTER_PROVIDED, which an ORIGINAL_DST cluster requires.
func TestClusterProvidedPolicy(t *testing.T) {
	pc := &clusterv3.Cluster{}
	if _, err := config.Decode([]byte(`
name: od
type: ORIGINAL_DST
load_balancing_policy: {policies: [{typed_extension_config: {name: cp, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.cluster_provided.v3.ClusterProvided}}}]}`), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	c, err := Compile(pc, "cluster", Deps{Stats: stats.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	if c.OrigDst == nil {
		t.Error("the ORIGINAL_DST cluster does not choose its hosts itself")
	}
}
