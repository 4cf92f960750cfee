package xdsgen

import (
	"sort"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	directresponsev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/direct_response/v3"

	"github.com/legateproxy/legate/internal/controller/model"
)

// gatewayListeners renders the Gateway API listeners: an http listener is
// one connection manager whose route configuration (named as the
// listener) holds every virtual host; an https listener has one filter
// chain per Gateway listener, matched by SNI (none for a listener without
// hostname), with its certificate and its own route configuration
// (<listener>/<gateway namespace>/<gateway>/<listener name>).
func gatewayListeners(m *model.Model, opt Options, shared sharedListeners, ingressHTTPS *listenerv3.Listener) ([]*listenerv3.Listener, []*routev3.RouteConfiguration) {
	names := make([]string, 0, len(m.Listeners))
	for n := range m.Listeners {
		names = append(names, n)
	}
	sort.Strings(names)
	var ls []*listenerv3.Listener
	var rs []*routev3.RouteConfiguration
	opt.websockets = true
	for _, n := range names {
		l := m.Listeners[n]
		addr := l.Address
		if addr == "" {
			addr = opt.HTTPAddress
			if l.Protocol == "https" {
				addr = opt.HTTPSAddress
			}
		}
		out := &listenerv3.Listener{
			Name:                          l.Name,
			Address:                       sockAddr(addr, l.Port),
			PerConnectionBufferLimitBytes: u32OrNil(opt.ListenerBufferLimit),
		}
		switch l.Protocol {
		case "http":
			o := opt
			o.plainHTTP = true
			out.ListenerFilters = opt.proxyProtocol(nil)
			out.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(o, l.Name, l.Name)}}}
			vhosts := l.VirtualHosts
			if l == shared.http {
				vhosts = map[string]*model.VirtualHost{}
				for n, vh := range m.Insecure {
					vhosts[n] = vh
				}
				for n, vh := range l.VirtualHosts {
					vhosts[n] = vh
				}
			}
			rs = append(rs, routeConfig(l.Name, vhosts, true))
		case "https":
			out.ListenerFilters = opt.proxyProtocol([]*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
				ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}})
			for _, c := range l.Chains {
				rn := l.Name + "/" + c.Name
				fc := &listenerv3.FilterChain{Name: c.Name}
				if c.Hostname != "" {
					fc.FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{c.Hostname}}
				}
				if c.TCPProxy != nil {
					// A TLSRoute: SNI picks the chain, the connection goes
					// to the backends as it is (Passthrough) or, with the
					// listener's certificate, decrypted (Terminate).
					if c.Secret != nil {
						fc.TransportSocket = downstreamTLS(opt, &model.SecureVirtualHost{MinVersion: opt.TLSMinVersion, MaxVersion: opt.TLSMaxVersion}, c.Secret.Name, nil)
					}
					fc.Filters = []*listenerv3.Filter{tcpProxyFilter(opt, "tcp/"+c.Name, c.TCPProxy)}
					out.FilterChains = append(out.FilterChains, fc)
					continue
				}
				vh := &model.SecureVirtualHost{MinVersion: opt.TLSMinVersion, MaxVersion: opt.TLSMaxVersion, ClientCA: c.ClientCA}
				if c.ClientCA != nil && c.ClientInsecureFallback {
					// AllowInsecureFallback: ask for a certificate, serve
					// without one and with one that does not verify.
					vh.OptionalClientCert, vh.SkipClientValidation = true, true
				}
				fc.TransportSocket = downstreamTLS(opt, vh, c.Secret.Name, opt.alpn())
				fc.Filters = []*listenerv3.Filter{hcmFilter(opt, l.Name, rn)}
				out.FilterChains = append(out.FilterChains, fc)
				rs = append(rs, routeConfig(rn, c.VirtualHosts, false))
			}
			if l == shared.https && ingressHTTPS != nil {
				// After the Gateway's: a chain of the Gateway without
				// hostname still loses to these SNI matches (the most
				// specific server name wins).
				out.FilterChains = append(out.FilterChains, ingressHTTPS.FilterChains...)
			}
		case "tcp":
			if l.TCPProxy != nil {
				out.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tcpProxyFilter(opt, l.Name, l.TCPProxy)}}}
			}
		}
		if len(out.FilterChains) == 0 {
			// A TLS or TCP listener without a route to serve (none
			// attached, or no valid backend): it is bound and programmed,
			// so it accepts connections and closes them, as Envoy closes
			// those no filter chain matches; the conformance suite
			// expects a reset or EOF, not a refused connection.
			out.FilterChains = []*listenerv3.FilterChain{{Name: "reject", Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.direct_response",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&directresponsev3.Config{})},
			}}}}
		}
		ls = append(ls, out)
	}
	return ls, rs
}

// sharedListeners are the Gateway listeners bound on the address and port
// of ingress_http and ingress_https, which replace them.
type sharedListeners struct{ http, https *model.Listener }

func sharedGatewayListeners(m *model.Model, opt Options) sharedListeners {
	var s sharedListeners
	for _, l := range m.Listeners {
		switch {
		case l.Address == "" && l.Protocol == "http" && l.Port == opt.HTTPPort:
			s.http = l
		case l.Address == "" && l.Protocol == "https" && l.Port == opt.HTTPSPort:
			s.https = l
		}
	}
	return s
}
