// Package xds tests Legate's xDS client and hot swaps against
// go-control-plane's own server and snapshot cache: a real, independent
// management server.
package xds

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/proto"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/testutil"
)

const nodeID = "legate-test"

// controlPlane is go-control-plane's server over a snapshot cache.
type controlPlane struct {
	cache cachev3.SnapshotCache
	addr  string
	srv   *grpc.Server
	mu    sync.Mutex
	nacks []string // error_detail messages seen
	acks  int
	reqs  int
	names map[string][]string // last resource names asked for, by type
}

func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cp.listen(t, addr)
	return cp
}

func (cp *controlPlane) listen(t *testing.T, addr string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // after a restart the port may take a moment to free
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = ln.Addr().String()
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.note(r.GetErrorDetail().GetMessage(), r.GetResponseNonce() != "")
			cp.mu.Lock()
			if cp.names == nil {
				cp.names = map[string][]string{}
			}
			cp.names[r.GetTypeUrl()] = r.GetResourceNames()
			cp.mu.Unlock()
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.note(r.GetErrorDetail().GetMessage(), r.GetResponseNonce() != "")
			return nil
		},
	}
	srv := serverv3.NewServer(context.Background(), cp.cache, cb)
	cp.srv = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.srv, srv)
	go cp.srv.Serve(ln)
	t.Cleanup(cp.srv.Stop)
}

func (cp *controlPlane) note(nack string, isResponse bool) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.reqs++
	if nack != "" {
		cp.nacks = append(cp.nacks, nack)
	} else if isResponse {
		cp.acks++
	}
}

// lastNames returns the resource names of the type's latest request.
func (cp *controlPlane) lastNames(typeURL string) []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.names[typeURL]...)
}

func (cp *controlPlane) nackMessages() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// world is the desired configuration the test pushes.
type world struct {
	version       int
	listen        string // proxy listener address
	endpoints     []string
	routes        []*routev3.Route
	clusterLB     clusterv3.Cluster_LbPolicy
	extraListener string
	// slowCluster adds an EDS cluster whose endpoints never come (it
	// warms until initial_fetch_timeout).
	slowCluster string
}

func endpointsOf(addrs []string) *endpointv3.ClusterLoadAssignment {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "backend"}
	var lbe []*endpointv3.LbEndpoint
	for _, a := range addrs {
		h, p, _ := net.SplitHostPort(a)
		var port uint32
		fmt.Sscan(p, &port)
		lbe = append(lbe, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: sockAddr(h, port)}}})
	}
	la.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbe}}
	return la
}

func sockAddr(h string, p uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: h, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: p}}}}
}

func listener(name, addr, routeName string) *listenerv3.Listener {
	return listenerFrom(name, addr, routeName, adsSource())
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
}

// listenerFrom is an HTTP listener whose routes come over RDS from src.
func listenerFrom(name, addr, routeName string, src *corev3.ConfigSource) *listenerv3.Listener {
	h, p, _ := net.SplitHostPort(addr)
	var port uint32
	fmt.Sscan(p, &port)
	router, _ := anypb.New(&routerv3.Router{})
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: routeName, ConfigSource: src}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	}
	tc, _ := anypb.New(hcm)
	return &listenerv3.Listener{Name: name, Address: sockAddr(h, port), FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: tc}}}}}}
}

func (w *world) snapshot(t *testing.T) *cachev3.Snapshot {
	t.Helper()
	w.version++
	cl := &clusterv3.Cluster{
		Name:                 "backend",
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		LbPolicy:             w.clusterLB,
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
	}
	routes := w.routes
	if routes == nil {
		routes = []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}}}}
	}
	rc := &routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
	listeners := []types.Resource{listener("main", w.listen, "local")}
	if w.extraListener != "" {
		listeners = append(listeners, listener("extra", w.extraListener, "local"))
	}
	clusters := []types.Resource{cl}
	if w.slowCluster != "" {
		slow := proto.Clone(cl).(*clusterv3.Cluster)
		slow.Name = w.slowCluster
		clusters = append(clusters, slow)
	}
	snap, err := cachev3.NewSnapshot(fmt.Sprint(w.version), map[resourcev3.Type][]types.Resource{
		resourcev3.ClusterType:  clusters,
		resourcev3.EndpointType: {endpointsOf(w.endpoints)},
		resourcev3.RouteType:    {rc},
		resourcev3.ListenerType: listeners,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func (cp *controlPlane) push(t *testing.T, w *world) {
	t.Helper()
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, w.snapshot(t)); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
}

func bootstrap(cpAddr string, delta bool) string {
	h, p, _ := net.SplitHostPort(cpAddr)
	api := "GRPC"
	if delta {
		api = "DELTA_GRPC"
	}
	return fmt.Sprintf(`
node: {id: %s, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config: {api_type: %s, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, nodeID, api, h, p)
}

// load sends requests continuously until stopped and counts failures.
type load struct {
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
	seen   sync.Map
}

func startLoad(url string, workers int) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				if err != nil {
					l.fail(err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					l.fail(fmt.Sprintf("%d %s", resp.StatusCode, b))
					continue
				}
				l.ok.Add(1)
				l.seen.Store(string(b), true)
			}
		}()
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

func (l *load) fail(s string) {
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, s)
	}
	l.mu.Unlock()
}

func (l *load) finish() { close(l.stop); <-l.done }

func upstreams(t *testing.T, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("b%d", i)
		u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(name))
		}))
		out = append(out, u.Addr)
	}
	return out
}

func TestADSHotSwapsUnderLoad(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			cp := startControlPlane(t, "")
			backends := upstreams(t, 4)
			w := &world{listen: freeAddr(t), endpoints: backends[:2]}
			cp.push(t, w)
			p := testutil.StartProxy(t, bootstrap(cp.addr, delta), nil)
			url := "http://" + w.listen + "/"
			testutil.Eventually(t, 10*time.Second, func() bool {
				resp, err := http.Get(url)
				if err == nil {
					resp.Body.Close()
				}
				return err == nil && resp.StatusCode == 200
			}, "proxy never served the xDS listener")
			ld := startLoad(url, 4)
			// 100 updates: endpoints move among the backends, routes and the
			// cluster's LB policy change, a second listener comes and goes.
			for i := 0; i < 100; i++ {
				switch i % 4 {
				case 0:
					w.endpoints = backends[i%3 : i%3+2]
				case 1:
					w.clusterLB = clusterv3.Cluster_LbPolicy([]int32{0, 1, 3}[i%3]) // RR, LR, RANDOM
				case 2:
					if w.extraListener == "" {
						w.extraListener = freeAddr(t)
					} else {
						w.extraListener = ""
					}
				case 3:
					w.routes = []*routev3.Route{{Name: fmt.Sprint("r", i), Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
						Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"},
							Timeout: durationpb.New(time.Duration(5+i%5) * time.Second)}}}}
				}
				cp.push(t, w)
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			ld.finish()
			t.Logf("%d requests, %d failed, across 100 updates", ld.ok.Load(), ld.failed.Load())
			if f := ld.failed.Load(); f != 0 {
				t.Errorf("%d of %d requests failed during 100 updates: %v", f, f+ld.ok.Load(), ld.errs)
			}
			if ld.ok.Load() < 200 {
				t.Errorf("too few requests completed (%d): the load generator did not run", ld.ok.Load())
			}
			for _, name := range []string{"b0", "b1", "b2"} {
				if _, ok := ld.seen.Load(name); !ok {
					t.Errorf("backend %s never served: endpoint updates did not apply", name)
				}
			}
			if n := p.Stat(t, "cluster_manager.cds.update_success"); n < 2 {
				t.Errorf("cluster_manager.cds.update_success = %d", n)
			}
			if n := p.Stat(t, "control_plane.connected_state"); n != 1 {
				t.Errorf("control_plane.connected_state = %d", n)
			}
			if len(cp.nackMessages()) != 0 {
				t.Errorf("valid updates were NACKed: %v", cp.nackMessages())
			}
		})
	}
}

func TestNACKKeepsLastGoodConfig(t *testing.T) {
	cp := startControlPlane(t, "")
	backends := upstreams(t, 2)
	w := &world{listen: freeAddr(t), endpoints: backends[:1]}
	cp.push(t, w)
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + w.listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := getQuiet(url)
		return code == 200
	}, "proxy never served")
	// A cluster Legate cannot run: the whole CDS update is rejected (EDS,
	// a separate resource, would still apply, as in Envoy: keep it as is).
	w.clusterLB = clusterv3.Cluster_CLUSTER_PROVIDED
	cp.push(t, w)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(cp.nackMessages()) > 0 }, "no NACK reached the control plane")
	msg := cp.nackMessages()[0]
	if !strings.Contains(msg, "cluster backend.lb_policy: CLUSTER_PROVIDED is only for clusters that choose their hosts themselves") {
		t.Errorf("NACK error_detail does not name the field: %q", msg)
	}
	if n := p.Stat(t, "cluster_manager.cds.update_rejected"); n < 1 {
		t.Errorf("update_rejected = %d", n)
	}
	// The last good config keeps serving.
	for i := 0; i < 10; i++ {
		if code, body, _ := getQuiet(url); code != 200 || body != "b0" {
			t.Fatalf("after a NACK: %d %q", code, body)
		}
	}
	// A fixed update is accepted again.
	w.clusterLB = clusterv3.Cluster_ROUND_ROBIN
	w.endpoints = backends[1:]
	cp.push(t, w)
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, body, _ := getQuiet(url)
		return body == "b1"
	}, "the fixed update was not applied")
}

// Regression: a cluster removed while it was still warming came back
// once its warm wait ended (and then blocked re-adding that name).
func TestClusterRemovedWhileWarming(t *testing.T) {
	cp := startControlPlane(t, "")
	backends := upstreams(t, 1)
	w := &world{listen: freeAddr(t), endpoints: backends}
	cp.push(t, w)
	b := strings.Replace(bootstrap(cp.addr, false), "cds_config: {ads: {}, resource_api_version: V3}", "cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 1s}", 1)
	p := testutil.StartProxy(t, b, nil)
	url := "http://" + w.listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { code, _, _ := getQuiet(url); return code == 200 }, "proxy never served")
	w.slowCluster = "slow"
	cp.push(t, w) // "slow" warms: its endpoints never come
	time.Sleep(200 * time.Millisecond)
	w.slowCluster = ""
	cp.push(t, w)               // removed before its warm wait ends
	time.Sleep(2 * time.Second) // past initial_fetch_timeout
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/clusters")
	if strings.Contains(body, "slow::") {
		t.Fatalf("the removed cluster came back after warming:\n%s", body)
	}
}

func TestControlPlaneRestart(t *testing.T) {
	cp := startControlPlane(t, "")
	backends := upstreams(t, 2)
	w := &world{listen: freeAddr(t), endpoints: backends[:1]}
	cp.push(t, w)
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	url := "http://" + w.listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := getQuiet(url); return c == 200 }, "proxy never served")
	addr := cp.addr
	cp.srv.Stop()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "control_plane.connected_state") == 0 }, "disconnect not noticed")
	for i := 0; i < 5; i++ {
		if c, b, _ := getQuiet(url); c != 200 || b != "b0" {
			t.Fatalf("without a control plane the proxy must keep serving: %d %q", c, b)
		}
	}
	// A new control plane on the same address, with new endpoints.
	cp2 := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cp2.listen(t, addr)
	w.endpoints = backends[1:]
	cp2.push(t, w)
	testutil.Eventually(t, 20*time.Second, func() bool { _, b, _ := getQuiet(url); return b == "b1" }, "proxy did not resubscribe after the restart")
	if n := p.Stat(t, "control_plane.connected_state"); n != 1 {
		t.Errorf("connected_state = %d after reconnect", n)
	}
}

func getQuiet(url string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}
