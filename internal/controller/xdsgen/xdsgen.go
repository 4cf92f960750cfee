// Package xdsgen renders a controller model as Envoy v3 resources:
// listeners, route configurations, clusters, cluster load assignments and
// secrets for proxies (Legate or Envoy), and api_listener resources for
// proxyless gRPC clients. Output is deterministic: resources are sorted by
// name and built only from the model.
package xdsgen

import (
	"fmt"
	"sort"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/controller/model"
)

// Names of the resources the controller serves, as Contour names them.
const (
	HTTPListener      = "ingress_http"
	HTTPSListener     = "ingress_https"
	HTTPRoutes        = "ingress_http"
	FallbackRoutes    = "ingress_fallbackcert"
	secureRoutePrefix = "https/"
)

// Options set the listeners' addresses and what Contour's configuration
// file sets on every listener and cluster (package contourconfig fills
// them). The zero value is Contour's defaults where Contour has one.
type Options struct {
	HTTPAddress  string // default 0.0.0.0
	HTTPPort     uint32 // default 8080
	HTTPSAddress string
	HTTPSPort    uint32 // default 8443
	// FallbackSecret is the SDS name of the fallback certificate, if any.
	FallbackSecret string
	// UseProxyProto expects the PROXY protocol on the HTTP and HTTPS
	// listeners (Contour's --use-proxy-protocol).
	UseProxyProto bool
	// AccessLog of the HTTP and HTTPS listeners (default: Envoy's format
	// to /dev/stdout, as Contour).
	AccessLog AccessLog
	// Timeouts of the HTTP connection managers.
	Timeouts Timeouts
	// ConnectTimeout of upstream clusters (default 2s, as Contour).
	ConnectTimeout time.Duration
	// XffNumTrustedHops is network.num-trusted-hops.
	XffNumTrustedHops uint32
	// HTTPVersions are default-http-versions ("http/1.1", "http/2"):
	// none is both.
	HTTPVersions []string
	// CipherSuites are the TLS 1.2 cipher suites of downstream TLS
	// (none: the proxy's defaults).
	CipherSuites []string
	// TLSMinVersion and TLSMaxVersion ("1.2", "1.3") of the fallback
	// certificate's filter chain (default 1.2 and 1.3).
	TLSMinVersion, TLSMaxVersion string
	// DisableMergeSlashes and ServerHeaderTransformation are Contour's
	// keys of the same names.
	DisableMergeSlashes        bool
	ServerHeaderTransformation string
	// ClusterMaxRequestsPerConnection and ClusterBufferLimit are
	// cluster.max-requests-per-connection and
	// cluster.per-connection-buffer-limit-bytes of Service clusters (0:
	// unset), as Contour's cluster settings.
	ClusterMaxRequestsPerConnection, ClusterBufferLimit uint32
	// HTTP2MaxConcurrentStreams and ListenerBufferLimit are
	// listener.http2-max-concurrent-streams (the connection managers'
	// http2_protocol_options) and listener.per-connection-buffer-limit-bytes
	// (the HTTP and HTTPS listeners'), 0 for unset.
	HTTP2MaxConcurrentStreams, ListenerBufferLimit uint32

	// rateLimit is the model's global rate limit service (Build sets it).
	rateLimit *model.GlobalRateLimitService
	// tracing is the model's tracing of every connection manager (Build
	// sets it).
	tracing *model.Tracing
	// plainHTTP marks the connection manager being rendered as one of a
	// plain HTTP Gateway listener (its access log is the HTTP one).
	plainHTTP bool
	// websockets enables WebSocket upgrades on the connection manager
	// being rendered: Gateway API listeners, as Contour's, allow them
	// on every route (a backend's kubernetes.io/ws appProtocol needs
	// nothing else).
	websockets bool
}

func (o Options) withDefaults() Options {
	if o.HTTPAddress == "" {
		o.HTTPAddress = "0.0.0.0"
	}
	if o.HTTPSAddress == "" {
		o.HTTPSAddress = o.HTTPAddress
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 8080
	}
	if o.HTTPSPort == 0 {
		o.HTTPSPort = 8443
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = connectTimeout
	}
	if o.TLSMinVersion == "" {
		o.TLSMinVersion = "1.2"
	}
	if o.TLSMaxVersion == "" {
		o.TLSMaxVersion = "1.3"
	}
	return o
}

// Resources is one rendering of the model, per xDS type, sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Secrets   []*tlsv3.Secret
	// Proxyless holds the api_listener Listeners for gRPC clients.
	Proxyless []*listenerv3.Listener
}

func ads() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("xdsgen: marshal %T: %v", m, err))
	}
	return a
}

func sockAddr(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
}

func hcmFilter(opt Options, statPrefix, routes string) *listenerv3.Filter {
	return hcmFilterWith(opt, statPrefix, routes, nil, nil)
}

// hcmFilterWith is hcmFilter with x-forwarded-client-cert set from the
// client certificate when fcc is not nil, the jwt_authn filter of the
// virtual host's providers (none for nil) and after it, as Contour, the
// ext_authz filter of its authorization server (none for nil). Every HTTP
// connection manager ends, as Contour's, with the global rate limit filter
// (when a rate limit service is configured) before the router.
func hcmFilterWith(opt Options, statPrefix, routes string, fcc *model.ClientCertDetails, authz *model.ExternalAuthorization, jwt ...model.JWTProvider) *listenerv3.Filter {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routes, ConfigSource: ads()}},
		HttpFilters:      withJWTFilter(withJWTFilter(withJWTFilter(append(policyFilters(), routerFilter()), jwtFilter(jwt)), extAuthzFilter(authz)), rateLimitFilter(opt.rateLimit)),
		UseRemoteAddress: wrapperspb.Bool(true),
		NormalizePath:    wrapperspb.Bool(true),
		MergeSlashes:     false,
	}
	logPath := opt.AccessLog.HTTPSPath
	if statPrefix == HTTPListener || opt.plainHTTP {
		logPath = opt.AccessLog.HTTPPath
	}
	opt.applyHCM(hcm, logPath)
	hcm.Tracing = hcmTracing(opt.tracing)
	if opt.websockets {
		hcm.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	}
	if fcc != nil {
		hcm.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		hcm.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(fcc.Subject), Cert: fcc.Cert, Chain: fcc.Chain, Dns: fcc.DNS, Uri: fcc.URI}
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}
}

func tcpProxyFilter(opt Options, statPrefix string, tp *model.TCPProxy) *listenerv3.Filter {
	// As Contour, TLS TCP proxies log to the HTTPS access log.
	t := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix, AccessLog: opt.accessLogs(opt.AccessLog.HTTPSPath)}
	if len(tp.Clusters) == 1 {
		t.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: tp.Clusters[0].Cluster.Name}
	} else {
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for _, c := range tp.Clusters {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: c.Cluster.Name, Weight: c.Weight})
		}
		t.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t)}}
}

// Build renders the model (everything but endpoints: see Endpoints).
func Build(m *model.Model, opt Options) *Resources {
	opt = opt.withDefaults()
	opt.rateLimit = m.RateLimit
	opt.tracing = m.Tracing
	r := &Resources{}
	// A Gateway listener on the proxy's own address and the port of
	// ingress_http (or ingress_https) takes its place, as in Contour,
	// where HTTPProxies and Ingresses attach to the Gateway's listeners:
	// the HTTPProxy and Ingress virtual hosts join its route
	// configuration (its own win a name both have), their TLS filter
	// chains join its chains.
	shared := sharedGatewayListeners(m, opt)
	ingressHTTP := &listenerv3.Listener{
		Name:                          HTTPListener,
		Address:                       sockAddr(opt.HTTPAddress, opt.HTTPPort),
		ListenerFilters:               opt.proxyProtocol(nil),
		PerConnectionBufferLimitBytes: u32OrNil(opt.ListenerBufferLimit),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{hcmFilter(opt, HTTPListener, HTTPRoutes)},
		}},
	}
	if shared.http == nil {
		r.Routes = append(r.Routes, routeConfig(HTTPRoutes, m.Insecure, true))
		r.Listeners = append(r.Listeners, ingressHTTP)
	}
	httpsL, httpsRoutes := httpsListener(m, opt)
	if httpsL != nil && shared.https == nil {
		r.Listeners = append(r.Listeners, httpsL)
	}
	r.Routes = append(r.Routes, httpsRoutes...)
	gl, gr := gatewayListeners(m, opt, shared, httpsL)
	r.Listeners = append(r.Listeners, gl...)
	r.Routes = append(r.Routes, gr...)
	names := make([]string, 0, len(m.Clusters))
	for n := range m.Clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := cluster(m.Clusters[n], opt)
		c.ConnectTimeout = dur(opt.ConnectTimeout)
		r.Clusters = append(r.Clusters, c)
	}
	names = names[:0]
	for n, s := range m.Secrets {
		if len(s.Cert) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		s := m.Secrets[n]
		r.Secrets = append(r.Secrets, &tlsv3.Secret{Name: s.Name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: s.Cert}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: s.Key}},
		}}})
	}
	for _, sp := range m.ServicePorts {
		r.Proxyless = append(r.Proxyless, proxylessListener(sp))
	}
	return r
}

// ProxylessName is the listener name gRPC clients dial as
// xds:///<service>.<namespace>:<port>.
func ProxylessName(sp *model.ServicePort) string {
	return fmt.Sprintf("%s.%s:%d", sp.Service.Name, sp.Service.Namespace, sp.Port.Port)
}

func proxylessListener(sp *model.ServicePort) *listenerv3.Listener {
	name := ProxylessName(sp)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: name,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: name, Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: sp.Cluster.Name}}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(hcm)}}
}

func tlsParams(min, max string) *tlsv3.TlsParameters {
	v := func(s string) tlsv3.TlsParameters_TlsProtocol {
		if s == "1.3" {
			return tlsv3.TlsParameters_TLSv1_3
		}
		return tlsv3.TlsParameters_TLSv1_2
	}
	if max == "" {
		// An unset maximum is TLS 1.3, as Contour (Ingress TLS sets none).
		max = "1.3"
	}
	return &tlsv3.TlsParameters{TlsMinimumProtocolVersion: v(min), TlsMaximumProtocolVersion: v(max)}
}

func sdsSecret(name string) []*tlsv3.SdsSecretConfig {
	return []*tlsv3.SdsSecretConfig{{Name: name, SdsConfig: ads()}}
}

func downstreamTLS(opt Options, vh *model.SecureVirtualHost, secret string, alpn []string) *corev3.TransportSocket {
	params := tlsParams(vh.MinVersion, vh.MaxVersion)
	params.CipherSuites = opt.CipherSuites
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:                      params,
		TlsCertificateSdsSecretConfigs: sdsSecret(secret),
		AlpnProtocols:                  alpn,
	}}
	if vh.ClientCA != nil || vh.SkipClientValidation {
		vc := &tlsv3.CertificateValidationContext{}
		if vh.ClientCA != nil {
			vc.TrustedCa = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: vh.ClientCA.CA}}
		}
		if vh.ClientCRL != nil {
			vc.Crl = &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: vh.ClientCRL.CRL}}
			vc.OnlyVerifyLeafCertCrl = vh.CRLOnlyLeaf
		}
		if vh.SkipClientValidation {
			vc.TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
		}
		ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
		ctx.RequireClientCertificate = wrapperspb.Bool(!vh.OptionalClientCert)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

func httpsListener(m *model.Model, opt Options) (*listenerv3.Listener, []*routev3.RouteConfiguration) {
	if len(m.Secure) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(m.Secure))
	for n := range m.Secure {
		names = append(names, n)
	}
	sort.Strings(names)
	l := &listenerv3.Listener{
		Name:                          HTTPSListener,
		Address:                       sockAddr(opt.HTTPSAddress, opt.HTTPSPort),
		PerConnectionBufferLimitBytes: u32OrNil(opt.ListenerBufferLimit),
		ListenerFilters: opt.proxyProtocol([]*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}}),
	}
	var routes []*routev3.RouteConfiguration
	fallback := map[string]*model.VirtualHost{}
	for _, n := range names {
		vh := m.Secure[n]
		fc := &listenerv3.FilterChain{FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{n}}}
		switch {
		case vh.Passthrough && vh.TCPProxy != nil:
			fc.Filters = []*listenerv3.Filter{tcpProxyFilter(opt, "tcp/"+n, vh.TCPProxy)}
		case vh.Secret == nil:
			continue
		case vh.TCPProxy != nil:
			fc.TransportSocket = downstreamTLS(opt, vh, vh.Secret.Name, nil)
			fc.Filters = []*listenerv3.Filter{tcpProxyFilter(opt, "tcp/"+n, vh.TCPProxy)}
		default:
			fc.TransportSocket = downstreamTLS(opt, vh, vh.Secret.Name, opt.alpn())
			fc.Filters = []*listenerv3.Filter{hcmFilterWith(opt, HTTPSListener, secureRoutePrefix+n, vh.ForwardClientCert, vh.Authorization, vh.JWTProviders...)}
			routes = append(routes, routeConfig(secureRoutePrefix+n, map[string]*model.VirtualHost{n: &vh.VirtualHost}, false))
			if vh.FallbackCertificate {
				fallback[n] = &vh.VirtualHost
			}
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	if len(fallback) > 0 && opt.FallbackSecret != "" {
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             "fallback-certificate",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
			TransportSocket:  downstreamTLS(opt, &model.SecureVirtualHost{MinVersion: opt.TLSMinVersion, MaxVersion: opt.TLSMaxVersion}, opt.FallbackSecret, opt.alpn()),
			Filters:          []*listenerv3.Filter{hcmFilter(opt, HTTPSListener, FallbackRoutes)},
		})
		routes = append(routes, routeConfig(FallbackRoutes, fallback, false))
	}
	if len(l.FilterChains) == 0 {
		return nil, nil
	}
	return l, routes
}

// domains are the Host values a virtual host answers: the name, and the
// name with any port (not for wildcards, where Envoy allows one "*").
func domains(name string) []string {
	if name == "*" || strings.Contains(name, "*") {
		return []string{name}
	}
	return []string{name, name + ":*"}
}

func routeConfig(name string, vhosts map[string]*model.VirtualHost, insecure bool) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name}
	names := make([]string, 0, len(vhosts))
	for n, vh := range vhosts {
		if len(vh.Routes) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		vh := vhosts[n]
		v := &routev3.VirtualHost{Name: n, Domains: domains(n), TypedPerFilterConfig: vhostPerFilter(vh), RateLimits: globalRateLimits(vh.GlobalRateLimits)}
		for _, r := range vh.Routes {
			er := route(r, n)
			rateLimitRoute(er, r)
			if !insecure {
				// JWT verification and authorization are HTTPS only, as Contour.
				jwtRoute(er, r)
				extAuthzRoute(er, r)
			}
			v.Routes = append(v.Routes, er)
		}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	return rc
}
