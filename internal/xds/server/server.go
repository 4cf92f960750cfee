// Package server is the controller's xDS management server: go-control-
// plane's gRPC server (ADS, state-of-the-world and delta, and the per-type
// services) over its snapshot cache, with two groups of clients — proxies
// (Envoy or Legate) and proxyless gRPC clients — plus one group per
// sidecar (its node id: sidecar.go), and per-type versions
// derived from content, so that a type is pushed only when it changed.
//
// It also fixes a go-control-plane behaviour: the snapshot cache answers a
// NACK by re-sending the same rejected version at once, forever. Here a
// NACKed version counts as delivered until the resources change.
package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// The two client groups.
const (
	GroupProxy     = "proxy"
	GroupProxyless = "grpc"
)

// Group tells which resources a node gets: a sidecar (its id parses
// with mesh.ParseNodeID) its own, under its node id; gRPC clients (user
// agent "gRPC ...", or node metadata PROXYLESS=true) the proxyless set.
func Group(n *corev3.Node) string {
	if n == nil {
		return GroupProxy
	}
	if _, ok := mesh.ParseNodeID(n.GetId()); ok {
		return n.GetId()
	}
	if strings.HasPrefix(strings.ToLower(n.GetUserAgentName()), "grpc") {
		return GroupProxyless
	}
	if v := n.GetMetadata().GetFields()["PROXYLESS"]; v != nil && v.GetBoolValue() {
		return GroupProxyless
	}
	return GroupProxy
}

type groupHash struct{}

func (groupHash) ID(n *corev3.Node) string { return Group(n) }

// Metrics are the server's Prometheus metrics.
type Metrics struct {
	Pushes    *prometheus.CounterVec // by type
	NACKs     *prometheus.CounterVec // by type
	Connected prometheus.Gauge
	// Rejected counts connections refused at the TLS handshake, by reason.
	Rejected *prometheus.CounterVec
	// Unauthorized counts streams refused because the client's workload
	// certificate does not allow its node id, by reason.
	Unauthorized *prometheus.CounterVec
}

// NewMetrics registers the server's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Pushes:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_xds_pushes_total", Help: "xDS responses sent, by resource type."}, []string{"type"}),
		NACKs:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_xds_nacks_total", Help: "xDS NACKs received, by resource type."}, []string{"type"}),
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "legate_xds_connected_streams", Help: "Open xDS streams."}),
		Rejected:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_xds_rejected_connections_total", Help: "xDS connections refused at the TLS handshake (no or bad client certificate, plaintext), by reason."}, []string{"reason"}),
		Unauthorized: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "legate_xds_unauthorized_streams_total",
			Help: "xDS streams refused (PermissionDenied) because a workload certificate does not allow the node id, by reason (not_sidecar, namespace, service_account, bad_spiffe_id)."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Pushes, m.NACKs, m.Connected, m.Rejected, m.Unauthorized)
	}
	return m
}

// Server serves xDS from snapshots set by the controller.
type Server struct {
	log   *slog.Logger
	cache cachev3.SnapshotCache
	// sidecarSetMu orders a sidecar's snapshot being set (SetSidecar)
	// against it being forgotten (Sidecars), so a forgotten node's
	// snapshot is never set again behind the forgetting. Stream callbacks
	// never take it (SetSnapshot may wait on them).
	sidecarSetMu sync.Mutex
	metrics      *Metrics
	grpc         *grpc.Server

	mu       sync.Mutex
	nonces   map[string]string // response nonce -> version (bounded)
	order    []string
	versions map[string]map[resourcev3.Type]string // group -> type -> version
	streams  atomic.Int64
	nacks    map[string]string // last NACK per node/type, for the debug endpoint

	// Sidecars (sidecar.go).
	hooks         SidecarHooks
	streamStates  map[int64]*streamState
	sidecarOpen   map[string]int       // node id -> open streams
	sidecarClosed map[string]time.Time // node id -> when its last stream closed
	sidecarKnown  map[string]bool      // node ids whose snapshot is kept
}

// New returns a server; metrics may be nil.
func New(log *slog.Logger, metrics *Metrics) *Server {
	if metrics == nil {
		metrics = NewMetrics(nil)
	}
	s := &Server{log: log, metrics: metrics, nonces: map[string]string{}, versions: map[string]map[resourcev3.Type]string{}, nacks: map[string]string{},
		streamStates: map[int64]*streamState{}, sidecarOpen: map[string]int{}, sidecarClosed: map[string]time.Time{}, sidecarKnown: map[string]bool{}}
	s.cache = cachev3.NewSnapshotCache(false, groupHash{}, nil)
	return s
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Versions returns the current version of each type for a group.
func (s *Server) Versions(group string) map[resourcev3.Type]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[resourcev3.Type]string{}
	for k, v := range s.versions[group] {
		out[k] = v
	}
	return out
}

// NACKs returns the last error detail per node and type.
func (s *Server) NACKs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.nacks {
		out[k] = v
	}
	return out
}

// Version is a content hash of resources: equal content, equal version.
func Version(rs []types.Resource) string {
	h := sha256.New()
	mo := proto.MarshalOptions{Deterministic: true}
	for _, r := range rs {
		b, _ := mo.Marshal(r)
		h.Write([]byte(cachev3.GetResourceName(r)))
		h.Write([]byte{0})
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Set replaces a group's resources. Types whose content did not change
// keep their version and are not pushed again.
func (s *Server) Set(ctx context.Context, group string, resources map[resourcev3.Type][]types.Resource) error {
	snap := &cachev3.Snapshot{}
	vers := map[resourcev3.Type]string{}
	for typ, rs := range resources {
		v := Version(rs)
		vers[typ] = v
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(v, rs)
	}
	s.mu.Lock()
	s.versions[group] = vers
	s.mu.Unlock()
	return s.cache.SetSnapshot(ctx, group, snap)
}

// nackCache wraps the snapshot cache: a state-of-the-world request that
// carries error_detail is treated as if the rejected version had been
// accepted, so the cache waits for the next change instead of re-sending.
type nackCache struct {
	cachev3.SnapshotCache
	s *Server
}

func (c nackCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	if req.GetErrorDetail() != nil {
		c.s.mu.Lock()
		v := c.s.nonces[req.GetResponseNonce()]
		c.s.mu.Unlock()
		if v != "" {
			req = proto.Clone(req).(*discoveryv3.DiscoveryRequest)
			req.VersionInfo = v
		}
	}
	return c.SnapshotCache.CreateWatch(req, sub, out)
}

func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.metrics.Connected.Set(float64(s.streams.Add(1)))
			return s.streamOpened(ctx, id)
		},
		StreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.metrics.Connected.Set(float64(s.streams.Add(-1)))
			s.streamClosed(id)
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.metrics.Connected.Set(float64(s.streams.Add(1)))
			return s.streamOpened(ctx, id)
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.metrics.Connected.Set(float64(s.streams.Add(-1)))
			s.streamClosed(id)
		},
		// The unary Fetch RPCs (REST-style xDS over gRPC) name any node
		// per call; sidecars use streams, so a workload certificate is
		// refused here rather than authorized call by call.
		FetchRequestFunc: func(ctx context.Context, req *discoveryv3.DiscoveryRequest) error {
			pid, err := peerIdentity(ctx)
			if err != nil {
				return s.deny(0, req.GetNode().GetId(), "bad_spiffe_id", fmt.Errorf("%w: client certificate: %w", errDenied, err))
			}
			if pid != nil {
				return s.deny(0, req.GetNode().GetId(), "fetch", fmt.Errorf("%w: workload certificate %s may not use the unary Fetch RPCs; sidecars subscribe over a stream", errDenied, pid.spiffe))
			}
			return nil
		},
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			if err := s.streamRequest(id, req.GetNode()); err != nil {
				return err
			}
			if e := req.GetErrorDetail(); e != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), e.GetMessage())
			}
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			if err := s.streamRequest(id, req.GetNode()); err != nil {
				return err
			}
			if e := req.GetErrorDetail(); e != nil {
				s.nack(req.GetNode(), req.GetTypeUrl(), e.GetMessage())
			}
			return nil
		},
		StreamResponseFunc: func(_ context.Context, _ int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			s.metrics.Pushes.WithLabelValues(resource.ShortType(resp.GetTypeUrl())).Inc()
			s.mu.Lock()
			s.nonces[resp.GetNonce()] = resp.GetVersionInfo()
			s.order = append(s.order, resp.GetNonce())
			if len(s.order) > 100000 {
				for _, n := range s.order[:50000] {
					delete(s.nonces, n)
				}
				s.order = append([]string(nil), s.order[50000:]...)
			}
			s.mu.Unlock()
		},
		StreamDeltaResponseFunc: func(_ int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			s.metrics.Pushes.WithLabelValues(resource.ShortType(resp.GetTypeUrl())).Inc()
		},
	}
}

func (s *Server) nack(n *corev3.Node, typ, msg string) {
	s.metrics.NACKs.WithLabelValues(resource.ShortType(typ)).Inc()
	s.mu.Lock()
	s.nacks[n.GetId()+" "+resource.ShortType(typ)] = msg
	s.mu.Unlock()
	s.log.Warn("xDS client rejected resources (NACK); it keeps its last good config", "node", n.GetId(), "type", resource.ShortType(typ), "error", msg)
}

// Serve serves ADS and the per-type xDS services on l, in plaintext,
// until ctx ends (tests, and `legate controller --insecure`).
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return s.serve(ctx, l)
}

// ServeTLS is Serve over TLS with client authentication: only proxies
// with a certificate the CA in files signed get a stream; every refused
// connection is logged and counted (legate_xds_rejected_connections_total).
func (s *Server) ServeTLS(ctx context.Context, l net.Listener, files TLSFiles) error {
	creds, err := s.serverCreds(files)
	if err != nil {
		return err
	}
	return s.serve(ctx, l, grpc.Creds(creds))
}

func (s *Server) serve(ctx context.Context, l net.Listener, extra ...grpc.ServerOption) error {
	xs := serverv3.NewServer(ctx, nackCache{s.cache, s}, s.callbacks())
	opts := append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, extra...)
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xs)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, xs)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, xs)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, xs)
	routeservice.RegisterRouteDiscoveryServiceServer(g, xs)
	secretservice.RegisterSecretDiscoveryServiceServer(g, xs)
	s.mu.Lock()
	s.grpc = g
	s.mu.Unlock()
	go s.forgetLoop(ctx)
	go func() {
		<-ctx.Done()
		g.Stop()
	}()
	return g.Serve(l)
}
