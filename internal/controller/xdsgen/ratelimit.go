package xdsgen

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitconfv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/controller/model"
)

// RateLimitFilter asks the global Rate Limit Service, as Contour names it.
const RateLimitFilter = "envoy.filters.http.ratelimit"

// rateLimitFilter is the global rate limit filter of every HTTP
// connection manager, as Contour's GlobalRateLimitFilter: the domain,
// failure_mode_deny unless failOpen, the ExtensionService's response
// timeout as the filter's (unset: Envoy's 20ms), the v3 gRPC service
// through the ExtensionService's cluster with the :authority Contour gives
// it (the validated subject name, else the cluster name with dots) and no
// timeout of its own, draft-03 X-RateLimit headers when enabled, and
// RESOURCE_EXHAUSTED for gRPC when enabled. nil without a service.
func rateLimitFilter(g *model.GlobalRateLimitService) *hcmv3.HttpFilter {
	if g == nil {
		return nil
	}
	cfg := &ratelimitv3.RateLimit{
		Domain:          g.Domain,
		FailureModeDeny: !g.FailOpen,
		RateLimitService: &ratelimitconfv3.RateLimitServiceConfig{
			// The timeout is the filter's (below), not the service's.
			GrpcService:         extensionGrpcService(g.ClusterName(), g.Cluster, nil),
			TransportApiVersion: corev3.ApiVersion_V3,
		},
		RateLimitedAsResourceExhausted: g.EnableResourceExhaustedCode,
	}
	if g.Timeout != nil {
		cfg.Timeout = dur(*g.Timeout)
	}
	if g.EnableXRateLimitHeaders {
		cfg.EnableXRatelimitHeaders = ratelimitv3.RateLimit_DRAFT_VERSION_03
	}
	return &hcmv3.HttpFilter{Name: RateLimitFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// globalRateLimits renders descriptors as Contour's GlobalRateLimits: one
// Envoy RateLimit per descriptor, one action per entry.
func globalRateLimits(ds []model.RateLimitDescriptor) []*routev3.RateLimit {
	var out []*routev3.RateLimit
	for _, d := range ds {
		rl := &routev3.RateLimit{}
		for _, e := range d.Entries {
			a := &routev3.RateLimit_Action{}
			switch {
			case e.GenericKey != nil:
				a.ActionSpecifier = &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
					DescriptorKey: e.GenericKey.Key, DescriptorValue: e.GenericKey.Value}}
			case e.RequestHeader != nil:
				a.ActionSpecifier = &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
					HeaderName: e.RequestHeader.HeaderName, DescriptorKey: e.RequestHeader.DescriptorKey}}
			case e.HeaderValueMatch != nil:
				hv := &routev3.RateLimit_Action_HeaderValueMatch{DescriptorValue: e.HeaderValueMatch.Value,
					ExpectMatch: wrapperspb.Bool(e.HeaderValueMatch.ExpectMatch)}
				for _, h := range e.HeaderValueMatch.Headers {
					hv.Headers = append(hv.Headers, headerMatcher(h))
				}
				a.ActionSpecifier = &routev3.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: hv}
			case e.RemoteAddress:
				a.ActionSpecifier = &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}
			}
			rl.Actions = append(rl.Actions, a)
		}
		out = append(out, rl)
	}
	return out
}

// rateLimitRoute gives a forwarding route its global rate limits and, for
// global.disabled, Contour's RateLimitPerRoute that ignores the virtual
// host's (vh_rate_limits IGNORE; Envoy's default OVERRIDE uses them only
// for routes without rate limits of their own).
func rateLimitRoute(out *routev3.Route, r *model.Route) {
	ra := out.GetRoute()
	if ra == nil {
		return
	}
	ra.RateLimits = globalRateLimits(r.GlobalRateLimits)
	if r.IgnoreVhostRateLimits {
		if out.TypedPerFilterConfig == nil {
			out.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		out.TypedPerFilterConfig[RateLimitFilter] = mustAny(&ratelimitv3.RateLimitPerRoute{VhRateLimits: ratelimitv3.RateLimitPerRoute_IGNORE})
	}
}
