package xdsgen

import (
	"net"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
)

const connectTimeout = 2 * time.Second

var lbPolicies = map[string]clusterv3.Cluster_LbPolicy{
	"ROUND_ROBIN":   clusterv3.Cluster_ROUND_ROBIN,
	"LEAST_REQUEST": clusterv3.Cluster_LEAST_REQUEST,
	"RANDOM":        clusterv3.Cluster_RANDOM,
	"RING_HASH":     clusterv3.Cluster_RING_HASH,
}

func cluster(c *model.Cluster, opt Options) *clusterv3.Cluster {
	out := &clusterv3.Cluster{
		Name:           c.Name,
		AltStatName:    altStatName(c),
		ConnectTimeout: dur(connectTimeout),
		LbPolicy:       lbPolicies[c.LBPolicy],
	}
	// As Contour, the configuration file's cluster limits apply to
	// Service clusters, not to ExtensionServices'.
	service := len(c.Extension) == 0
	var maxRequests uint32
	if service {
		out.PerConnectionBufferLimitBytes = u32OrNil(opt.ClusterBufferLimit)
		maxRequests = opt.ClusterMaxRequestsPerConnection
	}
	if ss := c.SlowStart; ss != nil {
		cfg := &clusterv3.Cluster_SlowStartConfig{
			SlowStartWindow:  dur(ss.Window),
			Aggression:       &corev3.RuntimeDouble{DefaultValue: ss.Aggression, RuntimeKey: "legate.slow_start.aggression"},
			MinWeightPercent: &typev3.Percent{Value: ss.MinWeightPercent},
		}
		if c.LBPolicy == "LEAST_REQUEST" {
			out.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{SlowStartConfig: cfg}}
		} else {
			out.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{SlowStartConfig: cfg}}
		}
	}
	if c.ExternalName != "" {
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		if f, ok := dnsFamilies[c.DNSLookupFamily]; ok {
			out.DnsLookupFamily = f
		}
		ep := &endpointv3.Endpoint{Address: sockAddr(c.ExternalName, uint32(c.Port.Port))}
		if c.HealthPort != nil {
			// An ExternalName has no targets: its ports are the host's.
			ep.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: uint32(c.HealthPort.Port)}
		}
		out.LoadAssignment = &endpointv3.ClusterLoadAssignment{ClusterName: c.Name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: ep}}}}}}
	} else {
		out.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		out.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: c.EDSName}
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{}
	useOpts := false
	switch c.Protocol {
	case "h2", "h2c":
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}
		useOpts = true
	}
	if c.IdleConnTimeout > 0 || maxRequests > 0 {
		opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: u32OrNil(maxRequests)}
		if c.IdleConnTimeout > 0 {
			opts.CommonHttpProtocolOptions.IdleTimeout = dur(c.IdleConnTimeout)
		}
		useOpts = true
	}
	if useOpts && opts.UpstreamProtocolOptions == nil {
		// The protocol is required once the options are set; a plain
		// (or TLS) Service speaks HTTP/1.1, as Contour's HTTPVersion1.
		opts.UpstreamProtocolOptions = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}
	}
	if useOpts {
		out.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(opts)}
	}
	if c.Protocol == "tls" || c.Protocol == "h2" {
		ctx := &tlsv3.UpstreamTlsContext{Sni: c.SNI, CommonTlsContext: &tlsv3.CommonTlsContext{}}
		if c.Protocol == "h2" {
			ctx.CommonTlsContext.AlpnProtocols = []string{"h2"}
		}
		if c.ClientCertificate != nil {
			// The certificate the proxy presents, by SDS as listener
			// certificates (Build renders every model secret with one).
			ctx.CommonTlsContext.TlsCertificateSdsSecretConfigs = sdsSecret(c.ClientCertificate.Name)
		}
		if c.UpstreamCA != nil || c.SystemCA {
			vc := &tlsv3.CertificateValidationContext{}
			if c.UpstreamCA != nil {
				vc.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: c.UpstreamCA.CA}}
			} else {
				vc.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
			}
			for _, n := range c.SubjectNames {
				vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
					SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}}})
			}
			for _, u := range c.SubjectURIs {
				vc.MatchTypedSubjectAltNames = append(vc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
					SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: u}}})
			}
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		}
		out.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
	}
	if hc := c.HealthCheck; hc != nil {
		h := &corev3.HealthCheck{
			Timeout: dur(hc.Timeout), Interval: dur(hc.Interval),
			UnhealthyThreshold: wrapperspb.UInt32(hc.Unhealthy), HealthyThreshold: wrapperspb.UInt32(hc.Healthy),
		}
		if hc.HTTP {
			hh := &corev3.HealthCheck_HttpHealthCheck{Host: hc.Host, Path: hc.Path}
			for _, r := range hc.ExpectedStatuses {
				hh.ExpectedStatuses = append(hh.ExpectedStatuses, &typev3.Int64Range{Start: r[0], End: r[1]})
			}
			if c.Protocol == "h2" || c.Protocol == "h2c" {
				hh.CodecClientType = typev3.CodecClientType_HTTP2
			}
			h.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: hh}
		} else {
			h.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}}
		}
		out.HealthChecks = []*corev3.HealthCheck{h}
	}
	if len(c.Extension) > 0 {
		extensionCluster(out, c)
	}
	if cb := c.CircuitBreakers; cb.Any() {
		out.CircuitBreakers = circuitBreakers(cb)
	}
	return out
}

// circuitBreakers are a cluster's thresholds as Contour's
// applyCircuitBreakers writes them: the default priority with
// track_remaining, and a per-host entry (max_connections only, the one
// limit Envoy applies per host) even when it sets nothing.
func circuitBreakers(cb *model.CircuitBreakers) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{
		Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: u32OrNil(cb.MaxConnections), MaxPendingRequests: u32OrNil(cb.MaxPendingRequests),
			MaxRequests: u32OrNil(cb.MaxRequests), MaxRetries: u32OrNil(cb.MaxRetries), TrackRemaining: true,
		}},
		PerHostThresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: u32OrNil(cb.PerHostMaxConnections), TrackRemaining: true}},
	}
}

// u32OrNil is v as a wrapper, nil for 0 (unset).
func u32OrNil(v uint32) *wrapperspb.UInt32Value {
	if v == 0 {
		return nil
	}
	return wrapperspb.UInt32(v)
}

// altStatName keeps stats readable: namespace_service_port.
func altStatName(c *model.Cluster) string {
	return c.Service.Namespace + "_" + c.Service.Name + "_" + itoa(int(c.Port.Port))
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

// Endpoints renders a ClusterLoadAssignment for every EDS service name
// the model's clusters use, from the EndpointSlices of their Services:
// ready endpoints only, one locality per zone (each with weight 1, which
// gRPC clients require), sorted for determinism.
func Endpoints(m *model.Model, objs *source.Objects) []*endpointv3.ClusterLoadAssignment {
	byEDS := map[string]*model.Cluster{}
	for _, c := range m.Clusters {
		if c.ExternalName == "" && len(c.Extension) == 0 {
			byEDS[c.EDSName] = c
		}
	}
	// Slices by service.
	slices := map[string][]*discoveryv1.EndpointSlice{}
	for _, s := range objs.EndpointSlices {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		k := s.Namespace + "/" + svc
		slices[k] = append(slices[k], s)
	}
	names := make([]string, 0, len(byEDS))
	for n := range byEDS {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*endpointv3.ClusterLoadAssignment, 0, len(names))
	for _, n := range names {
		c := byEDS[n]
		out = append(out, loadAssignment(n, c, slices[c.Service.Namespace+"/"+c.Service.Name]))
	}
	if ext := extensionAssignments(m, slices); len(ext) > 0 {
		out = append(out, ext...)
		sort.Slice(out, func(i, j int) bool { return out[i].ClusterName < out[j].ClusterName })
	}
	return out
}

func loadAssignment(name string, c *model.Cluster, ss []*discoveryv1.EndpointSlice) *endpointv3.ClusterLoadAssignment {
	type ep struct {
		zone, addr   string
		port, health uint32
	}
	seen := map[ep]bool{}
	var eps []ep
	for _, s := range ss {
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var port, health uint32
		found := false
		for _, p := range s.Ports {
			pn := ""
			if p.Name != nil {
				pn = *p.Name
			}
			if pn == c.Port.Name && p.Port != nil {
				port, found = uint32(*p.Port), true
			}
			if c.HealthPort != nil && pn == c.HealthPort.Name && p.Port != nil {
				health = uint32(*p.Port)
			}
		}
		if !found {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			zone := ""
			if e.Zone != nil {
				zone = *e.Zone
			}
			for _, a := range e.Addresses {
				if net.ParseIP(a) == nil {
					continue
				}
				k := ep{zone, a, port, health}
				if !seen[k] {
					seen[k] = true
					eps = append(eps, k)
				}
			}
		}
	}
	sort.Slice(eps, func(i, j int) bool {
		if eps[i].zone != eps[j].zone {
			return eps[i].zone < eps[j].zone
		}
		if eps[i].addr != eps[j].addr {
			return eps[i].addr < eps[j].addr
		}
		return eps[i].port < eps[j].port
	})
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	var cur *endpointv3.LocalityLbEndpoints
	for _, e := range eps {
		if cur == nil || cur.Locality.Zone != e.zone {
			cur = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: e.zone}, LoadBalancingWeight: wrapperspb.UInt32(1)}
			la.Endpoints = append(la.Endpoints, cur)
		}
		ep := &endpointv3.Endpoint{Address: sockAddr(e.addr, e.port)}
		if e.health != 0 && e.health != e.port {
			ep.HealthCheckConfig = &endpointv3.Endpoint_HealthCheckConfig{PortValue: e.health}
		}
		cur.LbEndpoints = append(cur.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: ep},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	return la
}
