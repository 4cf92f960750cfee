package model

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// routeOrder ranks the routes of a Gateway API virtual host by the
// specification's precedence (HTTPRouteRule matches): an exact path, then
// the longest prefix (regular expressions last); a method match; more
// header matches; more query parameter matches; then the oldest route
// (by creation time, then namespace/name), and the rule and match order
// within it.
type routeOrder struct {
	route, rule, match int
}

func pathRank(p PathMatch) int {
	switch p.Kind {
	case "exact":
		return 0
	case "regex":
		return 2
	}
	return 1
}

func hasMethod(r *Route) bool {
	for _, h := range r.Headers {
		if h.Name == ":method" {
			return true
		}
	}
	return false
}

func sortGatewayRoutes(rs []*Route) {
	slices.SortStableFunc(rs, func(a, b *Route) int {
		if d := cmp.Compare(pathRank(a.Path), pathRank(b.Path)); d != 0 {
			return d
		}
		if pathRank(a.Path) == 1 {
			if d := cmp.Compare(len(b.Path.Value), len(a.Path.Value)); d != 0 {
				return d
			}
		}
		if ma, mb := hasMethod(a), hasMethod(b); ma != mb {
			if ma {
				return -1
			}
			return 1
		}
		if d := cmp.Compare(len(b.Headers), len(a.Headers)); d != 0 {
			return d
		}
		if d := cmp.Compare(len(b.Query), len(a.Query)); d != 0 {
			return d
		}
		if d := cmp.Compare(a.order.route, b.order.route); d != 0 {
			return d
		}
		if d := cmp.Compare(a.order.rule, b.order.rule); d != 0 {
			return d
		}
		return cmp.Compare(a.order.match, b.order.match)
	})
}

// gatewayRoute is what attaching needs of a route of any kind.
type gatewayRoute struct {
	kind      string
	meta      metav1.ObjectMeta
	hostnames []gatewayv1.Hostname
	parents   []gatewayv1.ParentReference
	// rules compiles the route's rules (idx ranks it among all routes);
	// tcp, for TLSRoutes and TCPRoutes, its backends.
	rules func(idx int) ([]*Route, metav1.Condition)
	tcp   func() (*TCPProxy, metav1.Condition)
}

// gatewayRoutes attaches every HTTPRoute and GRPCRoute to the managed
// Gateways it names, oldest first, and records its status for those
// parents.
func (b *builder) gatewayRoutes(gs *gatewayState) {
	var all []gatewayRoute
	for _, hr := range b.objs.HTTPRoutes {
		all = append(all, gatewayRoute{kind: "HTTPRoute", meta: hr.ObjectMeta, hostnames: hr.Spec.Hostnames, parents: hr.Spec.ParentRefs,
			rules: func(idx int) ([]*Route, metav1.Condition) { return b.httpRouteRules(hr, idx) }})
	}
	for _, gr := range b.objs.GRPCRoutes {
		all = append(all, gatewayRoute{kind: "GRPCRoute", meta: gr.ObjectMeta, hostnames: gr.Spec.Hostnames, parents: gr.Spec.ParentRefs,
			rules: func(idx int) ([]*Route, metav1.Condition) { return b.grpcRouteRules(gr, idx) }})
	}
	for _, tr := range b.objs.TLSRoutes {
		all = append(all, gatewayRoute{kind: "TLSRoute", meta: tr.ObjectMeta, hostnames: tr.Spec.Hostnames, parents: tr.Spec.ParentRefs,
			tcp: func() (*TCPProxy, metav1.Condition) {
				return b.l4Backends("TLSRoute", tr.ObjectMeta, l4Refs(tr.Spec.Rules, func(r gatewayv1.TLSRouteRule) []gatewayv1.BackendRef { return r.BackendRefs }))
			}})
	}
	for _, tr := range b.objs.TCPRoutes {
		all = append(all, gatewayRoute{kind: "TCPRoute", meta: tr.ObjectMeta, parents: tr.Spec.ParentRefs,
			tcp: func() (*TCPProxy, metav1.Condition) {
				return b.l4Backends("TCPRoute", tr.ObjectMeta, l4Refs(tr.Spec.Rules, func(r gatewayv1.TCPRouteRule) []gatewayv1.BackendRef { return r.BackendRefs }))
			}})
	}
	slices.SortFunc(all, func(a, c gatewayRoute) int {
		if d := a.meta.CreationTimestamp.Compare(c.meta.CreationTimestamp.Time); d != 0 {
			return d
		}
		if d := cmp.Compare(a.meta.Namespace+"/"+a.meta.Name, c.meta.Namespace+"/"+c.meta.Name); d != 0 {
			return d
		}
		return cmp.Compare(a.kind, c.kind)
	})
	for idx, gr := range all {
		key := types.NamespacedName{Namespace: gr.meta.Namespace, Name: gr.meta.Name}
		st := &RouteStatus{Kind: gr.kind, Key: key, Generation: gr.meta.Generation}
		var tp *TCPProxy
		var resolved metav1.Condition
		// HTTP and gRPC rules compile once per backend client
		// certificate of the parents' Gateways (by SDS name, "" for
		// none): their BackendTLSPolicy clusters present it.
		type compiledRules struct {
			routes   []*Route
			resolved metav1.Condition
		}
		compiled := map[string]*compiledRules{}
		tcpCompiled := false
		b.usedPolicies = nil
		var gateways []types.NamespacedName
		for _, pr := range gr.parents {
			if (pr.Group != nil && *pr.Group != gatewayv1.GroupName) || (pr.Kind != nil && *pr.Kind != "Gateway" && *pr.Kind != "ListenerSet") {
				continue
			}
			gwKey := types.NamespacedName{Namespace: gr.meta.Namespace, Name: string(pr.Name)}
			if pr.Namespace != nil && *pr.Namespace != "" {
				gwKey.Namespace = string(*pr.Namespace)
			}
			// A ListenerSet parent: its listeners, on its Gateway's.
			var setKey types.NamespacedName
			if pr.Kind != nil && *pr.Kind == "ListenerSet" {
				setKey = gwKey
				if b.m.ListenerSets[setKey] == nil {
					continue // not a ListenerSet of our Gateways
				}
				gwKey = b.listenerSetParent(b.objs.ListenerSets[setKey])
			}
			if gs.gateways[gwKey] == nil {
				continue // not a Gateway of ours: its controller writes that status
			}
			var routes []*Route
			if gr.tcp != nil {
				if !tcpCompiled {
					tp, resolved = gr.tcp()
					tcpCompiled = true
				}
			} else {
				cert := gs.backendCerts[gwKey]
				name := ""
				if cert != nil {
					name = cert.Name
				}
				c := compiled[name]
				if c == nil {
					b.backendCert = cert
					c = &compiledRules{}
					c.routes, c.resolved = gr.rules(idx)
					b.backendCert = nil
					compiled[name] = c
				}
				routes, resolved = c.routes, c.resolved
			}
			gateways = append(gateways, gwKey)
			accepted := b.attachRoute(gr, pr, setKey, gs.listeners[gwKey], routes, tp)
			st.Parents = append(st.Parents, RouteParentStatus{ParentRef: pr, Conditions: []metav1.Condition{accepted, resolved}})
		}
		if len(st.Parents) > 0 {
			b.m.Routes[RouteKey{Kind: gr.kind, NamespacedName: key}] = st
			b.policyAncestors(b.usedPolicies, gateways)
		}
	}
	for _, l := range b.m.Listeners {
		for _, vh := range l.VirtualHosts {
			sortGatewayRoutes(vh.Routes)
		}
		for _, c := range l.Chains {
			for _, vh := range c.VirtualHosts {
				sortGatewayRoutes(vh.Routes)
			}
		}
		misdirected(l)
	}
}

// attachRoute adds a route's rules to the listeners of one parentRef
// (its sectionName and port select them) that admit it, under the
// hostnames both accept, and returns the Accepted condition. ls are all
// the listeners of the parent's Gateway; the parent is the ListenerSet
// set when it has a name, else the Gateway (its own listeners).
func (b *builder) attachRoute(gr gatewayRoute, pr gatewayv1.ParentReference, set types.NamespacedName, ls []*gwListener, routes []*Route, tp *TCPProxy) metav1.Condition {
	gen := gr.meta.Generation
	var candidates []*gwListener
	for _, l := range ls {
		if set.Name == "" && l.set != nil || set.Name != "" && (l.set == nil || l.set.Namespace != set.Namespace || l.set.Name != set.Name) {
			continue
		}
		if pr.SectionName != nil && *pr.SectionName != l.spec.Name {
			continue
		}
		if pr.Port != nil && *pr.Port != l.spec.Port {
			continue
		}
		candidates = append(candidates, l)
	}
	if len(candidates) == 0 {
		return cond("Accepted", false, "NoMatchingParent", "no listener of the Gateway matches the parentRef's sectionName and port", gen)
	}
	var allowed []*gwListener
	for _, l := range candidates {
		if (l.valid || l.attachOnly) && l.allowsKind(gr.kind) && b.allowsNamespace(l, gr.meta.Namespace) {
			allowed = append(allowed, l)
		}
	}
	if len(allowed) == 0 {
		return cond("Accepted", false, "NotAllowedByListeners", "no listener of the Gateway allows this route (allowedRoutes, or listeners not valid)", gen)
	}
	attached := false
	for _, l := range allowed {
		hosts := intersectHostnames(hostnameOf(l.spec.Hostname), gr.hostnames)
		if len(hosts) == 0 {
			continue
		}
		attached = true
		l.status.AttachedRoutes++
		if !l.valid {
			continue
		}
		if gr.tcp != nil {
			// A listener already serving an older route keeps it: the
			// newer one is accepted and counted but gets no traffic
			// (the spec's conflict resolution, as the conformance
			// suite's TCPRouteMultipleRoutesAttachment checks).
			b.attachL4(gr, l, hosts, tp)
			continue
		}
		vhosts := l.l.VirtualHosts
		if l.chain != nil {
			vhosts = l.chain.VirtualHosts
		}
		for _, h := range hosts {
			if !ownsHostname(ls, l, h) {
				continue
			}
			vh := vhosts[h]
			if vh == nil {
				vh = &VirtualHost{Name: h}
				vhosts[h] = vh
			}
			for _, r := range routes {
				rc := *r
				if rc.Redirect != nil && rc.Redirect.gateway {
					rc.Redirect = listenerRedirect(rc.Redirect, l)
				}
				vh.Routes = append(vh.Routes, &rc)
			}
		}
	}
	if !attached {
		return cond("Accepted", false, "NoMatchingListenerHostname", "no hostname of the route matches a listener's hostname", gen)
	}
	return cond("Accepted", true, "Accepted", "route accepted", gen)
}

// listenerRedirect settles a RequestRedirect's port on one listener, as
// the Gateway API says: the filter's port, else the well-known port of
// the filter's scheme, else the listener's port; the Location omits it
// when it is the well-known port of its scheme (80 for http, 443 for
// https).
func listenerRedirect(r *Redirect, l *gwListener) *Redirect {
	out := *r
	scheme := r.Scheme
	if scheme == "" {
		scheme = "http"
		if l.spec.Protocol == gatewayv1.HTTPSProtocolType {
			scheme = "https"
		}
	}
	port := r.Port
	switch {
	case port != 0:
	case r.Scheme == "https":
		port = 443
	case r.Scheme == "http":
		port = 80
	default:
		port = uint32(l.spec.Port)
	}
	if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		port = 0
	}
	out.Port = port
	return &out
}

// httpRouteRules turns an HTTPRoute's rules into routes (one per match)
// and returns them with the route's ResolvedRefs condition.
func (b *builder) httpRouteRules(hr *gatewayv1.HTTPRoute, idx int) ([]*Route, metav1.Condition) {
	gen := hr.Generation
	resolved := cond("ResolvedRefs", true, "ResolvedRefs", "all references are resolved", gen)
	fail := func(reason, msg string) {
		if resolved.Status == metav1.ConditionTrue {
			resolved = cond("ResolvedRefs", false, reason, msg, gen)
		}
	}
	var out []*Route
	for i, rule := range hr.Spec.Rules {
		tmpl := &Route{}
		unsupported := ""
		for _, f := range rule.Filters {
			if msg := b.routeFilter(hr, tmpl, f, fail); msg != "" && unsupported == "" {
				unsupported = msg
			}
		}
		if rule.Timeouts != nil {
			if rule.Timeouts.Request != nil {
				if d, err := time.ParseDuration(string(*rule.Timeouts.Request)); err == nil {
					tmpl.Timeout = &d
				}
			}
			if rule.Timeouts.BackendRequest != nil {
				if d, err := time.ParseDuration(string(*rule.Timeouts.BackendRequest)); err == nil && d > 0 {
					tmpl.Retry = &Retry{PerTryTimeout: d}
				}
			}
		}
		var total, invalid uint32
		for _, br := range rule.BackendRefs {
			wc, reason, err := b.httpBackend(hr, br.BackendObjectReference, br.Weight)
			if err != nil {
				if reason != backendPolicyInvalid {
					fail(reason, err.Error())
				}
				w := int32(1)
				if br.Weight != nil {
					w = max(*br.Weight, 0)
				}
				invalid += uint32(w)
				continue
			}
			for _, f := range br.Filters {
				switch f.Type {
				case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
					wc.RequestHeaders = headerModifier(f.RequestHeaderModifier)
				case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
					wc.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
				default:
					if unsupported == "" {
						unsupported = fmt.Sprintf("backendRef filter %s is not supported", f.Type)
					}
				}
			}
			if wc.Weight > 0 {
				total += wc.Weight
				tmpl.Clusters = append(tmpl.Clusters, *wc)
			}
		}
		switch {
		case unsupported != "":
			// A filter that cannot be applied must not be skipped: its
			// requests get a 500 (HTTPRouteFilter).
			tmpl.Clusters, tmpl.Redirect = nil, nil
			tmpl.Direct = &Direct{Status: 500}
		case tmpl.Redirect != nil:
			tmpl.Clusters = nil
		case total == 0:
			// No backend, every backend invalid or weighted 0: 500
			// (HTTPRouteRule.BackendRefs).
			tmpl.Clusters = nil
			tmpl.Direct = &Direct{Status: 500}
		case invalid > 0:
			// The share of the invalid backends gets a 500
			// (HTTPRouteRule.BackendRefs): a weighted cluster that does
			// not exist, answered with cluster_not_found_response_code.
			tmpl.Clusters = append(tmpl.Clusters, WeightedCluster{Cluster: &Cluster{Name: InvalidBackendCluster}, Weight: invalid})
			tmpl.InvalidBackend500 = true
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			r := *tmpl
			r.order = routeOrder{route: idx, rule: i, match: j}
			if err := routeMatch(&r, m); err != nil {
				fail("UnsupportedValue", err.Error())
				continue
			}
			if tmpl.RegexRewrite == prefixRewriteMarker {
				r.RegexRewrite, r.RegexSubst = prefixRewrite(r.Path, tmpl.RegexSubst)
			}
			if tmpl.Redirect != nil && tmpl.Redirect.PathRegex == prefixRewriteMarker {
				red := *tmpl.Redirect
				red.PathRegex, red.PathSubst = prefixRewrite(r.Path, tmpl.Redirect.PathSubst)
				r.Redirect = &red
			}
			out = append(out, &r)
		}
	}
	return out, resolved
}

// InvalidBackendCluster is the name of the cluster, never served, that
// stands for a route's invalid backends in its weighted clusters.
const InvalidBackendCluster = "gateway-api/invalid-backend"

// prefixRewriteMarker marks a ReplacePrefixMatch rewrite until the match's
// path is known.
const prefixRewriteMarker = "\x00prefix"

// prefixRewrite renders ReplacePrefixMatch for a path prefix as an anchored
// regex_rewrite, which replaces only the matched prefix: with the
// replacement's trailing "/" dropped, "/foo" → "/xyz" gives /foo/bar →
// /xyz/bar and /foo → /xyz; an empty (or "/") replacement also eats the
// slashes after the prefix and puts back one, so /foo/bar → /bar and /foo
// → / (the Gateway API's ReplacePrefixMatch table).
func prefixRewrite(p PathMatch, repl string) (string, string) {
	prefix := strings.TrimSuffix(p.Value, "/")
	repl = strings.TrimSuffix(repl, "/")
	if repl == "" {
		return "^" + regexp.QuoteMeta(prefix) + "/*", "/"
	}
	return "^" + regexp.QuoteMeta(prefix), repl
}

// routeFilter applies one rule-level filter to the route template; it
// returns why the filter is not supported ("" when applied).
func (b *builder) routeFilter(hr *gatewayv1.HTTPRoute, r *Route, f gatewayv1.HTTPRouteFilter, fail func(reason, msg string)) string {
	switch f.Type {
	case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
		if f.RequestHeaderModifier == nil {
			return "RequestHeaderModifier filter without requestHeaderModifier"
		}
		// A URLRewrite hostname may come first: keep it.
		hp := headerModifier(f.RequestHeaderModifier)
		if r.RequestHeaders != nil {
			hp.HostRewrite = r.RequestHeaders.HostRewrite
		}
		r.RequestHeaders = hp
	case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
		if f.ResponseHeaderModifier == nil {
			return "ResponseHeaderModifier filter without responseHeaderModifier"
		}
		r.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
	case gatewayv1.HTTPRouteFilterRequestRedirect:
		rr := f.RequestRedirect
		if rr == nil {
			return "RequestRedirect filter without requestRedirect"
		}
		red := &Redirect{Code: 302}
		if rr.StatusCode != nil {
			red.Code = *rr.StatusCode
		}
		if rr.Scheme != nil {
			red.Scheme = *rr.Scheme
		}
		if rr.Hostname != nil {
			red.Host = string(*rr.Hostname)
		}
		if rr.Port != nil {
			red.Port = uint32(*rr.Port)
		}
		red.gateway = true // the port is settled per listener
		if rr.Path != nil {
			switch rr.Path.Type {
			case gatewayv1.FullPathHTTPPathModifier:
				if rr.Path.ReplaceFullPath != nil {
					red.Path = *rr.Path.ReplaceFullPath
				}
			case gatewayv1.PrefixMatchHTTPPathModifier:
				if rr.Path.ReplacePrefixMatch != nil {
					red.PathRegex, red.PathSubst = prefixRewriteMarker, *rr.Path.ReplacePrefixMatch
				}
			}
		}
		r.Redirect = red
	case gatewayv1.HTTPRouteFilterURLRewrite:
		ur := f.URLRewrite
		if ur == nil {
			return "URLRewrite filter without urlRewrite"
		}
		if ur.Hostname != nil {
			if r.RequestHeaders == nil {
				r.RequestHeaders = &HeadersPolicy{}
			}
			r.RequestHeaders.HostRewrite = string(*ur.Hostname)
		}
		if ur.Path != nil {
			switch ur.Path.Type {
			case gatewayv1.FullPathHTTPPathModifier:
				if ur.Path.ReplaceFullPath != nil {
					r.RegexRewrite, r.RegexSubst = "^/.*$", *ur.Path.ReplaceFullPath
				}
			case gatewayv1.PrefixMatchHTTPPathModifier:
				if ur.Path.ReplacePrefixMatch != nil {
					r.RegexRewrite, r.RegexSubst = prefixRewriteMarker, *ur.Path.ReplacePrefixMatch
				}
			}
		}
	case gatewayv1.HTTPRouteFilterRequestMirror:
		rm := f.RequestMirror
		if rm == nil {
			return "RequestMirror filter without requestMirror"
		}
		wc, reason, err := b.httpBackend(hr, rm.BackendRef, nil)
		if err != nil {
			if reason != backendPolicyInvalid {
				fail(reason, "requestMirror: "+err.Error())
			}
			return ""
		}
		r.Mirrors = append(r.Mirrors, Mirror{Cluster: wc.Cluster, PerMillion: mirrorShare(rm)})
	case gatewayv1.HTTPRouteFilterCORS:
		if f.CORS == nil {
			return "CORS filter without cors"
		}
		r.CORS = gatewayCORS(f.CORS)
	default:
		return fmt.Sprintf("filter %s is not supported", f.Type)
	}
	return ""
}

func headerModifier(m *gatewayv1.HTTPHeaderFilter) *HeadersPolicy {
	if m == nil {
		return nil
	}
	h := &HeadersPolicy{Remove: m.Remove}
	for _, s := range m.Set {
		h.Set = append(h.Set, KV{Name: string(s.Name), Value: s.Value})
	}
	for _, a := range m.Add {
		h.Add = append(h.Add, KV{Name: string(a.Name), Value: a.Value})
	}
	return h
}

// httpBackend resolves a backendRef to a weighted Service cluster, or says
// why not with the ResolvedRefs reason.
func (b *builder) httpBackend(hr *gatewayv1.HTTPRoute, ref gatewayv1.BackendObjectReference, weight *int32) (*WeightedCluster, string, error) {
	return b.routeBackend("HTTPRoute", hr.Namespace, ref, weight, "")
}

// routeBackend resolves a backendRef of a route of kind in namespace
// from; protocol, when set, is the cluster's (GRPCRoute: h2c) unless the
// Service says otherwise.
func (b *builder) routeBackend(kind, from string, ref gatewayv1.BackendObjectReference, weight *int32, protocol string) (*WeightedCluster, string, error) {
	if (ref.Group != nil && *ref.Group != "") || (ref.Kind != nil && *ref.Kind != "Service") {
		return nil, "InvalidKind", fmt.Errorf("backendRef %s is not a core Service", ref.Name)
	}
	ns := from
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	if ns != from && !b.refGranted(gatewayv1.GroupName, kind, from, "", "Service", ns, string(ref.Name)) {
		return nil, "RefNotPermitted", fmt.Errorf("backendRef %s/%s is in another namespace and no ReferenceGrant there allows it", ns, ref.Name)
	}
	if ref.Port == nil {
		return nil, "UnsupportedValue", fmt.Errorf("backendRef %s/%s needs a port", ns, ref.Name)
	}
	svc, p, err := b.servicePort(types.NamespacedName{Namespace: ns, Name: string(ref.Name)}, intstr.FromInt32(int32(*ref.Port)))
	if err != nil {
		return nil, "BackendNotFound", err
	}
	proto := annotatedProtocol(svc, p)
	if proto == "" {
		proto = serviceAppProtocol(p)
	}
	if proto == "" {
		proto = protocol
	}
	cs := clusterSpec{protocol: proto}
	if kind == "HTTPRoute" || kind == "GRPCRoute" {
		// A BackendTLSPolicy of the Service (port): TLS to the backend,
		// or, when the policy is not accepted, requests that fail.
		if ps := b.backendTLSPolicy(svc, p); len(ps) > 0 {
			b.usedPolicies = append(b.usedPolicies, ps...)
			if err := applyTLSPolicy(&cs, ps[0]); err != nil {
				return nil, backendPolicyInvalid, err
			}
			cs.clientCert = b.backendCert
		}
	}
	w := uint32(1)
	if weight != nil {
		w = uint32(max(*weight, 0))
	}
	return &WeightedCluster{Cluster: b.cluster(svc, p, cs), Weight: w}, "", nil
}

// routeMatch sets a route's path, header, query and method conditions
// from one HTTPRouteMatch (default: every path).
func routeMatch(r *Route, m gatewayv1.HTTPRouteMatch) error {
	r.Path = PathMatch{Kind: "prefix", Value: "/"}
	if m.Path != nil && m.Path.Value != nil {
		v := *m.Path.Value
		t := gatewayv1.PathMatchPathPrefix
		if m.Path.Type != nil {
			t = *m.Path.Type
		}
		switch t {
		case gatewayv1.PathMatchExact:
			r.Path = PathMatch{Kind: "exact", Value: v}
		case gatewayv1.PathMatchPathPrefix:
			// Element-wise prefix; a trailing "/" is ignored.
			if v = strings.TrimSuffix(v, "/"); v != "" {
				r.Path = PathMatch{Kind: "segment", Value: v}
			}
		case gatewayv1.PathMatchRegularExpression:
			if _, err := regexp.Compile(v); err != nil {
				return fmt.Errorf("path regular expression %q: %w", v, err)
			}
			r.Path = PathMatch{Kind: "regex", Value: v}
		}
	}
	r.Headers = nil
	for _, h := range m.Headers {
		hm := HeaderMatch{Name: strings.ToLower(string(h.Name)), Kind: "exact", Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression {
			if _, err := regexp.Compile(h.Value); err != nil {
				return fmt.Errorf("header %s regular expression %q: %w", h.Name, h.Value, err)
			}
			hm.Kind = "regex"
		}
		r.Headers = append(r.Headers, hm)
	}
	if m.Method != nil {
		r.Headers = append(r.Headers, HeaderMatch{Name: ":method", Kind: "exact", Value: string(*m.Method)})
	}
	r.Query = nil
	for _, q := range m.QueryParams {
		qm := QueryMatch{Name: string(q.Name), Kind: "exact", Value: q.Value}
		if q.Type != nil && *q.Type == gatewayv1.QueryParamMatchRegularExpression {
			if _, err := regexp.Compile(q.Value); err != nil {
				return fmt.Errorf("query parameter %s regular expression %q: %w", q.Name, q.Value, err)
			}
			qm.Kind = "regex"
		}
		r.Query = append(r.Query, qm)
	}
	return nil
}

// grpcRouteRules turns a GRPCRoute's rules into routes: a method match is
// a path match on /<service>/<method> (exact, a service prefix, or a
// regular expression), headers match as HTTPRoute's; backends are h2c
// unless their Service says otherwise.
func (b *builder) grpcRouteRules(gr *gatewayv1.GRPCRoute, idx int) ([]*Route, metav1.Condition) {
	gen := gr.Generation
	resolved := cond("ResolvedRefs", true, "ResolvedRefs", "all references are resolved", gen)
	fail := func(reason, msg string) {
		if resolved.Status == metav1.ConditionTrue {
			resolved = cond("ResolvedRefs", false, reason, msg, gen)
		}
	}
	var out []*Route
	for i, rule := range gr.Spec.Rules {
		tmpl := &Route{}
		unsupported := ""
		for _, f := range rule.Filters {
			switch f.Type {
			case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
				tmpl.RequestHeaders = headerModifier(f.RequestHeaderModifier)
			case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
				tmpl.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
			case gatewayv1.GRPCRouteFilterRequestMirror:
				if f.RequestMirror == nil {
					unsupported = "RequestMirror filter without requestMirror"
					continue
				}
				wc, reason, err := b.routeBackend("GRPCRoute", gr.Namespace, f.RequestMirror.BackendRef, nil, "h2c")
				if err != nil {
					if reason != backendPolicyInvalid {
						fail(reason, "requestMirror: "+err.Error())
					}
					continue
				}
				tmpl.Mirrors = append(tmpl.Mirrors, Mirror{Cluster: wc.Cluster, PerMillion: mirrorShare(f.RequestMirror)})
			default:
				unsupported = fmt.Sprintf("filter %s is not supported", f.Type)
			}
		}
		var total uint32
		for _, br := range rule.BackendRefs {
			wc, reason, err := b.routeBackend("GRPCRoute", gr.Namespace, br.BackendObjectReference, br.Weight, "h2c")
			if err != nil {
				if reason != backendPolicyInvalid {
					fail(reason, err.Error())
				}
				continue
			}
			for _, f := range br.Filters {
				switch f.Type {
				case gatewayv1.GRPCRouteFilterRequestHeaderModifier:
					wc.RequestHeaders = headerModifier(f.RequestHeaderModifier)
				case gatewayv1.GRPCRouteFilterResponseHeaderModifier:
					wc.ResponseHeaders = headerModifier(f.ResponseHeaderModifier)
				default:
					unsupported = fmt.Sprintf("backendRef filter %s is not supported", f.Type)
				}
			}
			if wc.Weight > 0 {
				total += wc.Weight
				tmpl.Clusters = append(tmpl.Clusters, *wc)
			}
		}
		if unsupported != "" || total == 0 {
			tmpl.Clusters = nil
			tmpl.Direct = &Direct{Status: 500}
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.GRPCRouteMatch{{}}
		}
		for j, m := range matches {
			r := *tmpl
			r.order = routeOrder{route: idx, rule: i, match: j}
			if err := grpcMatch(&r, m); err != nil {
				fail("UnsupportedValue", err.Error())
				continue
			}
			out = append(out, &r)
		}
	}
	return out, resolved
}

// grpcMatch sets a route's conditions from one GRPCRouteMatch.
func grpcMatch(r *Route, m gatewayv1.GRPCRouteMatch) error {
	r.Path = PathMatch{Kind: "prefix", Value: "/"}
	if mm := m.Method; mm != nil {
		svc, method := "", ""
		if mm.Service != nil {
			svc = *mm.Service
		}
		if mm.Method != nil {
			method = *mm.Method
		}
		if mm.Type != nil && *mm.Type == gatewayv1.GRPCMethodMatchRegularExpression {
			if svc == "" {
				svc = "[^/]+"
			}
			if method == "" {
				method = "[^/]+"
			}
			re := "/" + svc + "/" + method
			if _, err := regexp.Compile(re); err != nil {
				return fmt.Errorf("method match %q: %w", re, err)
			}
			r.Path = PathMatch{Kind: "regex", Value: re}
		} else {
			switch {
			case svc != "" && method != "":
				r.Path = PathMatch{Kind: "exact", Value: "/" + svc + "/" + method}
			case svc != "":
				r.Path = PathMatch{Kind: "prefix", Value: "/" + svc + "/"}
			case method != "":
				r.Path = PathMatch{Kind: "regex", Value: "/[^/]+/" + regexp.QuoteMeta(method)}
			}
		}
	}
	r.Headers = nil
	for _, h := range m.Headers {
		hm := HeaderMatch{Name: strings.ToLower(string(h.Name)), Kind: "exact", Value: h.Value}
		if h.Type != nil && *h.Type == gatewayv1.GRPCHeaderMatchRegularExpression {
			if _, err := regexp.Compile(h.Value); err != nil {
				return fmt.Errorf("header %s regular expression %q: %w", h.Name, h.Value, err)
			}
			hm.Kind = "regex"
		}
		r.Headers = append(r.Headers, hm)
	}
	r.Query = nil
	return nil
}

// l4Refs lists the backendRefs of every rule of a TLSRoute or TCPRoute.
func l4Refs[R any](rules []R, refs func(R) []gatewayv1.BackendRef) []gatewayv1.BackendRef {
	var out []gatewayv1.BackendRef
	for _, r := range rules {
		out = append(out, refs(r)...)
	}
	return out
}

// l4Backends resolves a TLSRoute's or TCPRoute's backends into a weighted
// TCP proxy (nil when none is valid, which refuses connections).
func (b *builder) l4Backends(kind string, meta metav1.ObjectMeta, refs []gatewayv1.BackendRef) (*TCPProxy, metav1.Condition) {
	resolved := cond("ResolvedRefs", true, "ResolvedRefs", "all references are resolved", meta.Generation)
	tp := &TCPProxy{}
	for _, br := range refs {
		wc, reason, err := b.routeBackend(kind, meta.Namespace, br.BackendObjectReference, br.Weight, "")
		if err != nil {
			if resolved.Status == metav1.ConditionTrue {
				resolved = cond("ResolvedRefs", false, reason, err.Error(), meta.Generation)
			}
			continue
		}
		if wc.Weight > 0 {
			tp.Clusters = append(tp.Clusters, *wc)
		}
	}
	if len(tp.Clusters) == 0 {
		tp = nil
	}
	return tp, resolved
}

// attachL4 programs a TLSRoute (a passthrough filter chain per hostname,
// the oldest route keeping a hostname) or a TCPRoute (the listener's
// only route: the oldest wins) on a listener.
func (b *builder) attachL4(gr gatewayRoute, l *gwListener, hosts []string, tp *TCPProxy) {
	if tp == nil {
		// No valid backend: attached, but nothing serves it (the
		// listener closes its connections).
		return
	}
	switch gr.kind {
	case "TCPRoute":
		if l.l.TCPProxy == nil {
			l.l.TCPProxy = tp
		}
	case "TLSRoute":
		for _, h := range hosts {
			if h == "*" {
				h = ""
			}
			taken := false
			for _, c := range l.l.Chains {
				if c.Hostname == h {
					taken = true
				}
			}
			if !taken {
				l.l.Chains = append(l.l.Chains, &FilterChain{Name: l.gw.Namespace + "/" + l.gw.Name + "/" + string(l.spec.Name) + "/" + gr.meta.Name,
					Hostname: h, TCPProxy: tp, Secret: l.terminate})
			}
		}
	}
}

// mirrorShare is the share of requests a requestMirror filter copies, per
// million: its percent, or its fraction (denominator 100 when unset), or
// all. The API's validation bounds both (0-100, numerator <= denominator).
func mirrorShare(rm *gatewayv1.HTTPRequestMirrorFilter) uint32 {
	switch {
	case rm.Percent != nil:
		return uint32(min(max(*rm.Percent, 0), 100)) * 10000
	case rm.Fraction != nil:
		den := int64(100)
		if rm.Fraction.Denominator != nil && *rm.Fraction.Denominator > 0 {
			den = int64(*rm.Fraction.Denominator)
		}
		num := min(max(int64(rm.Fraction.Numerator), 0), den)
		return uint32(num * 1000000 / den)
	}
	return 1000000
}

// gatewayCORS maps an HTTPRoute CORS filter to a CORS policy: "*" alone
// allows any origin (Envoy then echoes the request's Origin, which the
// spec allows), and a wildcard host ("https://*.example.com") becomes an
// anchored regex in which "*" stands for one or more labels; maxAge
// defaults to 5 seconds, as the spec says; a preflight from another
// origin is answered, not forwarded, as the conformance suite expects.
func gatewayCORS(c *gatewayv1.HTTPCORSFilter) *CORSPolicy {
	p := &CORSPolicy{MaxAge: "5", AnswerUnmatchedPreflights: true}
	if c.AllowCredentials != nil {
		p.AllowCredentials = *c.AllowCredentials
	}
	if c.MaxAge > 0 {
		p.MaxAge = strconv.Itoa(int(c.MaxAge))
	}
	for _, o := range c.AllowOrigins {
		switch v := string(o); {
		case v == "*":
			p.AllowOrigin = append(p.AllowOrigin, OriginMatch{Regex: true, Value: ".*"})
		case strings.Contains(v, "*"):
			parts := strings.Split(v, "*")
			for i := range parts {
				parts[i] = regexp.QuoteMeta(parts[i])
			}
			p.AllowOrigin = append(p.AllowOrigin, OriginMatch{Regex: true, Value: "^" + strings.Join(parts, "[^/]+") + "$"})
		default:
			p.AllowOrigin = append(p.AllowOrigin, OriginMatch{Value: v})
		}
	}
	for _, m := range c.AllowMethods {
		p.AllowMethods = append(p.AllowMethods, string(m))
	}
	for _, h := range c.AllowHeaders {
		p.AllowHeaders = append(p.AllowHeaders, string(h))
	}
	for _, h := range c.ExposeHeaders {
		p.ExposeHeaders = append(p.ExposeHeaders, string(h))
	}
	return p
}

// ownsHostname reports whether listener l serves hostname h on its plain
// HTTP listener, which its Gateway's other listeners of that port share:
// not when another of them has a more specific hostname that h falls in
// (GatewayHTTPListenerIsolation: a request goes to the routes of the
// most specific listener matching its host only).
func ownsHostname(ls []*gwListener, l *gwListener, h string) bool {
	mine := hostnameOf(l.spec.Hostname)
	for _, o := range ls {
		if o == l || !o.valid || o.l != l.l {
			continue
		}
		oh := hostnameOf(o.spec.Hostname)
		if oh == "" || !hostMatches(oh, h) {
			continue
		}
		if moreSpecific(oh, mine) {
			return false
		}
	}
	return true
}

// moreSpecific reports whether listener hostname a is narrower than b:
// an exact name beats a wildcard, a longer wildcard a shorter one, and
// any hostname none.
func moreSpecific(a, b string) bool {
	switch {
	case a == b:
		return false
	case b == "":
		return true
	case a == "":
		return false
	}
	aw, bw := strings.HasPrefix(a, "*"), strings.HasPrefix(b, "*")
	if aw != bw {
		return !aw
	}
	return len(a) > len(b)
}

// misdirected answers 421 Misdirected Request (RFC 9110 §15.5.20) on an
// HTTPS listener's terminating chains for the hosts another of its
// listeners serves: a client that reuses a connection (HTTP/2
// coalescing, RFC 9113 §9.1.1) for a host its SNI did not name reaches
// the chain its SNI chose, whose routes are not that host's. A chain
// with a hostname answers 421 for any host outside it too; one without
// (any SNI) answers 421 only for the hosts of the other listeners.
func misdirected(l *Listener) {
	for _, c := range l.Chains {
		if c.VirtualHosts == nil {
			continue // TLS passthrough: no HTTP
		}
		add := func(host string) {
			if c.VirtualHosts[host] != nil {
				return
			}
			c.VirtualHosts[host] = &VirtualHost{Name: host, Routes: []*Route{{
				Path: PathMatch{Kind: "prefix", Value: "/"}, Direct: &Direct{Status: 421}}}}
		}
		for _, o := range l.Chains {
			if o == c || o.Hostname == "" {
				continue
			}
			if c.Hostname == "" || (hostMatches(c.Hostname, o.Hostname) && moreSpecific(o.Hostname, c.Hostname)) {
				add(o.Hostname)
			}
		}
		if c.Hostname != "" {
			add("*")
		}
	}
}
