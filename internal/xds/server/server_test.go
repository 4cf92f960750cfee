package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func clusters(names ...string) map[resourcev3.Type][]types.Resource {
	var rs []types.Resource
	for _, n := range names {
		rs = append(rs, &clusterv3.Cluster{Name: n})
	}
	return map[resourcev3.Type][]types.Resource{resourcev3.ClusterType: rs}
}

// TestNACKIsNotResent checks the fix for go-control-plane's NACK loop: a
// client that rejects a version gets nothing more until the resources
// change, then gets the new version.
func TestNACKIsNotResent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ctx, l)
	if err := s.Set(ctx, GroupProxy, clusters("a")); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "n1", UserAgentName: "envoy"}
	stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType})
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	first := resp.GetVersionInfo()
	// NACK it.
	stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resourcev3.ClusterType, ResponseNonce: resp.GetNonce(),
		ErrorDetail: &statuspb.Status{Code: 3, Message: "cluster a: bad"}})
	got := make(chan *discoveryv3.DiscoveryResponse, 10)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- r
		}
	}()
	select {
	case r := <-got:
		t.Fatalf("NACKed version %s re-sent (%s) without any change", first, r.GetVersionInfo())
	case <-time.After(500 * time.Millisecond):
	}
	if n := s.NACKs()["n1 Cluster"]; n != "cluster a: bad" {
		t.Errorf("NACK not recorded: %q", n)
	}
	// The same content again keeps its version: still nothing sent.
	s.Set(ctx, GroupProxy, clusters("a"))
	select {
	case r := <-got:
		t.Fatalf("unchanged resources re-sent as %s", r.GetVersionInfo())
	case <-time.After(300 * time.Millisecond):
	}
	// A change is sent.
	s.Set(ctx, GroupProxy, clusters("a", "b"))
	select {
	case r := <-got:
		if r.GetVersionInfo() == first || len(r.GetResources()) != 2 {
			t.Fatalf("after a change got version %s with %d resources", r.GetVersionInfo(), len(r.GetResources()))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("changed resources never sent after a NACK")
	}
}

func TestGroup(t *testing.T) {
	for _, tc := range []struct {
		node *corev3.Node
		want string
	}{
		{nil, GroupProxy},
		{&corev3.Node{UserAgentName: "envoy"}, GroupProxy},
		{&corev3.Node{UserAgentName: "legate"}, GroupProxy},
		{&corev3.Node{UserAgentName: "gRPC Go"}, GroupProxyless},
		{&corev3.Node{Id: "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local", UserAgentName: "gRPC Go"}, "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local"},
		{&corev3.Node{Id: "sidecar~bad"}, GroupProxy},
	} {
		if got := Group(tc.node); got != tc.want {
			t.Errorf("Group(%v) = %s, want %s", tc.node, got, tc.want)
		}
	}
}
