package model

import (
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
)

// ConfigDefaults are the model settings of Contour's configuration file
// (package contourconfig fills them; the zero value is Contour's
// defaults).
type ConfigDefaults struct {
	// DisablePermitInsecure ignores routes' permitInsecure: every route of
	// a TLS virtual host redirects HTTP to HTTPS (disablePermitInsecure).
	DisablePermitInsecure bool
	// EnableExternalNameService allows routes to ExternalName Services;
	// Contour refuses them by default (GHSA-5ph6-qq5x-7jwc).
	EnableExternalNameService bool
	// MinTLSVersion and MaxTLSVersion are the TLS virtual hosts'
	// defaults ("1.2", "1.3": tls.minimum/maximum-protocol-version).
	MinTLSVersion, MaxTLSVersion string
	// DNSLookupFamily of ExternalName clusters (cluster.dns-lookup-family):
	// auto, v4, v6 or all.
	DNSLookupFamily string
	// RequestHeaders and ResponseHeaders are set on every service of an
	// HTTPProxy (and of an Ingress with HeadersToIngress) unless the
	// service sets the same header (policy.request-headers,
	// policy.response-headers, policy.applyToIngress).
	RequestHeaders, ResponseHeaders *HeadersPolicy
	HeadersToIngress                bool
	// CircuitBreakers are cluster.circuit-breakers: each threshold a
	// Service's annotation leaves unset, and an ExtensionService's
	// thresholds when it has no circuitBreakerPolicy.
	CircuitBreakers *CircuitBreakers
	// RateLimitService is the global rate limit service (rateLimitService);
	// nil for none.
	RateLimitService *RateLimitServiceConfig
	// Tracing is the tracing block: every HTTP connection manager traces
	// with OpenTelemetry to an ExtensionService; nil for none.
	Tracing *TracingConfig
}

func (b *builder) minTLS() string {
	if v := b.opt.Config.MinTLSVersion; v != "" {
		return v
	}
	return "1.2"
}

func (b *builder) maxTLS() string {
	if v := b.opt.Config.MaxTLSVersion; v != "" {
		return v
	}
	return "1.3"
}

// externalNameAllowed refuses ExternalName Services unless enabled, and
// those naming the proxy itself, with Contour's messages.
func (b *builder) externalNameAllowed(svc *corev1.Service) error {
	if svc == nil || svc.Spec.Type != corev1.ServiceTypeExternalName {
		return nil
	}
	if !b.opt.Config.EnableExternalNameService {
		return fmt.Errorf("%s/%s is an ExternalName service, these are not currently enabled. See the config.enableExternalNameService config file setting", svc.Namespace, svc.Name)
	}
	switch svc.Spec.ExternalName {
	case "localhost", "localhost.localdomain", "local.projectcontour.io":
		return fmt.Errorf("%s/%s is an ExternalName service that points to localhost, this is not allowed", svc.Namespace, svc.Name)
	}
	return nil
}

// withDefaultHeaders merges the configuration file's default policy into
// a service's: the service's own values win, as Contour.
func withDefaultHeaders(def, p *HeadersPolicy) *HeadersPolicy {
	if def == nil || (len(def.Set) == 0 && len(def.Remove) == 0) {
		return p
	}
	out := &HeadersPolicy{}
	if p != nil {
		cp := *p
		cp.Set = append([]KV(nil), p.Set...)
		cp.Remove = append([]string(nil), p.Remove...)
		out = &cp
	}
	has := map[string]bool{}
	for _, kv := range out.Set {
		has[http.CanonicalHeaderKey(kv.Name)] = true
	}
	for _, r := range out.Remove {
		has[http.CanonicalHeaderKey(r)] = true
	}
	for _, kv := range def.Set {
		if !has[http.CanonicalHeaderKey(kv.Name)] {
			out.Set = append(out.Set, kv)
		}
	}
	for _, r := range def.Remove {
		if !has[http.CanonicalHeaderKey(r)] {
			out.Remove = append(out.Remove, r)
		}
	}
	return out
}

// ingressCluster is an Ingress backend as a weighted cluster, with the
// default header policies when they apply to Ingress.
func (b *builder) ingressCluster(c *Cluster) WeightedCluster {
	wc := WeightedCluster{Cluster: c, Weight: 1}
	if b.opt.Config.HeadersToIngress {
		wc.RequestHeaders = withDefaultHeaders(b.opt.Config.RequestHeaders, nil)
		wc.ResponseHeaders = withDefaultHeaders(b.opt.Config.ResponseHeaders, nil)
	}
	return wc
}
