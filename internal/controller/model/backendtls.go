package model

import (
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// BackendTLSPolicies (gateway.networking.k8s.io/v1): TLS from the proxy to
// the Services that HTTPRoute and GRPCRoute backendRefs name. A policy
// targets a Service, or one port of it by name (sectionName); a port's
// own policy wins over its Service's. Of the policies with the same
// target, the oldest (then the first by namespace/name) applies and the
// others are Accepted False, Conflicted. The status of a policy has one
// ancestor per Gateway of the routes that use it.

// BackendTLSPolicyStatus is the computed status of a BackendTLSPolicy:
// the same conditions for each Gateway (ancestor) whose routes use it.
type BackendTLSPolicyStatus struct {
	Key        types.NamespacedName
	Generation int64
	Ancestors  []gatewayv1.ParentReference
	Conditions []metav1.Condition
}

// maxPolicyAncestors is the CRD's limit on status.ancestors.
const maxPolicyAncestors = 16

// backendPolicyInvalid is the routeBackend reason of a backend whose
// BackendTLSPolicy is not accepted: the reference resolved, but its
// requests must fail (a 500), and the route's ResolvedRefs stays true.
const backendPolicyInvalid = "BackendTLSPolicyInvalid"

// tlsTarget is what a policy's targetRef selects: a Service, or one port
// of it by name.
type tlsTarget struct {
	svc     types.NamespacedName
	section string
}

// tlsPolicy is a validated BackendTLSPolicy.
type tlsPolicy struct {
	obj    *gatewayv1.BackendTLSPolicy
	status *BackendTLSPolicyStatus
	// valid policies apply: the cluster's SNI, CA (or the system's trust
	// store) and subject names.
	valid      bool
	conflicted bool
	ca         *Secret
	system     bool
	sni        string
	dnsNames   []string
	uris       []string
	// invalidWhy is the Accepted reason of a policy that is not valid,
	// invalidMsg its message.
	invalidWhy  string
	invalidMsg  string
	gatewayKeys map[types.NamespacedName]bool
}

// backendTLSPolicies validates every BackendTLSPolicy and resolves which
// applies to each target, before the routes that use them.
func (b *builder) backendTLSPolicies() {
	b.tlsPolicies = map[tlsTarget][]*tlsPolicy{}
	ps := make([]*gatewayv1.BackendTLSPolicy, 0, len(b.objs.BackendTLSPolicies))
	for _, p := range b.objs.BackendTLSPolicies {
		ps = append(ps, p)
	}
	// Precedence (BackendTLSPolicySpec.TargetRefs): the oldest, then the
	// first by namespace/name.
	slices.SortFunc(ps, func(a, c *gatewayv1.BackendTLSPolicy) int {
		if d := a.CreationTimestamp.Compare(c.CreationTimestamp.Time); d != 0 {
			return d
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, c.Namespace+"/"+c.Name)
	})
	for _, p := range ps {
		tp := b.validateTLSPolicy(p)
		for _, t := range p.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" {
				continue // only Services are targets
			}
			k := tlsTarget{svc: types.NamespacedName{Namespace: p.Namespace, Name: string(t.Name)}}
			if t.SectionName != nil {
				k.section = string(*t.SectionName)
			}
			if len(b.tlsPolicies[k]) > 0 {
				// The older policy (first in the list) keeps this
				// target; this one still applies to its other targets,
				// and is listed here for its Conflicted status.
				tp.conflicted = true
			}
			b.tlsPolicies[k] = append(b.tlsPolicies[k], tp)
		}
		gen := p.Generation
		accepted := cond("Accepted", true, "Accepted", "BackendTLSPolicy accepted", gen)
		switch {
		case tp.conflicted:
			accepted = cond("Accepted", false, "Conflicted", "an older BackendTLSPolicy targets the same Service (and sectionName): it takes precedence", gen)
		case tp.invalidWhy != "":
			accepted = cond("Accepted", false, tp.invalidWhy, tp.invalidMsg, gen)
		}
		tp.status.Conditions[0] = accepted
	}
}

// validateTLSPolicy checks one policy's validation settings and resolves
// its CA certificates (ConfigMaps of its namespace with a PEM ca.crt).
func (b *builder) validateTLSPolicy(p *gatewayv1.BackendTLSPolicy) *tlsPolicy {
	gen := p.Generation
	key := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
	st := &BackendTLSPolicyStatus{Key: key, Generation: gen, Conditions: []metav1.Condition{{},
		cond("ResolvedRefs", true, "ResolvedRefs", "all CA certificate references are resolved", gen)}}
	tp := &tlsPolicy{obj: p, status: st, gatewayKeys: map[types.NamespacedName]bool{}}
	v := p.Spec.Validation
	invalid := func(reason, msg string) *tlsPolicy {
		tp.invalidWhy, tp.invalidMsg = reason, msg
		return tp
	}
	if len(p.Spec.Options) > 0 {
		keys := make([]string, 0, len(p.Spec.Options))
		for k := range p.Spec.Options {
			keys = append(keys, string(k))
		}
		slices.Sort(keys)
		return invalid("Invalid", fmt.Sprintf("options %s are not supported: remove them", strings.Join(keys, ", ")))
	}
	host := string(v.Hostname)
	if err := validHostname(host); err != nil || strings.Contains(host, "*") {
		return invalid("Invalid", fmt.Sprintf("validation.hostname %q must be a DNS name without wildcards", host))
	}
	tp.sni = host
	for _, san := range v.SubjectAltNames {
		switch san.Type {
		case gatewayv1.HostnameSubjectAltNameType:
			tp.dnsNames = append(tp.dnsNames, string(san.Hostname))
		case gatewayv1.URISubjectAltNameType:
			tp.uris = append(tp.uris, string(san.URI))
		default:
			return invalid("Invalid", fmt.Sprintf("validation.subjectAltNames: type %q is not supported: use Hostname or URI", san.Type))
		}
	}
	if len(tp.dnsNames) == 0 && len(tp.uris) == 0 {
		// Without subjectAltNames, the hostname must match the certificate.
		tp.dnsNames = []string{host}
	}
	if wk := v.WellKnownCACertificates; wk != nil && *wk != "" {
		if *wk != gatewayv1.WellKnownCACertificatesSystem || len(v.CACertificateRefs) > 0 {
			return invalid("Invalid", fmt.Sprintf("validation.wellKnownCACertificates %q is not supported: use System, without caCertificateRefs", *wk))
		}
		tp.system, tp.valid = true, true
		return tp
	}
	if len(v.CACertificateRefs) == 0 {
		return invalid("Invalid", "validation needs caCertificateRefs or wellKnownCACertificates: System")
	}
	var bundle []byte
	var bad []string
	reason := ""
	for _, ref := range v.CACertificateRefs {
		r, msg := "", ""
		switch {
		case ref.Group != "" || ref.Kind != "ConfigMap":
			r, msg = "InvalidKind", fmt.Sprintf("caCertificateRef %s: kind %s of group %q is not supported: use a ConfigMap", ref.Name, ref.Kind, ref.Group)
		default:
			ca, err := b.configMapCA(types.NamespacedName{Namespace: p.Namespace, Name: string(ref.Name)})
			if err != nil {
				r, msg = "InvalidCACertificateRef", fmt.Sprintf("caCertificateRef ConfigMap %s/%s: %s", p.Namespace, ref.Name, err)
			} else {
				bundle = append(bundle, ca...)
			}
		}
		if r != "" {
			if reason == "" {
				reason = r
			}
			bad = append(bad, msg)
		}
	}
	if len(bad) > 0 {
		st.Conditions[1] = cond("ResolvedRefs", false, reason, strings.Join(bad, "; "), gen)
	}
	if len(bundle) == 0 {
		return invalid("NoValidCACertificate", "no caCertificateRef is valid: "+strings.Join(bad, "; "))
	}
	name := p.Namespace + "/" + p.Name + "/backendtls-ca"
	tp.ca = &Secret{Name: name, Object: key, CA: bundle}
	tp.valid = true
	return tp
}

// configMapCA returns the PEM certificates of a ConfigMap's ca.crt.
func (b *builder) configMapCA(key types.NamespacedName) ([]byte, error) {
	cm := b.objs.ConfigMaps[key]
	if cm == nil {
		return nil, fmt.Errorf("not found, or it has no ca.crt")
	}
	data := []byte(cm.Data["ca.crt"])
	if v, ok := cm.BinaryData["ca.crt"]; ok && len(data) == 0 {
		data = v
	}
	var out []byte
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("ca.crt holds a certificate that does not parse: %w", err)
		}
		out = append(out, pem.EncodeToMemory(blk)...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ca.crt holds no PEM certificate")
	}
	return out, nil
}

// backendTLSPolicy returns the policies targeting a Service port, the one
// that applies first (by precedence): the port's own (sectionName, the port's name), or
// else the Service's.
func (b *builder) backendTLSPolicy(svc *corev1.Service, p corev1.ServicePort) []*tlsPolicy {
	k := types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
	if p.Name != "" {
		if ps := b.tlsPolicies[tlsTarget{svc: k, section: p.Name}]; len(ps) > 0 {
			return ps
		}
	}
	return b.tlsPolicies[tlsTarget{svc: k}]
}

// applyTLSPolicy sets a cluster spec's upstream TLS from the policy, or
// says why the backend cannot be used.
func applyTLSPolicy(cs *clusterSpec, tp *tlsPolicy) error {
	if !tp.valid {
		return fmt.Errorf("BackendTLSPolicy %s/%s is not accepted: %s", tp.obj.Namespace, tp.obj.Name, tp.status.Conditions[0].Message)
	}
	switch cs.protocol {
	case "h2c", "h2":
		cs.protocol = "h2"
	default:
		cs.protocol = "tls"
	}
	cs.ca, cs.systemCA, cs.sni = tp.ca, tp.system, tp.sni
	cs.subjectNames, cs.subjectURIs = tp.dnsNames, tp.uris
	return nil
}

// policyAncestors records the Gateways of a route as ancestors of the
// policies its backends used (those that apply and those they conflict
// with).
func (b *builder) policyAncestors(used []*tlsPolicy, gateways []types.NamespacedName) {
	for _, tp := range used {
		for _, g := range gateways {
			tp.gatewayKeys[g] = true
		}
	}
}

// finishTLSPolicies writes the status of each policy some route uses.
func (b *builder) finishTLSPolicies() {
	seen := map[*tlsPolicy]bool{}
	for _, ps := range b.tlsPolicies {
		for _, tp := range ps {
			if seen[tp] || len(tp.gatewayKeys) == 0 {
				continue
			}
			seen[tp] = true
			keys := make([]types.NamespacedName, 0, len(tp.gatewayKeys))
			for k := range tp.gatewayKeys {
				keys = append(keys, k)
			}
			slices.SortFunc(keys, func(a, c types.NamespacedName) int { return cmp.Compare(a.String(), c.String()) })
			if len(keys) > maxPolicyAncestors {
				keys = keys[:maxPolicyAncestors]
			}
			for _, k := range keys {
				tp.status.Ancestors = append(tp.status.Ancestors, gatewayv1.ParentReference{
					Group: ptrTo(gatewayv1.Group(gatewayv1.GroupName)), Kind: ptrTo(gatewayv1.Kind("Gateway")),
					Namespace: ptrTo(gatewayv1.Namespace(k.Namespace)), Name: gatewayv1.ObjectName(k.Name)})
			}
			b.m.BackendTLSPolicies[tp.status.Key] = tp.status
		}
	}
}
