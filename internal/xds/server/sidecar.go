package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"sort"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/legateproxy/legate/internal/mesh"
)

// Sidecars: a node whose id parses with mesh.ParseNodeID is a sidecar. It
// is its own group (its snapshot is built for it alone, when its stream
// first asks), and a client whose certificate carries a workload SPIFFE
// id may only be the sidecar of a pod of that namespace (and, when the
// pod is known, of that ServiceAccount): a workload certificate never
// gets the gateway proxies' resources (their TLS secrets).

// DefaultSidecarTTL is how long a sidecar's snapshot is kept after its
// last stream closed (a reconnecting sidecar finds it at once).
const DefaultSidecarTTL = 5 * time.Minute

// SidecarHooks connect sidecar nodes to the controller that builds their
// snapshots.
type SidecarHooks struct {
	// Requested is called, in a goroutine of its own, when a sidecar node
	// opens its first stream: the controller builds and Sets its snapshot
	// (the stream waits for it).
	Requested func(nodeID string)
	// Authorize checks a workload identity (its certificate's namespace
	// and ServiceAccount) against a sidecar node id whose namespace the
	// server has already checked: the controller checks the pod's
	// ServiceAccount when it knows the pod. nil: namespace only.
	Authorize func(node mesh.NodeID, namespace, serviceAccount string) error
	// TTL replaces DefaultSidecarTTL.
	TTL time.Duration
}

// SetSidecarHooks installs the controller's hooks (before Serve).
func (s *Server) SetSidecarHooks(h SidecarHooks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = h
}

// identity is a stream's peer: its workload SPIFFE id, when its client
// certificate has one (nil: a proxy certificate, or plaintext).
type identity struct {
	spiffe, namespace, serviceAccount string
}

// streamState is what the server knows of one open stream.
type streamState struct {
	peer *identity
	// node is the node id the stream was authorized for; sidecar says
	// whether it counts in sidecarOpen.
	node    string
	sidecar bool
}

// peerIdentity reads the workload identity of a stream's client
// certificate. A certificate with a spiffe:// URI that is not a workload
// id is an error (it is neither a proxy's nor a workload's).
func peerIdentity(ctx context.Context) (*identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, nil
	}
	return certIdentity(ti.State.PeerCertificates[0])
}

func certIdentity(c *x509.Certificate) (*identity, error) {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		_, ns, sa, err := mesh.ParseSPIFFEID(u.String())
		if err != nil {
			return nil, err
		}
		return &identity{spiffe: u.String(), namespace: ns, serviceAccount: sa}, nil
	}
	return nil, nil
}

// errDenied marks an authorization failure.
var errDenied = errors.New("permission denied")

// authorize checks that the stream's peer may use node id. Proxy
// certificates (no SPIFFE id) and plaintext keep today's behaviour: any
// node id.
func (s *Server) authorize(id *identity, node string) (reason string, err error) {
	if id == nil {
		return "", nil
	}
	n, ok := mesh.ParseNodeID(node)
	if !ok {
		return "not_sidecar", fmt.Errorf("%w: workload certificate %s may only use a sidecar node id (sidecar~<pod IP>~<pod>.%s~%s.svc.cluster.local), not %q", errDenied, id.spiffe, id.namespace, id.namespace, node)
	}
	if n.Namespace != id.namespace {
		return "namespace", fmt.Errorf("%w: workload certificate %s is of namespace %q; node id %q is of namespace %q", errDenied, id.spiffe, id.namespace, node, n.Namespace)
	}
	s.mu.Lock()
	check := s.hooks.Authorize
	s.mu.Unlock()
	if check != nil {
		if err := check(n, id.namespace, id.serviceAccount); err != nil {
			return "service_account", fmt.Errorf("%w: workload certificate %s for node %q: %w", errDenied, id.spiffe, node, err)
		}
	}
	return "", nil
}

// streamOpened records a stream's peer; a certificate with a malformed
// SPIFFE id is refused.
func (s *Server) streamOpened(ctx context.Context, id int64) error {
	pid, err := peerIdentity(ctx)
	if err != nil {
		return s.deny(id, "", "bad_spiffe_id", fmt.Errorf("%w: client certificate: %w", errDenied, err))
	}
	s.mu.Lock()
	s.streamStates[id] = &streamState{peer: pid}
	s.mu.Unlock()
	return nil
}

// streamRequest authorizes the first request of a stream (and any that
// names another node) and registers sidecar nodes.
func (s *Server) streamRequest(id int64, n *corev3.Node) error {
	node := n.GetId()
	s.mu.Lock()
	st := s.streamStates[id]
	if st == nil {
		st = &streamState{}
		s.streamStates[id] = st
	}
	pid := st.peer
	if n == nil && st.node != "" {
		s.mu.Unlock()
		return nil // the node of an earlier request (delta omits it)
	}
	// go-control-plane takes any node a request carries, an empty one
	// included, as the stream's node from then on: a workload's stream
	// keeps the node it was authorized for, or an empty id would move it
	// into the proxy group.
	if pid != nil && st.node != "" && node != st.node {
		s.mu.Unlock()
		return s.deny(id, node, "node_changed", fmt.Errorf("%w: workload certificate %s opened this stream as node %q; it may not change its node id to %q", errDenied, pid.spiffe, st.node, node))
	}
	if pid != nil && node == "" {
		// Without a node id the stream would get the proxy group.
		s.mu.Unlock()
		return s.deny(id, "", "not_sidecar", fmt.Errorf("%w: workload certificate %s sent no node id; it may only use a sidecar node id", errDenied, pid.spiffe))
	}
	if node == st.node {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if reason, err := s.authorize(pid, node); err != nil {
		return s.deny(id, node, reason, err)
	}
	_, sidecar := mesh.ParseNodeID(node)
	s.mu.Lock()
	if st.sidecar {
		s.sidecarDown(st.node)
	}
	st.node, st.sidecar = node, sidecar
	first := false
	if sidecar {
		s.sidecarOpen[node]++
		delete(s.sidecarClosed, node)
		first = !s.sidecarKnown[node]
		s.sidecarKnown[node] = true
	}
	req := s.hooks.Requested
	s.mu.Unlock()
	if first && req != nil {
		go req(node)
	}
	return nil
}

func (s *Server) deny(id int64, node, reason string, err error) error {
	s.metrics.Unauthorized.WithLabelValues(reason).Inc()
	s.log.Warn("xDS stream refused: the client's certificate does not allow its node id", "node", node, "reason", reason, "error", err)
	return status.Error(codes.PermissionDenied, err.Error())
}

// sidecarDown counts a sidecar stream closed; s.mu is held.
func (s *Server) sidecarDown(node string) {
	s.sidecarOpen[node]--
	if s.sidecarOpen[node] <= 0 {
		delete(s.sidecarOpen, node)
		s.sidecarClosed[node] = time.Now()
	}
}

func (s *Server) streamClosed(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamStates[id]
	delete(s.streamStates, id)
	if st != nil && st.sidecar {
		s.sidecarDown(st.node)
	}
}

// Sidecars returns the node ids of the sidecars the controller must keep
// snapshots for (sorted): those with an open stream, and those whose
// last stream closed less than the TTL ago. Older ones are forgotten here:
// their snapshots are cleared.
func (s *Server) Sidecars() []string {
	s.sidecarSetMu.Lock()
	defer s.sidecarSetMu.Unlock()
	s.mu.Lock()
	ttl := s.hooks.TTL
	if ttl <= 0 {
		ttl = DefaultSidecarTTL
	}
	var out, gone []string
	for n := range s.sidecarKnown {
		if at, closed := s.sidecarClosed[n]; closed && time.Since(at) >= ttl {
			gone = append(gone, n)
			delete(s.sidecarClosed, n)
			delete(s.sidecarKnown, n)
			delete(s.versions, n)
			continue
		}
		out = append(out, n)
	}
	s.mu.Unlock()
	for _, n := range gone {
		s.cache.ClearSnapshot(n)
		s.log.Info("sidecar forgotten: no stream since the TTL", "node", n, "ttl", ttl)
	}
	sort.Strings(out)
	return out
}

// SetSidecar sets a sidecar's snapshot, unless the node has been
// forgotten meanwhile (its build started before): it reports whether it
// did.
func (s *Server) SetSidecar(ctx context.Context, node string, resources map[resourcev3.Type][]types.Resource) (bool, error) {
	s.sidecarSetMu.Lock()
	defer s.sidecarSetMu.Unlock()
	s.mu.Lock()
	known := s.sidecarKnown[node]
	s.mu.Unlock()
	if !known {
		return false, nil
	}
	return true, s.Set(ctx, node, resources)
}

// forgetLoop prunes forgotten sidecars until ctx ends.
func (s *Server) forgetLoop(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sidecars()
		}
	}
}
