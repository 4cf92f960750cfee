package xdsgen

// Sidecar configuration: the resources one mesh workload's proxy gets,
// in Istio's shapes and names (pilot/pkg/networking/core: the
// virtualOutbound and virtualInbound listeners, one outbound listener per
// Service port, outbound|<port>||<host> and inbound|<port>|| clusters,
// PassthroughCluster, BlackHoleCluster, InboundPassthroughCluster), so
// that users' dashboards, istioctl-style debugging and Istio sidecars on
// the other end carry over.

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/mesh"
)

// Names of the sidecar resources that are not per Service, Istio's.
const (
	VirtualOutbound           = "virtualOutbound"
	VirtualInbound            = "virtualInbound"
	PassthroughCluster        = "PassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"
)

// Outbound traffic policies (Istio's meshConfig.outboundTrafficPolicy.mode)
// and mTLS modes (PeerAuthentication's).
const (
	OutboundAllowAny     = "ALLOW_ANY"
	OutboundRegistryOnly = "REGISTRY_ONLY"
	MTLSPermissive       = "PERMISSIVE"
	MTLSStrict           = "STRICT"
)

// tlsModeLabel on a pod, value "istio", says it speaks mesh mTLS (Istio's
// label, set by its injector).
const tlsModeLabel = "security.istio.io/tlsMode"

// transportSocketMatch is the endpoint metadata namespace Envoy matches a
// cluster's transport_socket_matches against.
const transportSocketMatch = "envoy.transport_socket_match"

// meshALPNs are the ALPN values an inbound mTLS chain accepts: Legate's
// sidecars send mesh.ALPNMesh; Istio's sidecars send the others too.
var meshALPNs = []string{"istio-peer-exchange", mesh.ALPNMesh, "istio-http/1.0", "istio-http/1.1", "istio-h2"}

// sidecarConnectTimeout is Istio's default connect timeout.
const sidecarConnectTimeout = 10 * time.Second

// SidecarOptions configure every sidecar's resources.
type SidecarOptions struct {
	// TrustDomain of the SPIFFE ids (default mesh.DefaultTrustDomain).
	TrustDomain string
	// OutboundPolicy is ALLOW_ANY (default: unknown destinations pass
	// through) or REGISTRY_ONLY (they are refused).
	OutboundPolicy string
	// MTLS is PERMISSIVE (default: inbound accepts mesh mTLS and
	// plaintext) or STRICT (mesh mTLS only).
	MTLS string
	// ClusterDomain is the DNS suffix of Service names (default: from
	// the node id, else cluster.local).
	ClusterDomain string
}

// Validate reports a bad option, naming its flag.
func (o SidecarOptions) Validate() error {
	switch o.OutboundPolicy {
	case "", OutboundAllowAny, OutboundRegistryOnly:
	default:
		return fmt.Errorf("--mesh-outbound-traffic-policy %q: use %s or %s", o.OutboundPolicy, OutboundAllowAny, OutboundRegistryOnly)
	}
	switch o.MTLS {
	case "", MTLSPermissive, MTLSStrict:
	default:
		return fmt.Errorf("--mesh-mtls %q: use %s or %s", o.MTLS, MTLSPermissive, MTLSStrict)
	}
	if strings.ContainsAny(o.TrustDomain, "/:") {
		return fmt.Errorf("--mesh-trust-domain %q: a trust domain is a DNS-like name without '/' or ':'", o.TrustDomain)
	}
	return nil
}

func (o SidecarOptions) withDefaults(node mesh.NodeID) SidecarOptions {
	if o.TrustDomain == "" {
		o.TrustDomain = mesh.DefaultTrustDomain
	}
	if o.OutboundPolicy == "" {
		o.OutboundPolicy = OutboundAllowAny
	}
	if o.MTLS == "" {
		o.MTLS = MTLSPermissive
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
		if d, ok := strings.CutPrefix(node.Domain, node.Namespace+".svc."); ok && d != "" {
			o.ClusterDomain = d
		}
	}
	return o
}

// SidecarResources are one sidecar's resources, per xDS type, sorted by
// name.
type SidecarResources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Notes say what was left out and why (headless TCP ports, ExternalName
	// Services, a pod not found), for the debug endpoint and logs.
	Notes []string
}

// OutboundClusterName is Istio's name of a Service port's cluster.
func OutboundClusterName(port int32, host string) string {
	return fmt.Sprintf("outbound|%d||%s", port, host)
}

// InboundClusterName is Istio's name of the cluster that reaches the local
// application on port.
func InboundClusterName(port int32) string { return fmt.Sprintf("inbound|%d||", port) }

// protocol is what a port speaks, by Istio's protocol selection.
type protocol int

const (
	protoTCP protocol = iota
	protoHTTP
	protoHTTP2 // HTTP/2 and gRPC: the upstream is spoken to in HTTP/2
)

// portProtocol is Istio's explicit protocol selection: appProtocol first,
// then the port name's prefix up to the first '-' (http, http2, grpc,
// h2c, …); everything else is TCP (no sniffing).
func portProtocol(name string, appProtocol *string) protocol {
	if appProtocol != nil && *appProtocol != "" {
		switch strings.ToLower(*appProtocol) {
		case "http", "http1", "grpc-web":
			return protoHTTP
		case "http2", "grpc", "h2c", "kubernetes.io/h2c":
			return protoHTTP2
		}
		return protoTCP
	}
	n := strings.ToLower(name)
	if i := strings.IndexByte(n, '-'); i >= 0 {
		n = n[:i]
	}
	switch n {
	case "http", "http1":
		return protoHTTP
	case "http2", "grpc", "h2c":
		return protoHTTP2
	}
	return protoTCP
}

// podInMesh reports whether a pod's sidecar speaks mesh mTLS: it was
// injected (mesh.StatusAnnotation) or says so with Istio's tlsMode label.
func podInMesh(p *corev1.Pod) bool {
	if p == nil {
		return false
	}
	if _, ok := p.Annotations[mesh.StatusAnnotation]; ok {
		return true
	}
	return p.Labels[tlsModeLabel] == "istio"
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}

// sidecarWorld indexes the objects one build reads.
type sidecarWorld struct {
	objs  *source.Objects
	opt   SidecarOptions
	podIP map[string]*corev1.Pod
	// slices of each Service, by namespace/name.
	slices map[string][]*discoveryv1.EndpointSlice
}

func newSidecarWorld(objs *source.Objects, opt SidecarOptions) *sidecarWorld {
	w := &sidecarWorld{objs: objs, opt: opt, podIP: map[string]*corev1.Pod{}, slices: map[string][]*discoveryv1.EndpointSlice{}}
	for _, p := range objs.Pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, ip := range p.Status.PodIPs {
			w.podIP[ip.IP] = p
		}
		if p.Status.PodIP != "" {
			w.podIP[p.Status.PodIP] = p
		}
	}
	for _, s := range objs.EndpointSlices {
		if svc := s.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := s.Namespace + "/" + svc
			w.slices[k] = append(w.slices[k], s)
		}
	}
	for _, ss := range w.slices {
		sort.Slice(ss, func(i, j int) bool { return ss[i].Name < ss[j].Name })
	}
	return w
}

// selected returns the pods a Service selects, sorted by name.
func (w *sidecarWorld) selected(svc *corev1.Service) []*corev1.Pod {
	if len(svc.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var out []*corev1.Pod
	for _, p := range w.objs.Pods {
		if p.Namespace == svc.Namespace && sel.Matches(labels.Set(p.Labels)) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// host is a Service's fully qualified name.
func (w *sidecarWorld) host(svc *corev1.Service) string {
	return svc.Name + "." + svc.Namespace + ".svc." + w.opt.ClusterDomain
}

func headless(svc *corev1.Service) bool {
	return svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone
}

// Sidecar renders the resources of the sidecar whose node id is node, from
// every Service in the mesh (Istio's default visibility) and the node's
// own pod (found by namespace/name, else by IP). Output is deterministic.
func Sidecar(objs *source.Objects, node mesh.NodeID, opt SidecarOptions) *SidecarResources {
	opt = opt.withDefaults(node)
	w := newSidecarWorld(objs, opt)
	r := &SidecarResources{}
	w.outbound(node, r)
	pod := objs.Pods[nsName(node.Namespace, node.Pod)]
	if pod == nil {
		pod = w.podIP[node.IP.String()]
	}
	if pod == nil {
		r.Notes = append(r.Notes, fmt.Sprintf("pod %s/%s (IP %s) not found: virtualInbound has only its passthrough chains", node.Namespace, node.Pod, node.IP))
	}
	w.inbound(pod, r)
	r.Clusters = append(r.Clusters, passthroughCluster(), blackHoleCluster(), inboundPassthroughCluster())
	sort.Slice(r.Listeners, func(i, j int) bool { return r.Listeners[i].Name < r.Listeners[j].Name })
	sort.Slice(r.Routes, func(i, j int) bool { return r.Routes[i].Name < r.Routes[j].Name })
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].Name < r.Clusters[j].Name })
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].ClusterName < r.Endpoints[j].ClusterName })
	return r
}

// outbound renders virtualOutbound, the per-port outbound listeners, their
// route configurations, and the Services' clusters and endpoints.
func (w *sidecarWorld) outbound(node mesh.NodeID, r *SidecarResources) {
	svcs := make([]*corev1.Service, 0, len(w.objs.Services))
	for _, s := range w.objs.Services {
		svcs = append(svcs, s)
	}
	sort.Slice(svcs, func(i, j int) bool {
		if svcs[i].Namespace != svcs[j].Namespace {
			return svcs[i].Namespace < svcs[j].Namespace
		}
		return svcs[i].Name < svcs[j].Name
	})
	httpPorts := map[int32][]*routev3.VirtualHost{}
	for _, svc := range svcs {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			r.Notes = append(r.Notes, fmt.Sprintf("Service %s/%s: ExternalName Services are not in sidecar configuration yet (traffic to them follows the outbound traffic policy)", svc.Namespace, svc.Name))
			continue
		}
		host := w.host(svc)
		for _, sp := range svc.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue // UDP and SCTP are not proxied (iptables leaves them alone)
			}
			if sp.Port == mesh.OutboundPort || sp.Port == mesh.InboundPort {
				// Its listener would be the sidecar's own virtual one.
				r.Notes = append(r.Notes, fmt.Sprintf("Service %s/%s port %d: the sidecar's own port; left out", svc.Namespace, svc.Name, sp.Port))
				continue
			}
			name := OutboundClusterName(sp.Port, host)
			proto := portProtocol(sp.Name, sp.AppProtocol)
			// The identities accepted are those of the pods behind the
			// endpoints that speak mTLS (a selectorless Service's too).
			la, mode, meshed := w.loadAssignment(name, svc, sp)
			r.Endpoints = append(r.Endpoints, la)
			r.Clusters = append(r.Clusters, w.outboundCluster(name, host, sp.Port, proto, meshed, mode))
			switch {
			case proto != protoTCP:
				httpPorts[sp.Port] = append(httpPorts[sp.Port], w.virtualHost(svc, node, sp.Port, name))
			case headless(svc):
				// Istio gives headless TCP ports one listener per endpoint
				// IP; here their traffic takes virtualOutbound's default
				// chain (PassthroughCluster under ALLOW_ANY).
				r.Notes = append(r.Notes, fmt.Sprintf("Service %s/%s port %d: headless TCP ports have no listener; their traffic follows the outbound traffic policy", svc.Namespace, svc.Name, sp.Port))
			default:
				for _, ip := range clusterIPs(svc) {
					r.Listeners = append(r.Listeners, outboundTCPListener(ip, sp.Port, name))
				}
			}
		}
	}
	for port, vhs := range httpPorts {
		sort.Slice(vhs, func(i, j int) bool { return vhs[i].Name < vhs[j].Name })
		vhs = append(vhs, w.catchAllVirtualHost())
		pn := strconv.Itoa(int(port))
		r.Routes = append(r.Routes, &routev3.RouteConfiguration{Name: pn, VirtualHosts: vhs, ValidateClusters: wrapBool(false)})
		r.Listeners = append(r.Listeners, outboundHTTPListener(port))
	}
	r.Listeners = append(r.Listeners, w.virtualOutbound())
}

func clusterIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if _, err := netip.ParseAddr(ip); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// virtualHost is a Service port's virtual host in the port's route
// configuration: Istio's name (host:port) and the names a client may use
// — the short name only from the same namespace, where it resolves —
// each with and without the port.
func (w *sidecarWorld) virtualHost(svc *corev1.Service, node mesh.NodeID, port int32, cluster string) *routev3.VirtualHost {
	host := w.host(svc)
	names := []string{host, svc.Name + "." + svc.Namespace + ".svc", svc.Name + "." + svc.Namespace}
	if svc.Namespace == node.Namespace {
		names = append(names, svc.Name)
	}
	if !headless(svc) {
		for _, ip := range clusterIPs(svc) {
			if a := netip.MustParseAddr(ip); a.Is6() {
				names = append(names, "["+ip+"]")
			} else {
				names = append(names, ip)
			}
		}
	}
	ps := ":" + strconv.Itoa(int(port))
	var doms []string
	for _, n := range names {
		doms = append(doms, n, n+ps)
	}
	return &routev3.VirtualHost{
		Name:    host + ps,
		Domains: doms,
		Routes:  []*routev3.Route{meshRoute("default", cluster)},
	}
}

// meshRoute sends everything to cluster with Istio's defaults: no route
// timeout (streams may be long) and two retries of connection failures,
// refused streams and 503s on another host.
func meshRoute(name, cluster string) *routev3.Route {
	return &routev3.Route{
		Name:  name,
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			Timeout:          dur(0),
			RetryPolicy: &routev3.RetryPolicy{
				RetryOn:    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
				NumRetries: wrapU32(2),
				RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
					ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(previousHosts())}}},
				HostSelectionRetryMaxAttempts: 5,
				RetriableStatusCodes:          []uint32{503},
			},
		}},
	}
}

// catchAllVirtualHost answers Host values no Service port claims: Istio's
// allow_any (to PassthroughCluster) or block_all (502) virtual host.
func (w *sidecarWorld) catchAllVirtualHost() *routev3.VirtualHost {
	if w.opt.OutboundPolicy == OutboundRegistryOnly {
		return &routev3.VirtualHost{Name: "block_all", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Name:   "block_all",
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
		}}}
	}
	return &routev3.VirtualHost{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{{
		Name:  "allow_any",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: PassthroughCluster}, Timeout: dur(0)}},
	}}}
}

// loadAssignment renders a Service port's endpoints from its
// EndpointSlices (ready addresses, one locality per zone). An endpoint
// whose pod is in the mesh carries tlsMode=istio, which selects the
// cluster's mTLS transport socket; mode says whether none, some or all
// do.
func (w *sidecarWorld) loadAssignment(name string, svc *corev1.Service, sp corev1.ServicePort) (*endpointv3.ClusterLoadAssignment, meshMode, []*corev1.Pod) {
	type ep struct {
		zone, addr string
		port       uint32
		pod        *corev1.Pod // in the mesh; nil otherwise
	}
	seen := map[string]bool{}
	var eps []ep
	for _, s := range w.slices[svc.Namespace+"/"+svc.Name] {
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		var port uint32
		found := false
		for _, p := range s.Ports {
			pn := ""
			if p.Name != nil {
				pn = *p.Name
			}
			if pn == sp.Name && p.Port != nil {
				port, found = uint32(*p.Port), true
				break
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
			var pod *corev1.Pod
			if t := e.TargetRef; t != nil && t.Kind == "Pod" {
				pod = w.objs.Pods[nsName(t.Namespace, t.Name)]
				if pod == nil && t.Namespace == "" {
					pod = w.objs.Pods[nsName(s.Namespace, t.Name)]
				}
			}
			for _, a := range e.Addresses {
				if _, err := netip.ParseAddr(a); err != nil {
					continue
				}
				k := a + "|" + strconv.Itoa(int(port))
				if seen[k] {
					continue
				}
				seen[k] = true
				p := pod
				if p == nil {
					p = w.podIP[a]
				}
				if !podInMesh(p) {
					p = nil
				}
				eps = append(eps, ep{zone, a, port, p})
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
	meshedN := 0
	var meshed []*corev1.Pod
	seenPod := map[*corev1.Pod]bool{}
	for _, e := range eps {
		if cur == nil || cur.Locality.Zone != e.zone {
			cur = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: e.zone}}
			la.Endpoints = append(la.Endpoints, cur)
		}
		lb := &endpointv3.LbEndpoint{
			HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(e.addr, e.port)}},
			LoadBalancingWeight: wrapU32(1),
		}
		if e.pod != nil {
			meshedN++
			if !seenPod[e.pod] {
				seenPod[e.pod] = true
				meshed = append(meshed, e.pod)
			}
			// Envoy matches transport_socket_matches against the
			// envoy.transport_socket_match namespace (Istio writes
			// tlsMode there); the istio namespace carries it too, for
			// filters and tools that read the workload's mesh state.
			lb.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				transportSocketMatch: structOf(map[string]any{"tlsMode": "istio"}),
				"istio":              structOf(map[string]any{"tlsMode": "istio"}),
			}}
		}
		cur.LbEndpoints = append(cur.LbEndpoints, lb)
	}
	switch {
	case meshedN == 0:
		return la, meshNone, nil
	case meshedN == len(eps):
		return la, meshAll, meshed
	}
	return la, meshSome, meshed
}

// meshMode says which endpoints of a cluster speak mesh mTLS.
type meshMode int

const (
	meshNone meshMode = iota
	meshSome
	meshAll
)
