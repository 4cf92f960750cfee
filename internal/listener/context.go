// Package listener is Envoy's listener for Legate: a listening socket
// (shared by address between the listeners that hold it, reference
// counted), the listener filters that inspect a new connection (TLS and
// HTTP inspectors, original_dst), the filter chain chosen for it by
// filter_chain_match, its transport socket, and the chain's terminal
// network filter — the HTTP connection manager, tcp_proxy — found through
// the extension registry (NetworkFilterFactory). It also keeps what a
// listener needs to be updated in place or replaced without refusing a
// connection, and to drain.
//
// Context is the typed compile context every listener, network filter and
// HTTP filter of a server is compiled against; the server builds it once,
// in dependency order: its services (stats, runtime, overload, the cluster
// manager, access log files), then the xDS subscriptions (static clusters
// may take EDS or SDS over them), the secrets (static and SDS), the
// clusters, and last the listeners, whose routes name the clusters.
package listener

import (
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/overload"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
)

// Context is what listeners and their filters compile against: the
// server's services. Its zero value (with Stats, Clusters and Log set)
// compiles configs that need no TLS, RDS, access log files or runtime.
type Context struct {
	Stats    *stats.Store
	Clusters *upstream.Manager
	Log      *slog.Logger
	// LogFiles are the server's access log files (nil: access logs that
	// write files are refused).
	LogFiles *accesslog.Files
	// Routes subscribes to route configurations (RDS); nil when there is
	// no xDS.
	Routes RouteSubscriber
	// TLS compiles downstream transport sockets; nil refuses TLS.
	TLS DownstreamTransports
	// Health reports /healthcheck/fail and draining (the health_check
	// HTTP filter answers 503 then); nil: always healthy.
	Health HealthState
	// Hostname is this machine's name (%HOSTNAME%).
	Hostname string
	// NodeID and NodeCluster identify this proxy (add_user_agent).
	NodeID, NodeCluster string
	// ConnIDs numbers downstream connections.
	ConnIDs *atomic.Uint64
	// Panics counts recovered panics (server.panics).
	Panics *stats.Counter
	// GlobalConnLimit caps downstream connections across listeners
	// (runtime overload.global_downstream_max_connections); 0 is no cap.
	GlobalConnLimit uint64
	globalConns     atomic.Int64
	// handoff is the server's started TCP listeners by address, which
	// use_original_dst listeners hand connections to (handoff.go).
	handoff handoffTable
	// Async makes filters' side calls through the cluster manager.
	Async *asyncclient.Client
	// Runtime is the layered runtime (nil: no runtime values).
	Runtime *runtime.Loader
	// Overload is the overload manager (nil without one).
	Overload *overload.Manager
	// DefaultTracer is the bootstrap's tracing.http (nil: none).
	DefaultTracer *tracev3.Tracing_Http
	// SkipClusterValidation compiles inline route configs without checking
	// that their clusters exist (validating a resource file on its own).
	SkipClusterValidation bool
	// Sockets is the server's table of listening sockets, which listeners
	// on one address share (nil: every Bind opens a socket of its own).
	Sockets *Sockets
	// ListenerConnLimits are the runtime's per-listener connection limits
	// (envoy.resource_limits.listener.<name>.connection_limit) by name.
	ListenerConnLimits map[string]uint64
	// SDS resolves the secrets HTTP filters name (nil: none available).
	SDS tlsx.SDS
}

// RouteSubscriber provides the route table of an HCM's rds config: a
// pointer the subscription fills once the listener is accepted.
type RouteSubscriber interface {
	RouteTable(rds *hcmv3.Rds, statPrefix, path string) (*atomic.Pointer[route.Table], error)
}

// DownstreamTransports compiles a filter chain's transport socket;
// statPrefix is the listener's ssl stats prefix (listener.<addr>.ssl.).
type DownstreamTransports interface {
	DownstreamTransport(ts *corev3.TransportSocket, path, statPrefix string) (ServerTransport, error)
}

// HealthState says whether the server fails health checks.
type HealthState interface {
	HealthCheckFailing() bool
}

// ServerTransport wraps accepted connections (TLS termination).
type ServerTransport interface {
	Server(conn net.Conn) (net.Conn, error)
}

// AccessLogs compiles access_log entries against the server's log files.
func (c *Context) AccessLogs(logs []*accesslogv3.AccessLog, path string) ([]*accesslog.Logger, error) {
	if len(logs) == 0 {
		return nil, nil
	}
	if c.LogFiles == nil {
		return nil, config.Errorf(path, "access logs are not available here")
	}
	return accesslog.Compile(logs, path, c.LogFiles)
}

// CompileValue compiles a header value with %VARIABLE% substitutions.
func (c *Context) CompileValue(text string) (route.Value, error) {
	f, err := format.CompileHeaderValue(text)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// ActiveConnections is the number of open downstream connections across
// the listeners sharing this context.
func (c *Context) ActiveConnections() int64 { return c.globalConns.Load() }

// HealthCheckFailing reports /healthcheck/fail or draining.
func (c *Context) HealthCheckFailing() bool {
	return c.Health != nil && c.Health.HealthCheckFailing()
}

// HTTPFilterContext is the compile context of HTTP filters under the stats
// prefix (http.<stat_prefix>. for a connection manager's, cluster.<name>.
// for a cluster's upstream filters, "" for per-route configs).
func (c *Context) HTTPFilterContext(prefix string) *httpfilter.Context {
	return &httpfilter.Context{Stats: c.Stats, StatPrefix: prefix, Clusters: c.Clusters, Log: c.Log,
		HealthCheckFailing: c.HealthCheckFailing, Async: c.Async, Runtime: c.Runtime, NodeCluster: c.NodeCluster, SDS: c.SDS}
}

// NetworkFilter is a filter chain's compiled terminal network filter.
type NetworkFilter interface {
	// ServeConn serves an accepted connection until it ends; the listener
	// closes it afterwards.
	ServeConn(c *Conn)
}

// ChainOptions are the listener-level settings a network filter compiles
// with.
type ChainOptions struct {
	// BufferLimit is per_connection_buffer_limit_bytes (0: unset).
	BufferLimit int64
	// Outbound is traffic_direction OUTBOUND (egress spans).
	Outbound bool
	// QUIC is set for the filter chain of a QUIC listener (quic.go): its
	// terminal filter must serve QUIC connections (QUICFilter).
	QUIC bool
}

// NetworkFilterFactory compiles a network filter's typed config; it is the
// Factory of an extension.NetworkFilter registration.
type NetworkFilterFactory func(ctx *Context, cfg proto.Message, opts ChainOptions, path string) (NetworkFilter, error)

// ConnFilter is a non-terminal network (read) filter — rbac,
// connection_limit, local_ratelimit, ext_authz, sni_cluster: the chain's
// filters before its terminal one run in order when a connection is
// accepted (after TLS is terminated, so SNI and the peer certificate are
// known), as Envoy's onNewConnection. A filter may look at the connection,
// record filter state or metadata, wrap c.Conn (to see or limit its
// bytes), or register work for the connection's end (c.OnClose). An error
// closes the connection; the filter has counted and logged why.
type ConnFilter interface {
	OnNewConnection(c *Conn) error
}

// ConnFilterFunc adapts a function to ConnFilter.
type ConnFilterFunc func(c *Conn) error

// OnNewConnection calls f.
func (f ConnFilterFunc) OnNewConnection(c *Conn) error { return f(c) }

// ConnFilterFactory compiles a non-terminal network filter's typed config;
// it is the Factory of an extension.NetworkFilter registration whose
// filter is not terminal.
type ConnFilterFactory func(ctx *Context, cfg proto.Message, opts ChainOptions, path string) (ConnFilter, error)

// AcceptFilter is a listener filter that runs on an accepted connection
// before its filter chain is chosen (proxy_protocol, local_ratelimit), in
// listener_filters order and ahead of the peeking inspectors (tls and
// http inspector, which read the bytes after it). It may replace c.Conn —
// with one that reports other addresses (which filter_chain_match then
// sees) or that replays bytes — and record filter state or metadata. An
// error closes the connection; the filter has counted why. A timeout
// (an error wrapping os.ErrDeadlineExceeded) with
// continue_on_listener_filters_timeout does not: the connection goes on,
// and a filter that read bytes leaves c.Conn replaying them.
type AcceptFilter interface {
	Accept(c *Conn) error
}

// AcceptFilterFunc adapts a function to AcceptFilter.
type AcceptFilterFunc func(c *Conn) error

// Accept calls f.
func (f AcceptFilterFunc) Accept(c *Conn) error { return f(c) }

// AcceptFilterFactory compiles a listener filter's typed config into an
// AcceptFilter; it is the Factory of an extension.ListenerFilter
// registration. timeout is the listener's listener_filters_timeout (0:
// none), which a filter that reads from the connection honours.
type AcceptFilterFactory func(ctx *Context, cfg proto.Message, timeout time.Duration, path string) (AcceptFilter, error)

// NetworkFilterFunc adapts a function to NetworkFilter.
type NetworkFilterFunc func(c *Conn)

// ServeConn calls f.
func (f NetworkFilterFunc) ServeConn(c *Conn) { f(c) }
