// Package ext_authz is envoy.filters.network.ext_authz: when the first
// data arrives on a connection, an external authorization service is asked
// (gRPC envoy.service.auth.v3.Authorization/Check, through the cluster
// manager) about the connection's source, destination and TLS peer; the
// data waits for the answer. A denial, or a failure without
// failure_mode_allow, closes the connection. Stats are Envoy's
// ext_authz.<stat_prefix>.*; the service's dynamic metadata lands on the
// connection under envoy.filters.network.ext_authz.
package ext_authz

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	engine "github.com/legateproxy/legate/internal/filters/common/rbac"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.network.ext_authz"

func init() {
	extension.Register(extension.Extension{Name: Name, Category: extension.NetworkFilter, Config: &extauthzv3.ExtAuthz{},
		Factory: listener.ConnFilterFactory(func(ctx *listener.Context, cfg proto.Message, _ listener.ChainOptions, path string) (listener.ConnFilter, error) {
			return compile(ctx, cfg.(*extauthzv3.ExtAuthz), path)
		}),
		Notes: "envoy_grpc only; bootstrap_metadata_labels_key, send_tls_alert_on_denial and shadow_mode are not implemented"})
}

// ErrDenied is what a read of a connection the service refused returns.
var ErrDenied = errors.New("ext_authz: ext_authz_close")

// checkMethod is the Authorization service's Check.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// filterConfig is a compiled network ext_authz.
type filterConfig struct {
	async *asyncclient.Client
	// target is the authorization service; cluster names it in logs.
	target            asyncclient.GRPCTarget
	cluster           string
	timeout           time.Duration
	initialMD         []string
	failureAllow      bool
	peerCert, tlsInfo bool
	mdNamespaces      []string
	// enabled is filter_enabled_metadata (nil: always).
	enabled func(map[string]*structpb.Struct) bool
	log     *slog.Logger

	total, errored, denied, failureAllowed, ok, cxClosed, disabled *stats.Counter
	active                                                         *stats.Gauge
}

func compile(ctx *listener.Context, c *extauthzv3.ExtAuthz, path string) (*filterConfig, error) {
	// typed_metadata_context_namespaces passes typed_filter_metadata, which
	// no Legate filter sets on a connection: accepting it sends what Envoy
	// would send here, nothing.
	if err := config.CheckFields(c, path, "stat_prefix", "grpc_service", "failure_mode_allow", "include_peer_certificate",
		"transport_api_version", "filter_enabled_metadata", "include_tls_session", "metadata_context_namespaces",
		"typed_metadata_context_namespaces"); err != nil {
		return nil, err
	}
	if v := c.GetTransportApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		return nil, config.Errorf(config.Join(path, "transport_api_version"), "only V3 exists")
	}
	gp := config.Join(path, "grpc_service")
	gs := c.GetGrpcService()
	if gs == nil {
		return nil, config.Errorf(gp, "grpc_service is required")
	}
	if err := config.CheckFields(gs, gp, "envoy_grpc", "google_grpc", "timeout", "initial_metadata"); err != nil {
		return nil, err
	}
	t, err := asyncclient.CompileGRPCTarget(gs, gp)
	if err != nil {
		return nil, err
	}
	if ctx.Async == nil {
		return nil, config.Errorf(gp, "side calls to clusters are not available here")
	}
	// The filter's default timeout is 200ms (the proto's documentation).
	f := &filterConfig{async: ctx.Async, target: t, cluster: t.String(), timeout: 200 * time.Millisecond,
		failureAllow: c.GetFailureModeAllow(), peerCert: c.GetIncludePeerCertificate(), tlsInfo: c.GetIncludeTlsSession(),
		mdNamespaces: c.GetMetadataContextNamespaces(), log: ctx.Log}
	if f.log == nil {
		f.log = slog.Default()
	}
	if gs.GetTimeout() != nil {
		f.timeout = gs.GetTimeout().AsDuration()
	}
	for _, m := range gs.GetInitialMetadata() {
		f.initialMD = append(f.initialMD, m.GetKey(), m.GetValue())
	}
	if m := c.GetFilterEnabledMetadata(); m != nil {
		var err error
		if f.enabled, err = engine.MetadataMatcher(m, config.Join(path, "filter_enabled_metadata")); err != nil {
			return nil, err
		}
	}
	// Envoy: fmt::format("ext_authz.{}.", stat_prefix), then the stat name.
	p := "ext_authz." + c.GetStatPrefix() + "."
	f.total, f.errored, f.denied = ctx.Stats.Counter(p+"total"), ctx.Stats.Counter(p+"error"), ctx.Stats.Counter(p+"denied")
	f.failureAllowed, f.ok = ctx.Stats.Counter(p+"failure_mode_allowed"), ctx.Stats.Counter(p+"ok")
	f.cxClosed, f.disabled = ctx.Stats.Counter(p+"cx_closed"), ctx.Stats.Counter(p+"disabled")
	f.active = ctx.Stats.Gauge(p + "active")
	return f, nil
}

// OnNewConnection wraps the connection: the check runs on its first data,
// as Envoy's (onNewConnection only continues, so the request carries what
// the earlier filters learnt).
func (f *filterConfig) OnNewConnection(tc *listener.Conn) error {
	tc.Conn = &conn{Conn: tc.Conn, f: f, tc: tc}
	// The answer's metadata comes later, from the read side: the map must
	// exist now for the terminal filter's record (tcp_proxy's access log)
	// to share it.
	if tc.Metadata == nil {
		tc.Metadata = map[string]*structpb.Struct{}
	}
	return nil
}

// conn is a downstream connection under ext_authz. Like the RBAC
// filter's, it hides the socket so that raw-syscall reads cannot bypass
// the check.
type conn struct {
	net.Conn
	f  *filterConfig
	tc *listener.Conn
	// done is set once the service allowed the connection (or failed
	// open); denied once it was closed.
	done, denied bool

	mu     sync.Mutex
	cancel context.CancelFunc
	closed bool
}

// Read holds the first data (or first end of stream) until the service
// has answered; a refused connection is closed and its data dropped.
func (c *conn) Read(p []byte) (int, error) {
	if c.denied {
		return 0, ErrDenied
	}
	n, err := c.Conn.Read(p)
	if c.done || (n == 0 && !errors.Is(err, io.EOF)) {
		return n, err
	}
	if c.f.enabled != nil && !c.f.enabled(c.tc.Metadata) {
		// Envoy counts every onData it lets through unchecked.
		c.f.disabled.Inc()
		return n, err
	}
	if c.check() {
		c.done = true
		return n, err
	}
	c.denied = true
	c.Close()
	return 0, ErrDenied
}

// check asks the service and reports whether the connection may go on.
func (c *conn) check() bool {
	f := c.f
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	c.cancel = cancel
	c.mu.Unlock()
	if len(f.initialMD) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, f.initialMD...)
	}
	f.active.Inc()
	f.total.Inc()
	start := time.Now()
	resp, err := f.call(ctx, c.request())
	f.active.Dec()
	c.mu.Lock()
	c.cancel = nil
	gone := c.closed
	c.mu.Unlock()
	if gone {
		// Envoy cancels the call when the connection closes: no outcome
		// is counted.
		return false
	}
	var md map[string]*structpb.Value
	if resp != nil {
		md = resp.GetDynamicMetadata().GetFields()
	}
	allowed := false
	switch {
	case err != nil || resp.GetErrorResponse() != nil:
		// A failed call, or an answer that is an error rather than a
		// denial (error_response).
		f.errored.Inc()
		if err != nil {
			f.log.Warn("authorization service failed", "cluster", f.cluster, "error", err)
		}
		allowed = f.failureAllow
		if allowed {
			f.failureAllowed.Inc()
		}
	case resp.GetStatus().GetCode() == int32(code.Code_OK):
		f.ok.Inc()
		allowed = true
		md = mapsCopy(md)
		md["ext_authz_duration"] = structpb.NewNumberValue(float64(time.Since(start).Milliseconds()))
	default:
		f.denied.Inc()
	}
	if len(md) > 0 {
		c.tc.SetMetadata(Name, md)
	}
	if !allowed {
		f.cxClosed.Inc()
	}
	return allowed
}

func mapsCopy(m map[string]*structpb.Value) map[string]*structpb.Value {
	out := make(map[string]*structpb.Value, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (f *filterConfig) call(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	cc, err := f.async.GRPCTo(f.target)
	if err != nil {
		return nil, err
	}
	resp := &authv3.CheckResponse{}
	if err := cc.Invoke(ctx, checkMethod, req, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// request is Envoy's createTcpCheck: the connection's peers (with the
// client's principal, and certificate when asked), the TLS session when
// asked, and the chosen dynamic metadata namespaces.
func (c *conn) request() *authv3.CheckRequest {
	tc, f := c.tc, c.f
	src := &authv3.AttributeContext_Peer{Address: sockAddr(tc.Remote.Addr().Unmap().String(), tc.Remote.Port())}
	if t := tc.TLS; t != nil {
		// URI SAN, else DNS SAN, else subject, as setAttrContextPeer.
		switch {
		case len(t.PeerURISAN) > 0:
			src.Principal = t.PeerURISAN[0]
		case len(t.PeerDNSSAN) > 0:
			src.Principal = t.PeerDNSSAN[0]
		default:
			src.Principal = t.PeerSubject
		}
		if f.peerCert && t.PeerCert != nil {
			src.Certificate = streaminfo.URLEncodedPEM(t.PeerCert)
		}
	}
	attrs := &authv3.AttributeContext{Source: src,
		Destination: &authv3.AttributeContext_Peer{Address: sockAddr(tc.Local.Addr().Unmap().String(), tc.Local.Port())}}
	if f.tlsInfo && tc.TLS != nil {
		attrs.TlsSession = &authv3.AttributeContext_TLSSession{Sni: tc.SNI}
	}
	if len(f.mdNamespaces) > 0 {
		mc := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		for _, ns := range f.mdNamespaces {
			if st := tc.Metadata[ns]; st != nil {
				mc.FilterMetadata[ns] = st
			}
		}
		attrs.MetadataContext = mc
	} else {
		attrs.MetadataContext = &corev3.Metadata{}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

func sockAddr(ip string, port uint16) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// Close closes the connection and cancels a check in flight.
func (c *conn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite half-closes the connection when it can (tcp_proxy relays a
// downstream half-close).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NegotiatedProtocol is the ALPN protocol of a TLS connection (the HTTP
// connection manager picks its codec by it).
func (c *conn) NegotiatedProtocol() string {
	if a, ok := c.Conn.(interface{ NegotiatedProtocol() string }); ok {
		return a.NegotiatedProtocol()
	}
	return ""
}
