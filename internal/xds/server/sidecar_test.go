package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/legateproxy/legate/internal/mesh"
	lt "github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// mtlsServer serves xDS over mTLS with a CA of the test's; it returns
// the server, its address and the CA (to issue client certificates).
func mtlsServer(t *testing.T, hooks SidecarHooks) (*Server, string, *lt.CA) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ca := lt.NewCA(t, "xds-ca")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	crt, key := ca.Issue(t, "legate-controller", "legate-controller", "127.0.0.1").WriteFiles(t, dir, "controller")
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(prometheus.NewRegistry()))
	s.SetSidecarHooks(hooks)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeTLS(ctx, l, TLSFiles{CA: caFile, Cert: crt, Key: key})
	return s, l.Addr().String(), ca
}

// dial opens an ADS stream with the client certificate leaf.
func dial(t *testing.T, addr string, ca *lt.CA, leaf *lt.Leaf) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{leaf.TLS}, ServerName: "legate-controller"})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

const shopNode = "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local"

// TestSidecarAuthorization: a workload certificate (SPIFFE URI SAN) may
// only use a sidecar node id of its namespace, and of the ServiceAccount
// the controller knows for the pod; a proxy certificate keeps using any
// node id. Refusals are PermissionDenied, logged and counted.
func TestSidecarAuthorization(t *testing.T) {
	var mu sync.Mutex
	requested := map[string]int{}
	var s *Server
	s, addr, ca := mtlsServer(t, SidecarHooks{
		Requested: func(node string) {
			mu.Lock()
			requested[node]++
			mu.Unlock()
			s.Set(context.Background(), node, clusters("outbound|80||web.shop.svc.cluster.local"))
		},
		Authorize: func(n mesh.NodeID, ns, sa string) error {
			if n.Pod == "web-1" && sa != "web" {
				return errors.New("pod shop/web-1 runs as ServiceAccount web")
			}
			return nil
		},
	})
	if err := s.Set(context.Background(), GroupProxy, clusters("gateway-secret-holder")); err != nil {
		t.Fatal(err)
	}
	proxyCert := ca.Issue(t, "legate-proxy", "legate-proxy")
	web := ca.Issue(t, "web", mesh.SPIFFEID("", "shop", "web"))
	other := ca.Issue(t, "db", mesh.SPIFFEID("", "shop", "db"))
	foreign := ca.Issue(t, "evil", mesh.SPIFFEID("", "evil", "default"))
	bad := ca.Issue(t, "bad", "spiffe://cluster.local/not-a-workload")

	for _, tc := range []struct {
		name   string
		leaf   *lt.Leaf
		node   string
		want   string // the cluster received; "" for a refusal
		reason string
	}{
		{"workload of its namespace", web, shopNode, "outbound|80||web.shop.svc.cluster.local", ""},
		{"workload of another namespace", foreign, shopNode, "", "namespace"},
		{"workload with a gateway node id", web, "gateway-1", "", "not_sidecar"},
		{"workload without a node id", web, "", "", "not_sidecar"},
		{"workload of another ServiceAccount", other, shopNode, "", "service_account"},
		{"certificate with a non-workload SPIFFE id", bad, shopNode, "", "bad_spiffe_id"},
		{"proxy certificate, gateway node", proxyCert, "gateway-1", "gateway-secret-holder", ""},
		{"proxy certificate, sidecar node", proxyCert, shopNode, "outbound|80||web.shop.svc.cluster.local", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := 0.0
			if tc.reason != "" {
				before = testutil.ToFloat64(s.metrics.Unauthorized.WithLabelValues(tc.reason))
			}
			st := dial(t, addr, ca, tc.leaf)
			req := &discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType}
			if tc.node != "" {
				req.Node = &corev3.Node{Id: tc.node}
			}
			if err := st.Send(req); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if tc.want == "" {
				if status.Code(err) != codes.PermissionDenied {
					t.Fatalf("got %v, %v; want PermissionDenied", resp, err)
				}
				if got := testutil.ToFloat64(s.metrics.Unauthorized.WithLabelValues(tc.reason)); got != before+1 {
					t.Errorf("legate_xds_unauthorized_streams_total{reason=%q} = %v, want %v", tc.reason, got, before+1)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Resources) != 1 {
				t.Fatalf("got %d resources", len(resp.Resources))
			}
			if r, err := resource.ForURL(resourcev3.ClusterType).Decode(resp.Resources[0]); err != nil || r.Name != tc.want {
				t.Fatalf("got cluster %v (%v), want %s", r, err, tc.want)
			}
		})
	}
	mu.Lock()
	if requested[shopNode] != 1 {
		t.Errorf("Requested(%s) called %d times, want once (the first stream)", shopNode, requested[shopNode])
	}
	mu.Unlock()
	if got := s.Sidecars(); len(got) != 1 || got[0] != shopNode {
		t.Errorf("Sidecars() = %v", got)
	}
}

// TestSidecarForgotten: a sidecar's snapshot is dropped once its last
// stream has been closed for the TTL.
func TestSidecarForgotten(t *testing.T) {
	var s *Server
	s, addr, ca := mtlsServer(t, SidecarHooks{
		Requested: func(node string) { s.Set(context.Background(), node, clusters("c")) },
		TTL:       time.Millisecond,
	})
	web := ca.Issue(t, "web", mesh.SPIFFEID("", "shop", "web"))
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{web.TLS}, ServerName: "legate-controller"})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: shopNode}, TypeUrl: resourcev3.ClusterType})
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := s.Sidecars(); len(got) != 1 {
		t.Fatalf("open sidecar not kept: %v", got)
	}
	cancel()
	conn.Close()
	lt.Eventually(t, 10*time.Second, func() bool { return len(s.Sidecars()) == 0 }, "closed sidecar never forgotten")
	if v := s.Versions(shopNode); len(v) != 0 {
		t.Errorf("forgotten sidecar keeps versions %v", v)
	}
}

// TestSidecarAuthorizationDelta: incremental xDS streams are authorized
// the same way (the node id comes with the first request only).
func TestSidecarAuthorizationDelta(t *testing.T) {
	var s *Server
	s, addr, ca := mtlsServer(t, SidecarHooks{Requested: func(node string) { s.Set(context.Background(), node, clusters("c")) }})
	for _, tc := range []struct {
		id   string
		deny bool
	}{
		{mesh.SPIFFEID("", "shop", "web"), false},
		{mesh.SPIFFEID("", "evil", "web"), true},
	} {
		leaf := ca.Issue(t, "w", tc.id)
		creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{leaf.TLS}, ServerName: "legate-controller"})
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: shopNode}, TypeUrl: resourcev3.ClusterType})
		resp, err := st.Recv()
		if tc.deny {
			if status.Code(err) != codes.PermissionDenied {
				t.Errorf("%s: got %v, %v; want PermissionDenied", tc.id, resp, err)
			}
			continue
		}
		if err != nil || len(resp.GetResources()) != 1 {
			t.Errorf("%s: got %v, %v", tc.id, resp, err)
		}
	}
}

// TestSidecarStreamKeepsItsNode: a workload's stream authorized for its
// sidecar node may not switch node ids afterwards — not to another one,
// and not to an empty one (go-control-plane would take it as the
// stream's node and serve the proxy group, gateway secrets included).
func TestSidecarStreamKeepsItsNode(t *testing.T) {
	var s *Server
	s, addr, ca := mtlsServer(t, SidecarHooks{
		Requested: func(node string) {
			s.Set(context.Background(), node, clusters("outbound|80||web.shop.svc.cluster.local"))
		},
	})
	if err := s.Set(context.Background(), GroupProxy, clusters("gateway-secret-holder")); err != nil {
		t.Fatal(err)
	}
	web := ca.Issue(t, "web", mesh.SPIFFEID("", "shop", "web"))
	for _, next := range []*corev3.Node{{}, {Id: "gateway-1"}, {Id: "sidecar~10.1.2.4~web-2.shop~shop.svc.cluster.local"}} {
		st := dial(t, addr, ca, web)
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ClusterType, Node: &corev3.Node{Id: shopNode}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.ListenerType, Node: next, ResponseNonce: resp.Nonce}); err != nil {
			t.Fatal(err)
		}
		if resp, err := st.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Errorf("switching to node %q: got %v, %v; want PermissionDenied", next.GetId(), resp, err)
		}
	}
}

// TestFetchRefusesWorkloads: the unary Fetch RPCs are not open to
// workload certificates (they would name any node per call).
func TestFetchRefusesWorkloads(t *testing.T) {
	s, addr, ca := mtlsServer(t, SidecarHooks{})
	if err := s.Set(context.Background(), GroupProxy, clusters("gateway-secret-holder")); err != nil {
		t.Fatal(err)
	}
	fetch := func(leaf *lt.Leaf) (*discoveryv3.DiscoveryResponse, error) {
		creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{leaf.TLS}, ServerName: "legate-controller"})
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return clusterservice.NewClusterDiscoveryServiceClient(conn).FetchClusters(ctx, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "gateway-1"}, TypeUrl: resourcev3.ClusterType})
	}
	if resp, err := fetch(ca.Issue(t, "evil", mesh.SPIFFEID("", "evil", "default"))); status.Code(err) != codes.PermissionDenied {
		t.Errorf("workload FetchClusters: %v, %v; want PermissionDenied", resp, err)
	}
	if resp, err := fetch(ca.Issue(t, "legate-proxy", "legate-proxy")); err != nil || len(resp.GetResources()) != 1 {
		t.Errorf("proxy FetchClusters: %v, %v; want the proxy group's cluster", resp, err)
	}
}
