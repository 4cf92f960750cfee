package xdsgen

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/controller/model"
)

// The HTTP filters that virtual hosts and routes configure through
// typed_per_filter_config, as Contour names them.
const (
	CORSFilter           = "envoy.filters.http.cors"
	RBACFilter           = "envoy.filters.http.rbac"
	LocalRateLimitFilter = "envoy.filters.http.local_ratelimit"
)

// policyFilters are the HCM filters before the router, in Contour's order
// (cors, local_ratelimit … lua, rbac, router). All do nothing until a virtual host or route
// gives them a per-filter config: the cors filter without a policy passes
// requests through, the Lua filter has no default script, and an RBAC
// filter without rules allows everything.
func policyFilters() []*hcmv3.HttpFilter {
	return []*hcmv3.HttpFilter{
		{Name: CORSFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})}},
		// Without a token bucket the filter limits nothing: virtual hosts and
		// routes give theirs (Contour's stat prefix "http").
		{Name: LocalRateLimitFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&localratelimitv3.LocalRateLimit{StatPrefix: "http"})}},
		luaFilter(),
		{Name: RBACFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbacv3.RBAC{})}},
	}
}

// vhostPerFilter is a virtual host's typed_per_filter_config (nil if none).
func vhostPerFilter(vh *model.VirtualHost) map[string]*anypb.Any {
	pf := map[string]*anypb.Any{}
	if vh.CORS != nil {
		pf[CORSFilter] = mustAny(corsPolicy(vh.CORS))
	}
	if vh.IPFilter != nil && len(vh.IPFilter.Rules) > 0 {
		pf[RBACFilter] = mustAny(ipFilterConfig(vh.IPFilter))
	}
	if vh.LocalRateLimit != nil {
		pf[LocalRateLimitFilter] = mustAny(localRateLimitConfig(vh.LocalRateLimit, "vhost."+vh.Name))
	}
	if len(pf) == 0 {
		return nil
	}
	return pf
}

// corsPolicy renders a CORS policy as Contour's envoy/v3 corsPolicy.
func corsPolicy(p *model.CORSPolicy) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		AllowCredentials:          wrapperspb.Bool(p.AllowCredentials),
		AllowMethods:              strings.Join(p.AllowMethods, ","),
		AllowHeaders:              strings.Join(p.AllowHeaders, ","),
		ExposeHeaders:             strings.Join(p.ExposeHeaders, ","),
		MaxAge:                    p.MaxAge,
		AllowPrivateNetworkAccess: wrapperspb.Bool(p.AllowPrivateNetwork),
		AllowOriginStringMatch:    []*matcherv3.StringMatcher{},
	}
	if p.AnswerUnmatchedPreflights {
		out.ForwardNotMatchingPreflights = wrapperspb.Bool(false)
	}
	for _, o := range p.AllowOrigin {
		m := &matcherv3.StringMatcher{}
		if o.Regex {
			m.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: o.Value}}
		} else {
			// Origins compare case-insensitively (RFC 6454 §6.2 lower-cases
			// scheme and host); Envoy's cors filter treats an exact "*" as any
			// origin.
			m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: o.Value}
			m.IgnoreCase = true
		}
		out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, m)
	}
	return out
}

// ipFilterConfig renders an IP filter as Contour's RBACPerRoute: one
// policy "ip-rules" allowing or denying any permission for the listed
// principals (direct_remote_ip for Peer, remote_ip for Remote; never
// source_ip, which follows PROXY protocol but not X-Forwarded-For).
func ipFilterConfig(f *model.IPFilter) *rbacv3.RBACPerRoute {
	action := rbacconfigv3.RBAC_ALLOW
	if !f.Allow {
		action = rbacconfigv3.RBAC_DENY
	}
	principals := make([]*rbacconfigv3.Principal, 0, len(f.Rules))
	for _, r := range f.Rules {
		cidr := &corev3.CidrRange{AddressPrefix: r.CIDR.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(r.CIDR.Bits()))}
		p := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr}}
		if r.Remote {
			p = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_RemoteIp{RemoteIp: cidr}}
		}
		principals = append(principals, p)
	}
	return &rbacv3.RBACPerRoute{Rbac: &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{
		Action: action,
		Policies: map[string]*rbacconfigv3.Policy{"ip-rules": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals:  principals,
		}},
	}}}
}

// localRateLimitConfig renders a local rate limit as Contour's
// LocalRateLimitConfig: the token bucket, enabled and enforced for every
// request (runtime keys local_rate_limit_enabled / _enforced), the status
// when one is set, and the headers added to limited responses.
func localRateLimitConfig(l *model.LocalRateLimit, statPrefix string) *localratelimitv3.LocalRateLimit {
	all := func(key string) *corev3.RuntimeFractionalPercent {
		return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}, RuntimeKey: key}
	}
	out := &localratelimitv3.LocalRateLimit{
		StatPrefix: statPrefix,
		TokenBucket: &typev3.TokenBucket{MaxTokens: l.MaxTokens, TokensPerFill: wrapperspb.UInt32(l.TokensPerFill),
			FillInterval: durationpb.New(l.FillInterval)},
		FilterEnabled:  all("local_rate_limit_enabled"),
		FilterEnforced: all("local_rate_limit_enforced"),
	}
	if l.StatusCode != 0 {
		out.Status = &typev3.HttpStatus{Code: typev3.StatusCode(l.StatusCode)}
	}
	for _, h := range l.ResponseHeadersToAdd {
		out.ResponseHeadersToAdd = append(out.ResponseHeadersToAdd, &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	return out
}
