package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// JWTProvider is one of a TLS virtual host's jwtProviders, rendered in the
// envoy.filters.http.jwt_authn filter of its HTTPS filter chain.
type JWTProvider struct {
	Name       string
	Issuer     string
	Audiences  []string
	ForwardJWT bool
	// LocalJWKS is the key set from a Secret; otherwise RemoteJWKS is set.
	LocalJWKS  []byte
	RemoteJWKS *RemoteJWKS
}

// RemoteJWKS is a key set fetched over HTTP(S) through Cluster.
type RemoteJWKS struct {
	URI           string
	Timeout       time.Duration
	CacheDuration *time.Duration
	// Cluster is the DNS cluster of the URI's host (Contour's
	// dnsname/<scheme>/<host>).
	Cluster *Cluster
}

// jwtProviders validates a root's jwtProviders as Contour's
// httpproxy_processor (reasons and texts are Contour's) and returns them
// with the default provider's name. ok is false when the root is invalid.
func (b *builder) jwtProviders(p *contourv1.HTTPProxy, st *ProxyStatus) (out []JWTProvider, def string, ok bool) {
	vh := p.Spec.VirtualHost
	if len(vh.JWTProviders) == 0 {
		return nil, "", true
	}
	if vh.TLS == nil || vh.TLS.SecretName == "" {
		st.errorf(ErrJWT, "JWTVerificationNotPermitted", "Spec.VirtualHost.JWTProviders can only be defined for root HTTPProxies that terminate TLS")
		return nil, "", false
	}
	if vh.TLS.EnableFallbackCertificate {
		// Fallback aggregates several virtual hosts on one HCM, which
		// cannot carry each one's providers.
		st.errorf(ErrTLS, "TLSIncompatibleFeatures", "Spec.Virtualhost.TLS fallback & JWT providers are incompatible")
		return nil, "", false
	}
	names := map[string]bool{}
	for _, jp := range vh.JWTProviders {
		if names[jp.Name] {
			st.errorf(ErrJWT, "DuplicateProviderName", "Spec.VirtualHost.JWTProviders is invalid: duplicate name %s", jp.Name)
			return nil, "", false
		}
		names[jp.Name] = true
		if jp.Default {
			if def != "" {
				st.errorf(ErrJWT, "MultipleDefaultProvidersSpecified", "Spec.VirtualHost.JWTProviders is invalid: at most one provider can be set as the default")
				return nil, "", false
			}
			def = jp.Name
		}
		if jp.RemoteJWKS.URI != "" && jp.LocalJWKS.SecretName != "" {
			st.errorf(ErrJWT, "JWKSSourceConflict", "Spec.VirtualHost.JWTProviders for provider %q is invalid: at most one of remoteJWKS or localJWKS may be set", jp.Name)
			return nil, "", false
		}
		if jp.RemoteJWKS.URI == "" && jp.LocalJWKS.SecretName == "" {
			st.errorf(ErrJWT, "JWKSSourceMissing", "Spec.VirtualHost.JWTProviders for provider %q is invalid: exactly one of remoteJWKS or localJWKS must be set", jp.Name)
			return nil, "", false
		}
		prov := JWTProvider{Name: jp.Name, Issuer: jp.Issuer, Audiences: jp.Audiences, ForwardJWT: jp.ForwardJWT}
		if jp.LocalJWKS.SecretName != "" {
			data, err := b.jwksSecret(types.NamespacedName{Namespace: p.Namespace, Name: jp.LocalJWKS.SecretName}, jp.LocalJWKS.Key)
			if err != nil {
				st.errorf(ErrJWT, "LocalJWKSInvalid", "Spec.VirtualHost.JWTProviders.LocalJWKS for provider %q is invalid: %s", jp.Name, err)
				return nil, "", false
			}
			prov.LocalJWKS = data
		} else {
			r, ok := b.remoteJWKS(p, &jp.RemoteJWKS, st)
			if !ok {
				return nil, "", false
			}
			prov.RemoteJWKS = r
		}
		out = append(out, prov)
	}
	return out, def, true
}

func (b *builder) remoteJWKS(p *contourv1.HTTPProxy, r *contourv1.RemoteJWKS, st *ProxyStatus) (*RemoteJWKS, bool) {
	u, err := url.Parse(r.URI)
	if err != nil {
		st.errorf(ErrJWT, "RemoteJWKSURIInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.URI is invalid: %s", err)
		return nil, false
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		st.errorf(ErrJWT, "RemoteJWKSSchemeInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.URI has invalid scheme %q, must be http or https", u.Scheme)
		return nil, false
	}
	cs := clusterSpec{lb: "ROUND_ROBIN"}
	if u.Scheme == "https" {
		cs.protocol = "tls"
	}
	if uv := r.UpstreamValidation; uv != nil {
		if u.Scheme == "http" {
			st.errorf(ErrJWT, "RemoteJWKSUpstreamValidationInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.UpstreamValidation must not be specified when URI scheme is http.")
			return nil, false
		}
		key, err := b.secretRef(uv.CACertificate, p.Namespace)
		if err != nil {
			st.errorf(ErrJWT, "RemoteJWKSCACertificateNotDelegated", "Spec.VirtualHost.JWTProviders.RemoteJWKS.UpstreamValidation.CACertificate Secret %q is not configured for certificate delegation", key)
			return nil, false
		}
		ca, err := b.caSecret(key)
		if err != nil {
			st.errorf(ErrJWT, "RemoteJWKSUpstreamValidationInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.UpstreamValidation is invalid: %s", err)
			return nil, false
		}
		cs.ca = ca
		cs.subjectNames = uv.SubjectNames
		if len(cs.subjectNames) == 0 && uv.SubjectName != "" {
			cs.subjectNames = []string{uv.SubjectName}
		}
		if len(cs.subjectNames) == 0 {
			st.errorf(ErrJWT, "RemoteJWKSUpstreamValidationInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.UpstreamValidation is invalid: subjectName must be specified")
			return nil, false
		}
	}
	out := &RemoteJWKS{URI: r.URI, Timeout: time.Second}
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil {
			st.errorf(ErrJWT, "RemoteJWKSTimeoutInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.Timeout is invalid: %s", err)
			return nil, false
		}
		out.Timeout = d
	}
	if r.CacheDuration != "" {
		d, err := time.ParseDuration(r.CacheDuration)
		if err != nil {
			st.errorf(ErrJWT, "RemoteJWKSCacheDurationInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.CacheDuration is invalid: %s", err)
			return nil, false
		}
		out.CacheDuration = &d
	}
	port := 80
	if u.Scheme == "https" {
		port = 443
	}
	if u.Port() != "" {
		n, err := strconv.Atoi(u.Port())
		if err != nil || n < 1 || n > 65535 {
			st.errorf(ErrJWT, "RemoteJWKSPortInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.URI has an invalid port: %s", u.Port())
			return nil, false
		}
		port = n
	}
	switch r.DNSLookupFamily {
	case "", "auto", "v4", "v6", "all":
	default:
		st.errorf(ErrJWT, "RemoteJWKSDNSLookupFamilyInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.DNSLookupFamily has an invalid value %q, must be auto, all, v4 or v6", r.DNSLookupFamily)
		return nil, false
	}
	host := u.Hostname()
	name := "dnsname/" + u.Scheme + "/" + host
	if c := b.m.Clusters[name]; c != nil {
		if c.DNSLookupFamily != r.DNSLookupFamily || c.UpstreamCA != cs.ca || !slices.Equal(c.SubjectNames, cs.subjectNames) || c.Port.Port != int32(port) {
			// Contour names the cluster by scheme and host only, too.
			st.errorf(ErrJWT, "RemoteJWKSClusterConflict", "Spec.VirtualHost.JWTProviders.RemoteJWKS.URI %q: another remote JWKS on %s://%s uses a different port, validation or DNS lookup family (they share the cluster %s)", r.URI, u.Scheme, host, name)
			return nil, false
		}
		out.Cluster = c
		return out, true
	}
	c := &Cluster{Name: name, Service: types.NamespacedName{Namespace: "dnsname", Name: host}, Port: corev1.ServicePort{Port: int32(port)},
		Protocol: cs.protocol, LBPolicy: cs.lb, UpstreamCA: cs.ca, SubjectNames: cs.subjectNames, ExternalName: host, DNSLookupFamily: r.DNSLookupFamily}
	if cs.protocol == "tls" {
		c.SNI = host
	}
	b.m.Clusters[name] = c
	out.Cluster = c
	return out, true
}

// jwksSecret is an Opaque Secret's JWKS under key, checked as Contour's
// validJWKSSecret.
func (b *builder) jwksSecret(key types.NamespacedName, k string) ([]byte, error) {
	s := b.objs.Secrets[key]
	if s == nil {
		return nil, errors.New("Secret not found")
	}
	if s.Type != corev1.SecretTypeOpaque && s.Type != "" {
		return nil, fmt.Errorf("secret type is not %q", corev1.SecretTypeOpaque)
	}
	data := s.Data[k]
	if len(data) == 0 {
		return nil, fmt.Errorf("missing %q key or empty value", k)
	}
	trim := bytes.TrimSpace(data)
	var v any
	if err := json.Unmarshal(trim, &v); err != nil {
		return nil, fmt.Errorf("not valid JSON: %w", err)
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("JWKS must be a JSON object")
	}
	keys, has := obj["keys"]
	if !has {
		return nil, errors.New("JWKS must contain a \"keys\" array")
	}
	if _, ok := keys.([]any); !ok {
		return nil, errors.New("JWKS \"keys\" must be an array")
	}
	return data, nil
}
