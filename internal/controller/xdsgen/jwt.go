package xdsgen

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/controller/model"
)

// JWTFilter verifies the tokens of jwtProviders, as Contour names it.
const JWTFilter = "envoy.filters.http.jwt_authn"

// dnsFamilies maps remoteJWKS.dnsLookupFamily to the cluster's.
var dnsFamilies = map[string]clusterv3.Cluster_DnsLookupFamily{
	"auto": clusterv3.Cluster_AUTO, "v4": clusterv3.Cluster_V4_ONLY, "v6": clusterv3.Cluster_V6_ONLY, "all": clusterv3.Cluster_ALL,
}

// jwtFilter is a TLS virtual host's jwt_authn filter, as Contour's
// FilterJWTAuthN: every provider, and a requirement of the same name that
// routes select with a PerRouteConfig (no rules: the route table already
// orders the matches). nil without providers.
func jwtFilter(ps []model.JWTProvider) *hcmv3.HttpFilter {
	if len(ps) == 0 {
		return nil
	}
	cfg := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{}, RequirementMap: map[string]*jwtv3.JwtRequirement{}}
	for _, p := range ps {
		jp := &jwtv3.JwtProvider{Issuer: p.Issuer, Audiences: p.Audiences, Forward: p.ForwardJWT}
		if r := p.RemoteJWKS; r != nil {
			rj := &jwtv3.RemoteJwks{HttpUri: &corev3.HttpUri{Uri: r.URI,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: r.Cluster.Name}, Timeout: dur(r.Timeout)}}
			if r.CacheDuration != nil {
				rj.CacheDuration = dur(*r.CacheDuration)
			}
			jp.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: rj}
		} else {
			jp.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: string(p.LocalJWKS)}}}
		}
		cfg.Providers[p.Name] = jp
		cfg.RequirementMap[p.Name] = &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: p.Name}}
	}
	return &hcmv3.HttpFilter{Name: JWTFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// withJWTFilter inserts f before the router (the last filter).
func withJWTFilter(fs []*hcmv3.HttpFilter, f *hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	if f == nil {
		return fs
	}
	out := append([]*hcmv3.HttpFilter(nil), fs[:len(fs)-1]...)
	return append(out, f, fs[len(fs)-1])
}

// jwtRoute gives a forwarding route of a TLS virtual host the
// PerRouteConfig naming its provider's requirement.
func jwtRoute(out *routev3.Route, r *model.Route) {
	if r.JWTProvider == "" || out.GetRoute() == nil {
		return
	}
	if out.TypedPerFilterConfig == nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	out.TypedPerFilterConfig[JWTFilter] = mustAny(&jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: r.JWTProvider}})
}
