package controller

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// BenchmarkScale1000HTTPProxies measures a 1,000-HTTPProxy cluster (each
// with 3 routes, its own Service and 3 endpoints): the time to build the
// model and xDS and have a Legate proxy ACK it, the heap it takes, and an
// endpoint-only update pushed to the proxy.
func BenchmarkScale1000HTTPProxies(b *testing.B) {
	const n = 1000
	for i := 0; i < b.N; i++ {
		st := source.NewStore()
		ready := true
		for j := 0; j < n; j++ {
			ns, name := "ns"+strconv.Itoa(j%50), "app"+strconv.Itoa(j)
			st.Upsert(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
			pn, port := "http", int32(8080)
			var eps []discoveryv1.Endpoint
			for k := 0; k < 3; k++ {
				eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", j/250, j%250, k+1)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
			}
			st.Upsert(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
				AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}}, Endpoints: eps})
			p := &contourv1.HTTPProxy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: contourv1.HTTPProxySpec{VirtualHost: &contourv1.VirtualHost{Fqdn: name + ".example.com"}}}
			for _, prefix := range []string{"/api", "/static", "/"} {
				p.Spec.Routes = append(p.Spec.Routes, contourv1.Route{Conditions: []contourv1.MatchCondition{{Prefix: prefix}},
					Services: []contourv1.Service{{Name: name, Port: 80}}})
			}
			st.Upsert(p)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		x := startCP(b, st, cpOptions{})
		build := time.Since(start)
		p := startProxy(b, x)
		testutil.Eventually(b, 60*time.Second, func() bool {
			return p.Stat(b, fmt.Sprintf("cluster.ns%d_app%d_80.membership_total", (n-1)%50, n-1)) == 3
		}, "proxy never got the last of %d clusters with its endpoints", n)
		pushed := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)

		// Endpoint-only change of one Service.
		pn, port := "http", int32(8080)
		t0 := time.Now()
		st.Upsert(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns0", Name: "app0-1", Labels: map[string]string{discoveryv1.LabelServiceName: "app0"}},
			AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.255.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}})
		testutil.Eventually(b, 30*time.Second, func() bool {
			return p.Stat(b, "cluster.ns0_app0_80.membership_total") == 1
		}, "endpoint update never reached the proxy")
		eds := time.Since(t0)
		b.ReportMetric(build.Seconds(), "s/first-build")
		b.ReportMetric(pushed.Seconds(), "s/build+push+ack")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MB-heap(controller+proxy)")
		b.ReportMetric(eds.Seconds()*1000, "ms/eds-update")
		b.Logf("%d HTTPProxies: first build %v, built+pushed+applied by the proxy in %v, heap +%.1f MB (controller and proxy in one process), endpoint update to proxy in %v",
			n, build, pushed, float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), eds)
	}
}
