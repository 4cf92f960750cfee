package upstream

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// This file is the hook for upstream transport sockets other than
// raw_buffer and tls (which the server compiles itself, internal/tlsx):
// a registration of category extension.UpstreamTransportSocket whose
// Factory is a TransportSocketFactory is compiled by it (server's
// clusterTransport), and may wrap an inner transport socket. What such a
// socket needs to know of the connection it wraps (the host, the
// downstream connection's PROXY protocol record) comes in the context its
// Client gets (DialInfoFrom); connections that differ in it are pooled
// apart (ConnOptions), as Envoy hashes transport socket options into the
// connection pool key.

// TransportSocketFactory compiles an upstream transport socket's typed
// config: the Factory of an extension.UpstreamTransportSocket
// registration that is neither raw_buffer nor tls.
type TransportSocketFactory func(cfg proto.Message, path string, tc TransportContext) (TransportSocket, error)

// TransportContext is what a TransportSocketFactory compiles with.
type TransportContext struct {
	// Stats is the cluster's scope (cluster.<alt_stat_name or name>.).
	Stats stats.Scope
	// Inner compiles a transport socket the compiled one wraps; a nil
	// socket and no error is plaintext (raw_buffer).
	Inner func(ts *corev3.TransportSocket, path string) (TransportSocket, error)
	// ClusterMetadata is the cluster's metadata (internal_upstream passes
	// namespaces of it on).
	ClusterMetadata *corev3.Metadata
}

// ProxyProtocolSender is a TransportSocket that starts each connection
// with a PROXY protocol header (envoy.transport_sockets.upstream_proxy_
// protocol). Its cluster pools connections per downstream address pair
// (the header differs) and must speak HTTP/1.1 (HTTP/2 connections are
// not pooled per downstream here: refused at config time).
type ProxyProtocolSender interface {
	SendsProxyProtocol() bool
}

// SecureTransport is a wrapping TransportSocket that says whether it ends
// in TLS (Envoy's implementsSecureTransport), e.g. for the dynamic
// forward proxy's default port; a TransportSocket that is not one is TLS.
type SecureTransport interface {
	ImplementsSecureTransport() bool
}

// ImplementsSecureTransport reports whether the cluster's connections
// are TLS (Envoy's transportSocketFactory().implementsSecureTransport()).
func (c *Cluster) ImplementsSecureTransport() bool { return secureTransport(c.transport) }

// secureTransport reports whether t encrypts (nil is plaintext).
func secureTransport(t TransportSocket) bool {
	if t == nil {
		return false
	}
	if s, ok := t.(SecureTransport); ok {
		return s.ImplementsSecureTransport()
	}
	return true
}

// ConnOptions select an upstream connection beyond its host: the TLS
// server name (auto_sni) and, for a cluster whose transport socket sends
// a PROXY protocol header, the downstream connection it is made for.
type ConnOptions struct {
	SNI string
	// ProxyProtocol is the downstream connection's PROXY protocol record
	// (proxyproto.Downstream); nil when the connection is not made for one
	// (health checks, side calls), which makes Envoy's header of local
	// addresses (v1) or a LOCAL one (v2).
	ProxyProtocol *proxyproto.Data
	// FilterState is the downstream's filter state (the request's, or the
	// connection's for tcp_proxy), for a transport socket that passes
	// objects of it to an internal listener (internal_upstream's
	// passthrough_filter_state_objects); it keys the pool only through
	// such a socket (FilterStatePoolKeyer).
	FilterState map[string]streaminfo.FilterStateValue
}

// FilterStatePoolKeyer is a TransportSocket whose connections depend on
// some of the downstream's filter state (internal_upstream passes named
// objects on): connections with different values are pooled apart, as
// Envoy hashes such objects into the pool key. FilterStatePoolKey returns "" when
// none of them is set.
type FilterStatePoolKeyer interface {
	FilterStatePoolKey(fs map[string]streaminfo.FilterStateValue) string
}

// poolKey names the pool a connection with these options comes from: ""
// is the host's default pool. The PROXY protocol record counts only when
// the cluster's transport socket uses it.
func (c *Cluster) poolKey(o ConnOptions) string {
	key := o.SNI
	if o.ProxyProtocol != nil && c.sendsPP {
		key += "\x00proxy:" + o.ProxyProtocol.Key()
	}
	if fk, ok := c.transport.(FilterStatePoolKeyer); ok && o.FilterState != nil {
		if k := fk.FilterStatePoolKey(o.FilterState); k != "" {
			key += "\x00fs:" + k
		}
	}
	return key
}

// PassesFilterState reports whether the cluster's transport socket hands
// the downstream's shared filter state to an internal listener, so
// callers pass it (ConnOptions.FilterState, Request.FilterState).
func (c *Cluster) PassesFilterState() bool {
	_, ok := c.transport.(FilterStatePoolKeyer)
	return ok
}

// perDownstreamPools reports whether the cluster's pools are keyed by
// what downstream connections or requests carry (PROXY protocol records,
// passed-through filter state), so the idle sweep prunes empty ones.
func (c *Cluster) perDownstreamPools() bool {
	_, fs := c.transport.(FilterStatePoolKeyer)
	return c.sendsPP || fs
}

// SendsProxyProtocol reports whether the cluster's transport socket
// writes a PROXY protocol header, so callers need to pass the downstream
// connection's record (ConnOptions.ProxyProtocol, Request.ProxyProtocol).
func (c *Cluster) SendsProxyProtocol() bool { return c.sendsPP }

// DialInfo is what a transport socket's Client learns about the
// connection it wraps (DialInfoFrom).
type DialInfo struct {
	// Host is the host dialled (nil for a dial by address alone).
	Host *Host
	// ProxyProtocol is the downstream connection's PROXY protocol record,
	// nil when the connection is not made for one.
	ProxyProtocol *proxyproto.Data
}

type dialInfoKey struct{}

// WithDialInfo returns ctx carrying d for the transport socket.
func WithDialInfo(ctx context.Context, d *DialInfo) context.Context {
	return context.WithValue(ctx, dialInfoKey{}, d)
}

// DialInfoFrom returns the DialInfo ctx carries, or nil.
func DialInfoFrom(ctx context.Context) *DialInfo {
	d, _ := ctx.Value(dialInfoKey{}).(*DialInfo)
	return d
}
