package xdsgen

import (
	"fmt"
	"sort"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/legateproxy/legate/internal/mesh"
)

// stdoutAccessLog is Istio's sidecar access log: every connection or
// request to stdout, in Envoy's default format.
func stdoutAccessLog() []*accesslogv3.AccessLog {
	return []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&filelogv3.FileAccessLog{Path: "/dev/stdout"})}}}
}

func origDstFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.original_dst",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&origdstv3.OriginalDst{})}}
}

func tlsInspectorFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}
}

func tcpProxyTo(statPrefix, cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster},
			AccessLog:        stdoutAccessLog(),
		})}}
}

// virtualOutbound takes every outbound connection iptables redirects
// (port 15001) and hands it to the listener of its original destination
// (use_original_dst); what no listener claims takes the default chain:
// PassthroughCluster under ALLOW_ANY, BlackHoleCluster under
// REGISTRY_ONLY. A connection addressed to 15001 itself would loop: it
// goes to BlackHoleCluster.
func (w *sidecarWorld) virtualOutbound() *listenerv3.Listener {
	dflt := PassthroughCluster
	if w.opt.OutboundPolicy == OutboundRegistryOnly {
		dflt = BlackHoleCluster
	}
	return &listenerv3.Listener{
		Name:             VirtualOutbound,
		Address:          sockAddr("0.0.0.0", mesh.OutboundPort),
		UseOriginalDst:   wrapBool(true),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters:  []*listenerv3.ListenerFilter{origDstFilter()},
		FilterChains: []*listenerv3.FilterChain{
			{Name: "virtualOutbound-blackhole",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapU32(mesh.OutboundPort)},
				Filters:          []*listenerv3.Filter{tcpProxyTo(BlackHoleCluster, BlackHoleCluster)}},
			{Name: "virtualOutbound-catchall-tcp",
				Filters: []*listenerv3.Filter{tcpProxyTo(dflt, dflt)}},
		},
	}
}

// outboundHTTPListener takes a port's HTTP traffic to any address (the
// route configuration named after the port picks the Service by Host);
// it never binds: virtualOutbound hands connections to it.
func outboundHTTPListener(port int32) *listenerv3.Listener {
	name := "0.0.0.0_" + strconv.Itoa(int(port))
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_" + name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: strconv.Itoa(int(port)), ConfigSource: ads()}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
		// The application is the client: its address is the peer's,
		// not to be trusted as an edge proxy would.
		UseRemoteAddress: wrapBool(false),
		NormalizePath:    wrapBool(true),
		UpgradeConfigs:   []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		AccessLog:        stdoutAccessLog(),
	}
	return &listenerv3.Listener{
		Name:             name,
		Address:          sockAddr("0.0.0.0", uint32(port)),
		BindToPort:       wrapBool(false),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{{Name: name, Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}}}},
	}
}

// outboundTCPListener takes a TCP Service port's traffic to its ClusterIP.
func outboundTCPListener(ip string, port int32, cluster string) *listenerv3.Listener {
	name := ip + "_" + strconv.Itoa(int(port))
	return &listenerv3.Listener{
		Name:             name,
		Address:          sockAddr(ip, uint32(port)),
		BindToPort:       wrapBool(false),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains:     []*listenerv3.FilterChain{{Name: name, Filters: []*listenerv3.Filter{tcpProxyTo(cluster, cluster)}}},
	}
}

// inboundPort is one port of the workload that inbound traffic reaches.
type inboundPort struct {
	port  int32
	proto protocol
}

// inboundPorts are the pod's ports: the Services selecting it (their
// targetPorts resolved against its containerPorts; the protocol from the
// Service port), then its declared containerPorts (the protocol from
// their names). The sidecar's own ports are not the application's.
func (w *sidecarWorld) inboundPorts(pod *corev1.Pod) []inboundPort {
	if pod == nil {
		return nil
	}
	byPort := map[int32]protocol{}
	named := map[string]int32{}
	for _, c := range pod.Spec.Containers {
		if c.Name == mesh.ProxyContainer {
			continue
		}
		for _, p := range c.Ports {
			if p.Name != "" {
				named[p.Name] = p.ContainerPort
			}
		}
	}
	svcs := make([]*corev1.Service, 0)
	for _, s := range w.objs.Services {
		if s.Namespace == pod.Namespace && s.Spec.Type != corev1.ServiceTypeExternalName && len(s.Spec.Selector) > 0 {
			for _, p := range w.selected(s) {
				if p.Name == pod.Name {
					svcs = append(svcs, s)
					break
				}
			}
		}
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
	for _, s := range svcs {
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			port := sp.Port
			switch {
			case sp.TargetPort.IntValue() > 0:
				port = int32(sp.TargetPort.IntValue())
			case sp.TargetPort.StrVal != "":
				p, ok := named[sp.TargetPort.StrVal]
				if !ok {
					continue // the pod has no such port: the Service does not reach it
				}
				port = p
			}
			if _, ok := byPort[port]; !ok {
				byPort[port] = portProtocol(sp.Name, sp.AppProtocol)
			}
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == mesh.ProxyContainer {
			continue
		}
		for _, p := range c.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			if _, ok := byPort[p.ContainerPort]; !ok {
				byPort[p.ContainerPort] = portProtocol(p.Name, nil)
			}
		}
	}
	var out []inboundPort
	for p, pr := range byPort {
		if sidecarPort(p) {
			continue
		}
		out = append(out, inboundPort{p, pr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].port < out[j].port })
	return out
}

func sidecarPort(p int32) bool {
	switch p {
	case mesh.OutboundPort, mesh.InboundPort, mesh.AgentPort, mesh.ReadinessPort, mesh.StatsPort, mesh.AdminPort:
		return true
	}
	return false
}

// inbound renders virtualInbound and the inbound clusters. Each port gets
// a mesh mTLS chain (TLS with a mesh ALPN, client certificate required)
// and, under PERMISSIVE, a plaintext chain; other ports pass through to
// the application the same way.
func (w *sidecarWorld) inbound(pod *corev1.Pod, r *SidecarResources) {
	l := &listenerv3.Listener{
		Name:             VirtualInbound,
		Address:          sockAddr("0.0.0.0", mesh.InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		// original_dst restores the port the client dialed (iptables
		// redirected it to 15006); tls_inspector tells mesh mTLS (ALPN)
		// from plaintext.
		ListenerFilters: []*listenerv3.ListenerFilter{origDstFilter(), tlsInspectorFilter()},
		FilterChains: []*listenerv3.FilterChain{{Name: "virtualInbound-blackhole",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapU32(mesh.InboundPort)},
			Filters:          []*listenerv3.Filter{tcpProxyTo(BlackHoleCluster, BlackHoleCluster)}}},
	}
	strict := w.opt.MTLS == MTLSStrict
	for _, ip := range w.inboundPorts(pod) {
		cl := InboundClusterName(ip.port)
		r.Clusters = append(r.Clusters, inboundCluster(ip.port, ip.proto))
		name := "0.0.0.0_" + strconv.Itoa(int(ip.port))
		port := wrapU32(uint32(ip.port))
		// The server's ALPN list offers the mesh protocols too: a TLS
		// server with no protocol in common with a client that offers
		// some refuses the handshake (RFC 7301), and mesh clients offer
		// only mesh.ALPNMesh (with h2 for HTTP/2 clusters).
		alpn := meshALPNs
		if ip.proto != protoTCP {
			alpn = append([]string{"h2", "http/1.1"}, meshALPNs...)
		}
		filters := func() []*listenerv3.Filter {
			if ip.proto == protoTCP {
				return []*listenerv3.Filter{tcpProxyTo(cl, cl)}
			}
			return []*listenerv3.Filter{inboundHCM(ip.port, cl)}
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:             name + "_mtls",
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "tls", ApplicationProtocols: meshALPNs},
			TransportSocket:  meshDownstreamTLS(alpn),
			Filters:          filters(),
		})
		if !strict {
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name:             name + "_plaintext",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: port, TransportProtocol: "raw_buffer"},
				Filters:          filters(),
			})
		}
	}
	l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
		Name:             "InboundPassthroughFilterChain_mtls",
		FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls", ApplicationProtocols: meshALPNs},
		TransportSocket:  meshDownstreamTLS(meshALPNs),
		Filters:          []*listenerv3.Filter{tcpProxyTo(InboundPassthroughCluster, InboundPassthroughCluster)},
	})
	if !strict {
		// Anything else (plaintext, the application's own TLS) passes
		// through as it came.
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name:    "InboundPassthroughFilterChain",
			Filters: []*listenerv3.Filter{tcpProxyTo(InboundPassthroughCluster, InboundPassthroughCluster)},
		})
	}
	r.Listeners = append(r.Listeners, l)
}

// meshDownstreamTLS terminates mesh mTLS: the workload certificate, a
// client certificate the mesh roots signed required.
func meshDownstreamTLS(alpn []string) *corev3.TransportSocket {
	ctx := &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         meshTLSContext(nil, alpn),
		RequireClientCertificate: wrapBool(true),
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
}

// inboundHCM serves a port's HTTP to the local application. The peer's
// identity reaches the application in x-forwarded-client-cert
// (APPEND_FORWARD with Subject, URI and DNS, Istio's settings), so it
// sees URI=spiffe://… of the calling workload.
func inboundHCM(port int32, cluster string) *listenerv3.Filter {
	name := fmt.Sprintf("inbound_0.0.0.0_%d", port)
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name:             cluster,
			ValidateClusters: wrapBool(false),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    fmt.Sprintf("inbound|http|%d", port),
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:  "default",
					Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{
						ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}, Timeout: dur(0)}},
				}},
			}},
		}},
		HttpFilters:              []*hcmv3.HttpFilter{routerFilter()},
		UseRemoteAddress:         wrapBool(false),
		NormalizePath:            wrapBool(true),
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_APPEND_FORWARD,
		SetCurrentClientCertDetails: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapBool(true), Dns: true, Uri: true},
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		AccessLog:      stdoutAccessLog(),
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}
}
