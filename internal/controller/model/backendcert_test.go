package model

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/testutil"
)

// tlsSecretObject is a kubernetes.io/tls Secret.
func tlsSecretObject(ns, name string, cert, key []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key}}
}

// TestGatewayBackendClientCertificate: a Gateway's
// spec.tls.backend.clientCertificateRef, as the specification and the
// conformance tests GatewayTLSBackendClientCertificate and
// GatewayInvalidTLSBackendConfiguration require: the Gateway's
// ResolvedRefs condition and reason, Accepted and Programmed whatever
// the reference, and the certificate on the clusters of its routes'
// BackendTLSPolicy backends only.
func TestGatewayBackendClientCertificate(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	client := ca.Issue(t, "gateway-client")
	other := ca.Issue(t, "other-client")
	grant := &gatewayv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "g"},
		Spec: gatewayv1.ReferenceGrantSpec{
			From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "Gateway", Namespace: "infra"}},
			To:   []gatewayv1.ReferenceGrantTo{{Group: "", Kind: "Secret"}}}}
	ref := func(ns, name string) *gatewayv1.SecretObjectReference {
		r := &gatewayv1.SecretObjectReference{Group: ptrTo(gatewayv1.Group("")), Kind: ptrTo(gatewayv1.Kind("Secret")), Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			r.Namespace = ptrTo(gatewayv1.Namespace(ns))
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		ref     *gatewayv1.SecretObjectReference // nil: no spec.tls
		secrets []*corev1.Secret
		grants  []*gatewayv1.ReferenceGrant
		// reason is the Gateway's ResolvedRefs reason ("" for no such
		// condition); cert the certificate /svc's cluster presents.
		reason string
		cert   []byte
	}{
		{name: "no backend TLS settings"},
		{name: "a Secret of the Gateway's namespace", ref: ref("", "client"),
			secrets: []*corev1.Secret{tlsSecretObject("infra", "client", client.CertPEM, client.KeyPEM)},
			reason:  "ResolvedRefs", cert: client.CertPEM},
		{name: "a Secret of another namespace, with a ReferenceGrant", ref: ref("certs", "client"),
			secrets: []*corev1.Secret{tlsSecretObject("certs", "client", client.CertPEM, client.KeyPEM)},
			grants:  []*gatewayv1.ReferenceGrant{grant}, reason: "ResolvedRefs", cert: client.CertPEM},
		{name: "a Secret of another namespace, without a ReferenceGrant", ref: ref("certs", "client"),
			secrets: []*corev1.Secret{tlsSecretObject("certs", "client", client.CertPEM, client.KeyPEM)},
			reason:  "RefNotPermitted"},
		{name: "a missing Secret", ref: ref("", "client"), reason: "InvalidClientCertificateRef"},
		{name: "an Opaque Secret without tls.crt and tls.key", ref: ref("", "client"),
			secrets: []*corev1.Secret{{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "client"}, Type: corev1.SecretTypeOpaque}},
			reason:  "InvalidClientCertificateRef"},
		{name: "a key that is not the certificate's", ref: ref("", "client"),
			secrets: []*corev1.Secret{tlsSecretObject("infra", "client", client.CertPEM, other.KeyPEM)},
			reason:  "InvalidClientCertificateRef"},
		{name: "a kind other than Secret", ref: &gatewayv1.SecretObjectReference{Group: ptrTo(gatewayv1.Group("")), Kind: ptrTo(gatewayv1.Kind("WrongKind")), Name: "client"},
			secrets: []*corev1.Secret{tlsSecretObject("infra", "client", client.CertPEM, client.KeyPEM)},
			reason:  "InvalidClientCertificateRef"},
		{name: "a group other than core", ref: &gatewayv1.SecretObjectReference{Group: ptrTo(gatewayv1.Group("wrong.group.company.io")), Kind: ptrTo(gatewayv1.Kind("Secret")), Name: "client"},
			secrets: []*corev1.Secret{tlsSecretObject("infra", "client", client.CertPEM, client.KeyPEM)},
			reason:  "InvalidClientCertificateRef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := tlsPolicyObjects()
			gwKey := types.NamespacedName{Namespace: "infra", Name: "gw"}
			gw := objs.Gateways[gwKey]
			gw.Generation = 4
			if tc.ref != nil {
				gw.Spec.TLS = &gatewayv1.GatewayTLSConfig{Backend: &gatewayv1.GatewayBackendTLS{ClientCertificateRef: tc.ref}}
			}
			for _, s := range tc.secrets {
				objs.Secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
			}
			for _, g := range tc.grants {
				objs.ReferenceGrants[types.NamespacedName{Namespace: g.Namespace, Name: g.Name}] = g
			}
			objs.ConfigMaps[types.NamespacedName{Namespace: "app", Name: "ca"}] = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ca"}, Data: map[string]string{"ca.crt": string(ca.CertPEM)}}
			// The policy applies to port 443 (/svc) only: /other stays
			// plain text, and gets no certificate.
			p := policy("p", time.Time{}, "https", caRefs(configMapRef("ca")))
			objs.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: "p"}] = p
			m := Build(objs, Options{})

			st := m.Gateways[gwKey]
			for _, typ := range []string{"Accepted", "Programmed"} {
				if c := findCondition(st.Conditions, typ); c == nil || c.Status != metav1.ConditionTrue || c.Reason != typ || c.ObservedGeneration != 4 {
					t.Errorf("Gateway %s %+v, want True (%s)", typ, c, typ)
				}
			}
			got := findCondition(st.Conditions, "ResolvedRefs")
			switch {
			case tc.reason == "" && got != nil:
				t.Errorf("Gateway ResolvedRefs %+v, want none", got)
			case tc.reason != "" && (got == nil || got.Reason != tc.reason || (got.Status == metav1.ConditionTrue) != (tc.reason == "ResolvedRefs") ||
				got.ObservedGeneration != 4 || got.Message == ""):
				t.Errorf("Gateway ResolvedRefs %+v, want reason %s", got, tc.reason)
			}

			c, _ := routeCluster(t, m, "/svc")
			if c == nil || c.Protocol != "tls" {
				t.Fatalf("/svc cluster %+v, want TLS (the policy's)", c)
			}
			switch {
			case tc.cert == nil && c.ClientCertificate != nil:
				t.Errorf("/svc cluster presents %s, want no certificate", c.ClientCertificate.Name)
			case tc.cert != nil && (c.ClientCertificate == nil || string(c.ClientCertificate.Cert) != string(tc.cert) ||
				string(c.ClientCertificate.Key) != string(client.KeyPEM)):
				t.Errorf("/svc cluster certificate %+v, want the Secret's", c.ClientCertificate)
			case tc.cert != nil && m.Secrets[c.ClientCertificate.Name] != c.ClientCertificate:
				t.Errorf("secret %s is not among the model's secrets (SDS)", c.ClientCertificate.Name)
			}
			if o, _ := routeCluster(t, m, "/other"); o == nil || o.Protocol != "" || o.ClientCertificate != nil {
				t.Errorf("/other cluster %+v, want plain text without a certificate", o)
			}
		})
	}
}

// TestGatewayBackendClientCertificateShared: one route attached to two
// Gateways with different client certificates, and to one without, uses
// a cluster per certificate for the same Service port.
func TestGatewayBackendClientCertificateShared(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	objs := tlsPolicyObjects()
	objs.ConfigMaps[types.NamespacedName{Namespace: "app", Name: "ca"}] = &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ca"}, Data: map[string]string{"ca.crt": string(ca.CertPEM)}}
	objs.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: "p"}] = policy("p", time.Time{}, "", caRefs(configMapRef("ca")))
	base := objs.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	certs := map[string]*testutil.Leaf{}
	hr := objs.HTTPRoutes[types.NamespacedName{Namespace: "app", Name: "r"}]
	hr.Spec.ParentRefs = nil
	for i, n := range []string{"a", "b", "none"} {
		gw := base.DeepCopy()
		gw.Name = n
		gw.Spec.Listeners[0].Port = gatewayv1.PortNumber(80 + i)
		if n != "none" {
			certs[n] = ca.Issue(t, "client-"+n)
			objs.Secrets[types.NamespacedName{Namespace: "infra", Name: n}] = tlsSecretObject("infra", n, certs[n].CertPEM, certs[n].KeyPEM)
			gw.Spec.TLS = &gatewayv1.GatewayTLSConfig{Backend: &gatewayv1.GatewayBackendTLS{ClientCertificateRef: &gatewayv1.SecretObjectReference{Name: gatewayv1.ObjectName(n)}}}
		}
		objs.Gateways[types.NamespacedName{Namespace: "infra", Name: n}] = gw
		hr.Spec.ParentRefs = append(hr.Spec.ParentRefs, gatewayv1.ParentReference{Name: gatewayv1.ObjectName(n), Namespace: ptrTo(gatewayv1.Namespace("infra"))})
	}
	delete(objs.Gateways, types.NamespacedName{Namespace: "infra", Name: "gw"})
	m := Build(objs, Options{})
	names := map[string]bool{}
	for i, n := range []string{"a", "b", "none"} {
		l := m.Listeners[fmt.Sprintf("http-%d", 80+i)]
		if l == nil {
			t.Fatalf("no listener for Gateway %s", n)
		}
		var c *Cluster
		for _, vh := range l.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Path.Value == "/svc" {
					c = r.Clusters[0].Cluster
				}
			}
		}
		if c == nil || c.Protocol != "tls" {
			t.Fatalf("Gateway %s: /svc cluster %+v, want TLS", n, c)
		}
		names[c.Name] = true
		switch want := certs[n]; {
		case want == nil && c.ClientCertificate != nil:
			t.Errorf("Gateway %s: cluster %s presents %s, want none", n, c.Name, c.ClientCertificate.Name)
		case want != nil && (c.ClientCertificate == nil || string(c.ClientCertificate.Cert) != string(want.CertPEM)):
			t.Errorf("Gateway %s: cluster %s certificate %+v, want its Gateway's", n, c.Name, c.ClientCertificate)
		}
	}
	if len(names) != 3 {
		t.Errorf("clusters %v, want one per certificate", names)
	}
	if st := m.Routes[RouteKey{Kind: "HTTPRoute", NamespacedName: types.NamespacedName{Namespace: "app", Name: "r"}}]; st == nil || len(st.Parents) != 3 {
		t.Errorf("route status %+v, want three parents", st)
	}
}
