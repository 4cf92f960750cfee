package client

import (
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// scripted is an ADS server driven step by step by the test: it hands
// over every request the client sends and sends what the test says, so
// the client's state machine (ACK, NACK, resume, names) is checked on
// the wire.
type scripted struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	reqs  chan *discoveryv3.DiscoveryRequest
	sends chan *discoveryv3.DiscoveryResponse
	drop  chan struct{} // ends the current stream
}

func (s *scripted) StreamAggregatedResources(st discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.reqs <- r
		}
	}()
	for {
		select {
		case r := <-s.sends:
			if err := st.Send(r); err != nil {
				return err
			}
		case <-s.drop:
			return errors.New("dropped by the test")
		case err := <-errc:
			return err
		}
	}
}

func startScripted(t *testing.T) (*scripted, string) {
	t.Helper()
	s := &scripted{reqs: make(chan *discoveryv3.DiscoveryRequest, 16), sends: make(chan *discoveryv3.DiscoveryResponse), drop: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, s)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return s, ln.Addr().String()
}

func (s *scripted) next(t *testing.T) *discoveryv3.DiscoveryRequest {
	t.Helper()
	select {
	case r := <-s.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the client sent no request")
		return nil
	}
}

func (s *scripted) send(t *testing.T, typeURL, version, nonce string, res ...proto.Message) {
	t.Helper()
	r := &discoveryv3.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: nonce}
	for _, m := range res {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		r.Resources = append(r.Resources, a)
	}
	select {
	case s.sends <- r:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is not up")
	}
}

// recorder is a handler that accepts or rejects as told and counts calls.
type recorder struct {
	mu     sync.Mutex
	calls  int
	reject error
	last   []string
}

func (h *recorder) Update(version string, res map[string]*resource.Decoded) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.reject != nil {
		return h.reject
	}
	h.last = h.last[:0]
	for n := range res {
		h.last = append(h.last, n)
	}
	slices.Sort(h.last)
	return nil
}

func (h *recorder) set(err error) { h.mu.Lock(); h.reject = err; h.mu.Unlock() }
func (h *recorder) n() int        { h.mu.Lock(); defer h.mu.Unlock(); return h.calls }

func TestStateMachine(t *testing.T) {
	s, addr := startScripted(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	node := &corev3.Node{Id: "n1", Cluster: "c1"}
	st := stats.NewStore()
	c := New(Options{Conn: conn, Node: node, Stats: st})
	cds := &recorder{}
	c.Subscribe(ClusterType, nil, cds, NewStats(st.Scope("cds.")))
	c.Start()
	defer c.Stop()

	// The first request: wildcard, no version, no nonce, the node.
	r := s.next(t)
	if r.GetTypeUrl() != ClusterType || r.GetVersionInfo() != "" || r.GetResponseNonce() != "" || len(r.GetResourceNames()) != 0 || r.GetNode().GetId() != "n1" {
		t.Fatalf("initial request: %v", r)
	}
	// v1 accepted: ACK carries version v1 and nonce n1.
	s.send(t, ClusterType, "v1", "n1", &clusterv3.Cluster{Name: "a"}, &clusterv3.Cluster{Name: "b"})
	r = s.next(t)
	if r.GetVersionInfo() != "v1" || r.GetResponseNonce() != "n1" || r.GetErrorDetail() != nil {
		t.Fatalf("ACK: %v", r)
	}
	if !slices.Equal(cds.last, []string{"a", "b"}) {
		t.Fatalf("handler got %v", cds.last)
	}
	// v2 rejected: NACK keeps version v1, carries nonce n2 and the reason.
	cds.set(errors.New("cluster b: bad lb_policy"))
	s.send(t, ClusterType, "v2", "n2", &clusterv3.Cluster{Name: "b"})
	r = s.next(t)
	if r.GetVersionInfo() != "v1" || r.GetResponseNonce() != "n2" || r.GetErrorDetail().GetMessage() != "cluster b: bad lb_policy" {
		t.Fatalf("NACK: %v", r)
	}
	if v, res, _ := c.Resources(ClusterType); v != "v1" || len(res) != 2 {
		t.Fatalf("after a NACK the client holds %s %d resources, want v1 and 2", v, len(res))
	}
	// The same rejected content again (go-control-plane re-sends it): NACKed
	// without compiling it again.
	calls := cds.n()
	s.send(t, ClusterType, "v2", "n3", &clusterv3.Cluster{Name: "b"})
	r = s.next(t)
	if r.GetErrorDetail() == nil || r.GetResponseNonce() != "n3" || cds.n() != calls {
		t.Fatalf("repeat NACK: %v (handler calls %d → %d)", r, calls, cds.n())
	}
	if n := st.Counter("cds.update_rejected").Value(); n != 2 {
		t.Errorf("update_rejected = %d, want 2", n)
	}

	// Named subscriptions: the names go out; a change sends them again;
	// dropping the last name sends an empty list (unsubscribe).
	cds.set(nil)
	rds := &recorder{}
	c.Subscribe(RouteType, []string{"r1"}, rds, nil)
	if r = s.next(t); r.GetTypeUrl() != RouteType || !slices.Equal(r.GetResourceNames(), []string{"r1"}) {
		t.Fatalf("RDS request: %v", r)
	}
	s.send(t, RouteType, "1", "rn1", &routev3.RouteConfiguration{Name: "r1"}, &routev3.RouteConfiguration{Name: "unasked"})
	if r = s.next(t); r.GetVersionInfo() != "1" || r.GetErrorDetail() != nil {
		t.Fatalf("RDS ACK: %v", r)
	}
	if !slices.Equal(rds.last, []string{"r1"}) {
		t.Errorf("a resource that was not asked for reached the handler: %v", rds.last)
	}
	c.SetNames(RouteType, []string{"r1", "r2"})
	if r = s.next(t); !slices.Equal(r.GetResourceNames(), []string{"r1", "r2"}) || r.GetResponseNonce() != "rn1" {
		t.Fatalf("names change: %v", r)
	}
	c.SetNames(RouteType, []string{})
	if r = s.next(t); r.GetTypeUrl() != RouteType || len(r.GetResourceNames()) != 0 {
		t.Fatalf("unsubscribe: %v", r)
	}

	c.SetNames(RouteType, []string{"r2"})
	if r = s.next(t); !slices.Equal(r.GetResourceNames(), []string{"r2"}) {
		t.Fatalf("resubscribe: %v", r)
	}

	// A new stream resumes: each type's request carries the version held,
	// no nonce; CDS comes before RDS (Envoy's order).
	s.drop <- struct{}{}
	first, second := s.next(t), s.next(t)
	if first.GetTypeUrl() != ClusterType || first.GetVersionInfo() != "v1" || first.GetResponseNonce() != "" {
		t.Fatalf("resumed CDS request: %v", first)
	}
	if second.GetTypeUrl() != RouteType || second.GetVersionInfo() != "1" || !slices.Equal(second.GetResourceNames(), []string{"r2"}) {
		t.Fatalf("resumed RDS request: %v", second)
	}
}

// decodeRecorder is a handler that keeps what it was given, and the names
// of the updates refused before it (Rejecter).
type decodeRecorder struct {
	updates  []map[string]*resource.Decoded
	rejected [][]string
}

func (h *decodeRecorder) Update(_ string, res map[string]*resource.Decoded) error {
	h.updates = append(h.updates, res)
	return nil
}

func (h *decodeRecorder) Rejected(names []string) { h.rejected = append(h.rejected, names) }

func packAll(t *testing.T, ms ...proto.Message) []*anypb.Any {
	t.Helper()
	var out []*anypb.Any
	for _, m := range ms {
		a, err := anypb.New(m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func cluster(name string, timeout time.Duration) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ConnectTimeout: durationpb.New(timeout)}
}

// TestDecodeOnce: the client decodes and validates every resource before
// the handler, which gets decoded messages (a Resource wrapper unwrapped);
// a resource that fails NACKs the response with every reason, the handler
// never sees it, a Rejecter is told the update's names, and the last good
// set stays.
func TestDecodeOnce(t *testing.T) {
	st := stats.NewStore()
	c := New(Options{Stats: st})
	h := &decodeRecorder{}
	c.Subscribe(ClusterType, nil, h, NewStats(st.Scope("cds.")))

	good := packAll(t, cluster("a", time.Second))[0]
	wrapped := packAll(t, &discoveryv3.Resource{Name: "b", Resource: packAll(t, cluster("b", time.Second))[0]})[0]
	req := c.handleSotW(&discoveryv3.DiscoveryResponse{TypeUrl: ClusterType, VersionInfo: "1", Nonce: "n1", Resources: []*anypb.Any{good, wrapped}})
	if req.GetErrorDetail() != nil || len(h.updates) != 1 {
		t.Fatalf("v1 not applied: %v, %d updates", req.GetErrorDetail(), len(h.updates))
	}
	got := h.updates[0]
	if pc, _ := got["a"].Message.(*clusterv3.Cluster); pc.GetName() != "a" || string(got["a"].Raw) != string(good.GetValue()) {
		t.Errorf("handler got %v for a", got["a"])
	}
	if pc, _ := got["b"].Message.(*clusterv3.Cluster); pc.GetName() != "b" {
		t.Errorf("the wrapped cluster reached the handler as %v", got["b"])
	}

	// An invalid cluster and undecodable bytes: NACK with both reasons.
	bad := append(packAll(t, cluster("a", time.Second), cluster("bad", 0)), &anypb.Any{TypeUrl: ClusterType, Value: []byte{0x0f}})
	req = c.handleSotW(&discoveryv3.DiscoveryResponse{TypeUrl: ClusterType, VersionInfo: "2", Nonce: "n2", Resources: bad})
	msg := req.GetErrorDetail().GetMessage()
	if !strings.Contains(msg, "cluster bad.connect_timeout: value must be greater than 0s") || !strings.Contains(msg, "cluster resource: cannot decode envoy.config.cluster.v3.Cluster") {
		t.Errorf("NACK error_detail %q does not give both reasons", msg)
	}
	if req.GetVersionInfo() != "1" || req.GetResponseNonce() != "n2" {
		t.Errorf("NACK version %q nonce %q, want 1 and n2", req.GetVersionInfo(), req.GetResponseNonce())
	}
	if len(h.updates) != 1 {
		t.Errorf("the handler saw a rejected update")
	}
	if len(h.rejected) != 1 || !slices.Equal(h.rejected[0], []string{"a", "bad"}) {
		t.Errorf("Rejected got %v, want [[a bad]]", h.rejected)
	}
	if v, res, _ := c.Resources(ClusterType); v != "1" || len(res) != 2 || res["b"] == nil {
		t.Errorf("after the NACK the client holds %s %v", v, res)
	}
	if n := st.Counter("cds.update_rejected").Value(); n != 1 {
		t.Errorf("update_rejected = %d, want 1", n)
	}
}

// TestDecodeNamedSubscription: a resource the subscription does not name
// is skipped even when invalid, but one whose name cannot be read NACKs;
// RDS merges into what it holds.
func TestDecodeNamedSubscription(t *testing.T) {
	c := New(Options{Stats: stats.NewStore()})
	h := &decodeRecorder{}
	c.Subscribe(RouteType, []string{"r1", "r2"}, h, nil)
	invalid := &routev3.RouteConfiguration{Name: "unasked", VirtualHosts: []*routev3.VirtualHost{{Name: "vh"}}}
	req := c.handleSotW(&discoveryv3.DiscoveryResponse{TypeUrl: RouteType, VersionInfo: "1", Nonce: "n1",
		Resources: packAll(t, &routev3.RouteConfiguration{Name: "r1"}, invalid)})
	if req.GetErrorDetail() != nil || len(h.updates) != 1 || len(h.updates[0]) != 1 || h.updates[0]["r1"] == nil {
		t.Fatalf("r1 with an unasked invalid resource: %v, updates %v", req.GetErrorDetail(), h.updates)
	}
	req = c.handleSotW(&discoveryv3.DiscoveryResponse{TypeUrl: RouteType, VersionInfo: "2", Nonce: "n2",
		Resources: packAll(t, &routev3.RouteConfiguration{Name: "r2"})})
	if req.GetErrorDetail() != nil || len(h.updates) != 2 || len(h.updates[1]) != 2 {
		t.Fatalf("r2 should merge with r1: %v, updates %v", req.GetErrorDetail(), h.updates)
	}
	req = c.handleSotW(&discoveryv3.DiscoveryResponse{TypeUrl: RouteType, VersionInfo: "3", Nonce: "n3",
		Resources: packAll(t, &clusterv3.Cluster{Name: "r1"})})
	if msg := req.GetErrorDetail().GetMessage(); !strings.Contains(msg, "in a RouteConfiguration response") {
		t.Errorf("a cluster in an RDS response: NACK %q", msg)
	}
	if len(h.updates) != 2 || len(h.rejected) != 1 || !slices.Equal(h.rejected[0], []string{"r1", "r2"}) {
		t.Errorf("updates %d, rejected %v: want 2 and [[r1 r2]]", len(h.updates), h.rejected)
	}
}

// TestDecodeDelta: delta resources are decoded the same way, named by the
// delta resource's name (else the message's); a bad one NACKs and nothing
// changes.
func TestDecodeDelta(t *testing.T) {
	c := New(Options{Stats: stats.NewStore(), Delta: true})
	h := &decodeRecorder{}
	c.Subscribe(ClusterType, nil, h, nil)
	res := func(name string, m proto.Message) *discoveryv3.Resource {
		return &discoveryv3.Resource{Name: name, Version: "v", Resource: packAll(t, m)[0]}
	}
	req := c.handleDelta(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType, SystemVersionInfo: "1", Nonce: "n1",
		Resources: []*discoveryv3.Resource{res("x", cluster("a", time.Second)), res("", cluster("b", time.Second))}})
	if req.GetErrorDetail() != nil || len(h.updates) != 1 || h.updates[0]["x"] == nil || h.updates[0]["b"] == nil {
		t.Fatalf("delta v1: %v, updates %v", req.GetErrorDetail(), h.updates)
	}
	req = c.handleDelta(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: ClusterType, SystemVersionInfo: "2", Nonce: "n2",
		Resources: []*discoveryv3.Resource{res("c", cluster("c", 0))}, RemovedResources: []string{"x"}})
	if msg := req.GetErrorDetail().GetMessage(); !strings.Contains(msg, "cluster c.connect_timeout") || req.GetResponseNonce() != "n2" {
		t.Errorf("delta NACK %q nonce %q", msg, req.GetResponseNonce())
	}
	if len(h.updates) != 1 || len(h.rejected) != 1 || !slices.Equal(h.rejected[0], []string{"b", "c"}) {
		t.Errorf("updates %d, rejected %v: want 1 and [[b c]]", len(h.updates), h.rejected)
	}
	if _, held, _ := c.Resources(ClusterType); len(held) != 2 || held["x"] == nil {
		t.Errorf("after the delta NACK the client holds %v", held)
	}
}
