package model

import (
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/source"
)

func TestIntersectHostnames(t *testing.T) {
	for _, tc := range []struct {
		listener string
		route    []gatewayv1.Hostname
		want     []string
	}{
		{"", nil, []string{"*"}},
		{"", []gatewayv1.Hostname{"a.example.com"}, []string{"a.example.com"}},
		{"a.example.com", nil, []string{"a.example.com"}},
		{"a.example.com", []gatewayv1.Hostname{"a.example.com", "b.example.com"}, []string{"a.example.com"}},
		{"*.example.com", []gatewayv1.Hostname{"a.example.com", "x.y.example.com", "example.com"}, []string{"a.example.com", "x.y.example.com"}},
		// The more specific of the two.
		{"a.example.com", []gatewayv1.Hostname{"*.example.com"}, []string{"a.example.com"}},
		{"*.example.com", []gatewayv1.Hostname{"*.a.example.com"}, []string{"*.a.example.com"}},
		{"*.example.com", []gatewayv1.Hostname{"*.example.org"}, nil},
		{"a.example.com", []gatewayv1.Hostname{"elsewhere.org"}, nil},
	} {
		if got := intersectHostnames(tc.listener, tc.route); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("intersect(%q, %v) = %v, want %v", tc.listener, tc.route, got, tc.want)
		}
	}
}

// TestPrefixRewrite checks ReplacePrefixMatch against the Gateway API's
// table (HTTPPathModifier).
func TestPrefixRewrite(t *testing.T) {
	for _, tc := range []struct{ prefix, repl, path, want string }{
		{"/foo", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo", "/xyz/", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz", "/foo/bar", "/xyz/bar"},
		{"/foo/", "/xyz/", "/foo/bar", "/xyz/bar"},
		{"/foo", "/xyz", "/foo", "/xyz"},
		{"/foo", "/xyz", "/foo/", "/xyz/"},
		{"/foo", "", "/foo/bar", "/bar"},
		{"/foo", "", "/foo/", "/"},
		{"/foo", "", "/foo", "/"},
		{"/foo", "/", "/foo/", "/"},
		{"/foo", "/", "/foo", "/"},
		{"/", "/xyz", "/foo", "/xyz/foo"},
	} {
		re, subst := prefixRewrite(PathMatch{Kind: "segment", Value: tc.prefix}, tc.repl)
		if got := regexp.MustCompile(re).ReplaceAllString(tc.path, subst); got != tc.want {
			t.Errorf("prefix %q → %q on %q = %q, want %q (regex %q → %q)", tc.prefix, tc.repl, tc.path, got, tc.want, re, subst)
		}
	}
}

func TestListenerRedirect(t *testing.T) {
	http80 := &gwListener{spec: gatewayv1.Listener{Protocol: gatewayv1.HTTPProtocolType, Port: 80}}
	http8080 := &gwListener{spec: gatewayv1.Listener{Protocol: gatewayv1.HTTPProtocolType, Port: 8080}}
	https443 := &gwListener{spec: gatewayv1.Listener{Protocol: gatewayv1.HTTPSProtocolType, Port: 443}}
	for _, tc := range []struct {
		name string
		r    Redirect
		l    *gwListener
		want uint32
	}{
		{"no scheme, no port: the listener's well-known port is omitted", Redirect{}, http80, 0},
		{"no scheme, no port: the listener's port", Redirect{}, http8080, 8080},
		{"https scheme: 443, omitted", Redirect{Scheme: "https"}, http8080, 0},
		{"http scheme from https: 80, omitted", Redirect{Scheme: "http"}, https443, 0},
		{"explicit port", Redirect{Port: 8443, Scheme: "https"}, http80, 8443},
		{"explicit well-known port of the scheme", Redirect{Port: 443, Scheme: "https"}, http80, 0},
		{"explicit port 443 on http", Redirect{Port: 443}, http80, 443},
	} {
		if got := listenerRedirect(&tc.r, tc.l).Port; got != tc.want {
			t.Errorf("%s: port %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestGatewayRouteOrder(t *testing.T) {
	rs := []*Route{
		{Path: PathMatch{Kind: "prefix", Value: "/"}, order: routeOrder{route: 0}},
		{Path: PathMatch{Kind: "segment", Value: "/a"}, order: routeOrder{route: 1}},
		{Path: PathMatch{Kind: "segment", Value: "/a"}, Headers: []HeaderMatch{{Name: "x"}}, order: routeOrder{route: 2}},
		{Path: PathMatch{Kind: "segment", Value: "/a"}, Headers: []HeaderMatch{{Name: ":method", Value: "GET"}}, order: routeOrder{route: 3}},
		{Path: PathMatch{Kind: "exact", Value: "/a"}, order: routeOrder{route: 4}},
		{Path: PathMatch{Kind: "segment", Value: "/abc"}, order: routeOrder{route: 5}},
		{Path: PathMatch{Kind: "segment", Value: "/a"}, order: routeOrder{route: 0, rule: 1}},
	}
	sortGatewayRoutes(rs)
	var got []routeOrder
	for _, r := range rs {
		got = append(got, r.order)
	}
	want := []routeOrder{{route: 4}, {route: 5}, {route: 3}, {route: 2}, {route: 0, rule: 1}, {route: 1}, {route: 0}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestContainerPort(t *testing.T) {
	b := &builder{}
	for _, tc := range []struct {
		in   gatewayv1.PortNumber
		want uint32
	}{{80, 8080}, {443, 8443}, {8080, 16080}, {57535, 65535}, {57536, 1024}} {
		if got := b.containerPort(tc.in); got != tc.want {
			t.Errorf("containerPort(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
	b.opt.Gateway.ListenerPorts = true
	if got := b.containerPort(80); got != 80 {
		t.Errorf("with listener ports: %d, want 80", got)
	}
}

// TestGatewayPorts: without an address of its own, a Gateway's port is
// the proxy's shared one: the older Gateway keeps it, the younger's
// listener is PortUnavailable; an exhausted pool leaves a Gateway
// unprogrammed (AddressNotAssigned).
func TestGatewayPorts(t *testing.T) {
	objs := source.NewObjects()
	objs.GatewayClasses[types.NamespacedName{Name: "c"}] = &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "c"},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: DefaultGatewayController}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, n := range []string{"old", "young"} {
		objs.Gateways[types.NamespacedName{Namespace: "ns", Name: n}] = &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: n, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(i) * time.Hour))},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: "c", Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}}}}
	}
	m := Build(objs, Options{})
	if l := m.Listeners["http-80"]; l == nil || l.Port != 8080 || l.owner.Name != "old" {
		t.Fatalf("listeners %+v", m.Listeners)
	}
	young := m.Gateways[types.NamespacedName{Namespace: "ns", Name: "young"}]
	if c := findCondition(young.Listeners[0].Conditions, "Accepted"); c == nil || c.Reason != "PortUnavailable" {
		t.Errorf("young listener: %+v", young.Listeners[0].Conditions)
	}
	if c := findCondition(young.Conditions, "Accepted"); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("young Gateway: %+v", young.Conditions)
	}
	// A pool of one address: the older Gateway gets it.
	m = Build(objs, Options{Gateway: GatewayOptions{AddressPool: netip.MustParsePrefix("192.0.2.8/31")}})
	old := m.Gateways[types.NamespacedName{Namespace: "ns", Name: "old"}]
	young = m.Gateways[types.NamespacedName{Namespace: "ns", Name: "young"}]
	if !reflect.DeepEqual(old.Addresses, []string{"192.0.2.9"}) || len(young.Addresses) != 0 {
		t.Errorf("addresses: old %v, young %v", old.Addresses, young.Addresses)
	}
	if c := findCondition(young.Conditions, "Programmed"); c == nil || c.Reason != "AddressNotAssigned" {
		t.Errorf("young Gateway without an address: %+v", young.Conditions)
	}
	if len(m.Listeners) != 1 || m.Listeners["192.0.2.9/http-80"] == nil {
		t.Errorf("a Gateway without an address bound listeners: %v", m.Listeners)
	}
}

func findCondition(cs []metav1.Condition, typ string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == typ {
			return &cs[i]
		}
	}
	return nil
}

// TestListenerIsolation: on a port its listeners share, a hostname
// belongs to the most specific listener it falls in.
func TestListenerIsolation(t *testing.T) {
	shared := &Listener{Name: "http-80"}
	mk := func(h string) *gwListener {
		l := &gwListener{valid: true, l: shared}
		if h != "" {
			hn := gatewayv1.Hostname(h)
			l.spec.Hostname = &hn
		}
		return l
	}
	all, wild, foo, exact := mk(""), mk("*.example.com"), mk("*.foo.example.com"), mk("abc.foo.example.com")
	ls := []*gwListener{all, wild, foo, exact}
	for _, tc := range []struct {
		l    *gwListener
		h    string
		want bool
	}{
		{all, "*", true},
		{all, "bar.com", true},
		{all, "bar.example.com", false},     // *.example.com's
		{all, "abc.foo.example.com", false}, // the exact listener's
		{wild, "bar.example.com", true},
		{wild, "bar.foo.example.com", false}, // *.foo.example.com's
		{wild, "*.foo.example.com", false},
		{foo, "bar.foo.example.com", true},
		{foo, "abc.foo.example.com", false},
		{exact, "abc.foo.example.com", true},
	} {
		if got := ownsHostname(ls, tc.l, tc.h); got != tc.want {
			t.Errorf("listener %q, hostname %q: %v, want %v", hostnameOf(tc.l.spec.Hostname), tc.h, got, tc.want)
		}
	}
	// Listeners of another port do not take hostnames from this one.
	other := mk("bar.example.com")
	other.l = &Listener{Name: "http-8080"}
	if !ownsHostname(append(ls, other), wild, "bar.example.com") {
		t.Error("a listener of another port took a hostname")
	}
}

// TestMisdirected: a terminating chain answers 421 for the hosts other
// listeners of its port serve (and, with a hostname, for any other host).
func TestMisdirected(t *testing.T) {
	chain := func(h string) *FilterChain { return &FilterChain{Hostname: h, VirtualHosts: map[string]*VirtualHost{}} }
	all, second, wild, four := chain(""), chain("second.org"), chain("*.w.org"), chain("four.w.org")
	pass := &FilterChain{Hostname: "db.org"} // TLS passthrough: no HTTP
	l := &Listener{Chains: []*FilterChain{all, second, wild, four, pass}}
	all.VirtualHosts["second.org"] = &VirtualHost{Name: "second.org", Routes: []*Route{{}}} // already served: kept
	misdirected(l)
	got := func(c *FilterChain) string {
		var hs []string
		for h, vh := range c.VirtualHosts {
			if len(vh.Routes) == 1 && vh.Routes[0].Direct != nil && vh.Routes[0].Direct.Status == 421 {
				hs = append(hs, h)
			}
		}
		slices.Sort(hs)
		return strings.Join(hs, " ")
	}
	for _, tc := range []struct {
		c    *FilterChain
		want string
	}{
		{all, "*.w.org db.org four.w.org"},
		{second, "*"},
		{wild, "* four.w.org"}, // the narrower listener's host too
		{four, "*"},
	} {
		if g := got(tc.c); g != tc.want {
			t.Errorf("chain %q answers 421 for %q, want %q", tc.c.Hostname, g, tc.want)
		}
	}
	if pass.VirtualHosts != nil {
		t.Error("a passthrough chain got virtual hosts")
	}
}

// TestGatewayRef: with Contour's gateway.gatewayRef only the named
// Gateway is served, and its GatewayClass is managed whatever its
// controllerName.
func TestGatewayRef(t *testing.T) {
	objs := source.NewObjects()
	for _, c := range []struct{ name, ctrl string }{{"ours", DefaultGatewayController}, {"theirs", "example.com/other"}} {
		objs.GatewayClasses[types.NamespacedName{Name: c.name}] = &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: c.name},
			Spec: gatewayv1.GatewayClassSpec{ControllerName: gatewayv1.GatewayController(c.ctrl)}}
	}
	// A provisioner's class carries its own parameters.
	objs.GatewayClasses[types.NamespacedName{Name: "theirs"}].Spec.ParametersRef = &gatewayv1.ParametersReference{Group: "example.com", Kind: "Params", Name: "p"}
	for _, g := range []struct{ name, class string }{{"named", "theirs"}, {"other", "ours"}} {
		objs.Gateways[types.NamespacedName{Namespace: "ns", Name: g.name}] = &gatewayv1.Gateway{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: g.name},
			Spec:       gatewayv1.GatewaySpec{GatewayClassName: gatewayv1.ObjectName(g.class), Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType, Port: 80}}}}
	}
	m := Build(objs, Options{Gateway: GatewayOptions{GatewayRef: &types.NamespacedName{Namespace: "ns", Name: "named"}}})
	if len(m.Gateways) != 1 || m.Gateways[types.NamespacedName{Namespace: "ns", Name: "named"}] == nil {
		t.Errorf("Gateways served: %v, want ns/named only", m.Gateways)
	}
	// Its class (another controller's, with that controller's
	// parametersRef) is used but not ours to write the status of.
	if len(m.GatewayClasses) != 0 {
		t.Errorf("GatewayClass statuses: %v, want none in gatewayRef mode", m.GatewayClasses)
	}
	// Without it, the controllerName decides.
	m = Build(objs, Options{})
	if len(m.Gateways) != 1 || m.Gateways[types.NamespacedName{Namespace: "ns", Name: "other"}] == nil || m.GatewayClasses["ours"] == nil {
		t.Errorf("without gatewayRef: Gateways %v, classes %v", m.Gateways, m.GatewayClasses)
	}
}

// TestGatewayAddresses: spec.addresses with a pool (what the proxies can
// bind): one usable IPAddress is bound; any address that cannot be
// assigned leaves the Gateway unbound (AddressNotUsable); another type is
// UnsupportedAddress; an empty IPAddress takes one of the pool.
func TestGatewayAddresses(t *testing.T) {
	ip := func(v string) gatewayv1.GatewaySpecAddress {
		return gatewayv1.GatewaySpecAddress{Type: ptrTo(gatewayv1.IPAddressType), Value: v}
	}
	host := gatewayv1.GatewaySpecAddress{Type: ptrTo(gatewayv1.HostnameAddressType), Value: "gw.example.com"}
	for _, tc := range []struct {
		name   string
		addrs  []gatewayv1.GatewaySpecAddress
		want   string // the bound address
		reason string
	}{
		{"usable", []gatewayv1.GatewaySpecAddress{ip("192.0.2.7")}, "192.0.2.7", ""},
		{"usable and unusable", []gatewayv1.GatewaySpecAddress{ip("192.0.2.7"), ip("198.18.0.1")}, "", "AddressNotUsable"},
		{"two usable", []gatewayv1.GatewaySpecAddress{ip("192.0.2.7"), ip("192.0.2.8")}, "", "AddressNotUsable"},
		{"not an IP", []gatewayv1.GatewaySpecAddress{ip("x")}, "", "AddressNotUsable"},
		{"hostname", []gatewayv1.GatewaySpecAddress{host}, "", "UnsupportedAddress"},
		{"empty: from the pool", []gatewayv1.GatewaySpecAddress{ip("")}, "192.0.2.1", ""},
		{"none: from the pool", nil, "192.0.2.1", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "g"}, Spec: gatewayv1.GatewaySpec{Addresses: tc.addrs}}
			b := &builder{opt: Options{Gateway: GatewayOptions{AddressPool: netip.MustParsePrefix("192.0.2.0/24")}}}
			got := b.gatewayAddresses([]*gatewayv1.Gateway{gw})[gw]
			if got.addr != tc.want || got.reason != tc.reason {
				t.Errorf("address %q reason %q (%s), want %q %q", got.addr, got.reason, got.msg, tc.want, tc.reason)
			}
		})
	}
}
