package model

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The Gateway API processor: GatewayClasses of the controller's
// controllerName, their Gateways' listeners (model Listeners, one per
// bound address and port) and the routes attached to them, with the
// status conditions and reasons the Gateway API specification defines.
// Semantics follow the specification (v1.6) and, where it leaves a choice,
// Contour's gatewayapi processor.

// DefaultGatewayController is the GatewayClass controllerName Legate
// manages when none is configured.
const DefaultGatewayController = "legateproxy.io/gateway-controller"

// GatewayOptions configure the Gateway API processor.
type GatewayOptions struct {
	// ControllerName selects the GatewayClasses (spec.controllerName)
	// this controller manages (default DefaultGatewayController).
	ControllerName string
	// GatewayRef, when set, is the one Gateway served (Contour's
	// gateway.gatewayRef): its GatewayClass is managed whatever its
	// controllerName, and no other Gateway or class is.
	GatewayRef *types.NamespacedName
	// AddressPool, when valid, gives each Gateway without spec.addresses
	// an address of its own from this prefix, which its listeners bind
	// (so that Gateways may share ports). The proxy's host must accept
	// them as local addresses (e.g. `ip route add local <prefix> dev lo`).
	AddressPool netip.Prefix
	// ListenerPorts makes the proxy bind each Gateway listener's own
	// port; by default, as Contour, a port below 1024 is bound as port +
	// 8000 (80 → 8080, 443 → 8443), what the proxy's Service maps.
	ListenerPorts bool
}

func (o GatewayOptions) controllerName() string {
	if o.ControllerName == "" {
		return DefaultGatewayController
	}
	return o.ControllerName
}

// Listener is one listening socket of the proxy serving Gateway
// listeners: every Gateway listener of one Gateway address and port.
type Listener struct {
	// Name is the xDS listener name: <protocol>-<port> as Contour, under
	// the Gateway's address when it has its own (<address>/http-80).
	Name     string
	Address  string // "" binds the HTTP (or HTTPS) address of the options
	Port     uint32 // the port the proxy binds
	Protocol string // "http", "https" (HTTPS and TLS listeners) or "tcp"
	// VirtualHosts of an http listener, by hostname ("*" for any).
	VirtualHosts map[string]*VirtualHost
	// Chains of an https listener: one per HTTPS Gateway listener and
	// one per TLSRoute hostname of a TLS one, by SNI.
	Chains []*FilterChain
	// TCPProxy of a tcp listener (its TCPRoute).
	TCPProxy *TCPProxy
	// owner is the Gateway that binds the address and port.
	owner *gatewayv1.Gateway
}

// FilterChain is one HTTPS Gateway listener: a certificate, its SNI
// hostname and the virtual hosts of the routes attached to it.
type FilterChain struct {
	// Name is <gateway namespace>/<gateway name>/<listener name>.
	Name string
	// Hostname is the SNI the chain matches ("" for any).
	Hostname     string
	Secret       *Secret
	VirtualHosts map[string]*VirtualHost
	// TCPProxy of a TLS passthrough chain (a TLSRoute): no Secret, no
	// virtual hosts.
	TCPProxy *TCPProxy
	// ClientCA, when set, verifies client certificates (the Gateway's
	// spec.tls.frontend validation for the listener's port); with
	// ClientInsecureFallback a client without a certificate, or with one
	// that does not verify, is served too (AllowInsecureFallback).
	ClientCA               *Secret
	ClientInsecureFallback bool
}

// frontendValidation is the client certificate validation of a Gateway
// listener's port: configured when the Gateway asks for one; ca is the
// bundle of its valid references (nil when none is); reason and msg say
// why some reference is not.
type frontendValidation struct {
	configured, insecure bool
	ca                   *Secret
	reason, msg          string
}

// frontendValidation resolves spec.tls.frontend for a listener port: the
// port's perPort entry, else the default; its caCertificateRefs are core
// ConfigMaps with a PEM ca.crt, in the Gateway's namespace or another
// that grants it (ReferenceGrant).
func (b *builder) frontendValidation(gw *gatewayv1.Gateway, port gatewayv1.PortNumber) frontendValidation {
	if gw.Spec.TLS == nil || gw.Spec.TLS.Frontend == nil {
		return frontendValidation{}
	}
	cfg := gw.Spec.TLS.Frontend.Default
	for _, pp := range gw.Spec.TLS.Frontend.PerPort {
		if pp.Port == port {
			cfg = pp.TLS
		}
	}
	v := cfg.Validation
	if v == nil || len(v.CACertificateRefs) == 0 {
		return frontendValidation{}
	}
	out := frontendValidation{configured: true, insecure: v.Mode == gatewayv1.AllowInsecureFallback}
	var bundle []byte
	var bad []string
	for _, ref := range v.CACertificateRefs {
		ns := gw.Namespace
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		switch {
		case ref.Group != "" || ref.Kind != "ConfigMap":
			out.reason = "InvalidCACertificateKind"
			bad = append(bad, fmt.Sprintf("caCertificateRef %s %s: only core ConfigMaps are supported", ref.Kind, ref.Name))
			continue
		case ns != gw.Namespace && !b.refGranted(gatewayv1.GroupName, "Gateway", gw.Namespace, "", "ConfigMap", ns, string(ref.Name)):
			out.reason = "RefNotPermitted"
			bad = append(bad, fmt.Sprintf("caCertificateRef ConfigMap %s/%s is in another namespace and no ReferenceGrant there allows it", ns, ref.Name))
			continue
		}
		ca, err := b.configMapCA(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
		if err != nil {
			if out.reason == "" {
				out.reason = "InvalidCACertificateRef"
			}
			bad = append(bad, fmt.Sprintf("caCertificateRef ConfigMap %s/%s: %v", ns, ref.Name, err))
			continue
		}
		bundle = append(bundle, ca...)
	}
	out.msg = strings.Join(bad, "; ")
	if len(bundle) > 0 {
		out.ca = &Secret{Name: gw.Namespace + "/" + gw.Name + "/frontend-ca-" + strconv.Itoa(int(port)), Object: types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}, CA: bundle}
	}
	return out
}

// GatewayClassStatus is the computed status of a managed GatewayClass.
type GatewayClassStatus struct {
	Name       string
	Generation int64
	Conditions []metav1.Condition
	// SupportedFeatures are the Gateway API features the controller
	// implements (status.supportedFeatures).
	SupportedFeatures []string
}

// GatewayStatus is the computed status of a managed Gateway.
type GatewayStatus struct {
	Key        types.NamespacedName
	Generation int64
	Conditions []metav1.Condition
	// Addresses are the Gateway's bound addresses (empty: the proxy
	// Service's, which the status writer knows).
	Addresses []string
	// addressReason and addressMessage say why a Gateway has no address
	// of its own (UnsupportedAddress, AddressNotUsable), "" otherwise.
	addressReason, addressMessage string
	// resolvedRefs is the Gateway's ResolvedRefs condition, set when it
	// has references of its own (a backend client certificate).
	resolvedRefs *metav1.Condition
	Listeners    []ListenerStatus
	// AttachedListenerSets counts the accepted ListenerSets attached to
	// the Gateway; nil when the Gateway allows none and none names it.
	AttachedListenerSets *int32 `json:",omitempty"`
}

// ListenerSetStatus is the computed status of a ListenerSet whose
// parentRef names a managed Gateway.
type ListenerSetStatus struct {
	Key        types.NamespacedName
	Generation int64
	Conditions []metav1.Condition
	Listeners  []ListenerStatus
}

// ListenerStatus is the status of one Gateway listener.
type ListenerStatus struct {
	Name           string
	SupportedKinds []gatewayv1.RouteGroupKind
	AttachedRoutes int32
	Conditions     []metav1.Condition
}

// RouteStatus is the computed status of a route (HTTPRoute) for the
// parents this controller manages.
type RouteStatus struct {
	Kind       string // "HTTPRoute"
	Key        types.NamespacedName
	Generation int64
	Parents    []RouteParentStatus
}

// RouteParentStatus is a route's status for one parentRef.
type RouteParentStatus struct {
	ParentRef  gatewayv1.ParentReference
	Conditions []metav1.Condition
}

// supportedFeatures are the Gateway API features implemented, as the
// conformance suite names them (sigs.k8s.io/gateway-api/pkg/features).
var supportedFeatures = []string{
	"Gateway", "GatewayPort8080", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "TLSRoute", "TCPRoute",
	"HTTPRouteBackendTimeout", "HTTPRouteHostRewrite", "HTTPRouteMethodMatching",
	"HTTPRoutePathRedirect", "HTTPRoutePathRewrite", "HTTPRoutePortRedirect",
	"HTTPRouteQueryParamMatching", "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors",
	"HTTPRouteRequestTimeout", "HTTPRouteResponseHeaderModification", "HTTPRouteSchemeRedirect",
	"HTTPRoute303RedirectStatusCode", "HTTPRoute307RedirectStatusCode", "HTTPRoute308RedirectStatusCode",
	"HTTPRouteParentRefPort", "HTTPRouteBackendProtocolH2C", "HTTPRouteBackendProtocolWebSocket",
	"HTTPRouteBackendRequestHeaderModification", "HTTPRouteNamedRouteRule", "GRPCRouteNamedRouteRule",
	"HTTPRouteDestinationPortMatching", "HTTPRouteRequestPercentageMirror", "HTTPRouteCORS",
	"GatewayStaticAddresses", "GatewayAddressEmpty", "GatewayHTTPListenerIsolation",
	"BackendTLSPolicy", "BackendTLSPolicySANValidation", "GatewayHTTPSListenerDetectMisdirectedRequests",
	"GatewayFrontendClientCertificateValidation", "GatewayFrontendClientCertificateValidationInsecureFallback",
	"TLSRouteModeTerminate", "TLSRouteModeMixed",
	"GatewayBackendClientCertificate", "ListenerSet",
}

func cond(typ string, ok bool, reason, msg string, gen int64) metav1.Condition {
	s := metav1.ConditionTrue
	if !ok {
		s = metav1.ConditionFalse
	}
	return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen}
}

// gwListener is a Gateway listener being built.
type gwListener struct {
	gw     *gatewayv1.Gateway
	spec   gatewayv1.Listener
	status *ListenerStatus
	// set is the ListenerSet that defines the listener (nil for the
	// Gateway's own); ns is the namespace of the one defining it, where
	// its certificates and same-namespace routes are; gen its generation.
	set *gatewayv1.ListenerSet
	ns  string
	gen int64
	// valid listeners accept routes; l is their model listener and chain
	// their HTTPS filter chain.
	valid bool
	// attachOnly listeners are accepted but not programmed: routes
	// attach to them (AttachedRoutes counts them) and are not served.
	attachOnly bool
	// terminate is the certificate of a TLS listener in Terminate mode:
	// its TLSRoutes' chains end TLS with it.
	terminate *Secret
	// pending listeners wait for their Gateway's address: accepted, not
	// programmed.
	pending bool
	l       *Listener
	chain   *FilterChain
	kinds   []gatewayv1.RouteGroupKind
}

// gatewayState is what the routes need of the managed Gateways.
type gatewayState struct {
	gateways  map[types.NamespacedName]*gatewayv1.Gateway
	listeners map[types.NamespacedName][]*gwListener
	status    map[types.NamespacedName]*GatewayStatus
	// insecureFrontend are the Gateways with a listener whose client
	// validation is AllowInsecureFallback.
	insecureFrontend map[types.NamespacedName]bool
	// backendCerts are the valid backend client certificates of the
	// Gateways that set one (spec.tls.backend.clientCertificateRef).
	backendCerts map[types.NamespacedName]*Secret
	// setParents are the Gateways of the accepted ListenerSets.
	setParents map[types.NamespacedName]types.NamespacedName
}

// gateways builds the managed GatewayClasses, Gateways and their
// listeners, then the routes attached to them.
func (b *builder) gateways() {
	ctrl := b.opt.Gateway.controllerName()
	classes := map[string]*gatewayv1.GatewayClass{}
	ref := b.opt.Gateway.GatewayRef
	var refGW *gatewayv1.Gateway
	if ref != nil {
		refGW = b.objs.Gateways[*ref]
	}
	for _, k := range sortedKeys(b.objs.GatewayClasses) {
		gc := b.objs.GatewayClasses[k]
		switch {
		case ref != nil:
			if refGW == nil || string(refGW.Spec.GatewayClassName) != gc.Name {
				continue
			}
		case string(gc.Spec.ControllerName) != ctrl:
			continue
		}
		classes[gc.Name] = gc
		if ref != nil {
			// gatewayRef: the class belongs to whoever provisioned the
			// Gateway (its parametersRef is that provisioner's), as with
			// Contour's static provisioning: it is not ours to accept
			// or to write the status of.
			continue
		}
		st := &GatewayClassStatus{Name: gc.Name, Generation: gc.Generation, SupportedFeatures: supportedFeatures}
		accepted := cond("Accepted", true, "Accepted", "GatewayClass is accepted by "+ctrl, gc.Generation)
		if gc.Spec.ParametersRef != nil {
			accepted = cond("Accepted", false, "InvalidParameters", "parametersRef is not supported: remove it", gc.Generation)
		}
		st.Conditions = []metav1.Condition{accepted,
			cond("SupportedVersion", true, "SupportedVersion", "Gateway API v1.6 is supported", gc.Generation)}
		b.m.GatewayClasses[gc.Name] = st
	}
	gs := &gatewayState{
		gateways:         map[types.NamespacedName]*gatewayv1.Gateway{},
		listeners:        map[types.NamespacedName][]*gwListener{},
		status:           map[types.NamespacedName]*GatewayStatus{},
		insecureFrontend: map[types.NamespacedName]bool{},
		backendCerts:     map[types.NamespacedName]*Secret{},
		setParents:       map[types.NamespacedName]types.NamespacedName{},
	}
	var gws []*gatewayv1.Gateway
	for _, gw := range b.objs.Gateways {
		if ref != nil && gw != refGW {
			continue
		}
		if gc := classes[string(gw.Spec.GatewayClassName)]; gc != nil && (ref != nil || b.m.GatewayClasses[gc.Name].Conditions[0].Status == metav1.ConditionTrue) {
			gws = append(gws, gw)
		}
	}
	// The oldest Gateway wins an address and port, as the oldest route
	// wins a match.
	slices.SortFunc(gws, func(a, c *gatewayv1.Gateway) int {
		if d := a.CreationTimestamp.Compare(c.CreationTimestamp.Time); d != 0 {
			return d
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, c.Namespace+"/"+c.Name)
	})
	addrs := b.gatewayAddresses(gws)
	sets := b.listenerSetsByGateway()
	for _, gw := range gws {
		b.gateway(gw, addrs[gw], gs, sets[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}])
	}
	b.backendTLSPolicies()
	b.gatewayRoutes(gs)
	b.finishTLSPolicies()
	for k, st := range gs.status {
		b.finishGatewayStatus(gs, k, st)
	}
}

// gwAddress is the address a Gateway binds, or why it has none: an
// address type other than IPAddress is UnsupportedAddress (the Gateway is
// not accepted), an IP the proxies cannot bind (outside the address pool,
// when there is one) or no valid IP is AddressNotUsable.
type gwAddress struct {
	addr, reason, msg string
}

// gatewayAddresses picks each Gateway's bound address: its first
// spec.addresses IPAddress (one with an empty value asks for one of the
// pool), or one of the pool (the one its status already shows when
// still free, so addresses are stable), or "" (the options' address,
// shared).
func (b *builder) gatewayAddresses(gws []*gatewayv1.Gateway) map[*gatewayv1.Gateway]gwAddress {
	out := map[*gatewayv1.Gateway]gwAddress{}
	taken := map[string]bool{}
	var pooled []*gatewayv1.Gateway
	pool := b.opt.Gateway.AddressPool
	for _, gw := range gws {
		wantPool := len(gw.Spec.Addresses) == 0
		var choice gwAddress
		notUsable := func(format string, a ...any) {
			if choice.reason == "" {
				choice.reason, choice.msg = "AddressNotUsable", fmt.Sprintf(format, a...)
			}
		}
		for _, a := range gw.Spec.Addresses {
			if a.Type != nil && *a.Type != gatewayv1.IPAddressType {
				choice = gwAddress{reason: "UnsupportedAddress", msg: fmt.Sprintf("spec.addresses: address type %q is not supported: use IPAddress", *a.Type)}
				break
			}
			if a.Value == "" {
				wantPool = true // GatewayAddressEmpty: the implementation picks
				continue
			}
			ip, err := netip.ParseAddr(a.Value)
			switch {
			case err != nil:
				notUsable("spec.addresses: %q is not an IP address", a.Value)
			case pool.IsValid() && !pool.Contains(ip):
				// Gateways may share an address (their ports then must
				// differ: PortUnavailable), but not leave the pool.
				notUsable("spec.addresses: %s is outside the address pool %s the proxies bind", a.Value, pool)
			case choice.addr != "":
				notUsable("spec.addresses: %s: a Gateway binds one address (%s); give one", a.Value, choice.addr)
			default:
				choice.addr = ip.String()
			}
		}
		if choice.addr != "" && wantPool {
			notUsable("spec.addresses: %s and an empty address: a Gateway binds one address; give one", choice.addr)
		}
		// An address that cannot be assigned leaves the Gateway unbound
		// (Programmed False, AddressNotUsable), as the spec says, even
		// when another could be.
		if choice.reason != "" {
			choice.addr = ""
			out[gw] = choice
			continue
		}
		if choice.addr != "" {
			out[gw], taken[choice.addr] = choice, true
			continue
		}
		if pool.IsValid() {
			pooled = append(pooled, gw)
		}
	}
	// Keep addresses already in status.
	var fresh []*gatewayv1.Gateway
	for _, gw := range pooled {
		kept := false
		for _, a := range gw.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Value); err == nil && pool.Contains(ip) && !taken[a.Value] {
				out[gw], taken[a.Value], kept = gwAddress{addr: a.Value}, true, true
				break
			}
		}
		if !kept {
			fresh = append(fresh, gw)
		}
	}
	next := pool.Masked().Addr().Next() // skip the network address
	for _, gw := range fresh {
		for pool.Contains(next) && taken[next.String()] {
			next = next.Next()
		}
		if !pool.Contains(next) {
			break // pool exhausted: these Gateways get no address
		}
		out[gw], taken[next.String()] = gwAddress{addr: next.String()}, true
	}
	return out
}

// containerPort is the port the proxy binds for a Gateway listener port,
// as Contour's toContainerPort unless the listener ports are bound as is.
func (b *builder) containerPort(p gatewayv1.PortNumber) uint32 {
	if b.opt.Gateway.ListenerPorts {
		return uint32(p)
	}
	c := int(p) + 8000
	if c > 65535 {
		c -= 65535
	}
	if c <= 1023 {
		c += 1023
	}
	return uint32(c)
}

func validHostname(h string) error {
	if net.ParseIP(h) != nil {
		return fmt.Errorf("invalid hostname %q: must be a DNS name, not an IP address", h)
	}
	var errs []string
	if strings.Contains(h, "*") {
		errs = validation.IsWildcardDNS1123Subdomain(h)
	} else {
		errs = validation.IsDNS1123Subdomain(h)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid hostname %q: %s", h, strings.Join(errs, "; "))
	}
	return nil
}

func hostnameOf(h *gatewayv1.Hostname) string {
	if h == nil {
		return ""
	}
	return string(*h)
}

// gateway validates one Gateway's listeners and creates their model
// listeners.
func (b *builder) gateway(gw *gatewayv1.Gateway, ga gwAddress, gs *gatewayState, sets []*gatewayv1.ListenerSet) {
	key := types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}
	gen := gw.Generation
	st := &GatewayStatus{Key: key, Generation: gen, addressReason: ga.reason, addressMessage: ga.msg}
	addr := ga.addr
	if addr != "" {
		st.Addresses = []string{addr}
	}
	// Without an address of its own (none free in the pool, or none the
	// proxies can bind), nothing is bound until one frees up.
	pending := addr == "" && (b.opt.Gateway.AddressPool.IsValid() || ga.reason != "")
	gs.gateways[key] = gw
	gs.status[key] = st
	b.m.Gateways[key] = st
	if tc := gw.Spec.TLS; tc != nil && tc.Backend != nil && tc.Backend.ClientCertificateRef != nil {
		resolved := cond("ResolvedRefs", true, "ResolvedRefs", "all references are resolved", gen)
		sec, reason, err := b.backendClientCertificate(gw, *tc.Backend.ClientCertificateRef)
		if err != nil {
			resolved = cond("ResolvedRefs", false, reason, err.Error(), gen)
		} else {
			gs.backendCerts[key] = sec
		}
		st.resolvedRefs = &resolved
	}
	// Sized once: each gwListener keeps a pointer to its status.
	st.Listeners = make([]ListenerStatus, len(gw.Spec.Listeners))
	for i, ls := range gw.Spec.Listeners {
		st.Listeners[i].Name = string(ls.Name)
		l := &gwListener{gw: gw, spec: ls, status: &st.Listeners[i], ns: gw.Namespace, gen: gen}
		gs.listeners[key] = append(gs.listeners[key], l)
		if pending {
			l.pending = true
			l.status.Conditions = []metav1.Condition{cond("Accepted", true, "Accepted", "listener accepted", gen),
				cond("ResolvedRefs", true, "ResolvedRefs", "", gen),
				cond("Programmed", false, "Pending", "the Gateway has no address yet", gen),
				cond("Conflicted", false, "NoConflicts", "no conflicts", gen)}
			continue
		}
		b.gatewayListener(gw, gw.Spec.Listeners[:i], l, addr, gs)
	}
	b.gatewayListenerSets(gw, sets, addr, pending, gs)
	switch {
	case ga.reason != "":
		st.Conditions = append(st.Conditions, cond("Programmed", false, "AddressNotUsable", ga.msg, gen))
	case pending:
		st.Conditions = append(st.Conditions, cond("Programmed", false, "AddressNotAssigned",
			"the address pool "+b.opt.Gateway.AddressPool.String()+" has no free address", gen))
	}
}

// gatewayListener validates one listener as Contour's ValidateListeners
// (protocol, hostname, conflicts with the Gateway's earlier listeners and
// with other Gateways' bound ports), resolves its TLS certificate and
// route kinds, and creates or joins its model listener.
func (b *builder) gatewayListener(gw *gatewayv1.Gateway, earlier []gatewayv1.Listener, l *gwListener, addr string, gs *gatewayState) {
	gen := l.gen
	ls := l.spec
	set := func(cs ...metav1.Condition) {
		l.status.Conditions = cs
	}
	invalid := func(typ, reason, msg string) {
		if typ == "Conflicted" && l.set != nil {
			// A ListenerSet's listener that conflicts with one of higher
			// precedence is not accepted (the conformance suite's
			// ListenerSetHostnameConflict).
			set(cond("Accepted", false, reason, msg, gen),
				cond("ResolvedRefs", true, "ResolvedRefs", "", gen),
				cond("Programmed", false, reason, "the listener is not programmed: "+msg, gen),
				cond("Conflicted", true, reason, msg, gen))
			return
		}
		// An invalid listener: the failed condition, and Programmed False.
		cs := []metav1.Condition{}
		for _, t := range []string{"Accepted", "ResolvedRefs", "Programmed", "Conflicted"} {
			switch {
			case t == typ && t == "Conflicted":
				cs = append(cs, cond(t, true, reason, msg, gen))
			case t == typ:
				cs = append(cs, cond(t, false, reason, msg, gen))
			case t == "Conflicted":
				cs = append(cs, cond(t, false, "NoConflicts", "no conflicts", gen))
			case t == "Programmed":
				cs = append(cs, cond(t, false, "Invalid", "the listener is invalid: "+msg, gen))
			default:
				r := map[string]string{"Accepted": "Accepted", "ResolvedRefs": "ResolvedRefs"}[t]
				cs = append(cs, cond(t, true, r, "", gen))
			}
		}
		set(cs...)
	}
	host := hostnameOf(ls.Hostname)
	if host != "" {
		if err := validHostname(host); err != nil {
			invalid("Programmed", "Invalid", err.Error())
			return
		}
	}
	proto := protocolFamily(ls.Protocol)
	if proto == "" {
		invalid("Accepted", "UnsupportedProtocol", fmt.Sprintf("listener protocol %q is not supported: use HTTP, HTTPS, TLS or TCP", ls.Protocol))
		return
	}
	// A TLS listener passes TLS through (mode Passthrough) or terminates
	// it (Terminate, the default) and forwards the plain TCP stream to its
	// TLSRoutes' backends; both may share a port (TLSRouteModeMixed: SNI
	// picks the chain).
	tlsListener := ls.Protocol == gatewayv1.TLSProtocolType
	passthrough := tlsListener && ls.TLS != nil && ls.TLS.Mode != nil && *ls.TLS.Mode == gatewayv1.TLSModePassthrough
	for _, o := range earlier {
		if o.Port != ls.Port {
			if b.containerPort(o.Port) == b.containerPort(ls.Port) {
				invalid("Accepted", "PortUnavailable", "the listener's port maps to the port of an earlier listener")
				return
			}
			continue
		}
		if protocolFamily(o.Protocol) != proto {
			invalid("Conflicted", "ProtocolConflict", "all listener protocols of a port must be compatible")
			return
		}
		if hostnameOf(o.Hostname) == host {
			invalid("Conflicted", "HostnameConflict", "all listener hostnames of a port must be unique")
			return
		}
	}
	// Route kinds.
	l.kinds = nil
	badKinds := false
	kind := func(k gatewayv1.Kind) gatewayv1.RouteGroupKind {
		return gatewayv1.RouteGroupKind{Group: ptrTo(gatewayv1.Group(gatewayv1.GroupName)), Kind: k}
	}
	valid := []gatewayv1.Kind{"HTTPRoute", "GRPCRoute"}
	switch ls.Protocol {
	case gatewayv1.TLSProtocolType:
		valid = []gatewayv1.Kind{"TLSRoute"}
	case gatewayv1.TCPProtocolType:
		valid = []gatewayv1.Kind{"TCPRoute"}
	}
	if ls.AllowedRoutes != nil && len(ls.AllowedRoutes.Kinds) > 0 {
		for _, k := range ls.AllowedRoutes.Kinds {
			if (k.Group == nil || *k.Group == gatewayv1.GroupName) && slices.Contains(valid, k.Kind) {
				l.kinds = append(l.kinds, kind(k.Kind))
			} else {
				badKinds = true
			}
		}
	} else {
		for _, k := range valid {
			l.kinds = append(l.kinds, kind(k))
		}
	}
	l.status.SupportedKinds = l.kinds
	resolved := cond("ResolvedRefs", true, "ResolvedRefs", "all references are resolved", gen)
	if badKinds {
		resolved = cond("ResolvedRefs", false, "InvalidRouteKinds", fmt.Sprintf("a %s listener supports %v routes", ls.Protocol, valid), gen)
	}
	// TLS.
	var secret *Secret
	var fv frontendValidation
	if proto == "https" && !passthrough {
		var err error
		var reason string
		secret, reason, err = b.listenerCertificate(l, ls)
		if err != nil {
			resolved = cond("ResolvedRefs", false, reason, err.Error(), gen)
		}
		if !tlsListener {
			fv = b.frontendValidation(gw, ls.Port)
		}
		if fv.reason != "" && resolved.Status == metav1.ConditionTrue {
			resolved = cond("ResolvedRefs", false, fv.reason, fv.msg, gen)
		}
		if fv.configured && fv.ca == nil {
			// Every CA reference is invalid: the listener is not
			// accepted (it must not serve without the client
			// validation it asks for).
			set(cond("Accepted", false, "NoValidCACertificate", "no caCertificateRef of the Gateway's frontend validation is valid: "+fv.msg, gen), resolved,
				cond("Programmed", false, "Invalid", "the listener is invalid: "+fv.msg, gen),
				cond("Conflicted", false, "NoConflicts", "no conflicts", gen))
			return
		}
		if fv.insecure {
			gs.insecureFrontend[types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name}] = true
		}
	}
	if resolved.Status == metav1.ConditionFalse && (secret == nil && proto == "https" && !passthrough || len(l.kinds) == 0) {
		// Accepted but not programmed (no usable certificate): routes
		// still attach and are counted, as the spec's AttachedRoutes
		// says ("regardless of the listener's Ready condition"), but
		// nothing is served.
		l.attachOnly = len(l.kinds) > 0
		set(cond("Accepted", true, "Accepted", "listener accepted", gen), resolved,
			cond("Programmed", false, "Invalid", "the listener is invalid: "+resolved.Message, gen),
			cond("Conflicted", false, "NoConflicts", "no conflicts", gen))
		return
	}
	port := b.containerPort(ls.Port)
	name := fmt.Sprintf("%s-%d", proto, ls.Port)
	if addr != "" {
		name = addr + "/" + name
	}
	ml := b.m.Listeners[name]
	if ml != nil && ml.owner != gw {
		// Another (older) Gateway binds this address and port.
		invalid("Accepted", "PortUnavailable", fmt.Sprintf("port %d is already bound by Gateway %s/%s", ls.Port, ml.owner.Namespace, ml.owner.Name))
		return
	}
	if ml == nil {
		ml = &Listener{Name: name, Address: addr, Port: port, Protocol: proto, owner: gw}
		if proto == "http" {
			ml.VirtualHosts = map[string]*VirtualHost{}
		}
		b.m.Listeners[name] = ml
	}
	l.valid, l.l = true, ml
	switch {
	case tlsListener && !passthrough:
		l.terminate = secret // the TLSRoutes' chains terminate with it
	case proto == "https" && !passthrough:
		chain := gw.Namespace + "/" + gw.Name + "/" + string(ls.Name)
		if l.set != nil {
			chain = gw.Namespace + "/" + gw.Name + "/" + l.set.Namespace + "/" + l.set.Name + "/" + string(ls.Name)
		}
		l.chain = &FilterChain{Name: chain, Hostname: host, Secret: secret, VirtualHosts: map[string]*VirtualHost{},
			ClientCA: fv.ca, ClientInsecureFallback: fv.insecure}
		ml.Chains = append(ml.Chains, l.chain)
	}
	set(cond("Accepted", true, "Accepted", "listener accepted", gen), resolved,
		cond("Programmed", true, "Programmed", "listener programmed", gen),
		cond("Conflicted", false, "NoConflicts", "no conflicts", gen))
}

func ptrTo[T any](v T) *T { return &v }

// listenerCertificate resolves an HTTPS listener's first certificateRef
// (a kubernetes.io/tls Secret; in another namespace than its Gateway's,
// or ListenerSet's, only with a ReferenceGrant from that kind),
// returning the ResolvedRefs reason on failure.
func (b *builder) listenerCertificate(l *gwListener, ls gatewayv1.Listener) (*Secret, string, error) {
	fromKind := "Gateway"
	if l.set != nil {
		fromKind = "ListenerSet"
	}
	if ls.TLS == nil || len(ls.TLS.CertificateRefs) == 0 {
		return nil, "InvalidCertificateRef", fmt.Errorf("an HTTPS listener needs tls.certificateRefs")
	}
	if ls.TLS.Mode != nil && *ls.TLS.Mode != gatewayv1.TLSModeTerminate {
		return nil, "UnsupportedValue", fmt.Errorf("tls.mode %s is not supported on HTTPS listeners: use Terminate", *ls.TLS.Mode)
	}
	ref := ls.TLS.CertificateRefs[0]
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
		return nil, "InvalidCertificateRef", fmt.Errorf("certificateRef %s is not a core Secret", ref.Name)
	}
	ns := l.ns
	if ref.Namespace != nil && string(*ref.Namespace) != "" {
		ns = string(*ref.Namespace)
	}
	if ns != l.ns && !b.refGranted(gatewayv1.GroupName, fromKind, l.ns, "", "Secret", ns, string(ref.Name)) {
		return nil, "RefNotPermitted", fmt.Errorf("certificateRef %s/%s is in another namespace and no ReferenceGrant there allows it (from %s)", ns, ref.Name, fromKind)
	}
	sec, err := b.tlsSecret(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
	if err != nil {
		return nil, "InvalidCertificateRef", fmt.Errorf("certificateRef %s/%s: %w", ns, ref.Name, err)
	}
	return sec, "", nil
}

// backendClientCertificate resolves a Gateway's
// spec.tls.backend.clientCertificateRef: a kubernetes.io/tls Secret with
// a valid certificate and key, in another namespace only with a
// ReferenceGrant. On failure it returns the Gateway's ResolvedRefs
// reason: RefNotPermitted, else InvalidClientCertificateRef.
func (b *builder) backendClientCertificate(gw *gatewayv1.Gateway, ref gatewayv1.SecretObjectReference) (*Secret, string, error) {
	const invalid = "InvalidClientCertificateRef"
	ns := gw.Namespace
	if ref.Namespace != nil && string(*ref.Namespace) != "" {
		ns = string(*ref.Namespace)
	}
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Secret") {
		group, kind := "", "Secret"
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		return nil, invalid, fmt.Errorf("tls.backend.clientCertificateRef %s/%s: kind %s of group %q is not supported: use a core Secret", ns, ref.Name, kind, group)
	}
	if ns != gw.Namespace && !b.refGranted(gatewayv1.GroupName, "Gateway", gw.Namespace, "", "Secret", ns, string(ref.Name)) {
		return nil, "RefNotPermitted", fmt.Errorf("tls.backend.clientCertificateRef %s/%s is in another namespace and no ReferenceGrant there allows it", ns, ref.Name)
	}
	sec, err := b.tlsSecret(types.NamespacedName{Namespace: ns, Name: string(ref.Name)})
	if err != nil {
		return nil, invalid, fmt.Errorf("tls.backend.clientCertificateRef %s/%s: %w (it must be a kubernetes.io/tls Secret with tls.crt and tls.key)", ns, ref.Name, err)
	}
	return sec, "", nil
}

// refGranted reports whether a ReferenceGrant in the target namespace
// allows a reference from (group, kind) objects of namespace from to the
// named (group, kind) object.
func (b *builder) refGranted(fromGroup, fromKind, from, toGroup, toKind, toNS, toName string) bool {
	for _, rg := range b.objs.ReferenceGrants {
		if rg.Namespace != toNS {
			continue
		}
		okFrom := false
		for _, f := range rg.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == from {
				okFrom = true
			}
		}
		if !okFrom {
			continue
		}
		for _, t := range rg.Spec.To {
			if string(t.Group) == toGroup && string(t.Kind) == toKind && (t.Name == nil || string(*t.Name) == "" || string(*t.Name) == toName) {
				return true
			}
		}
	}
	return false
}

// allowsNamespace reports whether a listener's allowedRoutes.namespaces
// admits routes of namespace ns (default: the namespace of the Gateway,
// or ListenerSet, that defines it).
func (b *builder) allowsNamespace(l *gwListener, ns string) bool {
	from := gatewayv1.NamespacesFromSame
	var sel *metav1.LabelSelector
	if ar := l.spec.AllowedRoutes; ar != nil && ar.Namespaces != nil {
		if ar.Namespaces.From != nil {
			from = *ar.Namespaces.From
		}
		sel = ar.Namespaces.Selector
	}
	switch from {
	case gatewayv1.NamespacesFromAll:
		return true
	case gatewayv1.NamespacesFromSelector:
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || sel == nil {
			return false
		}
		n := b.objs.Namespaces[types.NamespacedName{Name: ns}]
		if n == nil {
			return false
		}
		return s.Matches(labels.Set(n.Labels))
	default:
		return ns == l.ns
	}
}

func (l *gwListener) allowsKind(kind string) bool {
	for _, k := range l.kinds {
		if string(k.Kind) == kind {
			return true
		}
	}
	return false
}

// finishGatewayStatus sets the Gateway conditions from its listeners'.
func (b *builder) finishGatewayStatus(gs *gatewayState, k types.NamespacedName, st *GatewayStatus) {
	gen := st.Generation
	valid := 0
	own := 0
	for _, l := range gs.listeners[k] {
		if l.set != nil {
			continue
		}
		own++
		if l.valid || l.pending {
			valid++
		}
	}
	accepted := cond("Accepted", true, "Accepted", "Gateway accepted", gen)
	if valid < own && own > 0 {
		accepted = cond("Accepted", true, "ListenersNotValid", "some listeners are invalid: see the listeners' conditions", gen)
		if valid == 0 {
			accepted = cond("Accepted", false, "ListenersNotValid", "no listener is valid: see the listeners' conditions", gen)
		}
	}
	if st.addressReason == "UnsupportedAddress" {
		accepted = cond("Accepted", false, "UnsupportedAddress", st.addressMessage, gen)
	}
	programmed := cond("Programmed", true, "Programmed", "Gateway programmed", gen)
	if valid == 0 {
		programmed = cond("Programmed", false, "Invalid", "no listener is valid", gen)
	}
	for _, c := range st.Conditions {
		if c.Type == "Programmed" {
			programmed = c
		}
	}
	st.Conditions = []metav1.Condition{accepted, programmed}
	if gs.insecureFrontend[k] {
		st.Conditions = append(st.Conditions, cond("InsecureFrontendValidationMode", true, "ConfigurationChanged",
			"a listener accepts clients without a valid certificate (frontend validation mode AllowInsecureFallback)", gen))
	}
	if st.resolvedRefs != nil {
		st.Conditions = append(st.Conditions, *st.resolvedRefs)
	}
}

// ---- Hostnames ----

// intersectHostnames returns the hostnames a route serves on a listener
// (Gateway API: the intersection of the listener's hostname and the
// route's, the more specific of each matching pair), "*" standing for
// any; none means no match.
func intersectHostnames(listener string, route []gatewayv1.Hostname) []string {
	if len(route) == 0 {
		if listener == "" {
			return []string{"*"}
		}
		return []string{listener}
	}
	var out []string
	for _, h := range route {
		r := string(h)
		switch {
		case listener == "" || listener == r:
			out = append(out, r)
		case hostMatches(listener, r):
			out = append(out, r)
		case hostMatches(r, listener):
			out = append(out, listener)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// hostMatches reports whether hostname h is within pattern p: equal, or
// p a wildcard "*.suffix" and h ending with ".suffix" with at least one
// label in place of the "*" (h may itself be a narrower wildcard).
func hostMatches(p, h string) bool {
	if p == h {
		return true
	}
	if !strings.HasPrefix(p, "*.") {
		return false
	}
	suffix := p[1:] // ".example.com"
	return strings.HasSuffix(h, suffix) && len(h) > len(suffix) && !(strings.HasPrefix(h, "*") && len(h) == len(p))
}

// serviceAppProtocol maps a Service port's appProtocol to a cluster
// protocol (Gateway API's kubernetes.io/h2c and kubernetes.io/ws).
func serviceAppProtocol(p corev1.ServicePort) string {
	if p.AppProtocol == nil {
		return ""
	}
	switch *p.AppProtocol {
	case "kubernetes.io/h2c":
		return "h2c"
	}
	return ""
}

// protocolFamily is the xDS listener kind of a Gateway listener protocol
// (HTTPS and TLS share TLS listeners, as Contour's compatible TLS
// protocols); "" for one not supported.
func protocolFamily(p gatewayv1.ProtocolType) string {
	switch p {
	case gatewayv1.HTTPProtocolType:
		return "http"
	case gatewayv1.HTTPSProtocolType, gatewayv1.TLSProtocolType:
		return "https"
	case gatewayv1.TCPProtocolType:
		return "tcp"
	}
	return ""
}
