package model

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/controller/source"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Options are the controller settings that shape the model.
type Options struct {
	// RootNamespaces restricts root HTTPProxies to these namespaces (all when empty).
	RootNamespaces []string
	// IngressClass selects Ingresses and HTTPProxies by class. Empty serves
	// objects without a class and those of class "legate" or "contour".
	IngressClass string
	// FallbackCertificate is the Secret served to clients without SNI by
	// virtual hosts that enable it.
	FallbackCertificate *types.NamespacedName
	// Config holds the settings of Contour's configuration file.
	Config ConfigDefaults
	// Gateway configures the Gateway API processor.
	Gateway GatewayOptions
}

// Build computes the model and statuses from one snapshot of objects. It
// is deterministic: the same objects give the same model.
func Build(objs *source.Objects, opt Options) *Model {
	b := &builder{
		objs: objs, opt: opt,
		m: &Model{
			Insecure:       map[string]*VirtualHost{},
			Secure:         map[string]*SecureVirtualHost{},
			Clusters:       map[string]*Cluster{},
			Secrets:        map[string]*Secret{},
			Proxies:        map[types.NamespacedName]*ProxyStatus{},
			Ingresses:      map[types.NamespacedName]*IngressStatus{},
			Extensions:     map[types.NamespacedName]*ExtensionStatus{},
			Listeners:      map[string]*Listener{},
			GatewayClasses: map[string]*GatewayClassStatus{},
			Gateways:       map[types.NamespacedName]*GatewayStatus{},
			ListenerSets:   map[types.NamespacedName]*ListenerSetStatus{},
			Routes:         map[RouteKey]*RouteStatus{},

			BackendTLSPolicies: map[types.NamespacedName]*BackendTLSPolicyStatus{},
		},
	}
	b.extensionServices() // before the HTTPProxies that use them
	b.rateLimitService()
	b.tracing()
	b.ingresses()
	b.httpProxies()
	b.gateways()
	b.servicePorts()
	for _, vh := range b.m.Insecure {
		sortRoutes(vh.Routes)
	}
	for _, vh := range b.m.Secure {
		sortRoutes(vh.Routes)
	}
	return b.m
}

type builder struct {
	objs *source.Objects
	opt  Options
	m    *Model
	// jwtDefault is the default JWT provider of the root being built: its
	// routes and its includes' routes require it unless they opt out.
	jwtDefault string
	// extensions are the valid ExtensionServices; auth is what the root
	// being built passes to its routes (nil: no authorization).
	extensions map[types.NamespacedName]*extension
	auth       *rootAuth
	// tlsPolicies are the BackendTLSPolicies by target, the one that
	// applies first; usedPolicies those the route being built uses.
	tlsPolicies  map[tlsTarget][]*tlsPolicy
	usedPolicies []*tlsPolicy
	// backendCert is the backend client certificate of the Gateway whose
	// routes are being built (spec.tls.backend.clientCertificateRef),
	// presented on their BackendTLSPolicy clusters; nil for none.
	backendCert *Secret
}

func sortedKeys[V any](m map[types.NamespacedName]V) []types.NamespacedName {
	keys := make([]types.NamespacedName, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

func (b *builder) classMatches(class string) bool {
	if b.opt.IngressClass == "" {
		return class == "" || class == "legate" || class == "contour"
	}
	return class == b.opt.IngressClass
}

func (b *builder) insecure(name string) *VirtualHost {
	vh := b.m.Insecure[name]
	if vh == nil {
		vh = &VirtualHost{Name: name}
		b.m.Insecure[name] = vh
	}
	return vh
}

func (b *builder) secure(name string) *SecureVirtualHost {
	vh := b.m.Secure[name]
	if vh == nil {
		vh = &SecureVirtualHost{VirtualHost: VirtualHost{Name: name}, MinVersion: b.minTLS(), MaxVersion: b.maxTLS()}
		b.m.Secure[name] = vh
	}
	return vh
}

// ---- Secrets and delegation ----

// secretRef resolves "name" or "namespace/name" seen from namespace ns,
// checking TLSCertificateDelegation for other namespaces.
func (b *builder) secretRef(ref, ns string) (types.NamespacedName, error) {
	key := types.NamespacedName{Namespace: ns, Name: ref}
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		key = types.NamespacedName{Namespace: ref[:i], Name: ref[i+1:]}
	}
	if key.Namespace != ns && !b.delegated(key, ns) {
		return key, fmt.Errorf("Secret %q is not configured for certificate delegation", ref)
	}
	return key, nil
}

func (b *builder) delegated(secret types.NamespacedName, to string) bool {
	for _, k := range sortedKeys(b.objs.Delegations) {
		d := b.objs.Delegations[k]
		if d.Namespace != secret.Namespace {
			continue
		}
		for _, del := range d.Spec.Delegations {
			if del.SecretName == secret.Name && (slices.Contains(del.TargetNamespaces, to) || slices.Contains(del.TargetNamespaces, "*")) {
				return true
			}
		}
	}
	return false
}

// tlsSecret returns the certificate Secret, validated as Contour does.
func (b *builder) tlsSecret(key types.NamespacedName) (*Secret, error) {
	s := b.objs.Secrets[key]
	if s == nil {
		return nil, fmt.Errorf("Secret not found")
	}
	if s.Type != corev1.SecretTypeTLS {
		return nil, fmt.Errorf("Secret type is %q, not %q", s.Type, corev1.SecretTypeTLS)
	}
	if _, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return nil, fmt.Errorf("invalid TLS certificate: %w", err)
	}
	name := key.Namespace + "/" + key.Name + "/cert"
	if sec := b.m.Secrets[name]; sec != nil {
		return sec, nil
	}
	sec := &Secret{Name: name, Object: key, Cert: s.Data[corev1.TLSCertKey], Key: s.Data[corev1.TLSPrivateKeyKey]}
	b.m.Secrets[name] = sec
	return sec, nil
}

// caSecret returns a CA bundle (ca.crt) Secret.
func (b *builder) caSecret(key types.NamespacedName) (*Secret, error) {
	s := b.objs.Secrets[key]
	if s == nil {
		return nil, fmt.Errorf("Secret not found")
	}
	ca := s.Data["ca.crt"]
	if len(ca) == 0 {
		return nil, fmt.Errorf("Secret has no ca.crt")
	}
	name := key.Namespace + "/" + key.Name + "/ca"
	if sec := b.m.Secrets[name]; sec != nil {
		return sec, nil
	}
	sec := &Secret{Name: name, Object: key, CA: ca}
	b.m.Secrets[name] = sec
	return sec, nil
}

func (b *builder) crlSecret(key types.NamespacedName) (*Secret, error) {
	s := b.objs.Secrets[key]
	if s == nil {
		return nil, fmt.Errorf("Secret not found")
	}
	crl := s.Data["crl.pem"]
	if len(crl) == 0 {
		return nil, fmt.Errorf("Secret has no crl.pem")
	}
	name := key.Namespace + "/" + key.Name + "/crl"
	sec := &Secret{Name: name, Object: key, CRL: crl}
	b.m.Secrets[name] = sec
	return sec, nil
}

// ---- Services and clusters ----

// clusterSpec is what distinguishes two clusters of one Service port.
type clusterSpec struct {
	protocol     string
	lb           string
	hc           *HealthCheck
	ca           *Secret
	subjectNames []string
	// A BackendTLSPolicy's: the system's trust store instead of ca, URI
	// subject names, and the SNI.
	systemCA    bool
	subjectURIs []string
	sni         string
	// clientCert is the certificate presented to the backend (a
	// Gateway's backend client certificate).
	clientCert *Secret
	idle       time.Duration
	slowStart  *SlowStart
	// healthPort is the Service port health checks go to (a service's
	// healthPort); nil: the serving port.
	healthPort *corev1.ServicePort
}

func (cs clusterSpec) hash() string {
	var b strings.Builder
	if cs.protocol != "" {
		fmt.Fprintf(&b, "protocol=%s;", cs.protocol)
	}
	if cs.lb != "" && cs.lb != "ROUND_ROBIN" {
		fmt.Fprintf(&b, "lb=%s;", cs.lb)
	}
	if cs.hc != nil {
		fmt.Fprintf(&b, "hc=%+v;", *cs.hc)
	}
	if cs.ca != nil {
		fmt.Fprintf(&b, "ca=%s;san=%s;", cs.ca.Name, strings.Join(cs.subjectNames, ","))
	}
	if cs.systemCA {
		fmt.Fprintf(&b, "systemca;san=%s;", strings.Join(cs.subjectNames, ","))
	}
	if len(cs.subjectURIs) > 0 {
		fmt.Fprintf(&b, "uri=%s;", strings.Join(cs.subjectURIs, ","))
	}
	if cs.sni != "" {
		fmt.Fprintf(&b, "sni=%s;", cs.sni)
	}
	if cs.clientCert != nil {
		fmt.Fprintf(&b, "clientcert=%s;", cs.clientCert.Name)
	}
	if cs.idle > 0 {
		fmt.Fprintf(&b, "idle=%s;", cs.idle)
	}
	if cs.slowStart != nil {
		fmt.Fprintf(&b, "slowstart=%+v;", *cs.slowStart)
	}
	if cs.healthPort != nil {
		fmt.Fprintf(&b, "healthport=%d;", cs.healthPort.Port)
	}
	sum := sha1.Sum([]byte(b.String()))
	return hex.EncodeToString(sum[:])[:10]
}

// servicePort finds the Service port by number or name.
func (b *builder) servicePort(key types.NamespacedName, port intstr.IntOrString) (*corev1.Service, corev1.ServicePort, error) {
	svc := b.objs.Services[key]
	if svc == nil {
		return nil, corev1.ServicePort{}, fmt.Errorf("service %q not found", key.String())
	}
	for _, p := range svc.Spec.Ports {
		if (port.Type == intstr.Int && p.Port == port.IntVal) || (port.Type == intstr.String && p.Name == port.StrVal) {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				return nil, p, fmt.Errorf("port %q on service %q is %s, not TCP", port.String(), key.String(), p.Protocol)
			}
			return svc, p, nil
		}
	}
	return nil, corev1.ServicePort{}, fmt.Errorf("port %q on service %q not matched", port.String(), key.String())
}

// healthPort resolves a service's healthPort, a port of the same Service
// by number as Contour's: nil when unset or the serving port itself.
// Health checks reach each endpoint on the health port's target, which
// Kubernetes names the same in the EndpointSlices, so the Service port
// must have a name (it does whenever the Service has two ports).
func (b *builder) healthPort(key types.NamespacedName, s contourv1.Service) (*corev1.ServicePort, error) {
	if s.HealthPort == 0 || s.HealthPort == s.Port {
		return nil, nil
	}
	if s.HealthPort < 1 || s.HealthPort > 65535 {
		return nil, fmt.Errorf("healthPort %d must be in the range 1-65535", s.HealthPort)
	}
	_, hp, err := b.servicePort(key, intstr.FromInt(s.HealthPort))
	if err != nil {
		return nil, fmt.Errorf("healthPort: %w", err)
	}
	return &hp, nil
}

// annotatedProtocol reads Contour's projectcontour.io/upstream-protocol.{h2,h2c,tls}
// Service annotations, which list port numbers or names.
func annotatedProtocol(svc *corev1.Service, p corev1.ServicePort) string {
	for _, proto := range []string{"h2", "h2c", "tls"} {
		v, ok := svc.Annotations["projectcontour.io/upstream-protocol."+proto]
		if !ok {
			continue
		}
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == strconv.Itoa(int(p.Port)) || (item != "" && item == p.Name) {
				return proto
			}
		}
	}
	return ""
}

func (b *builder) cluster(svc *corev1.Service, p corev1.ServicePort, cs clusterSpec) *Cluster {
	key := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	name := fmt.Sprintf("%s/%s/%d/%s", svc.Namespace, svc.Name, p.Port, cs.hash())
	if c := b.m.Clusters[name]; c != nil {
		return c
	}
	eds := svc.Namespace + "/" + svc.Name
	if p.Name != "" {
		eds += "/" + p.Name
	}
	if hp := cs.healthPort; hp != nil {
		// Endpoints of another health port are another assignment: each
		// endpoint carries its health_check_config port.
		eds += "/health/" + hp.Name
	}
	lb := cs.lb
	if lb == "" {
		lb = "ROUND_ROBIN"
	}
	c := &Cluster{
		Name: name, Service: key, Port: p, EDSName: eds, Protocol: cs.protocol, LBPolicy: lb,
		HealthCheck: cs.hc, UpstreamCA: cs.ca, SubjectNames: cs.subjectNames, IdleConnTimeout: cs.idle, SlowStart: cs.slowStart,
		HealthPort: cs.healthPort, SystemCA: cs.systemCA, SubjectURIs: cs.subjectURIs, SNI: cs.sni,
		ClientCertificate: cs.clientCert,
	}
	if cb := serviceBreakers(svc, b.opt.Config.CircuitBreakers); cb.Any() {
		c.CircuitBreakers = cb
	}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		c.ExternalName = svc.Spec.ExternalName
		if f := b.opt.Config.DNSLookupFamily; f != "" && f != "auto" {
			c.DNSLookupFamily = f
		}
		if cs.protocol == "tls" && c.SNI == "" {
			c.SNI = svc.Spec.ExternalName
		}
	}
	b.m.Clusters[name] = c
	return c
}

// servicePorts lists every TCP Service port with a default cluster, for
// proxyless gRPC clients (xds:///name.namespace:port).
func (b *builder) servicePorts() {
	for _, k := range sortedKeys(b.objs.Services) {
		svc := b.objs.Services[k]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			c := b.cluster(svc, p, clusterSpec{protocol: annotatedProtocol(svc, p)})
			b.m.ServicePorts = append(b.m.ServicePorts, &ServicePort{Service: k, Port: p, Cluster: c})
		}
	}
}

// ---- helpers shared by Ingress and HTTPProxy ----

// parseTimeout parses Contour's timeout strings: a Go duration, or
// "infinity" / "infinite" for none (0).
func parseTimeout(s string) (time.Duration, error) {
	switch strings.TrimSpace(s) {
	case "infinity", "infinite":
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (use e.g. 300ms, 5s, 1m or infinity)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return d, nil
}

var envoyVar = regexp.MustCompile(`%[A-Z_]+(\([^)]*\))?%`)

// escapeHeaderValue keeps Envoy %VARIABLES% and escapes any other "%".
func escapeHeaderValue(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	var out strings.Builder
	last := 0
	for _, loc := range envoyVar.FindAllStringIndex(v, -1) {
		out.WriteString(strings.ReplaceAll(v[last:loc[0]], "%", "%%"))
		out.WriteString(v[loc[0]:loc[1]])
		last = loc[1]
	}
	out.WriteString(strings.ReplaceAll(v[last:], "%", "%%"))
	return out.String()
}

// headersPolicy converts a Contour HeadersPolicy; a "Host" set becomes a
// host rewrite where allowHost.
func headersPolicy(p *contourv1.HeadersPolicy, allowHost bool) (*HeadersPolicy, error) {
	if p == nil {
		return nil, nil
	}
	out := &HeadersPolicy{}
	seen := map[string]bool{}
	for _, h := range p.Set {
		name := strings.ToLower(strings.TrimSpace(h.Name))
		if seen[name] {
			return nil, fmt.Errorf("duplicate header addition: %q", h.Name)
		}
		seen[name] = true
		if name == "host" {
			if !allowHost {
				return nil, fmt.Errorf("rewriting %q header is not supported on response headers", h.Name)
			}
			out.HostRewrite = h.Value
			continue
		}
		if strings.HasPrefix(name, ":") {
			return nil, fmt.Errorf("pseudo-header %q cannot be set", h.Name)
		}
		out.Set = append(out.Set, KV{Name: h.Name, Value: escapeHeaderValue(h.Value)})
	}
	for _, r := range p.Remove {
		name := strings.ToLower(strings.TrimSpace(r))
		if strings.HasPrefix(name, ":") || name == "host" {
			return nil, fmt.Errorf("header %q cannot be removed", r)
		}
		out.Remove = append(out.Remove, r)
	}
	return out, nil
}

// sortRoutes orders routes most specific first, as Envoy matches the
// first route that fits: exact paths, then regexes, then prefixes
// (longest first), and more header/query conditions before fewer.
func sortRoutes(rs []*Route) {
	rank := func(r *Route) int {
		switch r.Path.Kind {
		case "exact":
			return 0
		case "regex":
			return 1
		}
		return 2
	}
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if rank(a) != rank(b) {
			return rank(a) < rank(b)
		}
		if len(a.Path.Value) != len(b.Path.Value) {
			return len(a.Path.Value) > len(b.Path.Value)
		}
		if a.Path.Value != b.Path.Value {
			return a.Path.Value < b.Path.Value
		}
		return len(a.Headers)+len(a.Query) > len(b.Headers)+len(b.Query)
	})
}

// serviceBreakers are a Service's circuit breakers as Contour's
// serviceCircuitBreakerPolicy: the projectcontour.io/max-connections,
// max-pending-requests, max-requests, max-retries and
// per-host-max-connections annotations, each unset one (absent, 0 or not
// a uint32, which Contour ignores too) taken from the configuration
// file's defaults.
func serviceBreakers(svc *corev1.Service, defaults *CircuitBreakers) *CircuitBreakers {
	ann := func(name string, def uint32) uint32 {
		if v, err := strconv.ParseUint(svc.Annotations["projectcontour.io/"+name], 10, 32); err == nil && v > 0 {
			return uint32(v)
		}
		return def
	}
	var d CircuitBreakers
	if defaults != nil {
		d = *defaults
	}
	return &CircuitBreakers{
		MaxConnections:        ann("max-connections", d.MaxConnections),
		MaxPendingRequests:    ann("max-pending-requests", d.MaxPendingRequests),
		MaxRequests:           ann("max-requests", d.MaxRequests),
		MaxRetries:            ann("max-retries", d.MaxRetries),
		PerHostMaxConnections: ann("per-host-max-connections", d.PerHostMaxConnections),
	}
}
