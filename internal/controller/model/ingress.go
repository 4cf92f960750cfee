package model

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Ingress annotations honoured as Contour does.
const (
	annotationClass          = "kubernetes.io/ingress.class"
	annotationContourClass   = "projectcontour.io/ingress.class"
	annotationCertNamespace  = "projectcontour.io/tls-cert-namespace"
	annotationMinTLS         = "projectcontour.io/tls-minimum-protocol-version"
	annotationMaxTLS         = "projectcontour.io/tls-maximum-protocol-version"
	annotationForceSSL       = "ingress.kubernetes.io/force-ssl-redirect"
	annotationAllowHTTP      = "kubernetes.io/ingress.allow-http"
	annotationWebsocket      = "projectcontour.io/websocket-routes"
	annotationResponseTimout = "projectcontour.io/response-timeout"
	annotationNumRetries     = "projectcontour.io/num-retries"
	annotationPerTryTimeout  = "projectcontour.io/per-try-timeout"
	annotationRetryOn        = "projectcontour.io/retry-on"
)

// objectClass is the class of an Ingress or HTTPProxy as Contour's
// ingressclass package reads it: the projectcontour.io/ingress.class
// annotation, else kubernetes.io/ingress.class, else the spec's
// ingressClassName (annotations take precedence over the spec field).
func objectClass(annotations map[string]string, spec string) string {
	for _, a := range []string{annotationContourClass, annotationClass} {
		if c, ok := annotations[a]; ok && c != "" {
			return c
		}
	}
	return spec
}

func ingressClass(ing *networkingv1.Ingress) string {
	spec := ""
	if ing.Spec.IngressClassName != nil {
		spec = *ing.Spec.IngressClassName
	}
	return objectClass(ing.Annotations, spec)
}

// annotatedTLSVersion is Contour's annotation.TLSVersion: "1.2" or "1.3",
// anything else (absent or unknown) the default.
func annotatedTLSVersion(v, def string) string {
	if v == "1.2" || v == "1.3" {
		return v
	}
	return def
}

// regexChars marks an ImplementationSpecific path that Contour treats as a
// regular expression.
const regexChars = "^+*[]%"

func (b *builder) ingresses() {
	for _, k := range sortedKeys(b.objs.Ingresses) {
		ing := b.objs.Ingresses[k]
		st := &IngressStatus{Object: k}
		if !b.classMatches(ingressClass(ing)) {
			continue
		}
		st.Served = true
		b.m.Ingresses[k] = st
		b.ingress(ing, st)
	}
}

func (b *builder) ingress(ing *networkingv1.Ingress, st *IngressStatus) {
	problem := func(format string, args ...any) { st.Problems = append(st.Problems, fmt.Sprintf(format, args...)) }
	a := ing.Annotations
	forceSSL := a[annotationForceSSL] == "true"
	allowHTTP := a[annotationAllowHTTP] != "false"
	websockets := map[string]bool{}
	for _, p := range strings.Split(a[annotationWebsocket], ",") {
		if p = strings.TrimSpace(p); p != "" {
			websockets[p] = true
		}
	}
	var timeout *time.Duration
	if v, ok := a[annotationResponseTimout]; ok {
		d, err := parseTimeout(v)
		if err != nil {
			problem("%s: %v", annotationResponseTimout, err)
		} else {
			timeout = &d
		}
	}
	var retry *Retry
	if v, ok := a[annotationNumRetries]; ok || a[annotationRetryOn] != "" {
		retry = &Retry{NumRetries: 1, RetryOn: "5xx"}
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			retry.NumRetries = uint32(n)
		}
		if d, err := time.ParseDuration(a[annotationPerTryTimeout]); err == nil {
			retry.PerTryTimeout = d
		}
		if on := a[annotationRetryOn]; on != "" {
			retry.RetryOn = on
		}
	}

	// TLS hosts and their secrets. As Contour, the versions come from
	// the Ingress's annotations, and a minimum above the maximum serves
	// none of its TLS hosts.
	tlsHosts := map[string]*Secret{}
	minTLS, maxTLS := annotatedTLSVersion(a[annotationMinTLS], b.minTLS()), annotatedTLSVersion(a[annotationMaxTLS], b.maxTLS())
	tlsSpec := ing.Spec.TLS
	if maxTLS < minTLS {
		problem("%s %s is above %s %s: the Ingress's TLS hosts are not served", annotationMinTLS, minTLS, annotationMaxTLS, maxTLS)
		tlsSpec = nil
	}
	for _, t := range tlsSpec {
		ref := t.SecretName
		// projectcontour.io/tls-cert-namespace names the namespace of
		// a secret given without one (Contour's
		// TLSCertAnnotationNamespace); delegation still applies.
		if ns := a[annotationCertNamespace]; ns != "" && !strings.Contains(ref, "/") {
			ref = ns + "/" + ref
		}
		key, err := b.secretRef(ref, ing.Namespace)
		if err != nil {
			problem("spec.tls secret %q: %v", t.SecretName, err)
			continue
		}
		sec, err := b.tlsSecret(key)
		if err != nil {
			problem("spec.tls secret %q: %v", t.SecretName, err)
			continue
		}
		for _, h := range t.Hosts {
			tlsHosts[h] = sec
		}
	}

	backend := func(be networkingv1.IngressBackend) *Cluster {
		if be.Service == nil {
			problem("backends other than a Service are not supported")
			return nil
		}
		port := intstr.FromInt32(be.Service.Port.Number)
		if be.Service.Port.Name != "" {
			port = intstr.FromString(be.Service.Port.Name)
		}
		svc, p, err := b.servicePort(types.NamespacedName{Namespace: ing.Namespace, Name: be.Service.Name}, port)
		if err == nil {
			err = b.externalNameAllowed(svc)
		}
		if err != nil {
			problem("%v", err)
			return nil
		}
		return b.cluster(svc, p, clusterSpec{protocol: annotatedProtocol(svc, p)})
	}
	add := func(host string, r *Route) {
		if sec := tlsHosts[host]; sec != nil && host != "*" {
			svh := b.secure(host)
			if svh.Secret == nil {
				svh.Secret = sec
				svh.MinVersion, svh.MaxVersion = minTLS, maxTLS
			}
			svh.Routes = append(svh.Routes, r)
			if !allowHTTP {
				return
			}
			if forceSSL {
				cp := *r
				cp.HTTPSRedirect = true
				r = &cp
			}
		}
		vh := b.insecure(host)
		vh.Routes = append(vh.Routes, r)
	}

	if db := ing.Spec.DefaultBackend; db != nil {
		if c := backend(*db); c != nil {
			add("*", &Route{Path: PathMatch{Kind: "prefix", Value: "/"}, Clusters: []WeightedCluster{b.ingressCluster(c)},
				Timeout: timeout, Retry: retry, Websocket: websockets["/"]})
		}
	}
	for _, rule := range ing.Spec.Rules {
		host := rule.Host
		if host == "" {
			host = "*"
		}
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			c := backend(p.Backend)
			if c == nil {
				continue
			}
			pm := ingressPath(p)
			add(host, &Route{Path: pm, Clusters: []WeightedCluster{b.ingressCluster(c)},
				Timeout: timeout, Retry: retry, Websocket: websockets[pm.Value]})
		}
	}
}

func ingressPath(p networkingv1.HTTPIngressPath) PathMatch {
	path := p.Path
	if path == "" {
		path = "/"
	}
	kind := networkingv1.PathTypeImplementationSpecific
	if p.PathType != nil {
		kind = *p.PathType
	}
	switch kind {
	case networkingv1.PathTypeExact:
		return PathMatch{Kind: "exact", Value: path}
	case networkingv1.PathTypePrefix:
		if path == "/" {
			return PathMatch{Kind: "prefix", Value: "/"}
		}
		return PathMatch{Kind: "segment", Value: strings.TrimSuffix(path, "/")}
	}
	if strings.ContainsAny(path, regexChars) {
		return PathMatch{Kind: "regex", Value: path}
	}
	return PathMatch{Kind: "prefix", Value: path}
}
