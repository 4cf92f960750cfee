package model

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// tlsPolicyObjects is a Gateway with an HTTPRoute whose one rule sends
// /svc to Service app/svc port 443 (named https) and /other to port 8443.
func tlsPolicyObjects() *source.Objects {
	objs := source.NewObjects()
	objs.GatewayClasses[types.NamespacedName{Name: "c"}] = &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "c"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}
	objs.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}] = &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "c", Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80,
			AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)}}}}}}
	objs.Services[types.NamespacedName{Namespace: "app", Name: "svc"}] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "svc"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443}, {Name: "other", Port: 8443}}}}
	rule := func(path string, port gatewayv1.PortNumber) gatewayv1.HTTPRouteRule {
		return gatewayv1.HTTPRouteRule{
			Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptrTo(gatewayv1.PathMatchExact), Value: ptrTo(path)}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "svc", Port: &port}}}}}
	}
	objs.HTTPRoutes[types.NamespacedName{Namespace: "app", Name: "r"}] = &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "r"},
		Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "gw", Namespace: ptrTo(gatewayv1.Namespace("infra"))}}},
			Rules: []gatewayv1.HTTPRouteRule{rule("/svc", 443), rule("/other", 8443)}}}
	return objs
}

func policy(name string, created time.Time, section string, v gatewayv1.BackendTLSPolicyValidation) *gatewayv1.BackendTLSPolicy {
	t := gatewayv1.LocalPolicyTargetReferenceWithSectionName{LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "svc"}}
	if section != "" {
		t.SectionName = ptrTo(gatewayv1.SectionName(section))
	}
	return &gatewayv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: name, Generation: 3, CreationTimestamp: metav1.NewTime(created)},
		Spec: gatewayv1.BackendTLSPolicySpec{TargetRefs: []gatewayv1.LocalPolicyTargetReferenceWithSectionName{t}, Validation: v}}
}

func caRefs(refs ...gatewayv1.LocalObjectReference) gatewayv1.BackendTLSPolicyValidation {
	return gatewayv1.BackendTLSPolicyValidation{CACertificateRefs: refs, Hostname: "svc.example.com"}
}

func configMapRef(name string) gatewayv1.LocalObjectReference {
	return gatewayv1.LocalObjectReference{Kind: "ConfigMap", Name: gatewayv1.ObjectName(name)}
}

// routeCluster returns the cluster of the route's rule for path (nil
// when its requests are answered directly) and the direct status.
func routeCluster(t *testing.T, m *Model, path string) (*Cluster, int) {
	t.Helper()
	for _, l := range m.Listeners {
		for _, vh := range l.VirtualHosts {
			for _, r := range vh.Routes {
				if r.Path.Value != path {
					continue
				}
				if r.Direct != nil {
					return nil, r.Direct.Status
				}
				return r.Clusters[0].Cluster, 0
			}
		}
	}
	t.Fatalf("no route for %s", path)
	return nil, 0
}

// TestBackendTLSPolicy: the policies of a Service port as the
// specification and its conformance tests require: conditions and
// reasons, the cluster's TLS, a 500 for an invalid policy's backend,
// precedence (a port's own policy over its Service's; the oldest, then
// the first by name, of conflicting ones).
func TestBackendTLSPolicy(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type want struct {
		accepted, resolved string // reasons
		protocol           string // of /svc's cluster; "" with status 500
		sni                string
		dns, uris          []string
		systemCA           bool
	}
	accepted := want{accepted: "Accepted", resolved: "ResolvedRefs", protocol: "tls", sni: "svc.example.com", dns: []string{"svc.example.com"}}
	for _, tc := range []struct {
		name       string
		configMaps map[string]string // name → ca.crt
		policies   []*gatewayv1.BackendTLSPolicy
		want       map[string]want // by policy name
		applies    string          // the policy /svc's cluster follows
	}{
		{name: "a ConfigMap's CA, the hostname as subject name",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies:   []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(configMapRef("ca")))},
			want:       map[string]want{"p": accepted}},
		{name: "missing ConfigMap",
			policies: []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(configMapRef("ca")))},
			want:     map[string]want{"p": {accepted: "NoValidCACertificate", resolved: "InvalidCACertificateRef"}}},
		{name: "ca.crt without a certificate",
			configMaps: map[string]string{"ca": "not PEM"},
			policies:   []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(configMapRef("ca")))},
			want:       map[string]want{"p": {accepted: "NoValidCACertificate", resolved: "InvalidCACertificateRef"}}},
		{name: "ca.crt with a certificate that does not parse",
			configMaps: map[string]string{"ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
			policies:   []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(configMapRef("ca")))},
			want:       map[string]want{"p": {accepted: "NoValidCACertificate", resolved: "InvalidCACertificateRef"}}},
		{name: "a kind other than ConfigMap",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies:   []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(gatewayv1.LocalObjectReference{Group: "invalid.io", Kind: "InvalidKind", Name: "ca"}))},
			want:       map[string]want{"p": {accepted: "NoValidCACertificate", resolved: "InvalidKind"}}},
		{name: "one valid reference of two: accepted, not resolved",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies:   []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", caRefs(configMapRef("missing"), configMapRef("ca")))},
			want: map[string]want{"p": {accepted: "Accepted", resolved: "InvalidCACertificateRef", protocol: "tls", sni: "svc.example.com",
				dns: []string{"svc.example.com"}}}},
		{name: "the system's trust store, subject names instead of the hostname",
			policies: []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", gatewayv1.BackendTLSPolicyValidation{
				WellKnownCACertificates: ptrTo(gatewayv1.WellKnownCACertificatesSystem), Hostname: "svc.example.com",
				SubjectAltNames: []gatewayv1.SubjectAltName{{Type: gatewayv1.HostnameSubjectAltNameType, Hostname: "alt.example.com"},
					{Type: gatewayv1.URISubjectAltNameType, URI: "spiffe://example.com/svc"}}})},
			want: map[string]want{"p": {accepted: "Accepted", resolved: "ResolvedRefs", protocol: "tls", sni: "svc.example.com",
				dns: []string{"alt.example.com"}, uris: []string{"spiffe://example.com/svc"}, systemCA: true}}},
		{name: "an unknown set of well-known certificates",
			policies: []*gatewayv1.BackendTLSPolicy{policy("p", t0, "", gatewayv1.BackendTLSPolicyValidation{
				WellKnownCACertificates: ptrTo(gatewayv1.WellKnownCACertificatesType("example.com/mine")), Hostname: "svc.example.com"})},
			want: map[string]want{"p": {accepted: "Invalid", resolved: "ResolvedRefs"}}},
		{name: "options",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies: []*gatewayv1.BackendTLSPolicy{func() *gatewayv1.BackendTLSPolicy {
				p := policy("p", t0, "", caRefs(configMapRef("ca")))
				p.Spec.Options = map[gatewayv1.AnnotationKey]gatewayv1.AnnotationValue{"example.com/min-version": "1.3"}
				return p
			}()},
			want: map[string]want{"p": {accepted: "Invalid", resolved: "ResolvedRefs"}}},
		{name: "the older of two policies applies",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies: []*gatewayv1.BackendTLSPolicy{policy("a-young", t0.Add(time.Hour), "", caRefs(configMapRef("ca"))),
				policy("b-old", t0, "", caRefs(configMapRef("ca")))},
			want: map[string]want{"b-old": accepted, "a-young": {accepted: "Conflicted", resolved: "ResolvedRefs", protocol: "tls", sni: "svc.example.com",
				dns: []string{"svc.example.com"}}},
			applies: "b-old"},
		{name: "of two as old, the first by name applies",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies: []*gatewayv1.BackendTLSPolicy{policy("b", t0, "", caRefs(configMapRef("ca"))),
				policy("a", t0, "", gatewayv1.BackendTLSPolicyValidation{CACertificateRefs: []gatewayv1.LocalObjectReference{configMapRef("missing")}, Hostname: "svc.example.com"})},
			// a applies, invalid: its backend answers 500.
			want: map[string]want{"a": {accepted: "NoValidCACertificate", resolved: "InvalidCACertificateRef"},
				"b": {accepted: "Conflicted", resolved: "ResolvedRefs"}},
			applies: "a"},
		{name: "a port's own policy wins over its Service's",
			configMaps: map[string]string{"ca": string(ca.CertPEM)},
			policies: []*gatewayv1.BackendTLSPolicy{policy("service", t0, "", caRefs(configMapRef("ca"))),
				policy("port", t0.Add(time.Hour), "https", gatewayv1.BackendTLSPolicyValidation{CACertificateRefs: []gatewayv1.LocalObjectReference{configMapRef("ca")}, Hostname: "port.example.com"})},
			want: map[string]want{"port": {accepted: "Accepted", resolved: "ResolvedRefs", protocol: "tls", sni: "port.example.com", dns: []string{"port.example.com"}},
				"service": accepted},
			applies: "port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := tlsPolicyObjects()
			for n, v := range tc.configMaps {
				objs.ConfigMaps[types.NamespacedName{Namespace: "app", Name: n}] = &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: n}, Data: map[string]string{"ca.crt": v}}
			}
			for _, p := range tc.policies {
				objs.BackendTLSPolicies[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = p
			}
			m := Build(objs, Options{})
			for name, w := range tc.want {
				st := m.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: name}]
				if st == nil {
					t.Fatalf("policy %s has no status", name)
				}
				gw := gatewayv1.ParentReference{Group: ptrTo(gatewayv1.Group(gatewayv1.GroupName)), Kind: ptrTo(gatewayv1.Kind("Gateway")),
					Namespace: ptrTo(gatewayv1.Namespace("infra")), Name: "gw"}
				if !reflect.DeepEqual(st.Ancestors, []gatewayv1.ParentReference{gw}) {
					t.Errorf("policy %s: ancestors %+v, want the Gateway", name, st.Ancestors)
				}
				for _, c := range []struct{ typ, reason string }{{"Accepted", w.accepted}, {"ResolvedRefs", w.resolved}} {
					got := findCondition(st.Conditions, c.typ)
					ok := c.reason == c.typ // Accepted, ResolvedRefs: True
					if got == nil || got.Reason != c.reason || (got.Status == metav1.ConditionTrue) != ok || got.ObservedGeneration != 3 {
						t.Errorf("policy %s: %s %+v, want reason %s", name, c.typ, got, c.reason)
					}
				}
			}
			if tc.applies == "" {
				tc.applies = "p"
			}
			applied := tc.want[tc.applies]
			c, status := routeCluster(t, m, "/svc")
			// Without a policy of its own, the other port follows the
			// Service's.
			if o, _ := routeCluster(t, m, "/other"); tc.applies == "port" && (o == nil || o.SNI != "svc.example.com") {
				t.Errorf("/other: cluster %+v, want the Service's policy", o)
			}
			if applied.protocol == "" {
				if c != nil || status != 500 {
					t.Fatalf("/svc: cluster %+v, status %d; want a 500", c, status)
				}
				return
			}
			if c == nil {
				t.Fatalf("/svc: status %d, want a cluster", status)
			}
			if c.Protocol != applied.protocol || c.SNI != applied.sni || !reflect.DeepEqual(c.SubjectNames, applied.dns) ||
				!reflect.DeepEqual(c.SubjectURIs, applied.uris) || c.SystemCA != applied.systemCA {
				t.Errorf("/svc cluster: protocol %q, SNI %q, DNS %v, URIs %v, system CA %v; want %+v", c.Protocol, c.SNI, c.SubjectNames, c.SubjectURIs, c.SystemCA, applied)
			}
			if !applied.systemCA && (c.UpstreamCA == nil || string(c.UpstreamCA.CA) != string(ca.CertPEM)) {
				t.Errorf("/svc cluster: CA %+v, want the ConfigMap's certificate", c.UpstreamCA)
			}
			for _, r := range m.Routes {
				if cond := findCondition(r.Parents[0].Conditions, "ResolvedRefs"); cond == nil || cond.Status != metav1.ConditionTrue {
					t.Errorf("route ResolvedRefs %+v: a policy does not unresolve the route's references", cond)
				}
			}
		})
	}
}

// TestBackendTLSPolicyUnused: a policy no managed route uses has no
// status of this controller, and a route without policies plain clusters.
func TestBackendTLSPolicyUnused(t *testing.T) {
	objs := tlsPolicyObjects()
	p := policy("p", time.Time{}, "", caRefs(configMapRef("ca")))
	p.Spec.TargetRefs[0].Name = "elsewhere"
	objs.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: "p"}] = p
	m := Build(objs, Options{})
	if len(m.BackendTLSPolicies) != 0 {
		t.Errorf("statuses %+v, want none", m.BackendTLSPolicies)
	}
	if c, _ := routeCluster(t, m, "/svc"); c == nil || c.Protocol != "" || c.SNI != "" {
		t.Errorf("/svc cluster %+v, want plain text", c)
	}
}

// TestBackendTLSPolicyConflictOtherTargets: a younger policy that loses
// one target to an older one is Conflicted, yet still applies to its
// other, uncontested target (it is not invalid there: no 500).
func TestBackendTLSPolicyConflictOtherTargets(t *testing.T) {
	ca := testutil.NewCA(t, "backend-ca")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	objs := tlsPolicyObjects()
	objs.ConfigMaps[types.NamespacedName{Namespace: "app", Name: "ca"}] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "ca"},
		Data: map[string]string{"ca.crt": string(ca.CertPEM)}}
	old := policy("old", t0, "https", caRefs(configMapRef("ca")))
	young := policy("young", t0.Add(time.Hour), "https", caRefs(configMapRef("ca")))
	young.Spec.TargetRefs = append(young.Spec.TargetRefs, gatewayv1.LocalPolicyTargetReferenceWithSectionName{
		LocalPolicyTargetReference: gatewayv1.LocalPolicyTargetReference{Kind: "Service", Name: "svc"}, SectionName: ptrTo(gatewayv1.SectionName("other"))})
	for _, p := range []*gatewayv1.BackendTLSPolicy{old, young} {
		objs.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: p.Name}] = p
	}
	m := Build(objs, Options{})
	if st := m.BackendTLSPolicies[types.NamespacedName{Namespace: "app", Name: "young"}]; st == nil || condOf(st.Conditions, "Accepted") != "False/Conflicted" {
		t.Fatalf("young: %+v, want Accepted False/Conflicted", st)
	}
	for _, path := range []string{"/svc", "/other"} {
		if c, status := routeCluster(t, m, path); c == nil || c.Protocol != "tls" {
			t.Errorf("%s: cluster %+v (status %d), want TLS", path, c, status)
		}
	}
}
