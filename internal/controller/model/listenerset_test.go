package model

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// lsObjects is a managed GatewayClass and Gateway infra/gw (one HTTP
// listener "web", port 80, gw.example.com) allowing ListenerSets from
// the given namespaces (nil: the default, none).
func lsObjects(allowed *gatewayv1.ListenerNamespaces) *source.Objects {
	objs := source.NewObjects()
	objs.GatewayClasses[types.NamespacedName{Name: "legate"}] = &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "legate"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "gw"},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "legate", Listeners: []gatewayv1.Listener{
			{Name: "web", Protocol: gatewayv1.HTTPProtocolType, Port: 80, Hostname: ptrTo(gatewayv1.Hostname("gw.example.com")),
				AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)}}}}}}
	if allowed != nil {
		gw.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: allowed}
	}
	objs.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}] = gw
	for _, n := range []struct{ name, team string }{{"infra", ""}, {"team-a", "a"}, {"team-b", "b"}} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n.name}}
		if n.team != "" {
			ns.Labels = map[string]string{"team": n.team}
		}
		objs.Namespaces[types.NamespacedName{Name: n.name}] = ns
	}
	return objs
}

// addSet adds a ListenerSet of infra/gw created age seconds after the
// epoch.
func addSet(objs *source.Objects, ns, name string, age int, ls ...gatewayv1.ListenerEntry) {
	objs.ListenerSets[types.NamespacedName{Namespace: ns, Name: name}] = &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 2, CreationTimestamp: metav1.NewTime(time.Unix(int64(age), 0))},
		Spec: gatewayv1.ListenerSetSpec{ParentRef: gatewayv1.ParentGatewayReference{Name: "gw", Namespace: ptrTo(gatewayv1.Namespace("infra"))},
			Listeners: ls}}
}

func entry(name string, proto gatewayv1.ProtocolType, port int32, host string) gatewayv1.ListenerEntry {
	e := gatewayv1.ListenerEntry{Name: gatewayv1.SectionName(name), Protocol: proto, Port: gatewayv1.PortNumber(port),
		AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)}}}
	if host != "" {
		e.Hostname = ptrTo(gatewayv1.Hostname(host))
	}
	return e
}

func TestListenerSetAllowed(t *testing.T) {
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}
	for _, tc := range []struct {
		name    string
		allowed *gatewayv1.ListenerNamespaces
		// accepted: the Accepted condition of the ListenerSets of
		// infra, team-a and team-b.
		accepted [3]string
		attached int32
	}{
		{"default: none", nil, [3]string{"False/NotAllowed", "False/NotAllowed", "False/NotAllowed"}, 0},
		{"None", &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromNone)}, [3]string{"False/NotAllowed", "False/NotAllowed", "False/NotAllowed"}, 0},
		{"Same", &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromSame)}, [3]string{"True/Accepted", "False/NotAllowed", "False/NotAllowed"}, 1},
		{"All", &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)}, [3]string{"True/Accepted", "True/Accepted", "True/Accepted"}, 3},
		{"Selector", &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromSelector), Selector: sel}, [3]string{"False/NotAllowed", "True/Accepted", "False/NotAllowed"}, 1},
		{"Selector without selector", &gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromSelector)}, [3]string{"False/NotAllowed", "False/NotAllowed", "False/NotAllowed"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := lsObjects(tc.allowed)
			nss := []string{"infra", "team-a", "team-b"}
			for i, ns := range nss {
				addSet(objs, ns, "set", i, entry("l", gatewayv1.HTTPProtocolType, 80, ns+".example.com"))
			}
			m := Build(objs, Options{})
			for i, ns := range nss {
				st := m.ListenerSets[types.NamespacedName{Namespace: ns, Name: "set"}]
				if st == nil {
					t.Fatalf("no status for ListenerSet %s/set", ns)
				}
				if got := condOf(st.Conditions, "Accepted"); got != tc.accepted[i] {
					t.Errorf("%s/set: Accepted %s, want %s", ns, got, tc.accepted[i])
				}
				wantProg := "True/Programmed"
				if tc.accepted[i] != "True/Accepted" {
					wantProg = "False/NotAllowed"
				}
				if got := condOf(st.Conditions, "Programmed"); got != wantProg {
					t.Errorf("%s/set: Programmed %s, want %s", ns, got, wantProg)
				}
				if st.Generation != 2 || st.Conditions[0].ObservedGeneration != 2 {
					t.Errorf("%s/set: generation %d/%d, want the ListenerSet's (2)", ns, st.Generation, st.Conditions[0].ObservedGeneration)
				}
			}
			gw := m.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
			if gw.AttachedListenerSets == nil || *gw.AttachedListenerSets != tc.attached {
				t.Errorf("attachedListenerSets %v, want %d", gw.AttachedListenerSets, tc.attached)
			}
		})
	}
}

// TestListenerSetConflicts: the Gateway's listeners come first, then the
// ListenerSets oldest first, then by namespace/name; a later listener
// conflicting with an earlier one is not accepted, and a ListenerSet
// without a valid listener is not either.
func TestListenerSetConflicts(t *testing.T) {
	objs := lsObjects(&gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromAll)})
	// b and a are as old: a first (by name); c is older than both.
	addSet(objs, "infra", "b", 10,
		entry("mine", gatewayv1.HTTPProtocolType, 80, "b.example.com"),
		entry("dup", gatewayv1.HTTPProtocolType, 80, "dup.example.com"))
	addSet(objs, "infra", "a", 10,
		entry("mine", gatewayv1.HTTPProtocolType, 80, "a.example.com"),
		entry("dup", gatewayv1.HTTPProtocolType, 80, "dup.example.com"),
		entry("gw", gatewayv1.HTTPProtocolType, 80, "gw.example.com"))
	addSet(objs, "team-a", "c", 5, entry("tcp", gatewayv1.TCPProtocolType, 80, ""))
	// d is accepted (one valid listener) and its TCP listener on port 80
	// is not: e's HTTP listener there does not conflict with it.
	addSet(objs, "infra", "d", 20,
		entry("ok", gatewayv1.HTTPProtocolType, 81, "d.example.com"),
		entry("tcp80", gatewayv1.TCPProtocolType, 80, ""))
	addSet(objs, "infra", "e", 30, entry("http80", gatewayv1.HTTPProtocolType, 80, "e.example.com"))
	m := Build(objs, Options{})
	want := map[string]map[string]string{
		"infra/a":  {"mine": "True/Accepted", "dup": "True/Accepted", "gw": "False/HostnameConflict"},
		"infra/b":  {"mine": "True/Accepted", "dup": "False/HostnameConflict"},
		"team-a/c": {"tcp": "False/ProtocolConflict"},
		"infra/d":  {"ok": "True/Accepted", "tcp80": "False/ProtocolConflict"},
		"infra/e":  {"http80": "True/Accepted"},
	}
	for set, ls := range want {
		st := m.ListenerSets[types.NamespacedName{Namespace: set[:len(set)-2], Name: set[len(set)-1:]}]
		if st == nil {
			t.Fatalf("no status for %s", set)
		}
		for _, l := range st.Listeners {
			w, ok := ls[l.Name]
			if !ok {
				t.Errorf("%s: unexpected listener %s", set, l.Name)
				continue
			}
			if got := condOf(l.Conditions, "Accepted"); got != w {
				t.Errorf("%s listener %s: Accepted %s, want %s", set, l.Name, got, w)
			}
			if w != "True/Accepted" {
				reason := w[len("False/"):]
				if got := condOf(l.Conditions, "Conflicted"); got != "True/"+reason {
					t.Errorf("%s listener %s: Conflicted %s, want True/%s", set, l.Name, got, reason)
				}
				if got := condOf(l.Conditions, "Programmed"); got != "False/"+reason {
					t.Errorf("%s listener %s: Programmed %s, want False/%s", set, l.Name, got, reason)
				}
			}
		}
	}
	if got := condOf(m.ListenerSets[types.NamespacedName{Namespace: "team-a", Name: "c"}].Conditions, "Accepted"); got != "False/ListenersNotValid" {
		t.Errorf("team-a/c: Accepted %s, want False/ListenersNotValid", got)
	}
	gw := m.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]
	if *gw.AttachedListenerSets != 4 {
		t.Errorf("attachedListenerSets %d, want 4 (a, b, d, e)", *gw.AttachedListenerSets)
	}
	if got := condOf(gw.Listeners[0].Conditions, "Accepted"); got != "True/Accepted" || len(gw.Listeners) != 1 {
		t.Errorf("the Gateway's listeners: %v (its own listener must stay accepted, and alone)", gw.Listeners)
	}
}

// TestListenerSetRoutes: a route naming a ListenerSet attaches to its
// listeners only (sectionName: the one named), a route naming the
// Gateway to the Gateway's own only.
func TestListenerSetRoutes(t *testing.T) {
	objs := lsObjects(&gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromSame)})
	addSet(objs, "infra", "set", 1,
		entry("one", gatewayv1.HTTPProtocolType, 80, "one.example.com"),
		entry("two", gatewayv1.HTTPProtocolType, 80, "two.example.com"))
	addSet(objs, "team-a", "denied", 1, entry("three", gatewayv1.HTTPProtocolType, 80, "three.example.com"))
	objs.Services[types.NamespacedName{Namespace: "infra", Name: "app"}] = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "app"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}}}
	lsRef := func(name, ns, section string) gatewayv1.ParentReference {
		p := gatewayv1.ParentReference{Group: ptrTo(gatewayv1.Group(gatewayv1.GroupName)), Kind: ptrTo(gatewayv1.Kind("ListenerSet")), Name: gatewayv1.ObjectName(name)}
		if ns != "" {
			p.Namespace = ptrTo(gatewayv1.Namespace(ns))
		}
		if section != "" {
			p.SectionName = ptrTo(gatewayv1.SectionName(section))
		}
		return p
	}
	gwRef := func(section string) gatewayv1.ParentReference {
		p := gatewayv1.ParentReference{Name: "gw"}
		if section != "" {
			p.SectionName = ptrTo(gatewayv1.SectionName(section))
		}
		return p
	}
	route := func(name string, parents ...gatewayv1.ParentReference) {
		objs.HTTPRoutes[types.NamespacedName{Namespace: "infra", Name: name}] = &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: name},
			Spec: gatewayv1.HTTPRouteSpec{CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parents},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "app", Port: ptrTo(gatewayv1.PortNumber(8080))}}}}}}}}
	}
	route("to-gateway", gwRef(""))
	route("to-set", lsRef("set", "", ""))
	route("to-section", lsRef("set", "infra", "two"))
	route("gateway-section-of-set", gwRef("one"), lsRef("set", "", "one"))
	route("to-denied", lsRef("denied", "team-a", ""))
	route("to-unknown", lsRef("nosuch", "", ""))
	m := Build(objs, Options{})
	accepted := func(route string) []string {
		st := m.Routes[RouteKey{Kind: "HTTPRoute", NamespacedName: types.NamespacedName{Namespace: "infra", Name: route}}]
		if st == nil {
			return nil
		}
		var out []string
		for _, p := range st.Parents {
			out = append(out, condOf(p.Conditions, "Accepted"))
		}
		return out
	}
	for _, tc := range []struct {
		route string
		want  []string
	}{
		{"to-gateway", []string{"True/Accepted"}},
		{"to-set", []string{"True/Accepted"}},
		{"to-section", []string{"True/Accepted"}},
		{"gateway-section-of-set", []string{"False/NoMatchingParent", "True/Accepted"}},
		{"to-denied", []string{"False/NoMatchingParent"}},
		{"to-unknown", nil},
	} {
		if got := accepted(tc.route); len(got) != len(tc.want) || (len(got) > 0 && (got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1])) {
			t.Errorf("route %s: parents %v, want %v", tc.route, got, tc.want)
		}
	}
	st := m.ListenerSets[types.NamespacedName{Namespace: "infra", Name: "set"}]
	if st.Listeners[0].AttachedRoutes != 2 || st.Listeners[1].AttachedRoutes != 2 {
		t.Errorf("ListenerSet listeners' attachedRoutes %d, %d; want 2 (to-set, gateway-section-of-set), 2 (to-set, to-section)",
			st.Listeners[0].AttachedRoutes, st.Listeners[1].AttachedRoutes)
	}
	if gw := m.Gateways[types.NamespacedName{Namespace: "infra", Name: "gw"}]; gw.Listeners[0].AttachedRoutes != 1 {
		t.Errorf("the Gateway's listener has %d routes, want 1 (to-gateway)", gw.Listeners[0].AttachedRoutes)
	}
	// Served hostnames: each route on its listeners only.
	served := map[string]int{}
	for h, vh := range m.Listeners["http-80"].VirtualHosts {
		served[h] = len(vh.Routes)
	}
	for h, n := range map[string]int{"gw.example.com": 1, "one.example.com": 2, "two.example.com": 2} {
		if served[h] != n {
			t.Errorf("%s serves %d routes, want %d", h, served[h], n)
		}
	}
	if _, ok := served["three.example.com"]; ok {
		t.Error("the listener of a ListenerSet not allowed is served")
	}
}

// TestListenerSetReferenceGrant: a ListenerSet's certificateRef to
// another namespace needs a ReferenceGrant from kind ListenerSet; the
// Gateway's does not count.
func TestListenerSetReferenceGrant(t *testing.T) {
	for _, tc := range []struct {
		name, fromKind, want string
	}{
		{"granted to ListenerSets", "ListenerSet", "True/ResolvedRefs"},
		{"granted to Gateways only", "Gateway", "False/RefNotPermitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := lsObjects(&gatewayv1.ListenerNamespaces{From: ptrTo(gatewayv1.NamespacesFromSame)})
			e := entry("secure", gatewayv1.HTTPSProtocolType, 443, "secure.example.com")
			e.TLS = &gatewayv1.ListenerTLSConfig{CertificateRefs: []gatewayv1.SecretObjectReference{{Name: "cert", Namespace: ptrTo(gatewayv1.Namespace("certs"))}}}
			addSet(objs, "infra", "set", 1, e)
			objs.ReferenceGrants[types.NamespacedName{Namespace: "certs", Name: "grant"}] = &gatewayv1.ReferenceGrant{
				ObjectMeta: metav1.ObjectMeta{Namespace: "certs", Name: "grant"},
				Spec: gatewayv1.ReferenceGrantSpec{From: []gatewayv1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: gatewayv1.Kind(tc.fromKind), Namespace: "infra"}},
					To: []gatewayv1.ReferenceGrantTo{{Kind: "Secret"}}}}
			cert := testutil.NewCA(t, "ca").Issue(t, "secure.example.com")
			objs.Secrets[types.NamespacedName{Namespace: "certs", Name: "cert"}] = tlsSecretObject("certs", "cert", cert.CertPEM, cert.KeyPEM)
			m := Build(objs, Options{})
			st := m.ListenerSets[types.NamespacedName{Namespace: "infra", Name: "set"}]
			if got := condOf(st.Listeners[0].Conditions, "ResolvedRefs"); got != tc.want {
				t.Errorf("ResolvedRefs %s, want %s", got, tc.want)
			}
			wantSet := "True/Accepted"
			if tc.want != "True/ResolvedRefs" {
				wantSet = "False/ListenersNotValid"
			}
			if a := condOf(st.Conditions, "Accepted"); a != wantSet {
				t.Errorf("ListenerSet Accepted %s, want %s", a, wantSet)
			}
		})
	}
}
