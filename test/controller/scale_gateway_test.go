package controller

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// BenchmarkScale5000HTTPRoutes measures the size issue 14 names: 5,000
// HTTPRoutes (each with its hostname, two rules and its own Service) on
// one Gateway, with 10,000 endpoints: the first build, its push to a
// Legate proxy until the proxy has applied it, the controller's heap,
// then an endpoint change and a route edit (a rule pointed at another
// Service) until the proxy has applied each.
func BenchmarkScale5000HTTPRoutes(b *testing.B) {
	const n = 5000
	pn, port := "http", int32(8080)
	ready := true
	slice := func(ns, svc string, addrs ...string) *discoveryv1.EndpointSlice {
		var eps []discoveryv1.Endpoint
		for _, a := range addrs {
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}}, Endpoints: eps}
	}
	service := func(ns, name string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	}
	route := func(ns, name, backend string) *gatewayv1.HTTPRoute {
		ref := func(svc string) []gatewayv1.HTTPBackendRef {
			return []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
				Name: gatewayv1.ObjectName(svc), Port: ptrTo(gatewayv1.PortNumber(80))}}}}
		}
		gwNS := gatewayv1.Namespace("gw")
		return &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge", Namespace: &gwNS}}},
				Hostnames:       []gatewayv1.Hostname{gatewayv1.Hostname(name + ".example.com")},
				Rules: []gatewayv1.HTTPRouteRule{
					{Matches: []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptrTo(gatewayv1.PathMatchPathPrefix), Value: ptrTo("/api")}}}, BackendRefs: ref(name)},
					{BackendRefs: ref(backend)},
				}}}
	}
	for i := 0; i < b.N; i++ {
		st := source.NewStore()
		st.Upsert(&gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: "legate"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: model.DefaultGatewayController}})
		all := gatewayv1.NamespacesFromAll
		listenerPort := testutil.FreePort(b)
		st.Upsert(&gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "gw", Name: "edge"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "legate", Listeners: []gatewayv1.Listener{{Name: "http", Protocol: gatewayv1.HTTPProtocolType,
				Port: gatewayv1.PortNumber(listenerPort), AllowedRoutes: &gatewayv1.AllowedRoutes{Namespaces: &gatewayv1.RouteNamespaces{From: &all}}}}}})
		for j := 0; j < n; j++ {
			ns, name := "ns"+strconv.Itoa(j%50), "app"+strconv.Itoa(j)
			st.Upsert(service(ns, name))
			st.Upsert(slice(ns, name, fmt.Sprintf("10.%d.%d.1", j/250, j%250), fmt.Sprintf("10.%d.%d.2", j/250, j%250)))
			st.Upsert(route(ns, name, name))
		}
		// The Service a route edit points at.
		st.Upsert(service("ns0", "edited"))
		st.Upsert(slice("ns0", "edited", "10.254.0.1"))

		runtime.GC()
		var before, built, applied runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		// ListenerPorts: the Gateway's port is bound as it is (a free one).
		x := startCP(b, st, cpOptions{model: model.Options{Gateway: model.GatewayOptions{ListenerPorts: true}}})
		build := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&built)
		p := startProxy(b, x)
		last := fmt.Sprintf("cluster.ns%d_app%d_80.membership_total", (n-1)%50, n-1)
		testutil.Eventually(b, 120*time.Second, func() bool { return p.Stat(b, last) == 2 },
			"proxy never got the last of %d clusters with its endpoints", n)
		pushed := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&applied)

		// An endpoint change of one Service.
		t0 := time.Now()
		st.Upsert(slice("ns0", "app0", "10.255.0.1", "10.255.0.2", "10.255.0.3"))
		testutil.Eventually(b, 30*time.Second, func() bool { return p.Stat(b, "cluster.ns0_app0_80.membership_total") == 3 },
			"endpoint update never reached the proxy")
		eds := time.Since(t0)

		// A route edit: app0's catch-all rule now goes to another Service;
		// the proxy has it when it has applied the listener's new route
		// configuration (every Service has its cluster already).
		rds := fmt.Sprintf("http.http-%d.rds.http-%d.update_success", listenerPort, listenerPort)
		n0 := p.Stat(b, rds)
		if n0 < 1 {
			b.Fatalf("%s = %d before the edit", rds, n0)
		}
		t0 = time.Now()
		st.Upsert(route("ns0", "app0", "edited"))
		testutil.Eventually(b, 30*time.Second, func() bool { return p.Stat(b, rds) > n0 },
			"route edit never reached the proxy")
		edit := time.Since(t0)

		mb := func(m runtime.MemStats) float64 { return float64(m.HeapAlloc-before.HeapAlloc) / (1 << 20) }
		b.ReportMetric(build.Seconds(), "s/first-build")
		b.ReportMetric(pushed.Seconds(), "s/build+push+ack")
		b.ReportMetric(mb(built), "MB-heap(controller)")
		b.ReportMetric(mb(applied), "MB-heap(controller+proxy)")
		b.ReportMetric(eds.Seconds()*1000, "ms/eds-update")
		b.ReportMetric(edit.Seconds()*1000, "ms/route-edit")
		b.Logf("%d HTTPRoutes, %d endpoints: first build %v, built+pushed+applied by the proxy in %v; controller heap +%.1f MB, with the proxy +%.1f MB; endpoint update to proxy in %v, route edit in %v",
			n, 2*n, build, pushed, mb(built), mb(applied), eds, edit)
	}
}

func ptrTo[T any](v T) *T { return &v }
