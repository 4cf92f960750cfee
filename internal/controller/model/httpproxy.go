package model

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Contour's defaults for healthCheckPolicy and the Cookie strategy.
const (
	defaultHCHost      = "contour-envoy-healthcheck"
	defaultHCInterval  = 5 * time.Second
	defaultHCTimeout   = 2 * time.Second
	defaultHCUnhealthy = 3
	defaultHCHealthy   = 2
	// SessionCookie is the cookie Contour's Cookie strategy hashes on.
	SessionCookie = "X-Contour-Session-Affinity"
)

var fqdnRE = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func (b *builder) status(p *contourv1.HTTPProxy) *ProxyStatus {
	k := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	st := b.m.Proxies[k]
	if st == nil {
		st = &ProxyStatus{Object: k, Generation: p.Generation}
		b.m.Proxies[k] = st
	}
	return st
}

func (b *builder) httpProxies() {
	roots := map[string][]*contourv1.HTTPProxy{}
	for _, k := range sortedKeys(b.objs.HTTPProxies) {
		p := b.objs.HTTPProxies[k]
		if !b.classMatches(objectClass(p.Annotations, p.Spec.IngressClassName)) {
			continue
		}
		st := b.status(p)
		if p.Spec.VirtualHost == nil {
			continue
		}
		st.reached = true
		fqdn := strings.ToLower(strings.TrimSpace(p.Spec.VirtualHost.Fqdn))
		st.FQDN = fqdn
		switch {
		case fqdn == "":
			st.errorf(ErrVirtualHost, "FQDNNotSpecified", "Spec.VirtualHost.Fqdn must be specified")
			continue
		case !fqdnRE.MatchString(fqdn):
			st.errorf(ErrVirtualHost, "FQDNNotValid", "Spec.VirtualHost.Fqdn %q is not a valid DNS name or wildcard", fqdn)
			continue
		case len(b.opt.RootNamespaces) > 0 && !slices.Contains(b.opt.RootNamespaces, p.Namespace):
			st.errorf(ErrRootNamespace, "RootProxyNotAllowedInNamespace", "root HTTPProxy cannot be defined in this namespace")
			continue
		}
		roots[fqdn] = append(roots[fqdn], p)
	}
	fqdns := make([]string, 0, len(roots))
	for f := range roots {
		fqdns = append(fqdns, f)
	}
	slices.Sort(fqdns)
	for _, fqdn := range fqdns {
		ps := roots[fqdn]
		if len(ps) > 1 {
			var names []string
			for _, p := range ps {
				names = append(names, p.Namespace+"/"+p.Name)
			}
			for _, p := range ps {
				b.status(p).errorf(ErrVirtualHost, "DuplicateVhost", "fqdn %q is used in multiple HTTPProxies: %s", fqdn, strings.Join(names, ", "))
			}
			continue
		}
		b.root(ps[0])
	}
	for _, k := range sortedKeys(b.objs.HTTPProxies) {
		if st := b.m.Proxies[k]; st != nil && !st.reached {
			st.orphaned = true
			st.errorf(ErrOrphaned, "Orphaned", "this HTTPProxy is not part of a delegation chain from a root HTTPProxy")
		}
	}
}

func (b *builder) root(p *contourv1.HTTPProxy) {
	st := b.status(p)
	vh := p.Spec.VirtualHost
	fqdn := st.FQDN
	if len(p.Spec.Routes) == 0 && len(p.Spec.Includes) == 0 && p.Spec.TCPProxy == nil {
		st.errorf(ErrSpec, "NothingDefined", "HTTPProxy.Spec must have at least one Route, Include, or a TCPProxy")
		return
	}
	if len(vh.IPAllowFilterPolicy) > 0 && len(vh.IPDenyFilterPolicy) > 0 {
		// Contour's text, typo included.
		st.errorf(ErrIPFilter, "IncompatibleIPAddressFilters", "Spec.VirtualHost.IPAllowFilterPolicy and Spec.VirtualHost.IPDepnyFilterPolicy cannot both be defined.")
		return
	}
	jwts, jwtDefault, ok := b.jwtProviders(p, st)
	if !ok {
		return
	}
	auth, inheritAuth := b.vhostAuthorization(p, st)
	cors, err := corsPolicy(vh.CORSPolicy)
	if err != nil {
		st.errorf(ErrCORS, "PolicyDidNotParse", "Spec.VirtualHost.CORSPolicy: %s", err)
	}
	ipf, err := ipFilter(st, vh.IPAllowFilterPolicy, vh.IPDenyFilterPolicy)
	if err != nil {
		st.errorf(ErrIPFilter, "IPFilterPolicyNotValid", "Spec.VirtualHost.IPAllowFilterPolicy or Spec.VirtualHost.IPDenyFilterPolicy is invalid: %s", err)
	}
	var lrl *LocalRateLimit
	if vh.RateLimitPolicy != nil {
		if lrl, err = localRateLimit(vh.RateLimitPolicy.Local); err != nil {
			st.errorf(ErrVirtualHost, "RateLimitPolicyNotValid", "Spec.VirtualHost.RateLimitPolicy is invalid: %s", err)
		}
	}
	grl := b.vhostGlobalRateLimits(vh, st)

	var svh *SecureVirtualHost
	if t := vh.TLS; t != nil {
		svh = &SecureVirtualHost{VirtualHost: VirtualHost{Name: fqdn}, MinVersion: b.minTLS(), MaxVersion: b.maxTLS()}
		switch {
		case t.Passthrough && t.SecretName != "":
			st.errorf(ErrTLS, "TLSConfigNotValid", "Spec.VirtualHost.TLS: both Passthrough and SecretName were specified")
		case !t.Passthrough && t.SecretName == "":
			st.errorf(ErrTLS, "TLSConfigNotValid", "Spec.VirtualHost.TLS: neither Passthrough nor SecretName were specified")
		case t.Passthrough:
			svh.Passthrough = true
			if p.Spec.TCPProxy == nil {
				st.errorf(ErrTCPProxy, "TLSPassthroughNeedsTCPProxy", "Spec.VirtualHost.TLS.Passthrough requires Spec.TCPProxy")
			}
			if t.EnableFallbackCertificate {
				st.errorf(ErrTLS, "TLSIncompatibleFeatures", "Spec.VirtualHost.TLS: passthrough and fallback certificate are incompatible")
			}
		default:
			key, err := b.secretRef(t.SecretName, p.Namespace)
			if err != nil {
				st.errorf(ErrTLS, "DelegationNotPermitted", "Spec.VirtualHost.TLS %s", err)
				break
			}
			sec, err := b.tlsSecret(key)
			if err != nil {
				st.errorf(ErrTLS, "SecretNotValid", "Spec.VirtualHost.TLS Secret %q is invalid: %s", t.SecretName, err)
				break
			}
			svh.Secret = sec
		}
		for _, v := range []struct {
			field, val string
			dst        *string
		}{{"MinimumProtocolVersion", t.MinimumProtocolVersion, &svh.MinVersion}, {"MaximumProtocolVersion", t.MaximumProtocolVersion, &svh.MaxVersion}} {
			switch v.val {
			case "":
			case "1.2", "1.3":
				*v.dst = v.val
			default:
				st.errorf(ErrTLS, "TLSConfigNotValid", "Spec.VirtualHost.TLS.%s %q is not supported (use 1.2 or 1.3)", v.field, v.val)
			}
		}
		if svh.MinVersion > svh.MaxVersion {
			st.errorf(ErrTLS, "TLSConfigNotValid", "Spec.VirtualHost.TLS: minimum protocol version %s is above the maximum %s", svh.MinVersion, svh.MaxVersion)
		}
		if t.EnableFallbackCertificate && !t.Passthrough {
			switch {
			case t.ClientValidation != nil:
				st.errorf(ErrTLS, "TLSIncompatibleFeatures", "Spec.Virtualhost.TLS fallback & client validation are incompatible")
			case b.opt.FallbackCertificate == nil:
				st.errorf(ErrTLS, "FallbackNotPresent", "Spec.Virtualhost.TLS enabled fallback but the fallback Certificate Secret is not configured (legate controller --fallback-certificate)")
			default:
				if _, err := b.tlsSecret(*b.opt.FallbackCertificate); err != nil {
					st.errorf(ErrTLS, "FallbackNotValid", "Spec.Virtualhost.TLS Secret %q fallback certificate is invalid: %s", b.opt.FallbackCertificate.String(), err)
				} else {
					svh.FallbackCertificate = true
				}
			}
		}
		if cv := t.ClientValidation; cv != nil && !t.Passthrough {
			if f := cv.ForwardClientCertificate; f != nil {
				svh.ForwardClientCert = &ClientCertDetails{Subject: f.Subject, Cert: f.Cert, Chain: f.Chain, DNS: f.DNS, URI: f.URI}
			}
			svh.SkipClientValidation = cv.SkipClientCertValidation
			svh.OptionalClientCert = cv.OptionalClientCertificate
			svh.CRLOnlyLeaf = cv.OnlyVerifyLeafCertCrl
			if cv.CACertificate == "" && !cv.SkipClientCertValidation {
				st.errorf(ErrTLS, "ClientValidationInvalid", "Spec.VirtualHost.TLS client validation is invalid: CA Secret must be specified")
			}
			if cv.CACertificate != "" {
				if key, err := b.secretRef(cv.CACertificate, p.Namespace); err != nil {
					st.errorf(ErrTLS, "DelegationNotPermitted", "Spec.VirtualHost.TLS.ClientValidation CA %s", err)
				} else if sec, err := b.caSecret(key); err != nil {
					st.errorf(ErrTLS, "ClientValidationInvalid", "Spec.VirtualHost.TLS client validation is invalid: CA Secret %q is invalid: %s", cv.CACertificate, err)
				} else {
					svh.ClientCA = sec
				}
			}
			if cv.CertificateRevocationList != "" {
				if key, err := b.secretRef(cv.CertificateRevocationList, p.Namespace); err != nil {
					st.errorf(ErrTLS, "DelegationNotPermitted", "Spec.VirtualHost.TLS.ClientValidation CRL %s", err)
				} else if sec, err := b.crlSecret(key); err != nil {
					st.errorf(ErrTLS, "ClientValidationInvalid", "Spec.VirtualHost.TLS client validation is invalid: CRL Secret %q is invalid: %s", cv.CertificateRevocationList, err)
				} else {
					svh.ClientCRL = sec
				}
			}
		}
	}

	if p.Spec.TCPProxy != nil {
		if vh.TLS == nil {
			st.errorf(ErrTCPProxy, "TLSMustBeConfigured", "Spec.TCPProxy requires that either Spec.TLS.Passthrough or Spec.TLS.SecretName be set")
			return
		}
		tp := b.tcpProxy(p, p.Spec.TCPProxy, st, nil)
		if len(st.Errors) > 0 || tp == nil {
			return
		}
		svh.TCPProxy = tp
		b.m.Secure[fqdn] = svh
		return
	}
	if svh != nil && svh.Passthrough {
		return
	}

	b.jwtDefault, b.auth = jwtDefault, inheritAuth
	routes := b.routes(p, nil, nil, st, vh.TLS != nil)
	b.jwtDefault, b.auth = "", nil
	for _, r := range routes {
		if r.route.JWTProvider != "" && !slices.ContainsFunc(jwts, func(j JWTProvider) bool { return j.Name == r.route.JWTProvider }) {
			// Contour skips this check on a virtual host without TLS (and
			// ignores the requirement); Legate reports it.
			st.errorf(ErrJWT, "JWTProviderNotDefined", "Route references an undefined JWT provider %q", r.route.JWTProvider)
			return
		}
	}
	// As Contour: a broken include makes the root invalid but its other
	// routes are still served (the include's paths answer 502).
	for _, e := range st.Errors {
		if e.Type != ErrInclude {
			return
		}
	}
	if svh != nil {
		sv := b.secure(fqdn)
		sv.Secret, sv.MinVersion, sv.MaxVersion = svh.Secret, svh.MinVersion, svh.MaxVersion
		sv.ClientCA, sv.ClientCRL, sv.SkipClientValidation, sv.OptionalClientCert, sv.CRLOnlyLeaf = svh.ClientCA, svh.ClientCRL, svh.SkipClientValidation, svh.OptionalClientCert, svh.CRLOnlyLeaf
		sv.FallbackCertificate = svh.FallbackCertificate
		sv.ForwardClientCert = svh.ForwardClientCert
		sv.CORS, sv.IPFilter, sv.LocalRateLimit, sv.GlobalRateLimits = cors, ipf, lrl, grl
		sv.JWTProviders = jwts
		sv.Authorization = auth
		for _, r := range routes {
			sv.Routes = append(sv.Routes, r.route)
		}
	}
	ivh := b.insecure(fqdn)
	ivh.CORS, ivh.IPFilter, ivh.LocalRateLimit, ivh.GlobalRateLimits = cors, ipf, lrl, grl
	for _, r := range routes {
		rt := r.route
		if svh != nil && (!r.permitInsecure || b.opt.Config.DisablePermitInsecure) {
			cp := *rt
			cp.HTTPSRedirect = true
			rt = &cp
		}
		ivh.Routes = append(ivh.Routes, rt)
	}
}

func (b *builder) tcpProxy(p *contourv1.HTTPProxy, tp *contourv1.TCPProxy, st *ProxyStatus, visited []string) *TCPProxy {
	inc := tp.Include
	if inc == nil {
		inc = tp.IncludesDeprecated
	}
	if inc != nil {
		if len(tp.Services) > 0 {
			st.errorf(ErrTCPProxy, "NoServicesAndInclude", "cannot specify services and include in the same httpproxy")
			return nil
		}
		ns := inc.Namespace
		if ns == "" {
			ns = p.Namespace
		}
		key := types.NamespacedName{Namespace: ns, Name: inc.Name}
		child := b.objs.HTTPProxies[key]
		if child == nil {
			st.errorf(ErrTCPInclude, "IncludeNotFound", "include %s not found", key)
			return nil
		}
		if slices.Contains(visited, key.String()) {
			st.errorf(ErrTCPInclude, "IncludeCreatesCycle", "include creates a cycle: %s -> %s", strings.Join(visited, " -> "), key)
			return nil
		}
		cst := b.status(child)
		cst.reached = true
		if child.Spec.VirtualHost != nil {
			st.errorf(ErrTCPInclude, "RootIncludesRoot", "root httpproxy cannot include another root httpproxy (%s)", key)
			return nil
		}
		if child.Spec.TCPProxy == nil {
			cst.errorf(ErrTCPProxy, "NotDefined", "the included HTTPProxy has no spec.tcpproxy")
			return nil
		}
		return b.tcpProxy(child, child.Spec.TCPProxy, cst, append(visited, p.Namespace+"/"+p.Name))
	}
	if len(tp.Services) == 0 {
		st.errorf(ErrTCPProxy, "NothingDefined", "either services or inclusion must be specified")
		return nil
	}
	lb, _ := b.lbPolicy(tp.LoadBalancerPolicy, st)
	var hc *HealthCheck
	if h := tp.HealthCheckPolicy; h != nil {
		hc = &HealthCheck{Interval: secondsOr(h.IntervalSeconds, defaultHCInterval), Timeout: secondsOr(h.TimeoutSeconds, defaultHCTimeout),
			Unhealthy: orDefault(h.UnhealthyThresholdCount, defaultHCUnhealthy), Healthy: orDefault(h.HealthyThresholdCount, defaultHCHealthy)}
	}
	out := &TCPProxy{}
	for _, s := range tp.Services {
		svc, port, err := b.servicePort(types.NamespacedName{Namespace: p.Namespace, Name: s.Name}, intstr.FromInt(s.Port))
		if err == nil {
			err = b.externalNameAllowed(svc)
		}
		if err != nil {
			st.errorf(ErrService, "ServiceUnresolvedReference", "Spec.TCPProxy unresolved service reference: %s", err)
			continue
		}
		hp, err := b.healthPort(types.NamespacedName{Namespace: p.Namespace, Name: s.Name}, s)
		if err != nil {
			st.errorf(ErrService, "ServiceUnresolvedReference", "Spec.TCPProxy unresolved service reference: %s", err)
			continue
		}
		proto := annotatedProtocol(svc, port)
		if s.Protocol != nil {
			proto = *s.Protocol
		}
		if proto == "h2" || proto == "h2c" {
			proto = "" // a TCP proxy forwards bytes
		}
		c := b.cluster(svc, port, clusterSpec{protocol: proto, lb: lb, hc: hc, healthPort: hp})
		out.Clusters = append(out.Clusters, WeightedCluster{Cluster: c, Weight: uint32(s.Weight)})
	}
	normalizeWeights(out.Clusters)
	return out
}

type builtRoute struct {
	route          *Route
	permitInsecure bool
}

// routes computes the routes of p under the include conditions conds.
func (b *builder) routes(p *contourv1.HTTPProxy, conds []contourv1.MatchCondition, visited []*contourv1.HTTPProxy, st *ProxyStatus, tlsVhost bool) []builtRoute {
	for _, v := range visited {
		if v.Namespace == p.Namespace && v.Name == p.Name {
			var path []string
			for _, x := range visited {
				path = append(path, x.Namespace+"/"+x.Name)
			}
			path = append(path, p.Namespace+"/"+p.Name)
			st.errorf(ErrInclude, "IncludeCreatesCycle", "include creates an include cycle: %s", strings.Join(path, " -> "))
			return nil
		}
	}
	visited = append(visited, p)
	var out []builtRoute
	seen := map[string]bool{}
	for _, inc := range p.Spec.Includes {
		ns := inc.Namespace
		if ns == "" {
			ns = p.Namespace
		}
		if err := validConditions(inc.Conditions, true); err != nil {
			st.errorf(ErrInclude, "PathMatchConditionsNotValid", "include: %s", err)
			continue
		}
		sig := fmt.Sprintf("%v", inc.Conditions)
		if seen[sig] && len(inc.Conditions) > 0 {
			st.errorf(ErrInclude, "DuplicateMatchConditions", "duplicate conditions defined on an include")
			continue
		}
		seen[sig] = true
		key := types.NamespacedName{Namespace: ns, Name: inc.Name}
		child := b.objs.HTTPProxies[key]
		badGateway := func() {
			pm, hs, qs, _ := matches(append(slices.Clone(conds), inc.Conditions...))
			out = append(out, builtRoute{route: &Route{Path: pm, Headers: hs, Query: qs, Direct: &Direct{Status: 502}}})
		}
		if child == nil {
			st.errorf(ErrInclude, "IncludeNotFound", "include %s not found", key)
			badGateway()
			continue
		}
		if child.Spec.VirtualHost != nil {
			st.errorf(ErrInclude, "RootIncludesRoot", "root httpproxy cannot include another root httpproxy (%s)", key)
			badGateway()
			continue
		}
		cst := b.status(child)
		cst.reached = true
		before := len(cst.Errors)
		rs := b.routes(child, append(slices.Clone(conds), inc.Conditions...), visited, cst, tlsVhost)
		if len(cst.Errors) > before {
			continue
		}
		out = append(out, rs...)
	}
	for i := range p.Spec.Routes {
		r := &p.Spec.Routes[i]
		before := len(st.Errors)
		br := b.route(p, r, conds, st, tlsVhost)
		if len(st.Errors) > before || br == nil {
			continue
		}
		out = append(out, *br)
	}
	return out
}

// validConditions checks one block of conditions as Contour does.
func validConditions(cs []contourv1.MatchCondition, include bool) error {
	paths := 0
	for _, c := range cs {
		n := 0
		for _, set := range []bool{c.Prefix != "", c.Exact != "", c.Regex != "", c.Header != nil, c.QueryParameter != nil} {
			if set {
				n++
			}
		}
		if n > 1 {
			return fmt.Errorf("cannot specify more than one condition in the same match condition branch")
		}
		switch {
		case c.Prefix != "":
			paths++
			if !strings.HasPrefix(c.Prefix, "/") {
				return fmt.Errorf("prefix conditions must start with /, %s was supplied", c.Prefix)
			}
		case c.Exact != "":
			paths++
			if include {
				return fmt.Errorf("exact conditions are not allowed in includes block")
			}
			if !strings.HasPrefix(c.Exact, "/") {
				return fmt.Errorf("exact conditions must start with /, %s was supplied", c.Exact)
			}
		case c.Regex != "":
			paths++
			if include {
				return fmt.Errorf("regex conditions are not allowed in includes block")
			}
			if _, err := regexp.Compile(c.Regex); err != nil {
				return fmt.Errorf("invalid regex %q: %w", c.Regex, err)
			}
		case c.Header != nil:
			if err := validHeaderCondition(c.Header); err != nil {
				return err
			}
		case c.QueryParameter != nil:
			q := c.QueryParameter
			n := 0
			for _, set := range []bool{q.Exact != "", q.Prefix != "", q.Suffix != "", q.Regex != "", q.Contains != "", q.Present} {
				if set {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("queryParameter %q: exactly one of exact, prefix, suffix, regex, contains or present must be set", q.Name)
			}
		}
	}
	if paths > 1 {
		return fmt.Errorf("more than one path condition (prefix, exact or regex) is not allowed in a condition block")
	}
	return nil
}

func validHeaderCondition(h *contourv1.HeaderMatchCondition) error {
	n := 0
	for _, set := range []bool{h.Present, h.NotPresent, h.Contains != "", h.NotContains != "", h.Exact != "", h.NotExact != "", h.Regex != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("header %q: exactly one of present, notpresent, contains, notcontains, exact, notexact or regex must be set", h.Name)
	}
	if h.Regex != "" {
		if _, err := regexp.Compile(h.Regex); err != nil {
			return fmt.Errorf("header %q: invalid regex: %w", h.Name, err)
		}
	}
	return nil
}

// matches merges include conditions with a route's own.
func matches(all []contourv1.MatchCondition) (PathMatch, []HeaderMatch, []QueryMatch, string) {
	prefix := ""
	pm := PathMatch{}
	var hs []HeaderMatch
	var qs []QueryMatch
	for _, c := range all {
		switch {
		case c.Prefix != "":
			prefix = joinPrefix(prefix, c.Prefix)
		case c.Exact != "":
			pm = PathMatch{Kind: "exact", Value: joinPrefix(prefix, c.Exact)}
		case c.Regex != "":
			pm = PathMatch{Kind: "regex", Value: regexp.QuoteMeta(prefix) + c.Regex}
		case c.Header != nil:
			hs = append(hs, headerMatch(c.Header))
		case c.QueryParameter != nil:
			q := c.QueryParameter
			m := QueryMatch{Name: q.Name, IgnoreCase: q.IgnoreCase}
			switch {
			case q.Present:
				m.Kind = "present"
			case q.Exact != "":
				m.Kind, m.Value = "exact", q.Exact
			case q.Prefix != "":
				m.Kind, m.Value = "prefix", q.Prefix
			case q.Suffix != "":
				m.Kind, m.Value = "suffix", q.Suffix
			case q.Contains != "":
				m.Kind, m.Value = "contains", q.Contains
			case q.Regex != "":
				m.Kind, m.Value = "regex", q.Regex
			}
			qs = append(qs, m)
		}
	}
	if pm.Kind == "" {
		if prefix == "" {
			prefix = "/"
		}
		pm = PathMatch{Kind: "prefix", Value: prefix}
	}
	return pm, hs, qs, prefix
}

// headerMatch converts a validated header condition.
func headerMatch(h *contourv1.HeaderMatchCondition) HeaderMatch {
	m := HeaderMatch{Name: h.Name, IgnoreCase: h.IgnoreCase, TreatMissingAsEmpty: h.TreatMissingAsEmpty}
	switch {
	case h.Present:
		m.Kind = "present"
	case h.NotPresent:
		m.Kind, m.Invert = "present", true
	case h.Contains != "":
		m.Kind, m.Value = "contains", h.Contains
	case h.NotContains != "":
		m.Kind, m.Value, m.Invert = "contains", h.NotContains, true
	case h.Exact != "":
		m.Kind, m.Value = "exact", h.Exact
	case h.NotExact != "":
		m.Kind, m.Value, m.Invert = "exact", h.NotExact, true
	case h.Regex != "":
		m.Kind, m.Value = "regex", h.Regex
	}
	return m
}

// joinPrefix concatenates include and route prefixes without doubling "/".
func joinPrefix(a, b string) string {
	if a == "" || a == "/" {
		return b
	}
	return strings.TrimSuffix(a, "/") + "/" + strings.TrimPrefix(b, "/")
}

func (b *builder) route(p *contourv1.HTTPProxy, r *contourv1.Route, conds []contourv1.MatchCondition, st *ProxyStatus, tlsVhost bool) *builtRoute {
	if err := validConditions(r.Conditions, false); err != nil {
		st.errorf(ErrRoute, "PathMatchConditionsNotValid", "route: %s", err)
		return nil
	}
	actions := 0
	for _, set := range []bool{len(r.Services) > 0, r.RequestRedirectPolicy != nil, r.DirectResponsePolicy != nil} {
		if set {
			actions++
		}
	}
	if actions != 1 {
		st.errorf(ErrRoute, "RouteActionCountNotValid", "must set exactly one of route.services or route.requestRedirectPolicy or route.directResponsePolicy")
		return nil
	}
	all := append(slices.Clone(conds), r.Conditions...)
	pm, hs, qs, prefix := matches(all)
	rt := &Route{Path: pm, Headers: hs, Query: qs, Websocket: r.EnableWebsockets}

	var err error
	switch jwt := r.JWTVerificationPolicy; {
	case jwt != nil && jwt.Require != "" && jwt.Disabled:
		st.errorf(ErrJWT, "InvalidJWTVerificationPolicy", "route's JWT verification policy cannot specify both require and disabled")
		return nil
	case jwt != nil && jwt.Require != "":
		rt.JWTProvider = jwt.Require
	case jwt != nil && jwt.Disabled:
	default:
		rt.JWTProvider = b.jwtDefault
	}
	b.routeAuth(r, rt, st)
	// As Contour, the route's own conditions are the only ones reported.
	if rt.IPFilter, err = ipFilter(st, r.IPAllowFilterPolicy, r.IPDenyFilterPolicy); err != nil {
		return nil
	}
	if rlp := r.RateLimitPolicy; rlp != nil {
		if rt.LocalRateLimit, err = localRateLimit(rlp.Local); err == nil {
			rt.GlobalRateLimits, err = globalRateLimitPolicy(rlp.Global)
		}
		if err != nil {
			st.errorf(ErrRoute, "RateLimitPolicyNotValid", "route.rateLimitPolicy is invalid: %s", err)
			return nil
		}
		// Contour's rateLimitPerRoute: global.disabled on a route opts it
		// out of the virtual host's global rate limits (vh_rate_limits
		// IGNORE), whatever its own.
		rt.IgnoreVhostRateLimits = rlp.Global != nil && rlp.Global.Disabled
		if len(rt.GlobalRateLimits) > 0 {
			b.rateLimitWarnings(st, "route rateLimitPolicy.global")
		}
	}
	if rt.RequestHeaders, err = headersPolicy(r.RequestHeadersPolicy, true); err != nil {
		st.errorf(ErrRoute, "RequestHeadersPolicyInvalid", "%s on request headers", err)
		return nil
	}
	if rt.ResponseHeaders, err = headersPolicy(r.ResponseHeadersPolicy, false); err != nil {
		st.errorf(ErrRoute, "ResponseHeaderPolicyInvalid", "%s on response headers", err)
		return nil
	}
	if rt.CookieRewrites, err = cookieRewrites(r.CookieRewritePolicies); err != nil {
		st.errorf(ErrRoute, "CookieRewritePoliciesInvalid", "%s on route cookie rewrite rules", err)
		return nil
	}
	if rt.InternalRedirect, err = internalRedirect(r.InternalRedirectPolicy); err != nil {
		st.errorf(ErrRoute, "InternalRedirectPolicyNotValid", "route.internalRedirectPolicy: %s", err)
		return nil
	}
	var idleConn time.Duration
	if tp := r.TimeoutPolicy; tp != nil {
		for _, t := range []struct {
			name, val string
			set       func(time.Duration)
		}{
			{"response", tp.Response, func(d time.Duration) { rt.Timeout = &d }},
			{"idle", tp.Idle, func(d time.Duration) { rt.IdleTimeout = &d }},
			{"idleConnection", tp.IdleConnection, func(d time.Duration) { idleConn = d }},
		} {
			if t.val == "" {
				continue
			}
			d, err := parseTimeout(t.val)
			if err != nil {
				st.errorf(ErrRoute, "TimeoutPolicyNotValid", "route.timeoutPolicy.%s failed to parse: %s", t.name, err)
				return nil
			}
			t.set(d)
		}
	}
	if rp := r.RetryPolicy; rp != nil {
		ret := &Retry{NumRetries: 1, RetryOn: "5xx"}
		if rp.NumRetries > 0 {
			ret.NumRetries = uint32(rp.NumRetries)
		}
		if rp.NumRetries < 0 {
			ret = nil
		}
		if ret != nil {
			if rp.PerTryTimeout != "" {
				d, err := parseTimeout(rp.PerTryTimeout)
				if err != nil {
					st.errorf(ErrRoute, "RetryPolicyNotValid", "route.retryPolicy.perTryTimeout failed to parse: %s", err)
					return nil
				}
				ret.PerTryTimeout = d
			}
			if len(rp.RetryOn) > 0 {
				ret.RetryOn = strings.Join(rp.RetryOn, ",")
			}
			ret.StatusCodes = rp.RetriableStatusCodes
			rt.Retry = ret
		}
	}
	if pr := r.PathRewritePolicy; pr != nil && len(pr.ReplacePrefix) > 0 {
		if pm.Kind != "prefix" {
			st.errorf(ErrPrefixReplace, "MustHavePrefix", "cannot specify prefix replacements without a prefix condition")
			return nil
		}
		var generic, specific *contourv1.ReplacePrefix
		for i := range pr.ReplacePrefix {
			rp := &pr.ReplacePrefix[i]
			switch {
			case rp.Prefix == "":
				if generic != nil {
					st.errorf(ErrPrefixReplace, "AmbiguousReplacement", "ambiguous prefix replacement")
					return nil
				}
				generic = rp
			case rp.Prefix == prefix || joinPrefix("", rp.Prefix) == prefix:
				specific = rp
			}
		}
		if specific != nil {
			rt.PrefixRewrite = specific.Replacement
		} else if generic != nil {
			rt.PrefixRewrite = generic.Replacement
		}
	}
	if rr := r.RequestRedirectPolicy; rr != nil {
		red := &Redirect{Code: 302}
		if rr.StatusCode != nil {
			red.Code = *rr.StatusCode
		} else {
			red.Code = 302
		}
		if rr.Scheme != nil {
			red.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			red.Host = *rr.Hostname
		}
		if rr.Port != nil {
			red.Port = uint32(*rr.Port)
		}
		if rr.Path != nil && rr.Prefix != nil {
			st.errorf(ErrRoute, "RequestRedirectPolicy", "cannot specify both redirect path and redirect prefix")
			return nil
		}
		if rr.Path != nil {
			red.Path = *rr.Path
		}
		if rr.Prefix != nil {
			red.Prefix = *rr.Prefix
		}
		rt.Redirect = red
		return &builtRoute{route: rt, permitInsecure: r.PermitInsecure}
	}
	if dr := r.DirectResponsePolicy; dr != nil {
		rt.Direct = &Direct{Status: dr.StatusCode, Body: dr.Body}
		return &builtRoute{route: rt, permitInsecure: r.PermitInsecure}
	}

	lb, hashes := b.lbPolicy(r.LoadBalancerPolicy, st)
	rt.HashPolicies = hashes
	var hc *HealthCheck
	if h := r.HealthCheckPolicy; h != nil {
		hc = &HealthCheck{HTTP: true, Path: h.Path, Host: h.Host,
			Interval: secondsOr(h.IntervalSeconds, defaultHCInterval), Timeout: secondsOr(h.TimeoutSeconds, defaultHCTimeout),
			Unhealthy: orDefault(uint32(max(h.UnhealthyThresholdCount, 0)), defaultHCUnhealthy), Healthy: orDefault(uint32(max(h.HealthyThresholdCount, 0)), defaultHCHealthy)}
		if hc.Host == "" {
			hc.Host = defaultHCHost
		}
		for _, s := range h.ExpectedStatuses {
			if s.Start >= s.End {
				st.errorf(ErrRoute, "HealthCheckPolicyInvalid", "healthCheckPolicy expectedStatuses: start %d must be below end %d", s.Start, s.End)
				return nil
			}
			hc.ExpectedStatuses = append(hc.ExpectedStatuses, [2]int64{s.Start, s.End})
		}
	}
	for _, s := range r.Services {
		if s.Port < 1 || s.Port > 65535 {
			st.errorf(ErrService, "ServicePortInvalid", "service %q: port must be in the range 1-65535", s.Name)
			return nil
		}
		svc, port, err := b.servicePort(types.NamespacedName{Namespace: p.Namespace, Name: s.Name}, intstr.FromInt(s.Port))
		if err == nil {
			err = b.externalNameAllowed(svc)
		}
		if err != nil {
			st.errorf(ErrService, "ServiceUnresolvedReference", "Spec.Routes unresolved service reference: %s", err)
			continue
		}
		hp, err := b.healthPort(types.NamespacedName{Namespace: p.Namespace, Name: s.Name}, s)
		if err != nil {
			st.errorf(ErrService, "ServiceUnresolvedReference", "Spec.Routes unresolved service reference: %s", err)
			continue
		}
		cs := clusterSpec{protocol: annotatedProtocol(svc, port), lb: lb, hc: hc, idle: idleConn, healthPort: hp}
		if ss := s.SlowStartPolicy; ss != nil {
			sl, err := slowStart(ss, lb)
			if err != nil {
				st.errorf(ErrService, "SlowStartInvalid", "service %q: %s", s.Name, err)
				return nil
			}
			cs.slowStart = sl
		}
		if s.Protocol != nil {
			cs.protocol = *s.Protocol
		}
		if uv := s.UpstreamValidation; uv != nil {
			if cs.protocol != "tls" && cs.protocol != "h2" {
				st.errorf(ErrService, "TLSUpstreamValidation", "service %q: validation requires protocol tls or h2", s.Name)
				continue
			}
			key, err := b.secretRef(uv.CACertificate, p.Namespace)
			if err != nil {
				st.errorf(ErrTLS, "CACertificateNotDelegated", "service %q: CA %s", s.Name, err)
				continue
			}
			ca, err := b.caSecret(key)
			if err != nil {
				st.errorf(ErrService, "TLSUpstreamValidation", "service %q: CA Secret %q is invalid: %s", s.Name, uv.CACertificate, err)
				continue
			}
			cs.ca = ca
			cs.subjectNames = uv.SubjectNames
			if len(cs.subjectNames) == 0 && uv.SubjectName != "" {
				cs.subjectNames = []string{uv.SubjectName}
			}
			if len(cs.subjectNames) == 0 {
				st.errorf(ErrService, "TLSUpstreamValidation", "service %q: validation needs subjectName", s.Name)
				continue
			}
		}
		c := b.cluster(svc, port, cs)
		if c.SNI == "" && cs.ca != nil {
			c.SNI = cs.subjectNames[0]
		}
		if s.Mirror {
			if len(rt.Mirrors) > 0 {
				st.errorf(ErrService, "OnlyOneMirror", "only one service per route may be nominated as mirror")
				return nil
			}
			// As Contour: the mirror's weight is the percentage of
			// requests mirrored, and weight 0 (unset) mirrors all.
			pct := s.Weight
			if pct <= 0 || pct > 100 {
				pct = 100
			}
			rt.Mirrors = append(rt.Mirrors, Mirror{Cluster: c, PerMillion: uint32(pct) * 10000})
			continue
		}
		wc := WeightedCluster{Cluster: c, Weight: uint32(max(s.Weight, 0))}
		if wc.RequestHeaders, err = headersPolicy(s.RequestHeadersPolicy, true); err != nil {
			st.errorf(ErrService, "RequestHeadersPolicyInvalid", "%s on request headers", err)
			return nil
		}
		if wc.ResponseHeaders, err = headersPolicy(s.ResponseHeadersPolicy, false); err != nil {
			st.errorf(ErrService, "ResponseHeadersPolicyInvalid", "%s on response headers", err)
			return nil
		}
		wc.RequestHeaders = withDefaultHeaders(b.opt.Config.RequestHeaders, wc.RequestHeaders)
		wc.ResponseHeaders = withDefaultHeaders(b.opt.Config.ResponseHeaders, wc.ResponseHeaders)
		if wc.CookieRewrites, err = cookieRewrites(s.CookieRewritePolicies); err != nil {
			st.errorf(ErrRoute, "CookieRewritePoliciesInvalid", "%s on service cookie rewrite rules", err)
			return nil
		}
		rt.Clusters = append(rt.Clusters, wc)
	}
	if len(rt.Clusters) == 0 && len(st.Errors) == 0 {
		st.errorf(ErrRoute, "NoServices", "route.services must have at least one entry that is not a mirror")
		return nil
	}
	normalizeWeights(rt.Clusters)
	return &builtRoute{route: rt, permitInsecure: r.PermitInsecure}
}

// normalizeWeights gives equal weights when none is set, as Contour does.
func normalizeWeights(cs []WeightedCluster) {
	total := uint32(0)
	for _, c := range cs {
		total += c.Weight
	}
	if total == 0 {
		for i := range cs {
			cs[i].Weight = 1
		}
	}
}

func (b *builder) lbPolicy(p *contourv1.LoadBalancerPolicy, st *ProxyStatus) (string, []HashPolicy) {
	if p == nil {
		return "ROUND_ROBIN", nil
	}
	switch p.Strategy {
	case "", "RoundRobin":
		return "ROUND_ROBIN", nil
	case "WeightedLeastRequest":
		return "LEAST_REQUEST", nil
	case "Random":
		return "RANDOM", nil
	case "Cookie":
		return "RING_HASH", []HashPolicy{{Cookie: SessionCookie}}
	case "RequestHash":
		var hs []HashPolicy
		for _, h := range p.RequestHashPolicies {
			switch {
			case h.HeaderHashOptions != nil && h.HeaderHashOptions.HeaderName != "":
				hs = append(hs, HashPolicy{Header: h.HeaderHashOptions.HeaderName, Terminal: h.Terminal})
			case h.QueryParameterHashOptions != nil && h.QueryParameterHashOptions.ParameterName != "":
				hs = append(hs, HashPolicy{Query: h.QueryParameterHashOptions.ParameterName, Terminal: h.Terminal})
			case h.HashSourceIP:
				hs = append(hs, HashPolicy{SourceIP: true, Terminal: h.Terminal})
			default:
				st.warnf(ErrSpec, "IgnoredField", "loadBalancerPolicy.requestHashPolicies entry with no header, query parameter or source IP ignored")
			}
		}
		if len(hs) == 0 {
			st.warnf(ErrSpec, "IgnoredField", "loadBalancerPolicy RequestHash with no usable hash policy falls back to RoundRobin")
			return "ROUND_ROBIN", nil
		}
		return "RING_HASH", hs
	}
	st.warnf(ErrSpec, "IgnoredField", "loadBalancerPolicy.strategy %q is unknown; RoundRobin is used (valid: RoundRobin, WeightedLeastRequest, Random, Cookie, RequestHash)", p.Strategy)
	return "ROUND_ROBIN", nil
}

func secondsOr(s int64, d time.Duration) time.Duration {
	if s <= 0 {
		return d
	}
	return time.Duration(s) * time.Second
}

func orDefault(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

// slowStart converts a Contour SlowStartPolicy (RoundRobin and
// WeightedLeastRequest only, as Contour).
func slowStart(p *contourv1.SlowStartPolicy, lb string) (*SlowStart, error) {
	if lb != "ROUND_ROBIN" && lb != "LEAST_REQUEST" {
		return nil, fmt.Errorf("slow start is only supported with RoundRobin or WeightedLeastRequest load balancer strategy")
	}
	w, err := time.ParseDuration(p.Window)
	if err != nil || w <= 0 {
		return nil, fmt.Errorf("error parsing window: %q is not a positive duration", p.Window)
	}
	out := &SlowStart{Window: w, Aggression: 1, MinWeightPercent: 10}
	if p.Aggression != "" {
		a, err := strconv.ParseFloat(p.Aggression, 64)
		if err != nil || a <= 0 {
			return nil, fmt.Errorf("error parsing aggression: %q is not a positive number", p.Aggression)
		}
		out.Aggression = a
	}
	if p.MinimumWeightPercent > 0 {
		if p.MinimumWeightPercent > 100 {
			return nil, fmt.Errorf("minWeightPercent %d is above 100", p.MinimumWeightPercent)
		}
		out.MinWeightPercent = float64(p.MinimumWeightPercent)
	}
	return out, nil
}
