package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.load_balancing_policies.wrr_locality", Category: extension.LoadBalancingPolicy,
		Config: &wrrlocalityv3.WrrLocality{}, Factory: weightedLBFactory(wrrLocalityPolicy),
		Notes: "endpoint_picking_policy client_side_weighted_round_robin (as Envoy), or round_robin, least_request or random (as gRPC's xDS clients accept)"})
}

// wrrLocalityPolicy compiles WrrLocality: a locality is picked by its
// load_balancing_weight (scaled by its health, as Envoy's
// locality-weighted balancing), then a host in it by the
// endpoint_picking_policy, the first of its policies Legate implements.
// Envoy accepts only client_side_weighted_round_robin there; Legate also
// takes the policies that locality-weighted balancing works with
// (round_robin, least_request, random), which gRPC's xDS clients are sent.
func wrrLocalityPolicy(out *clusterv3.Cluster, cfg proto.Message, path string, d Deps) (*cswrr, error) {
	c := cfg.(*wrrlocalityv3.WrrLocality)
	if err := config.CheckFields(c, path, "endpoint_picking_policy"); err != nil {
		return nil, err
	}
	p := config.Join(path, "endpoint_picking_policy")
	if err := config.CheckFields(c.GetEndpointPickingPolicy(), p, "policies"); err != nil {
		return nil, err
	}
	var firstErr error
	for i, pol := range c.GetEndpointPickingPolicy().GetPolicies() {
		tp := config.Join(config.Index(config.Join(p, "policies"), i), "typed_extension_config.typed_config")
		r, err := extension.Lookup(extension.LoadBalancingPolicy, pol.GetTypedExtensionConfig().GetTypedConfig(), tp)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue // as Envoy: the first policy it knows
		}
		var cs *cswrr
		switch f := r.Ext.Factory.(type) {
		case weightedLBFactory:
			if r.Ext.Name != "envoy.load_balancing_policies.client_side_weighted_round_robin" {
				return nil, config.Errorf(tp, "%s cannot pick endpoints within a locality: use client_side_weighted_round_robin, round_robin, least_request or random", r.Ext.Name)
			}
			if cs, err = f(out, r.Config, tp, d); err != nil {
				return nil, err
			}
		case lbFactory:
			switch r.Ext.Name {
			case "envoy.load_balancing_policies.round_robin", "envoy.load_balancing_policies.least_request", "envoy.load_balancing_policies.random":
			default:
				return nil, config.Errorf(tp, "%s cannot pick endpoints within a locality: use client_side_weighted_round_robin, round_robin, least_request or random", r.Ext.Name)
			}
			if err := f(out, r.Config, tp, d); err != nil {
				return nil, err
			}
		default:
			return nil, config.Errorf(tp, "%s cannot pick endpoints within a locality: use client_side_weighted_round_robin, round_robin, least_request or random", r.Ext.Name)
		}
		// The child's own locality_lb_config gives way: wrr_locality is
		// locality-weighted balancing.
		if out.CommonLbConfig == nil {
			out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{}
		}
		out.CommonLbConfig.LocalityConfigSpecifier = &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}
		return cs, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, config.Errorf(config.Join(p, "policies"), "no supported endpoint picking policy")
}
