package xdsgen

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	prevroutesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/internal_redirect/previous_routes/v3"
	safeschemev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/internal_redirect/safe_cross_scheme/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/controller/model"
)

func pathMatch(p model.PathMatch) *routev3.RouteMatch {
	m := &routev3.RouteMatch{}
	switch p.Kind {
	case "exact":
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: p.Value}
	case "regex":
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: p.Value}}
	case "segment":
		m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: p.Value}
	default:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.Value}
	}
	return m
}

func stringMatch(kind, value string, ignoreCase bool) *matcherv3.StringMatcher {
	sm := &matcherv3.StringMatcher{IgnoreCase: ignoreCase}
	switch kind {
	case "exact":
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: value}
	case "prefix":
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: value}
	case "suffix":
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: value}
	case "contains":
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: value}
	case "regex":
		sm.IgnoreCase = false
		sm.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: value}}
	}
	return sm
}

func headerValues(h *model.HeadersPolicy) ([]*corev3.HeaderValueOption, []string) {
	if h == nil {
		return nil, nil
	}
	var add []*corev3.HeaderValueOption
	for _, kv := range h.Set {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv.Name, Value: kv.Value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, kv := range h.Add {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: kv.Name, Value: kv.Value},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return add, h.Remove
}

// headerMatcher renders a header condition.
func headerMatcher(h model.HeaderMatch) *routev3.HeaderMatcher {
	hm := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert, TreatMissingHeaderAsEmpty: h.TreatMissingAsEmpty}
	if h.Kind == "present" {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
	} else {
		hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: stringMatch(h.Kind, h.Value, h.IgnoreCase)}
	}
	return hm
}

// vhost is the virtual host's name (stat prefixes).
func route(r *model.Route, vhost string) *routev3.Route {
	out := &routev3.Route{Match: pathMatch(r.Path)}
	for _, h := range r.Headers {
		out.Match.Headers = append(out.Match.Headers, headerMatcher(h))
	}
	for _, q := range r.Query {
		qm := &routev3.QueryParameterMatcher{Name: q.Name}
		if q.Kind == "present" {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			qm.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: stringMatch(q.Kind, q.Value, q.IgnoreCase)}
		}
		out.Match.QueryParameters = append(out.Match.QueryParameters, qm)
	}
	out.RequestHeadersToAdd, out.RequestHeadersToRemove = headerValues(r.RequestHeaders)
	out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = headerValues(r.ResponseHeaders)

	switch {
	case r.HTTPSRedirect:
		out.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
			ResponseCode:           routev3.RedirectAction_MOVED_PERMANENTLY,
		}}
		out.RequestHeadersToAdd, out.RequestHeadersToRemove, out.ResponseHeadersToAdd, out.ResponseHeadersToRemove = nil, nil, nil, nil
		return out
	case r.Redirect != nil:
		red := &routev3.RedirectAction{HostRedirect: r.Redirect.Host, PortRedirect: r.Redirect.Port}
		if r.Redirect.Scheme != "" {
			red.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: r.Redirect.Scheme}
		}
		switch r.Redirect.Code {
		case 301:
			red.ResponseCode = routev3.RedirectAction_MOVED_PERMANENTLY
		case 303:
			red.ResponseCode = routev3.RedirectAction_SEE_OTHER
		case 307:
			red.ResponseCode = routev3.RedirectAction_TEMPORARY_REDIRECT
		case 308:
			red.ResponseCode = routev3.RedirectAction_PERMANENT_REDIRECT
		default:
			red.ResponseCode = routev3.RedirectAction_FOUND
		}
		switch {
		case r.Redirect.Path != "":
			red.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: r.Redirect.Path}
		case r.Redirect.Prefix != "":
			red.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: r.Redirect.Prefix}
		case r.Redirect.PathRegex != "":
			red.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
				Pattern: &matcherv3.RegexMatcher{Regex: r.Redirect.PathRegex}, Substitution: r.Redirect.PathSubst}}
		}
		out.Action = &routev3.Route_Redirect{Redirect: red}
		return out
	case r.Direct != nil:
		dr := &routev3.DirectResponseAction{Status: uint32(r.Direct.Status)}
		if r.Direct.Body != "" {
			dr.Body = &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.Direct.Body}}
		}
		out.Action = &routev3.Route_DirectResponse{DirectResponse: dr}
		return out
	}

	ra := &routev3.RouteAction{PrefixRewrite: r.PrefixRewrite}
	if r.InvalidBackend500 {
		ra.ClusterNotFoundResponseCode = routev3.RouteAction_INTERNAL_SERVER_ERROR
	}
	if r.RegexRewrite != "" {
		ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: r.RegexRewrite}, Substitution: r.RegexSubst}
	}
	if len(r.Clusters) == 1 && r.Clusters[0].RequestHeaders == nil && r.Clusters[0].ResponseHeaders == nil &&
		len(r.CookieRewrites) == 0 && len(r.Clusters[0].CookieRewrites) == 0 {
		ra.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: r.Clusters[0].Cluster.Name}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, c := range r.Clusters {
			cw := &routev3.WeightedCluster_ClusterWeight{Name: c.Cluster.Name, Weight: wrapperspb.UInt32(c.Weight)}
			cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = headerValues(c.RequestHeaders)
			cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = headerValues(c.ResponseHeaders)
			if c.RequestHeaders != nil && c.RequestHeaders.HostRewrite != "" {
				cw.HostRewriteSpecifier = &routev3.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: c.RequestHeaders.HostRewrite}
			}
			// Per cluster, as Contour: a service's rules add to the route's.
			if rules := cookieRules(r.CookieRewrites, c.CookieRewrites); len(rules) > 0 {
				cw.TypedPerFilterConfig = map[string]*anypb.Any{LuaFilter: cookieRewriteConfig(rules)}
			}
			wc.Clusters = append(wc.Clusters, cw)
		}
		ra.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if r.RequestHeaders != nil && r.RequestHeaders.HostRewrite != "" {
		ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: r.RequestHeaders.HostRewrite}
	}
	if r.Timeout != nil {
		ra.Timeout = dur(*r.Timeout)
	}
	if r.IdleTimeout != nil {
		ra.IdleTimeout = dur(*r.IdleTimeout)
	}
	if r.Retry != nil {
		rp := &routev3.RetryPolicy{RetryOn: r.Retry.RetryOn, NumRetries: wrapperspb.UInt32(r.Retry.NumRetries), RetriableStatusCodes: r.Retry.StatusCodes}
		if r.Retry.PerTryTimeout > 0 {
			rp.PerTryTimeout = dur(r.Retry.PerTryTimeout)
		}
		ra.RetryPolicy = rp
	}
	for _, h := range r.HashPolicies {
		hp := &routev3.RouteAction_HashPolicy{Terminal: h.Terminal}
		switch {
		case h.Header != "":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}
		case h.Query != "":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: h.Query}}
		case h.SourceIP:
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}
		case h.Cookie != "":
			hp.PolicySpecifier = &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie, Ttl: dur(0), Path: "/"}}
		}
		ra.HashPolicy = append(ra.HashPolicy, hp)
	}
	for _, m := range r.Mirrors {
		ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{Cluster: m.Cluster.Name, RuntimeFraction: mirrorFraction(m.PerMillion)})
	}
	if r.InternalRedirect != nil {
		ra.InternalRedirectPolicy = internalRedirectPolicy(r.InternalRedirect)
	}
	if r.Websocket {
		ra.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket", Enabled: wrapperspb.Bool(true)}}
	}
	out.Action = &routev3.Route_Route{Route: ra}
	// As Contour, only forwarding routes carry their own IP filter; it
	// replaces the virtual host's.
	if r.IPFilter != nil && len(r.IPFilter.Rules) > 0 {
		out.TypedPerFilterConfig = map[string]*anypb.Any{RBACFilter: mustAny(ipFilterConfig(r.IPFilter))}
	}
	// A route's CORS policy and local rate limit replace the virtual
	// host's (Envoy's most specific typed_per_filter_config).
	if r.CORS != nil {
		if out.TypedPerFilterConfig == nil {
			out.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		out.TypedPerFilterConfig[CORSFilter] = mustAny(corsPolicy(r.CORS))
	}
	if r.LocalRateLimit != nil {
		if out.TypedPerFilterConfig == nil {
			out.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		out.TypedPerFilterConfig[LocalRateLimitFilter] = mustAny(localRateLimitConfig(r.LocalRateLimit, "vhost."+vhost))
	}
	return out
}

// internalRedirectPolicy is a route's internalRedirectPolicy as Contour
// writes it: SafeOnly allows cross-scheme redirects and then narrows them
// with the safe_cross_scheme predicate (https may go to http, not the
// reverse); denyRepeatedRouteRedirect is the previous_routes predicate.
func internalRedirectPolicy(ir *model.InternalRedirect) *routev3.InternalRedirectPolicy {
	p := &routev3.InternalRedirectPolicy{RedirectResponseCodes: ir.Codes}
	if ir.MaxRedirects > 0 {
		p.MaxInternalRedirects = wrapperspb.UInt32(ir.MaxRedirects)
	}
	switch ir.CrossScheme {
	case "always":
		p.AllowCrossSchemeRedirect = true
	case "safeOnly":
		p.AllowCrossSchemeRedirect = true
		p.Predicates = append(p.Predicates, &corev3.TypedExtensionConfig{Name: "envoy.internal_redirect_predicates.safe_cross_scheme", TypedConfig: mustAny(&safeschemev3.SafeCrossSchemeConfig{})})
	}
	if ir.DenyRepeatedRoute {
		p.Predicates = append(p.Predicates, &corev3.TypedExtensionConfig{Name: "envoy.internal_redirect_predicates.previous_routes", TypedConfig: mustAny(&prevroutesv3.PreviousRoutesConfig{})})
	}
	return p
}

// mirrorFraction is a mirror's share as Envoy's runtime_fraction: none
// for all requests, a percentage (as Contour writes it) when it is a
// whole one, else per million.
func mirrorFraction(perMillion uint32) *corev3.RuntimeFractionalPercent {
	if perMillion >= 1000000 {
		return nil
	}
	fp := &typev3.FractionalPercent{Numerator: perMillion, Denominator: typev3.FractionalPercent_MILLION}
	if perMillion%10000 == 0 {
		fp = &typev3.FractionalPercent{Numerator: perMillion / 10000, Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return &corev3.RuntimeFractionalPercent{DefaultValue: fp}
}
