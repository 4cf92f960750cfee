package xds

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/testutil"
)

// scaleSnapshot has 5,000 EDS clusters, a route configuration with 10,000
// routes across 1,000 virtual hosts, one listener, and endpoints; the
// cluster "big" gets nEndpoints endpoints.
func scaleSnapshot(t testing.TB, version int, listen string, nEndpoints int) *cachev3.Snapshot {
	const clusters, vhosts, routesPerVH = 5000, 1000, 10
	var cls, las []types.Resource
	eds := &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	for i := 0; i < clusters; i++ {
		name := fmt.Sprintf("c%d", i)
		if i == 0 {
			name = "big"
		}
		cls = append(cls, &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: eds}})
		n := 2
		if i == 0 {
			n = nEndpoints
		}
		la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
		var lbe []*endpointv3.LbEndpoint
		for j := 0; j < n; j++ {
			lbe = append(lbe, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: sockAddr(fmt.Sprintf("10.%d.%d.%d", (j>>16)&255, (j>>8)&255, j&255), 8080)}}})
		}
		la.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbe}}
		las = append(las, la)
	}
	rc := &routev3.RouteConfiguration{Name: "local"}
	for v := 0; v < vhosts; v++ {
		vh := &routev3.VirtualHost{Name: fmt.Sprint("vh", v), Domains: []string{fmt.Sprintf("svc%d.example.com", v)}}
		for r := 0; r < routesPerVH; r++ {
			vh.Routes = append(vh.Routes, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/api/v%d/", r)}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("c%d", (v*routesPerVH+r)%clusters+0)}}}})
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	snap, err := cachev3.NewSnapshot(fmt.Sprint(version), map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType: cls, resourcev3.EndpointType: las, resourcev3.RouteType: {rc},
		resourcev3.ListenerType: {listener("main", listen, "local")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func heapMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// BenchmarkXDSScale measures, against go-control-plane's server, the time
// and heap to apply 5,000 clusters and 10,000 routes over ADS, then an EDS
// update of 10,000 endpoints in one cluster, while the proxy serves.
func BenchmarkXDSScale(b *testing.B) {
	for i := 0; i < b.N; i++ {
		cp := startControlPlane(&testing.T{}, "")
		_ = cp
		listen := func() string {
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			defer ln.Close()
			return ln.Addr().String()
		}()
		cp.cache.SetSnapshot(context.Background(), nodeID, scaleSnapshot(b, 1, listen, 2))
		snap2 := scaleSnapshot(b, 2, listen, 10000)
		before := heapMB()
		start := time.Now()
		p := testutil.StartProxy(b, bootstrap(cp.addr, false), nil)
		testutil.Eventually(b, 120*time.Second, func() bool {
			return p.Stat(b, "cluster_manager.cds.update_success") >= 1 && p.Stat(b, "http.main.rds.local.update_success") >= 1 &&
				p.Stat(b, "cluster.c4999.membership_total") == 2
		}, "scale config not applied")
		applied := time.Since(start)
		after := heapMB()
		// EDS: 10,000 endpoints for one cluster.
		start = time.Now()
		cp.cache.SetSnapshot(context.Background(), nodeID, snap2)
		testutil.Eventually(b, 60*time.Second, func() bool { return p.Stat(b, "cluster.big.membership_total") == 10000 }, "EDS update not applied")
		eds := time.Since(start)
		b.ReportMetric(applied.Seconds(), "s/apply-5k-clusters-10k-routes")
		b.ReportMetric(after-before, "MB-heap")
		b.ReportMetric(eds.Seconds()*1000, "ms/eds-10k-endpoints")
		b.Logf("5,000 clusters + 10,000 routes applied in %v (heap +%.1f MB); EDS update of 10,000 endpoints in %v", applied, after-before, eds)
	}
}
