package xdsgen

import (
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/legateproxy/legate/internal/controller/model"
)

// ExtAuthzFilter checks requests with a virtual host's authorization
// server, as Contour names it.
const ExtAuthzFilter = "envoy.filters.http.ext_authz"

// extAuthzFilter is a TLS virtual host's ext_authz filter, as Contour's
// FilterExternalAuthz: a gRPC (v3) server reached through the
// ExtensionService's cluster, with the :authority Contour gives it (the
// validated subject name, else the cluster name with dots), the route
// cache cleared after a check (the server may change headers that
// routing reads), 403 when the server fails, and the client's
// certificate in the check request. nil without a server.
// extensionGrpcService is the gRPC service of an ExtensionService's
// cluster as Contour's grpcService writes it: the cluster, the authority
// its validated subject name or else the cluster name with dots, and the
// timeout when one is set (timeoutPolicy.response). c may be nil (the
// ExtensionService is missing): the authority is then the name's.
func extensionGrpcService(name string, c *model.Cluster, timeout *time.Duration) *corev3.GrpcService {
	authority := strings.ReplaceAll(name, "/", ".")
	if c != nil && c.SNI != "" {
		authority = c.SNI
	}
	gs := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
		ClusterName: name, Authority: authority}}}
	if timeout != nil {
		gs.Timeout = dur(*timeout)
	}
	return gs
}

func extAuthzFilter(a *model.ExternalAuthorization) *hcmv3.HttpFilter {
	if a == nil {
		return nil
	}
	gs := extensionGrpcService(a.Cluster.Name, a.Cluster, a.ResponseTimeout)
	cfg := &extauthzv3.ExtAuthz{
		Services:                  &extauthzv3.ExtAuthz_GrpcService{GrpcService: gs},
		ClearRouteCache:           true,
		FailureModeAllow:          a.FailOpen,
		StatusOnError:             &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		MetadataContextNamespaces: []string{},
		IncludePeerCertificate:    true,
		TransportApiVersion:       corev3.ApiVersion_V3,
	}
	if b := a.WithRequestBody; b != nil {
		cfg.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: b.MaxRequestBytes, AllowPartialMessage: b.AllowPartialMessage, PackAsBytes: b.PackAsBytes}
	}
	return &hcmv3.HttpFilter{Name: ExtAuthzFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// extAuthzRoute gives a route of a TLS virtual host its ExtAuthzPerRoute,
// as Contour's buildRoute: disabled, or the check context; only on
// forwarding and direct-response routes (redirects are checked with the
// virtual host's defaults, as Contour).
func extAuthzRoute(out *routev3.Route, r *model.Route) {
	if out.GetRoute() == nil && out.GetDirectResponse() == nil {
		return
	}
	var pr *extauthzv3.ExtAuthzPerRoute
	switch {
	case r.AuthDisabled:
		pr = &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}
	case len(r.AuthContext) > 0:
		pr = &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{
			ContextExtensions: r.AuthContext}}}
	default:
		return
	}
	if out.TypedPerFilterConfig == nil {
		out.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	out.TypedPerFilterConfig[ExtAuthzFilter] = mustAny(pr)
}

// extensionCluster completes the cluster of an ExtensionService: Contour's
// readable stat name (extension_<namespace>_<name>), its locality per
// Service balanced by the Services' weights, and its circuit breakers.
func extensionCluster(out *clusterv3.Cluster, c *model.Cluster) {
	out.AltStatName = strings.ReplaceAll(c.Name, "/", "_")
	out.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
		LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
}

// extensionAssignment is the load assignment of an ExtensionService's
// cluster: as Contour's, a locality per Service, weighted by the Service's
// weight (a Service of weight 0 gets no requests), holding the ready
// endpoints of all its zones; slices are the EndpointSlices by
// namespace/service.
func extensionAssignment(c *model.Cluster, slices map[string][]*discoveryv1.EndpointSlice) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: c.EDSName}
	for _, t := range c.Extension {
		if t.Weight == 0 {
			continue
		}
		svc := &model.Cluster{Service: t.Service, Port: t.Port}
		one := loadAssignment(c.EDSName, svc, slices[t.Service.Namespace+"/"+t.Service.Name])
		loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{SubZone: t.Service.Name}, LoadBalancingWeight: wrapperspb.UInt32(t.Weight)}
		for _, l := range one.Endpoints {
			loc.LbEndpoints = append(loc.LbEndpoints, l.LbEndpoints...)
		}
		if len(loc.LbEndpoints) > 0 {
			la.Endpoints = append(la.Endpoints, loc)
		}
	}
	return la
}

// extensionAssignments are the load assignments of every ExtensionService
// cluster of the model, sorted by name.
func extensionAssignments(m *model.Model, slices map[string][]*discoveryv1.EndpointSlice) []*endpointv3.ClusterLoadAssignment {
	var out []*endpointv3.ClusterLoadAssignment
	for _, c := range m.Clusters {
		if len(c.Extension) > 0 {
			out = append(out, extensionAssignment(c, slices))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClusterName < out[j].ClusterName })
	return out
}
