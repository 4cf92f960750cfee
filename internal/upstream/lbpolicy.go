package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	clusterprovidedv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/cluster_provided/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// lbFactory applies a typed load-balancing policy to a copy of the
// cluster (the Factory of an extension.LoadBalancingPolicy registration).
type lbFactory func(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) error

func init() {
	for _, e := range []struct {
		name string
		cfg  proto.Message
		f    lbFactory
	}{
		{"envoy.load_balancing_policies.round_robin", &roundrobinv3.RoundRobin{}, roundRobinPolicy},
		{"envoy.load_balancing_policies.least_request", &leastrequestv3.LeastRequest{}, leastRequestPolicy},
		{"envoy.load_balancing_policies.random", &randomv3.Random{}, randomPolicy},
		{"envoy.load_balancing_policies.ring_hash", &ringhashv3.RingHash{}, ringHashPolicy},
		{"envoy.load_balancing_policies.maglev", &maglevv3.Maglev{}, maglevPolicy},
		{"envoy.load_balancing_policies.cluster_provided", &clusterprovidedv3.ClusterProvided{}, clusterProvidedPolicy},
	} {
		extension.Register(extension.Extension{Name: e.name, Category: extension.LoadBalancingPolicy, Config: e.cfg, Factory: e.f})
	}
}

// applyLBPolicy turns a cluster's load_balancing_policy (the typed,
// extensible form) into the lb_policy fields the load balancer compiles
// from. As Envoy, the first policy of the list that is implemented is
// used; one the registry does not know is an error naming it. A policy
// with weights computed at run time (weightedLBFactory) also returns its
// state.
func applyLBPolicy(pc *clusterv3.Cluster, path string, d Deps) (*clusterv3.Cluster, *cswrr, error) {
	lp := pc.GetLoadBalancingPolicy()
	if lp == nil {
		return pc, nil, nil
	}
	p := config.Join(path, "load_balancing_policy")
	if pc.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, nil, config.Errorf(p, "set either lb_policy or load_balancing_policy, not both")
	}
	if err := config.CheckFields(lp, p, "policies"); err != nil {
		return nil, nil, err
	}
	var firstErr error
	for i, pol := range lp.GetPolicies() {
		pp := config.Index(config.Join(p, "policies"), i)
		tp := config.Join(pp, "typed_extension_config.typed_config")
		r, err := extension.Lookup(extension.LoadBalancingPolicy, pol.GetTypedExtensionConfig().GetTypedConfig(), tp)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue // Envoy takes the first policy it supports
		}
		out := proto.Clone(pc).(*clusterv3.Cluster)
		out.LoadBalancingPolicy = nil
		if f, ok := r.Ext.Factory.(weightedLBFactory); ok {
			cs, err := f(out, r.Config, tp, d)
			if err != nil {
				return nil, nil, err
			}
			return out, cs, nil
		}
		if err := r.Ext.Factory.(lbFactory)(out, r.Config, tp, d); err != nil {
			return nil, nil, err
		}
		return out, nil, nil
	}
	if firstErr != nil {
		return nil, nil, firstErr
	}
	return nil, nil, config.Errorf(config.Join(p, "policies"), "no policy")
}

// clusterProvidedPolicy is lb_policy CLUSTER_PROVIDED: the cluster type
// (ORIGINAL_DST, aggregate) chooses hosts itself, and other types refuse
// it as Envoy does.
func clusterProvidedPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, _ Deps) error {
	if err := config.CheckFields(cfg, path); err != nil {
		return err
	}
	out.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
	return nil
}

func roundRobinPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) error {
	c := cfg.(*roundrobinv3.RoundRobin)
	if err := config.CheckFields(c, path, "slow_start_config", "locality_lb_config"); err != nil {
		return err
	}
	out.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
	if c.GetSlowStartConfig() != nil {
		out.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: slowStart(c.GetSlowStartConfig())}}
	}
	return localityConfig(out, c.GetLocalityLbConfig(), config.Join(path, "locality_lb_config"), d)
}

func leastRequestPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) error {
	c := cfg.(*leastrequestv3.LeastRequest)
	if err := config.CheckFields(c, path, "choice_count", "active_request_bias", "slow_start_config", "locality_lb_config"); err != nil {
		return err
	}
	out.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	lr := &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: c.GetChoiceCount(), ActiveRequestBias: c.GetActiveRequestBias(), SlowStartConfig: slowStart(c.GetSlowStartConfig())}
	out.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: lr}
	return localityConfig(out, c.GetLocalityLbConfig(), config.Join(path, "locality_lb_config"), d)
}

func randomPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) error {
	c := cfg.(*randomv3.Random)
	if err := config.CheckFields(c, path, "locality_lb_config"); err != nil {
		return err
	}
	out.LbPolicy = clusterv3.Cluster_RANDOM
	return localityConfig(out, c.GetLocalityLbConfig(), config.Join(path, "locality_lb_config"), d)
}

func ringHashPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, _ Deps) error {
	c := cfg.(*ringhashv3.RingHash)
	if err := config.CheckFields(c, path, "minimum_ring_size", "maximum_ring_size", "hash_function"); err != nil {
		return err
	}
	if c.GetHashFunction() != ringhashv3.RingHash_XX_HASH && c.GetHashFunction() != ringhashv3.RingHash_DEFAULT_HASH {
		return config.Unsupported(config.Join(path, "hash_function"), c.GetHashFunction().String(), "XX_HASH")
	}
	out.LbPolicy = clusterv3.Cluster_RING_HASH
	out.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: c.GetMinimumRingSize(), MaximumRingSize: c.GetMaximumRingSize()}}
	return nil
}

func maglevPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, _ Deps) error {
	c := cfg.(*maglevv3.Maglev)
	if err := config.CheckFields(c, path, "table_size"); err != nil {
		return err
	}
	out.LbPolicy = clusterv3.Cluster_MAGLEV
	out.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: c.GetTableSize()}}
	return nil
}

// slowStart converts the policy's slow start to the cluster's (the same
// fields).
func slowStart(s *commonv3.SlowStartConfig) *clusterv3.Cluster_SlowStartConfig {
	if s == nil {
		return nil
	}
	return &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: s.GetSlowStartWindow(), Aggression: s.GetAggression(), MinWeightPercent: s.GetMinWeightPercent()}
}

// localityConfig applies locality_lb_config: locality-weighted balancing
// is implemented; zone-aware balancing is not, and is accepted only on the
// cluster_manager.local_cluster_name cluster, where Envoy Gateway puts it
// (that cluster describes the proxies themselves; it is not routed to),
// with a log line saying it is not applied.
func localityConfig(out *clusterv3.Cluster, lc *commonv3.LocalityLbConfig, path string, d Deps) error {
	if lc == nil {
		return nil
	}
	switch {
	case lc.GetLocalityWeightedLbConfig() != nil:
		if out.CommonLbConfig == nil {
			out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		out.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}
	case lc.GetZoneAwareLbConfig() != nil:
		if d.LocalCluster == "" || out.GetName() != d.LocalCluster {
			return config.Unsupported(config.Join(path, "zone_aware_lb_config"), "zone-aware load balancing")
		}
		if d.Log != nil {
			d.Log.Warn("zone_aware_lb_config on the local cluster is accepted but not applied: Legate does not balance by zone", "cluster", out.GetName())
		}
	}
	return nil
}
