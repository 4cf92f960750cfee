package model

import (
	"fmt"
	"maps"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ExtensionTarget is one weighted Service port of an ExtensionService.
type ExtensionTarget struct {
	Service types.NamespacedName
	Port    corev1.ServicePort
	// Weight is the Service's share (every target 1 when none set one).
	Weight uint32
}

// CircuitBreakers are a cluster's default-priority thresholds; 0 leaves
// the proxy's default.
type CircuitBreakers struct {
	MaxConnections, MaxPendingRequests, MaxRequests, MaxRetries uint32
	// PerHostMaxConnections is the per_host_thresholds max_connections.
	PerHostMaxConnections uint32
}

// Any reports whether a threshold is set: Contour writes circuit
// breakers only then (envoy.AnyPositive).
func (cb *CircuitBreakers) Any() bool {
	return cb != nil && (cb.MaxConnections > 0 || cb.MaxPendingRequests > 0 || cb.MaxRequests > 0 || cb.MaxRetries > 0 || cb.PerHostMaxConnections > 0)
}

// ExternalAuthorization is a TLS virtual host's authorization server,
// rendered as the envoy.filters.http.ext_authz filter of its HTTPS
// filter chain (gRPC, Envoy's v3 Authorization service).
type ExternalAuthorization struct {
	// Cluster is the ExtensionService's cluster.
	Cluster  *Cluster
	FailOpen bool
	// ResponseTimeout bounds each check: nil leaves the filter's default
	// (Envoy's 200ms), 0 is none ("infinity").
	ResponseTimeout *time.Duration
	// WithRequestBody buffers the request body into the check request.
	WithRequestBody *AuthRequestBody
}

// AuthRequestBody is authorization.withRequestBody.
type AuthRequestBody struct {
	MaxRequestBytes     uint32
	AllowPartialMessage bool
	PackAsBytes         bool
}

// ExtensionStatus is the computed Valid condition of one ExtensionService.
type ExtensionStatus struct {
	Object     types.NamespacedName
	Generation int64
	Errors     []Problem
	Warnings   []Problem
}

// Valid reports whether the ExtensionService has no error: only then is
// its cluster served and may HTTPProxies use it, as Contour.
func (s *ExtensionStatus) Valid() bool { return len(s.Errors) == 0 }

func (s *ExtensionStatus) errorf(typ, reason, format string, args ...any) {
	s.Errors = append(s.Errors, Problem{typ, reason, fmt.Sprintf(format, args...)})
}

func (s *ExtensionStatus) warnf(typ, reason, format string, args ...any) {
	s.Warnings = append(s.Warnings, Problem{typ, reason, fmt.Sprintf(format, args...)})
}

// extension is a valid ExtensionService: its cluster and its default
// response timeout (timeoutPolicy.response; nil when unset).
type extension struct {
	cluster  *Cluster
	response *time.Duration
}

// rootAuth is what a root's authorization passes down to its routes and
// its includes' routes: whether authorization is disabled by default and
// the default check context (authorization.authPolicy).
type rootAuth struct {
	disabled bool
	context  map[string]string
}

// Contour's default of authorization.withRequestBody.maxRequestBytes.
const defaultMaxRequestBytes = 1024

// ExtensionClusterName is the cluster of an ExtensionService, named as
// Contour names it: one cluster per ExtensionService, whatever its fields.
func ExtensionClusterName(k types.NamespacedName) string {
	return "extension/" + k.Namespace + "/" + k.Name
}

// extensionServices validates every ExtensionService as Contour's
// ExtensionServiceProcessor (reasons and texts are Contour's) and adds
// the clusters of the valid ones.
func (b *builder) extensionServices() {
	b.extensions = map[types.NamespacedName]*extension{}
	for _, k := range sortedKeys(b.objs.ExtensionServices) {
		e := b.objs.ExtensionServices[k]
		st := &ExtensionStatus{Object: k, Generation: e.Generation}
		b.m.Extensions[k] = st
		ext := b.extensionService(e, st)
		if ext != nil && st.Valid() {
			b.m.Clusters[ext.cluster.Name] = ext.cluster
			b.extensions[k] = ext
		}
	}
}

func (b *builder) extensionService(e *contourv1alpha1.ExtensionService, st *ExtensionStatus) *extension {
	key := types.NamespacedName{Namespace: e.Namespace, Name: e.Name}
	name := ExtensionClusterName(key)
	c := &Cluster{Name: name, Service: key, EDSName: name, Protocol: "h2"}
	ext := &extension{cluster: c}
	if tp := e.Spec.TimeoutPolicy; tp != nil {
		for _, t := range []struct {
			name, val string
			set       func(time.Duration)
		}{
			{"response", tp.Response, func(d time.Duration) { ext.response = &d }},
			{"idle", tp.Idle, func(time.Duration) {}},
			{"idle connection", tp.IdleConnection, func(d time.Duration) { c.IdleConnTimeout = d }},
		} {
			if t.val == "" {
				continue
			}
			d, err := parseTimeout(t.val)
			if err != nil {
				st.errorf(ErrSpec, "TimeoutPolicyNotValid", "spec.timeoutPolicy failed to parse: error parsing %s timeout: %s", t.name, err)
				continue
			}
			t.set(d)
		}
		if tp.Idle != "" {
			// The ext_authz filter has a timeout per check request only.
			st.warnf(ErrSpec, "IgnoredField", "ignoring field %q; idle timeouts are not supported for ExtensionClusters", ".Spec.TimeoutPolicy.Idle")
		}
	}
	// As Contour's extension processor: the policy replaces the
	// configuration file's defaults as a whole, not field by field.
	if d := b.opt.Config.CircuitBreakers; d.Any() {
		cp := *d
		c.CircuitBreakers = &cp
	}
	if cb := e.Spec.CircuitBreakerPolicy; cb != nil {
		c.CircuitBreakers = &CircuitBreakers{MaxConnections: cb.MaxConnections, MaxPendingRequests: cb.MaxPendingRequests, MaxRequests: cb.MaxRequests, MaxRetries: cb.MaxRetries, PerHostMaxConnections: cb.PerHostMaxConnections}
	}
	c.LBPolicy = "ROUND_ROBIN"
	if lb := e.Spec.LoadBalancerPolicy; lb != nil {
		switch lb.Strategy {
		case "", "RoundRobin":
		case "WeightedLeastRequest":
			c.LBPolicy = "LEAST_REQUEST"
		case "Random":
			c.LBPolicy = "RANDOM"
		case "Cookie", "RequestHash":
			st.warnf(ErrSpec, "IgnoredField", "ignoring field %q; %s load balancer policy is not supported for ExtensionClusters", ".Spec.LoadBalancerPolicy", lb.Strategy)
		default:
			st.warnf(ErrSpec, "IgnoredField", "ignoring field %q; load balancer strategy %q is unknown, RoundRobin is used (valid: RoundRobin, WeightedLeastRequest, Random)", ".Spec.LoadBalancerPolicy", lb.Strategy)
		}
	}
	if p := e.Spec.Protocol; p != nil {
		switch *p {
		case "h2", "h2c":
			c.Protocol = *p
		default:
			// The CRD's enum refuses it; a manifests folder has no API server.
			st.errorf(ErrSpec, "UnsupportedProtocol", "spec.protocol %q is not supported (use h2 or h2c)", *p)
		}
	}
	if v := e.Spec.ProtocolVersion; v != "" && v != contourv1alpha1.SupportProtocolVersion3 {
		st.errorf(ErrSpec, "UnsupportedProtocolVersion", "spec.protocolVersion %q is not supported (only v3)", v)
	}
	if uv := e.Spec.UpstreamValidation; uv != nil {
		k, err := b.secretRef(uv.CACertificate, e.Namespace)
		if err != nil {
			st.errorf(ErrTLS, "CACertificateNotDelegated", "service.UpstreamValidation.CACertificate Secret %q is not configured for certificate delegation", k.String())
			return nil
		}
		ca, err := b.caSecret(k)
		if err != nil {
			st.errorf(ErrSpec, "TLSUpstreamValidation", "TLS upstream validation policy error: invalid CA Secret %q: %s", k.String(), err)
			return nil
		}
		names, err := subjectNames(uv)
		if err != nil {
			st.errorf(ErrSpec, "TLSUpstreamValidation", "TLS upstream validation policy error: %s", err)
			return nil
		}
		c.UpstreamCA, c.SubjectNames, c.SNI = ca, names, names[0]
		if c.Protocol != "h2" {
			st.errorf(ErrSpec, "InconsistentProtocol", "upstream TLS validation not supported for %q protocol", c.Protocol)
		}
	}
	if len(e.Spec.Services) == 0 {
		st.errorf(ErrSpec, "NoServices", "spec.services must have at least one entry")
	}
	for _, t := range e.Spec.Services {
		// Only Services of the ExtensionService's namespace, as Contour:
		// a cross-namespace reference could subvert the installation.
		sk := types.NamespacedName{Namespace: e.Namespace, Name: t.Name}
		svc, port, err := b.servicePort(sk, intstr.FromInt(t.Port))
		if err != nil {
			st.errorf(ErrService, "ServiceUnresolvedReference", "unresolved service %q: %s", sk.String(), err)
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ExternalName != "" {
			st.errorf(ErrService, "UnsupportedServiceType", "Service %q is of unsupported type %q.", sk.String(), corev1.ServiceTypeExternalName)
			continue
		}
		c.Extension = append(c.Extension, ExtensionTarget{Service: sk, Port: port, Weight: t.Weight})
	}
	total := uint32(0)
	for _, t := range c.Extension {
		total += t.Weight
	}
	if total == 0 {
		for i := range c.Extension {
			c.Extension[i].Weight = 1
		}
	}
	return ext
}

// subjectNames are an upstream validation's names, checked as Contour's
// LookupUpstreamValidation.
func subjectNames(uv *contourv1.UpstreamValidation) ([]string, error) {
	if uv.SubjectName == "" && len(uv.SubjectNames) == 0 {
		return nil, fmt.Errorf("missing subject alternative name")
	}
	if len(uv.SubjectNames) == 0 {
		return []string{uv.SubjectName}, nil
	}
	if uv.SubjectName != "" && uv.SubjectName != uv.SubjectNames[0] {
		return nil, fmt.Errorf("first entry of SubjectNames (%s) does not match SubjectName (%s)", uv.SubjectNames[0], uv.SubjectName)
	}
	return uv.SubjectNames, nil
}

// vhostAuthorization validates a root's spec.virtualhost.authorization as
// Contour's httpproxy_processor (reasons and texts are Contour's) and
// returns its server and what its routes inherit; nil when there is
// none, which leaves routes' authPolicy without effect (an ext_authz
// per-route config without the filter). Problems go to st, which makes
// the root invalid, or warn of a server that cannot apply.
func (b *builder) vhostAuthorization(p *contourv1.HTTPProxy, st *ProxyStatus) (*ExternalAuthorization, *rootAuth) {
	vh := p.Spec.VirtualHost
	a := vh.Authorization
	if a == nil {
		return nil, nil
	}
	// Contour 1.33 has gRPC authorization servers only; HTTP ones came
	// later (serviceType: http, httpSettings).
	if (a.ServiceType != "" && a.ServiceType != "grpc") || a.HTTPServerSettings != nil {
		st.errorf(ErrAuth, "NotImplemented", "Spec.VirtualHost.Authorization.ServiceType %q / HTTPSettings: HTTP authorization servers are not implemented by Legate (use a gRPC server of Envoy's envoy.service.auth.v3.Authorization)", a.ServiceType)
		return nil, nil
	}
	configured := a.ExtensionServiceRef.Name != ""
	switch {
	case vh.TLS == nil:
		if configured {
			st.errorf(ErrAuth, "AuthNotPermitted", "Spec.VirtualHost.Authorization.ExtensionServiceRef can only be defined for root HTTPProxies that terminate TLS")
		}
		return nil, nil
	case vh.TLS.Passthrough:
		if configured {
			st.warnf(ErrSpec, "IgnoredField", "Spec.VirtualHost.Authorization is ignored: a TLS passthrough virtual host forwards the TLS stream without seeing its requests")
		}
		return nil, nil
	case vh.TLS.EnableFallbackCertificate:
		// The fallback HCM aggregates several virtual hosts' routes,
		// which cannot carry each one's authorization.
		st.errorf(ErrTLS, "TLSIncompatibleFeatures", "Spec.Virtualhost.TLS fallback & client authorization are incompatible")
		return nil, nil
	case !configured:
		return nil, nil
	case p.Spec.TCPProxy != nil:
		st.warnf(ErrSpec, "IgnoredField", "Spec.VirtualHost.Authorization is ignored: Spec.TCPProxy forwards connections, not HTTP requests")
		return nil, nil
	}
	ref := a.ExtensionServiceRef
	if ref.APIVersion == "" {
		ref.APIVersion = contourv1alpha1.GroupVersion.String()
	}
	if ref.APIVersion != contourv1alpha1.GroupVersion.String() {
		st.errorf(ErrAuth, "AuthBadResourceVersion", "Spec.Virtualhost.Authorization.extensionRef specifies an unsupported resource version %q", ref.APIVersion)
		return nil, nil
	}
	key := types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = p.Namespace
	}
	ext := b.extensions[key]
	if ext == nil {
		st.errorf(ErrAuth, "ExtensionServiceNotFound", "Spec.Virtualhost.Authorization.ServiceRef extension service %q not found", key.String())
		return nil, nil
	}
	out := &ExternalAuthorization{Cluster: ext.cluster, FailOpen: a.FailOpen, ResponseTimeout: ext.response}
	if a.ResponseTimeout != "" {
		d, err := parseTimeout(a.ResponseTimeout)
		if err != nil {
			st.errorf(ErrAuth, "AuthResponseTimeoutInvalid", "Spec.Virtualhost.Authorization.ResponseTimeout is invalid: %s", err)
			return nil, nil
		}
		out.ResponseTimeout = &d
	}
	if wb := a.WithRequestBody; wb != nil {
		out.WithRequestBody = &AuthRequestBody{MaxRequestBytes: defaultMaxRequestBytes, AllowPartialMessage: wb.AllowPartialMessage, PackAsBytes: wb.PackAsBytes}
		if wb.MaxRequestBytes != 0 {
			out.WithRequestBody.MaxRequestBytes = wb.MaxRequestBytes
		}
	}
	inherit := &rootAuth{}
	if a.AuthPolicy != nil {
		inherit.disabled, inherit.context = a.AuthPolicy.Disabled, a.AuthPolicy.Context
	}
	return out, inherit
}

// routeAuth sets a route's authorization as Contour does under a root
// with authorization: the virtual host's authPolicy.disabled unless the
// route's authPolicy says otherwise, and the virtual host's context with
// the route's keys over it.
func (b *builder) routeAuth(r *contourv1.Route, rt *Route, st *ProxyStatus) {
	if b.auth == nil {
		if r.AuthPolicy != nil {
			// Contour ignores it silently; say so.
			st.warnf(ErrSpec, "IgnoredField", "route authPolicy is ignored: the root HTTPProxy's virtual host has no authorization server (spec.virtualhost.authorization.extensionRef on a TLS virtual host)")
		}
		return
	}
	rt.AuthDisabled = b.auth.disabled
	ctx := maps.Clone(b.auth.context)
	if r.AuthPolicy != nil {
		rt.AuthDisabled = r.AuthPolicy.Disabled
		if len(r.AuthPolicy.Context) > 0 && ctx == nil {
			ctx = map[string]string{}
		}
		maps.Copy(ctx, r.AuthPolicy.Context)
	}
	if len(ctx) > 0 {
		rt.AuthContext = ctx
	}
}
