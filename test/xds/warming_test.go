package xds

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
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
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/testutil"
)

// Tests of cluster warming over CDS: only the newest accepted version of a
// cluster that is still wanted is ever installed. A cluster removed while
// it warms must not come back when its warm wait ends (nor block re-adding
// its name), and an older version that warms more slowly must not undo a
// newer one.
//
// What a cluster waits for while it warms is, here, its first active
// health-check round against a gate: an upstream that holds health checks
// until the test opens the gate. So the test, not a timer, decides when a
// warm wait ends, and the stat cluster.<name>.health_check.success tells it
// that it did.

// gate is an upstream whose health checks (GET /hc) wait, per Host header
// (a health check's Host is its cluster's name), until the test opens the
// gate for that host; any other request is answered with body.
type gate struct {
	addr string
	mu   sync.Mutex
	held map[string]chan struct{} // by host: closed when opened
	hcs  map[string]int           // health checks received, by host
}

func startGate(t *testing.T, body string) *gate {
	t.Helper()
	g := &gate{held: map[string]chan struct{}{}, hcs: map[string]int{}}
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hc" {
			w.Write([]byte(body))
			return
		}
		g.mu.Lock()
		g.hcs[r.Host]++
		ch := g.chanLocked(r.Host)
		g.mu.Unlock()
		select {
		case <-ch:
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done():
		}
	}))
	g.addr = u.Addr
	// Before the upstream closes (cleanups run last-registered first).
	t.Cleanup(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for h, ch := range g.held {
			select {
			case <-ch:
			default:
				close(ch)
			}
			delete(g.held, h)
		}
	})
	return g
}

func (g *gate) chanLocked(host string) chan struct{} {
	ch := g.held[host]
	if ch == nil {
		ch = make(chan struct{})
		g.held[host] = ch
	}
	return ch
}

// open lets the health checks of host through, those waiting and later ones,
// until hold.
func (g *gate) open(host string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := g.chanLocked(host)
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// hold makes the next health checks of host wait again.
func (g *gate) hold(host string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[host] = make(chan struct{})
}

func (g *gate) checks(host string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hcs[host]
}

// staticCluster is a STATIC cluster of one host.
func staticCluster(name, addr string) *clusterv3.Cluster {
	h, p, _ := net.SplitHostPort(addr)
	var port uint32
	fmt.Sscan(p, &port)
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(h, port)}}}}}}},
	}
}

// gatedCluster is a STATIC cluster of the gate whose first health check
// round — what it warms on — waits until the gate opens for its name.
func gatedCluster(name string, g *gate) *clusterv3.Cluster {
	c := staticCluster(name, g.addr)
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Minute), Interval: durationpb.New(time.Minute),
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/hc"}},
	}}
	return c
}

// edsClusterADS is an EDS cluster whose endpoints come over ADS.
func edsClusterADS(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
	}
}

// warmRig is a proxy on go-control-plane's ADS server whose listener
// "main" routes /<name>/ to cluster <name> for each routed name and
// everything else to cluster "backend".
type warmRig struct {
	t       *testing.T
	cp      *controlPlane
	p       *testutil.Proxy
	listen  string
	routed  []string
	version int
}

// bootstrapWarm is bootstrap with a long initial_fetch_timeout on CDS: a
// cluster that warms stays warming until what it waits for arrives (the
// test decides when), not until a timer fires.
func bootstrapWarm(cpAddr string) string {
	return strings.Replace(bootstrap(cpAddr, false), "cds_config: {ads: {}, resource_api_version: V3}",
		"cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 60s}", 1)
}

func startWarmRig(t *testing.T, routed []string, clusters []*clusterv3.Cluster, eps ...*endpointv3.ClusterLoadAssignment) *warmRig {
	t.Helper()
	r := &warmRig{t: t, cp: startControlPlane(t, ""), listen: freeAddr(t), routed: routed}
	r.set(clusters, eps...)
	r.p = testutil.StartProxy(t, bootstrapWarm(r.cp.addr), nil)
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := getQuiet(r.url("/")); return c == 200 }, "the proxy never served its xDS listener")
	return r
}

func (r *warmRig) url(path string) string { return "http://" + r.listen + path }

// set makes the next snapshot: exactly these clusters and assignments,
// with the listener and its routes.
func (r *warmRig) set(clusters []*clusterv3.Cluster, eps ...*endpointv3.ClusterLoadAssignment) {
	r.t.Helper()
	r.version++
	var routes []*routev3.Route
	for _, n := range r.routed {
		routes = append(routes, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/" + n + "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: n}}}})
	}
	routes = append(routes, &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}}})
	rc := &routev3.RouteConfiguration{Name: "local", ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}}}
	res := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {listener("main", r.listen, "local")},
		resourcev3.RouteType:    {rc},
	}
	for _, c := range clusters {
		res[resourcev3.ClusterType] = append(res[resourcev3.ClusterType], c)
	}
	for _, la := range eps {
		res[resourcev3.EndpointType] = append(res[resourcev3.EndpointType], la)
	}
	snap, err := cachev3.NewSnapshot(fmt.Sprint(r.version), res)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.cp.cache.SetSnapshot(context.Background(), nodeID, snap); err != nil {
		r.t.Fatal(err)
	}
}

// push sets the next snapshot and waits until the proxy handled its CDS
// update; it fails the test if the update was rejected.
func (r *warmRig) push(clusters []*clusterv3.Cluster, eps ...*endpointv3.ClusterLoadAssignment) {
	r.t.Helper()
	before := r.p.Stat(r.t, "cluster_manager.cds.update_success")
	rejected := r.p.Stat(r.t, "cluster_manager.cds.update_rejected")
	r.set(clusters, eps...)
	testutil.Eventually(r.t, 10*time.Second, func() bool {
		return r.p.Stat(r.t, "cluster_manager.cds.update_success") > before || r.p.Stat(r.t, "cluster_manager.cds.update_rejected") > rejected
	}, "CDS version %d was not handled", r.version)
	if r.p.Stat(r.t, "cluster_manager.cds.update_rejected") > rejected {
		r.t.Fatalf("CDS version %d was rejected: %v", r.version, r.cp.nackMessages())
	}
}

// warmEnded waits until the health check round a gated cluster warms on
// has completed n times in all (its warm wait ends right after).
func (r *warmRig) warmEnded(name string, n int64) {
	r.t.Helper()
	testutil.Eventually(r.t, 10*time.Second, func() bool { return r.p.Stat(r.t, "cluster."+name+".health_check.success") >= n },
		"the health check of cluster %s did not complete", name)
}

// clusterHosts returns the hosts /clusters lists for a cluster (nil: the
// cluster is not installed).
func clusterHosts(t *testing.T, admin, name string) []string {
	t.Helper()
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+admin+"/clusters")
	var hosts []string
	found := false
	for _, line := range strings.Split(body, "\n") {
		parts := strings.Split(line, "::")
		if len(parts) < 3 || parts[0] != name {
			continue
		}
		found = true
		if parts[2] == "cx_active" {
			hosts = append(hosts, parts[1])
		}
	}
	if found && hosts == nil {
		hosts = []string{}
	}
	sort.Strings(hosts)
	return hosts
}

// steady sends n requests to url, spaced out, and fails on any answer other
// than want: a version that must not come back has had the time to.
func steady(t *testing.T, url, want string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if c, b, err := getQuiet(url); c != 200 || b != want {
			t.Fatalf("request %d to %s: %d %q %v, want %q", i, url, c, b, err, want)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestClusterReAddedAfterRemovalWhileWarming: cluster x is added and warms
// (its first health check is held), is removed, and is added again with
// another config (EDS). The re-added x warms and serves once its endpoints
// arrive, and the removed generation never comes back — whether its warm
// wait ends before the re-add (before the fix it came back then, and the
// re-add was refused: "a static cluster of that name exists") or after it
// (it then replaced the re-added x).
func TestClusterReAddedAfterRemovalWhileWarming(t *testing.T) {
	for _, order := range []string{"warm-ends-before-re-add", "warm-ends-after-re-add"} {
		t.Run(order, func(t *testing.T) {
			backends := upstreams(t, 2)
			g := startGate(t, "removed-x")
			backend := staticCluster("backend", backends[0])
			r := startWarmRig(t, []string{"x"}, []*clusterv3.Cluster{backend})

			// x is added and warms: its first health check waits at the gate.
			r.push([]*clusterv3.Cluster{backend, gatedCluster("x", g)})
			testutil.Eventually(t, 10*time.Second, func() bool { return g.checks("x") >= 1 }, "the added cluster x never health-checked")
			if hosts := clusterHosts(t, r.p.Admin, "x"); hosts != nil {
				t.Fatalf("x is installed while it warms: %v", hosts)
			}
			// Removed while it still warms.
			r.push([]*clusterv3.Cluster{backend})
			if order == "warm-ends-before-re-add" {
				g.open("x")
				r.warmEnded("x", 1)
				if hosts := clusterHosts(t, r.p.Admin, "x"); hosts != nil {
					t.Errorf("the removed cluster x came back when its warm wait ended: hosts %v", hosts)
				}
			}
			// Re-added with another config: EDS, its endpoints (b1) in the
			// same snapshot.
			readded := edsClusterADS("x")
			r.push([]*clusterv3.Cluster{backend, readded}, endpointsNamed("x", backends[1:]))
			testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/x/")); return b == "b1" },
				"the re-added cluster x never served (NACKs: %v)", r.cp.nackMessages())
			if order == "warm-ends-after-re-add" {
				g.open("x")
				r.warmEnded("x", 1)
			}
			// The removed generation's warm wait has ended: it must not be
			// installed, now or a little later.
			steady(t, r.url("/x/"), "b1", 20)
			if hosts := clusterHosts(t, r.p.Admin, "x"); len(hosts) != 1 || hosts[0] != backends[1] {
				t.Errorf("cluster x hosts = %v, want [%s] (the re-added EDS cluster; the gate %s is the removed one)", hosts, backends[1], g.addr)
			}
			if n := len(r.cp.nackMessages()); n != 0 {
				t.Errorf("updates were NACKed: %v", r.cp.nackMessages())
			}
		})
	}
}

// TestOlderClusterVersionDoesNotWin: cluster x is updated twice in quick
// succession; the first new version warms slowly (its health check is
// held), the second is ready at once. x becomes the second version and
// stays so when the first finally finishes warming (before the fix the
// older version was installed last and won).
func TestOlderClusterVersionDoesNotWin(t *testing.T) {
	backends := upstreams(t, 2)
	g := startGate(t, "older-x")
	backend := staticCluster("backend", backends[0])
	r := startWarmRig(t, []string{"x"}, []*clusterv3.Cluster{backend, staticCluster("x", backends[0])})
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/x/")); return b == "b0" }, "x never served")

	r.push([]*clusterv3.Cluster{backend, gatedCluster("x", g)}) // older: warms until the gate opens
	testutil.Eventually(t, 10*time.Second, func() bool { return g.checks("x") >= 1 }, "the first update of x never health-checked")
	r.push([]*clusterv3.Cluster{backend, staticCluster("x", backends[1])}) // newer: ready at once
	testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/x/")); return b == "b1" }, "the newer version of x never served")

	g.open("x")
	r.warmEnded("x", 1)
	steady(t, r.url("/x/"), "b1", 20)
	if hosts := clusterHosts(t, r.p.Admin, "x"); len(hosts) != 1 || hosts[0] != backends[1] {
		t.Errorf("cluster x hosts = %v, want [%s] (the newer version; the gate %s is the older)", hosts, backends[1], g.addr)
	}
	if n := len(r.cp.nackMessages()); n != 0 {
		t.Errorf("updates were NACKed: %v", r.cp.nackMessages())
	}
}

// TestCDSChurnWhileClustersWarm runs CDS updates back to back while
// clusters warm: some are removed while they warm and added again, some
// stay and finish warming between two updates, and others change in every
// update (each change warms and is installed concurrently with the next
// update). Under -race it is the regression test of updateClusters reading
// the warming set without the lock while warmCluster deleted from it (the
// read of the next update raced with the delete of a cluster that finished
// warming after the previous one). The final config must be exactly what
// the last update says, with no update refused.
func TestCDSChurnWhileClustersWarm(t *testing.T) {
	backends := upstreams(t, 2)
	g := startGate(t, "gated")
	const n = 3
	var churned, staying, changing []string
	for i := 0; i < n; i++ {
		churned = append(churned, fmt.Sprint("w", i))
		staying = append(staying, fmt.Sprint("k", i))
		changing = append(changing, fmt.Sprint("s", i))
	}
	backend := staticCluster("backend", backends[0])
	// changingSet is the clusters that change in every update (their LB
	// policy alternates), each to warm and be installed at once.
	step := 0
	changingSet := func() []*clusterv3.Cluster {
		step++
		out := []*clusterv3.Cluster{backend}
		for _, name := range changing {
			c := staticCluster(name, backends[1])
			c.LbPolicy = []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RANDOM}[step%2]
			out = append(out, c)
		}
		return out
	}
	// gatedSet is a gated version of each name, new in each round.
	gatedSet := func(names []string, round int) []*clusterv3.Cluster {
		var out []*clusterv3.Cluster
		for _, name := range names {
			c := gatedCluster(name, g)
			c.ConnectTimeout = durationpb.New(time.Duration(round+1) * time.Second)
			out = append(out, c)
		}
		return out
	}
	routed := append(append(append([]string{}, churned...), staying...), changing...)
	r := startWarmRig(t, routed, changingSet())
	checks := map[string]int{}
	var successes int64
	for round := 0; round < 3; round++ {
		// Churned and staying clusters get a new gated version: they warm.
		for _, name := range append(append([]string{}, churned...), staying...) {
			g.hold(name)
		}
		r.push(append(append(changingSet(), gatedSet(churned, round)...), gatedSet(staying, round)...))
		for _, name := range append(append([]string{}, churned...), staying...) {
			want := checks[name] + 1
			testutil.Eventually(t, 10*time.Second, func() bool { return g.checks(name) >= want }, "cluster %s never health-checked", name)
			checks[name] = want
		}
		// The churned ones are removed while they warm; then every warm
		// wait ends (the staying ones are installed) before the next update.
		r.push(append(changingSet(), gatedSet(staying, round)...))
		successes++
		for _, name := range append(append([]string{}, churned...), staying...) {
			g.open(name)
			r.warmEnded(name, successes)
		}
		// The churned ones are added again, ready at once.
		set := append(changingSet(), gatedSet(staying, round)...)
		for _, name := range churned {
			set = append(set, staticCluster(name, backends[0]))
		}
		r.push(set)
	}
	want := map[string]string{}
	for _, name := range churned {
		want[name] = backends[0]
	}
	for _, name := range staying {
		want[name] = g.addr
	}
	for _, name := range changing {
		want[name] = backends[1]
	}
	body := map[string]string{backends[0]: "b0", backends[1]: "b1", g.addr: "gated"}
	for _, name := range routed {
		testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/" + name + "/")); return b == body[want[name]] },
			"cluster %s does not serve its last version", name)
		if hosts := clusterHosts(t, r.p.Admin, name); len(hosts) != 1 || hosts[0] != want[name] {
			t.Errorf("cluster %s hosts = %v, want [%s]", name, hosts, want[name])
		}
	}
	if msgs := r.cp.nackMessages(); len(msgs) != 0 {
		t.Errorf("updates were NACKed: %v", msgs)
	}
}
