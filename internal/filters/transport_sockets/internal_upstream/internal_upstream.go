// Package internal_upstream is Envoy's upstream transport socket
// envoy.transport_sockets.internal_upstream
// (source/extensions/transport_sockets/internal_upstream): on a
// connection to an internal listener (an envoy_internal_address host) it
// hands the listener side state beside the bytes, which the internal
// listener merges into its connection's dynamic metadata and filter
// state:
//
//   - passthrough_metadata copies namespaces of the host's (kind host) or
//     the cluster's (kind cluster) metadata; a later source of the same
//     name overrides an earlier one, and a missing namespace counts in
//     cluster.<name>.internal_upstream.no_metadata;
//   - every filter-state object the request shares with the upstream
//     (set_filter_state's shared_with_upstream) is passed on, and
//     connections are pooled apart by those objects' values, as Envoy
//     hashes them into the pool key (HTTP/1.1 connections: an HTTP/2
//     connection is shared by requests and passes none).
//
// The bytes go over the wrapped transport_socket (raw_buffer or tls).
// To any other host the socket is just the wrapped one, as in Envoy.
package internal_upstream

import (
	"context"
	"net"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	iupv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
	"github.com/legateproxy/legate/internal/userspace"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.transport_sockets.internal_upstream",
		Category: extension.UpstreamTransportSocket, Config: &iupv3.InternalUpstreamTransport{},
		Factory: upstream.TransportSocketFactory(compile),
		Notes:   "host and cluster metadata; filter state shared with upstream over HTTP/1.1 connections"})
}

// source is one passthrough_metadata entry.
type source struct {
	name string
	host bool // else the cluster's metadata
}

// socket is a compiled InternalUpstreamTransport.
type socket struct {
	inner   upstream.TransportSocket // nil: raw_buffer
	sources []source
	cluster *corev3.Metadata
	// noMetadata is internal_upstream.no_metadata.
	noMetadata *stats.Counter
}

func compile(msg proto.Message, path string, tc upstream.TransportContext) (upstream.TransportSocket, error) {
	cfg := msg.(*iupv3.InternalUpstreamTransport)
	if err := config.CheckFields(cfg, path, "passthrough_metadata", "transport_socket"); err != nil {
		return nil, err
	}
	s := &socket{cluster: tc.ClusterMetadata, noMetadata: tc.Stats.Counter("internal_upstream.no_metadata")}
	for i, m := range cfg.GetPassthroughMetadata() {
		p := config.Index(config.Join(path, "passthrough_metadata"), i)
		if err := config.CheckFields(m, p, "kind", "name"); err != nil {
			return nil, err
		}
		switch {
		case m.GetKind().GetHost() != nil:
			s.sources = append(s.sources, source{name: m.GetName(), host: true})
		case m.GetKind().GetCluster() != nil:
			s.sources = append(s.sources, source{name: m.GetName()})
		default:
			// Envoy's message: only host and cluster metadata exist when a
			// connection is made.
			return nil, config.Errorf(config.Join(p, "kind"), "metadata type is not supported: %v (host and cluster are)", m.GetKind())
		}
	}
	ts, tp := cfg.GetTransportSocket(), config.Join(path, "transport_socket")
	if ts == nil {
		return nil, config.Errorf(tp, "transport_socket is required (the socket wrapped: raw_buffer or tls)")
	}
	inner, err := tc.Inner(ts, tp)
	if err != nil {
		return nil, err
	}
	s.inner = inner
	return s, nil
}

// Client runs the wrapped socket's handshake (none for raw_buffer).
func (s *socket) Client(ctx context.Context, conn net.Conn, sni string) (net.Conn, error) {
	if s.inner == nil {
		return conn, nil
	}
	return s.inner.Client(ctx, conn, sni)
}

// ALPN is the wrapped socket's.
func (s *socket) ALPN(conn net.Conn) string {
	if s.inner == nil {
		return ""
	}
	return s.inner.ALPN(conn)
}

// ImplementsSecureTransport reports whether the wrapped socket is TLS.
func (s *socket) ImplementsSecureTransport() bool {
	if s.inner == nil {
		return false
	}
	if st, ok := s.inner.(upstream.SecureTransport); ok {
		return st.ImplementsSecureTransport()
	}
	return true
}

// Passthrough is what a connection to the internal host h carries: the
// configured metadata namespaces and the shared filter state in o.
func (s *socket) Passthrough(h *upstream.Host, o upstream.ConnOptions) *userspace.Passthrough {
	pt := &userspace.Passthrough{FilterState: o.FilterState}
	if len(s.sources) > 0 {
		// As Envoy, the record exists (maybe empty) once sources are set.
		pt.Metadata = map[string]*structpb.Struct{}
	}
	for _, src := range s.sources {
		md := s.cluster
		if src.host {
			md = h.Config().Metadata
		}
		if st := md.GetFilterMetadata()[src.name]; st != nil {
			pt.Metadata[src.name] = st
		} else {
			s.noMetadata.Inc()
		}
	}
	if pt.Metadata == nil && pt.FilterState == nil {
		return nil
	}
	return pt
}

// FilterStatePoolKey keys the pool by the shared objects' values.
func (s *socket) FilterStatePoolKey(fs map[string]streaminfo.FilterStateValue) string {
	if len(fs) == 0 {
		return ""
	}
	keys := make([]string, 0, len(fs))
	for k := range fs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(fs[k].String())
		b.WriteByte(0)
	}
	return b.String()
}
