package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/overload"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/userspace"
)

// listenerFilterFactory applies a listener filter's config to the
// listener's inspector.
type listenerFilterFactory func(cfg proto.Message, insp *inspector, path string) error

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.listener.tls_inspector",
		Category: extension.ListenerFilter, Config: &tlsinspectorv3.TlsInspector{},
		Factory: listenerFilterFactory(func(cfg proto.Message, insp *inspector, path string) error {
			if err := config.CheckFields(cfg, path, "enable_ja3_fingerprinting", "enable_ja4_fingerprinting"); err != nil {
				return err
			}
			insp.tls = true
			return nil
		}), Notes: "JA3/JA4 fingerprints are accepted but not computed"})
	extension.Register(extension.Extension{Name: "envoy.filters.listener.original_dst",
		Category: extension.ListenerFilter, Config: &origdstv3.OriginalDst{},
		Factory: listenerFilterFactory(func(cfg proto.Message, insp *inspector, path string) error {
			if err := config.CheckFields(cfg, path); err != nil {
				return err
			}
			insp.origDst = true
			return nil
		}), Notes: "SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST (Linux); use_original_dst hands a restored connection to the listener on its original destination (exact address, else 0.0.0.0:port or [::]:port; bind_to_port: false listeners included), whose listener filters and filter chains then apply; without a NAT entry the local address is kept, as Envoy; any other getsockopt error closes the connection (listener.<stat_prefix>.downstream_cx_original_dst_error, Legate's own counter)"})
	extension.Register(extension.Extension{Name: "envoy.filters.listener.http_inspector",
		Category: extension.ListenerFilter, Config: &httpinspectorv3.HttpInspector{},
		Factory: listenerFilterFactory(func(cfg proto.Message, insp *inspector, path string) error {
			insp.http = true
			return nil
		})})
}

// chainOptions are the listener-level settings its chains compile with.
func chainOptions(pl *listenerv3.Listener) ChainOptions {
	o := ChainOptions{Outbound: pl.GetTrafficDirection() == corev3.TrafficDirection_OUTBOUND}
	if v := pl.GetPerConnectionBufferLimitBytes(); v != nil {
		o.BufferLimit = int64(v.GetValue())
	}
	return o
}

// listenerMeta is the config of a listener after updates.
type listenerMeta struct {
	proto   *listenerv3.Listener
	version string
	updated time.Time
}

// Current returns the listener's current config, version and update time
// (safe to call while the listener is updated).
func (l *Listener) Current() (*listenerv3.Listener, string, time.Time) {
	if m := l.meta.Load(); m != nil {
		return m.proto, m.version, m.updated
	}
	return l.Proto, l.VersionInfo, l.LastUpdated
}

// filterChain is a compiled filter chain: a transport and one terminal
// network filter.
type filterChain struct {
	name string
	// proto is the chain's config: an in-place update keeps (and does not
	// drain) a chain whose config is unchanged, as Envoy does.
	proto     *listenerv3.FilterChain
	match     chainMatch
	transport ServerTransport
	// connectTimeout is transport_socket_connect_timeout (0: none).
	connectTimeout time.Duration
	// conn are the chain's non-terminal network filters, in order.
	conn []ConnFilter
	// filter is the chain's terminal network filter.
	filter NetworkFilter
}

// chainSet is the filter chains of a listener and what derives from them;
// swapped atomically on an in-place (filter-chain-only) update. Everything
// else a Listener holds comes from listener-level fields, which only a full
// update (a new Listener taking over the socket) changes.
type chainSet struct {
	chains []*filterChain
	def    *filterChain
	// matcher is filter_chain_matcher (nil: filter_chain_match decides);
	// its actions are chain names, found in byName.
	matcher *matcher.Matcher
	byName  map[string]*filterChain
	// insp is the listener filters that choose among the chains.
	insp inspector
}

// listenerStats are the listener.<address>.* statistics.
type listenerStats struct {
	cxTotal, cxDestroy, noChain, cxOverflow *stats.Counter
	// overloadReject counts reject_incoming_connections closes;
	// connectTimeout transport_socket_connect_timeout expiries.
	overloadReject, connectTimeout *stats.Counter
	// origDstError counts connections closed because the original_dst
	// listener filter could not read their original destination (a
	// getsockopt error other than "no NAT entry"; Legate's own counter,
	// Envoy has none and serves such connections on the local address).
	origDstError *stats.Counter
	cxActive     *stats.Gauge
	cxLength     *stats.Histogram
}

// has reports whether c is one of the set's chains.
func (cs *chainSet) has(c *filterChain) bool {
	if c == cs.def {
		return true
	}
	for _, x := range cs.chains {
		if x == c {
			return true
		}
	}
	return false
}

// Listener is a running listener. Its listener-level state (address,
// limits, stats, listener filter settings) is fixed when it is compiled;
// its filter chains sit behind an atomic pointer that Update swaps.
type Listener struct {
	Name  string
	Proto *listenerv3.Listener
	// Address is what the listener binds, as Envoy writes it: host:port,
	// a pipe's path ("@" starts an abstract one), or envoy://<name>/ for
	// an internal listener.
	Address string
	// sockNet and sockAddr are what the socket table binds: network
	// ("tcp4", "tcp6", "tcp", "unix", "internal") and address (host:port,
	// path, internal listener name); pipeMode is a pipe's mode.
	sockNet, sockAddr string
	pipeMode          os.FileMode
	// extra are additional_addresses: more sockets served alike.
	extra       []*extraAddr
	VersionInfo string
	LastUpdated time.Time
	// ConnLimit caps this listener's connections (runtime
	// envoy.resource_limits.listener.<name>.connection_limit, from
	// Context.ListenerConnLimits); 0 is no cap.
	ConnLimit uint64
	// ignoreGlobal is ignore_global_conn_limit: the global limit does not
	// refuse this listener's connections (Istio's stats and health ports).
	ignoreGlobal bool
	// accept are the listener filters that run before chain selection
	// (AcceptFilter), in listener_filters order.
	accept []AcceptFilter
	// udp is set for a UDP listener (udp.go), which has no filter chains
	// and no connections.
	udp *udpListener
	// noBind is bind_to_port: false: the listener opens no socket and
	// only serves connections other listeners hand off to it.
	noBind bool
	// handOff is use_original_dst: a connection whose original
	// destination the original_dst listener filter restored goes to the
	// listener on that address (handoff.go).
	handOff bool

	deps *Context
	// sock is the listening socket, possibly shared with the listener this
	// one replaces; set by Bind before Serve.
	sock atomic.Pointer[Socket]
	// chains is what an update swaps whole: the filter chains and the
	// listener filters that pick among them; meta what /config_dump shows.
	chains atomic.Pointer[chainSet]
	meta   atomic.Pointer[listenerMeta]
	stats  listenerStats
	log    *slog.Logger

	mu    sync.Mutex
	conns map[*Conn]struct{}
	// draining is set when the listener stops accepting (Drain,
	// StopAccepting); a draining listener never attaches to its socket.
	draining atomic.Bool
	stopOnce sync.Once
	// closed is closed when the listener stops accepting.
	closed chan struct{}
	// wg counts the connections handed to this listener.
	wg sync.WaitGroup
}

// Conn is an accepted downstream connection as a network filter serves
// it: the connection (TLS terminated, when the chain has TLS) and the
// hook a drain uses to ask it to finish.
type Conn struct {
	net.Conn
	// ID numbers the connection (%CONNECTION_ID%); Start is when it was
	// accepted.
	ID    uint64
	Start time.Time
	// Remote and Local are the connection's addresses (Local as
	// original_dst restored it); TLS and SNI describe a TLS connection
	// (nil and "" otherwise).
	Remote, Local netip.AddrPort
	// DirectRemote is the socket's own peer, which a PROXY protocol
	// header does not change (Envoy's directRemoteAddress:
	// %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%, direct_source_prefix_ranges,
	// RBAC direct_remote_ip); zero when unknown, then Remote is it.
	DirectRemote netip.AddrPort
	// OriginalDst is the original destination the original_dst listener
	// filter restored Local to (Envoy's localAddressRestored), zero when
	// it restored none: the one address ORIGINAL_DST clusters connect to
	// without use_http_header, so a connection that reached a listener
	// directly is never sent back to the proxy itself.
	OriginalDst netip.AddrPort
	TLS         *streaminfo.TLSInfo
	SNI         string
	// FilterState is what listener and network filters record for the
	// connection (Envoy's connection-lifespan filter state): the HTTP
	// connection manager's streams and tcp_proxy read it.
	FilterState map[string]streaminfo.FilterStateValue
	// Metadata is the connection's dynamic metadata by namespace
	// (proxy_protocol TLVs, network filters' results).
	Metadata map[string]*structpb.Struct
	chain    *filterChain
	closers  []func()
	mu       sync.Mutex
	// drain asks the connection to finish its current exchange and close;
	// set and cleared under mu by the filter that serves the connection.
	drain func()

	// What ends the connection (end), kept here rather than on the
	// goroutine's stack so that a connection can outlive its goroutine
	// (Detach). raw is the accepted socket (Conn may wrap it); accepted
	// is the listener that accepted it, whose count of it (wg) released
	// says was given back at a hand-off; served is the listener whose
	// stats count it (nil until counted), and handedOff says served took
	// it in a hand-off (served's wg counts it too).
	raw                 net.Conn
	accepted, served    *Listener
	released, handedOff bool
	// park is what Detach asked the goroutine to call once unwound.
	park func()
}

// StreamInfo is a new record of the connection as network filters and
// tcp_proxy's access log see it (Envoy's connection stream info): its
// addresses — the source a PROXY protocol header gave, else the socket's
// peer; the direct remote is always the socket's peer —, TLS, SNI and
// what filters left in its metadata and filter state.
func (tc *Conn) StreamInfo() *streaminfo.Info {
	direct := tc.DirectRemote
	if !direct.IsValid() {
		direct = tc.Remote
	}
	return &streaminfo.Info{DownstreamLocal: tc.Local, DownstreamRemote: tc.Remote, DownstreamDirectRemote: direct,
		DownstreamConnRemote: tc.Remote, DownstreamTLS: tc.TLS, RequestedServerName: tc.SNI, ConnectionID: tc.ID,
		DynamicMetadata: tc.Metadata, FilterState: tc.FilterState}
}

// SetFilterState records a filter-state value for the connection.
func (tc *Conn) SetFilterState(key string, v streaminfo.FilterStateValue) {
	if tc.FilterState == nil {
		tc.FilterState = map[string]streaminfo.FilterStateValue{}
	}
	tc.FilterState[key] = v
}

// SetMetadata merges fields into the connection's dynamic metadata under
// namespace ns.
func (tc *Conn) SetMetadata(ns string, fields map[string]*structpb.Value) {
	if tc.Metadata == nil {
		tc.Metadata = map[string]*structpb.Struct{}
	}
	st := tc.Metadata[ns]
	if st == nil {
		st = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		tc.Metadata[ns] = st
	}
	for k, v := range fields {
		st.Fields[k] = v
	}
}

// mergePassthrough records what an internal connection carries.
func (tc *Conn) mergePassthrough(pt *userspace.Passthrough) {
	if pt == nil {
		return
	}
	for ns, st := range pt.Metadata {
		tc.SetMetadata(ns, st.GetFields())
	}
	for k, v := range pt.FilterState {
		tc.SetFilterState(k, v)
	}
}

// OnClose registers f to run when the connection ends (a filter's
// per-connection accounting: connection_limit's count, say). Filters call
// it from the connection's own goroutine, before the terminal filter.
func (tc *Conn) OnClose(f func()) {
	tc.closers = append(tc.closers, f)
}

// SetDrain installs (or, with nil, removes) the function a drain calls to
// ask the connection to finish its current exchange and close.
func (tc *Conn) SetDrain(f func()) {
	tc.mu.Lock()
	tc.drain = f
	tc.mu.Unlock()
}

// describe fills the connection's identity and addresses.
func (tc *Conn) describe(d *Context) {
	if d.ConnIDs != nil {
		tc.ID = d.ConnIDs.Add(1)
	}
	if a, ok := tc.Conn.RemoteAddr().(*net.TCPAddr); ok {
		tc.Remote = a.AddrPort()
	}
	if a, ok := tc.Conn.LocalAddr().(*net.TCPAddr); ok {
		tc.Local = a.AddrPort()
	}
	if t, ok := tc.Conn.(interface {
		TLSInfo() (*streaminfo.TLSInfo, string)
	}); ok {
		tc.TLS, tc.SNI = t.TLSInfo()
	}
}

// startDrain runs the drain callback if the connection has one, and
// reports whether it did.
func (tc *Conn) startDrain() bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.drain != nil {
		tc.drain()
		return true
	}
	return false
}

// Compile validates a listener definition and compiles its filter chains.
// It does not bind the socket.
func Compile(pl *listenerv3.Listener, path string, d *Context) (*Listener, error) {
	if isUDP(pl) {
		return compileUDP(pl, path, d)
	}
	if err := config.CheckFields(pl, path, "name", "address", "filter_chains", "default_filter_chain", "stat_prefix", "filter_chain_matcher", "additional_addresses",
		"listener_filters", "listener_filters_timeout", "continue_on_listener_filters_timeout", "drain_type",
		// no behavioural effect here
		"per_connection_buffer_limit_bytes", "metadata", "traffic_direction", "enable_reuse_port", "reuse_port",
		"bind_to_port", "use_original_dst", "ignore_global_conn_limit", "tcp_backlog_size", "connection_balance_config",
		"max_connections_to_accept_per_socket_event", "bypass_overload_manager", "internal_listener"); err != nil {
		return nil, err
	}
	la, err := compileAddress(pl, path, d)
	if err != nil {
		return nil, err
	}
	noBind := pl.GetBindToPort() != nil && !pl.GetBindToPort().GetValue()
	if noBind && la.network != "tcp" && la.network != "tcp4" && la.network != "tcp6" {
		// Only an IP listener can be the target of a hand-off, the one
		// thing a listener that binds nothing is for.
		return nil, config.Errorf(config.Join(path, "bind_to_port"), "bind_to_port: false needs a socket_address listener (it only receives connections handed off by a use_original_dst listener)")
	}
	if pl.GetUseOriginalDst().GetValue() && la.network != "tcp" && la.network != "tcp4" && la.network != "tcp6" {
		return nil, config.Errorf(config.Join(path, "use_original_dst"), "use_original_dst needs a socket_address listener (original destinations are IP addresses)")
	}
	extra, err := compileAdditional(pl, path, la)
	if err != nil {
		return nil, err
	}
	addr := la.display
	insp := inspector{timeout: 15 * time.Second, continueOnTimeout: pl.GetContinueOnListenerFiltersTimeout(),
		// As Envoy's buildOriginalDstListenerFilter: use_original_dst
		// brings the original_dst listener filter with it.
		origDst: pl.GetUseOriginalDst().GetValue()}
	if pl.GetListenerFiltersTimeout() != nil {
		insp.timeout = pl.GetListenerFiltersTimeout().AsDuration()
		if insp.timeout == 0 {
			insp.timeout = 24 * time.Hour // 0 disables the timeout
		}
	}
	var accept []AcceptFilter
	for i, lf := range pl.GetListenerFilters() {
		p := config.Index(config.Join(path, "listener_filters"), i)
		if err := config.CheckFields(lf, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		r, err := extension.Lookup(extension.ListenerFilter, lf.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		switch f := r.Ext.Factory.(type) {
		case listenerFilterFactory:
			if err := f(r.Config, &insp, config.Join(p, "typed_config")); err != nil {
				return nil, err
			}
		case AcceptFilterFactory:
			var timeout time.Duration
			if insp.timeout < 24*time.Hour {
				timeout = insp.timeout
			}
			af, err := f(d, r.Config, timeout, config.Join(p, "typed_config"))
			if err != nil {
				return nil, err
			}
			accept = append(accept, af)
		default:
			return nil, config.Errorf(p, "listener filter %q has no listener-filter factory", r.Ext.Name)
		}
	}
	l := &Listener{
		Name:         pl.GetName(),
		Proto:        pl,
		Address:      addr,
		sockNet:      la.network,
		sockAddr:     la.address,
		pipeMode:     la.mode,
		extra:        extra,
		LastUpdated:  time.Now(),
		deps:         d,
		conns:        map[*Conn]struct{}{},
		closed:       make(chan struct{}),
		log:          d.Log,
		ignoreGlobal: pl.GetIgnoreGlobalConnLimit(),
		ConnLimit:    d.ListenerConnLimits[pl.GetName()],
		accept:       accept,
		noBind:       noBind,
		handOff:      pl.GetUseOriginalDst().GetValue(),
	}
	prefix := pl.GetStatPrefix()
	if prefix == "" {
		prefix = stats.SanitizeName(la.statPrefix)
	}
	s := d.Stats.Scope("listener." + prefix + ".")
	l.stats = listenerStats{
		cxTotal: s.Counter("downstream_cx_total"), cxDestroy: s.Counter("downstream_cx_destroy"),
		noChain: s.Counter("no_filter_chain_match"), cxOverflow: s.Counter("downstream_cx_overflow"),
		overloadReject: s.Counter("downstream_cx_overload_reject"), connectTimeout: s.Counter("downstream_cx_transport_socket_connect_timeout"),
		cxActive: s.Gauge("downstream_cx_active"), cxLength: s.Histogram("downstream_cx_length_ms"),
		origDstError: s.Counter("downstream_cx_original_dst_error"),
	}
	cs, err := compileChains(pl, path, d, "listener."+prefix+".ssl.")
	if err != nil {
		return nil, err
	}
	// As Envoy, the TLS inspector is added when a chain matches on what
	// only it can see.
	for _, c := range cs.chains {
		if len(c.match.serverNames) > 0 || c.match.transport == "tls" || len(c.match.alpn) > 0 {
			insp.tls = true
		}
	}
	cs.insp = insp
	l.chains.Store(cs)
	return l, nil
}

func compileChains(pl *listenerv3.Listener, path string, d *Context, sslPrefix string) (*chainSet, error) {
	cs := &chainSet{}
	seen := map[string]int{}
	for i, fc := range pl.GetFilterChains() {
		p := config.Index(config.Join(path, "filter_chains"), i)
		c, err := compileChain(fc, p, d, chainOptions(pl), sslPrefix)
		if err != nil {
			return nil, err
		}
		c.proto = fc
		if c.match, err = compileChainMatch(fc.GetFilterChainMatch(), config.Join(p, "filter_chain_match")); err != nil {
			return nil, err
		}
		if prev, dup := seen[c.match.key()]; dup && pl.GetFilterChainMatcher() == nil {
			return nil, config.Errorf(config.Join(p, "filter_chain_match"), "multiple filter chains with the same matching rules are defined (filter_chains[%d] and [%d])", prev, i)
		}
		seen[c.match.key()] = i
		cs.chains = append(cs.chains, c)
	}
	if dfc := pl.GetDefaultFilterChain(); dfc != nil {
		c, err := compileChain(dfc, config.Join(path, "default_filter_chain"), d, chainOptions(pl), sslPrefix)
		if err != nil {
			return nil, err
		}
		c.proto = dfc
		cs.def = c
	}
	if len(cs.chains) == 0 && cs.def == nil {
		return nil, config.Errorf(path, "listener has no filter chains")
	}
	if pl.GetFilterChainMatcher() != nil {
		if err := compileChainMatcher(pl, path, cs); err != nil {
			return nil, err
		}
	}
	return cs, nil
}

func compileChain(fc *listenerv3.FilterChain, path string, d *Context, opts ChainOptions, sslPrefix string) (*filterChain, error) {
	if err := config.CheckFields(fc, path, "filters", "filter_chain_match", "transport_socket", "name", "metadata", "transport_socket_connect_timeout"); err != nil {
		return nil, err
	}
	c := &filterChain{name: fc.GetName(), connectTimeout: fc.GetTransportSocketConnectTimeout().AsDuration()}
	if ts := fc.GetTransportSocket(); ts != nil {
		if d.TLS == nil {
			r, err := extension.Lookup(extension.DownstreamTransportSocket, ts.GetTypedConfig(), config.Join(path, "transport_socket.typed_config"))
			if err != nil {
				return nil, err
			}
			if r.Ext.Name != "envoy.transport_sockets.raw_buffer" {
				return nil, config.Errorf(config.Join(path, "transport_socket"), "TLS termination is not available here")
			}
		} else {
			t, err := d.TLS.DownstreamTransport(ts, config.Join(path, "transport_socket"), sslPrefix)
			if err != nil {
				return nil, err
			}
			if q, ok := t.(QUICTransport); ok && q.QUIC() && !opts.QUIC {
				return nil, config.Errorf(config.Join(path, "transport_socket"), "envoy.transport_sockets.quic is for QUIC listeners (a UDP address with udp_listener_config.quic_options)")
			}
			c.transport = t
		}
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, config.Errorf(config.Join(path, "filters"), "filter chain has no filters")
	}
	for i, f := range filters {
		p := config.Index(config.Join(path, "filters"), i)
		if err := config.CheckFields(f, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		r, err := extension.Lookup(extension.NetworkFilter, f.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		last := i == len(filters)-1
		switch fac := r.Ext.Factory.(type) {
		case NetworkFilterFactory:
			if !last {
				return nil, config.Errorf(p, "%q is a terminal filter and must be the last in the chain", f.GetName())
			}
			if c.filter, err = fac(d, r.Config, opts, config.Join(p, "typed_config")); err != nil {
				return nil, err
			}
		case ConnFilterFactory:
			// As Envoy: the last filter of a chain must be terminal.
			if last {
				return nil, config.Errorf(p, "non-terminal filter %q is the last filter in the chain; end it with a terminal filter (tcp_proxy, http_connection_manager, …)", r.Ext.Name)
			}
			cf, err := fac(d, r.Config, opts, config.Join(p, "typed_config"))
			if err != nil {
				return nil, err
			}
			c.conn = append(c.conn, cf)
		default:
			return nil, config.Errorf(p, "network filter %q has no network-filter factory", r.Ext.Name)
		}
	}
	return c, nil
}

// Bind takes the listening socket from Context.Sockets: the one already open
// on the listener's address (held by a listener this one replaces), else a
// new one. Bind before Serve; Drain or StopAccepting releases it.
func (l *Listener) Bind() error { return l.BindReplacing(nil) }

// BindReplacing is Bind for a listener that replaces prev: it shares prev's
// socket when both have the same address, port 0 included (Envoy's full
// listener update clones the socket of the listener it replaces), so the
// address stays bound, with the same port, through the swap.
func (l *Listener) BindReplacing(prev *Listener) error {
	if l.udp != nil {
		return l.bindUDP(prev)
	}
	if l.noBind || l.sock.Load() != nil {
		return nil
	}
	if prev != nil && prev.sockAddr == l.sockAddr && prev.sockNet == l.sockNet {
		if s := prev.sock.Load(); s != nil && s.share() {
			l.sock.Store(s)
			if err := l.bindExtra(prev); err != nil {
				l.sock.Store(nil)
				s.Release()
				return err
			}
			return nil
		}
	}
	t := l.deps.Sockets
	if t == nil {
		t = NewSockets(l.log)
	}
	s, err := t.acquire(l.sockNet, l.sockAddr, l.pipeMode)
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	l.sock.Store(s)
	if err := l.bindExtra(prev); err != nil {
		l.sock.Store(nil)
		s.Release()
		return err
	}
	return nil
}

// BoundAddress returns the address the socket is bound to (useful with port 0).
func (l *Listener) BoundAddress() string {
	if l.udp != nil {
		if s := l.udp.sock.Load(); s != nil {
			return s.LocalAddr().String()
		}
		return l.Address
	}
	if s := l.sock.Load(); s != nil {
		return s.Addr().String()
	}
	return l.Address // bind_to_port: false binds nothing
}

// Start attaches the listener to its socket: from now on the socket's
// accept loop hands it every new connection, until a newer listener
// attaches to the same socket or this one stops accepting. It reports
// false when the listener is not bound or already stopped.
func (l *Listener) Start() bool {
	if l.udp != nil {
		return l.startUDP()
	}
	if l.noBind {
		// Nothing to attach to: the listener serves hand-offs from now
		// on, unless it already stopped.
		if l.draining.Load() {
			return false
		}
		l.deps.handoff.add(l)
		return true
	}
	s := l.sock.Load()
	if s == nil || !s.attach(l) {
		return false
	}
	l.startExtra()
	l.deps.handoff.add(l)
	return true
}

// Serve starts the listener (see Start) and returns when it stops
// accepting.
func (l *Listener) Serve() {
	if !l.Start() {
		return
	}
	<-l.closed
}

func (l *Listener) handle(conn net.Conn) {
	if l.deps.Overload.Active(overload.RejectIncomingConnections) {
		// As Envoy: accepted, then closed at once.
		l.stats.overloadReject.Inc()
		conn.Close()
		l.wg.Done()
		return
	}
	if !l.admit() {
		conn.Close()
		l.wg.Done()
		return
	}
	tc := &Conn{Conn: conn, raw: conn, Start: time.Now(), accepted: l}
	if a, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
		tc.DirectRemote = a.AddrPort()
	}
	if uc, ok := conn.(*userspace.Conn); ok {
		// An internal connection: what the internal_upstream transport
		// socket passed through becomes the connection's own dynamic
		// metadata and filter state (Envoy's passthroughState mergeInto).
		tc.mergePassthrough(uc.Passthrough())
	}
	tc.run(nil)
}

// run serves tc on the calling goroutine — serve, or with nil the
// accepting listener's listener filters and filter chain — and then ends
// the connection, unless its terminal filter detached it: then the park
// function Detach was given is the last thing the goroutine does.
func (tc *Conn) run(serve func()) {
	defer tc.finish()
	if serve == nil {
		tc.accepted.serve(tc, tc.accepted.handOff)
		return
	}
	serve()
}

// finish is run's deferred end: a panic is logged and counted and ends
// only this connection.
func (tc *Conn) finish() {
	if r := recover(); r != nil {
		l := tc.accepted
		l.deps.Panics.Inc()
		l.log.Error("panic while serving a connection; the connection is closed, the server keeps serving",
			"listener", l.Name, "remote", tc.raw.RemoteAddr().String(), "panic", r, "stack", string(debug.Stack()))
		tc.park = nil
	}
	if park := tc.park; park != nil {
		tc.park = nil
		park()
		return
	}
	tc.end()
}

// Detach lets the terminal network filter give up the connection's
// goroutine while the connection waits (an idle HTTP/1 keep-alive
// connection): ServeConn returns right after Detach, the goroutine
// unwinds without ending the connection, and calls park last (nothing of
// the connection runs on it afterwards). park hands the connection to
// whatever continues it with Resume, exactly once. Detach is called on
// the connection's goroutine; it reports false, and does nothing, when
// the connection is not served by a listener's goroutine (a QUIC
// connection, a test calling ServeConn): the filter keeps its goroutine.
func (tc *Conn) Detach(park func()) bool {
	if tc.accepted == nil {
		return false
	}
	tc.park = park
	return true
}

// Resume continues a detached connection on a new goroutine: serve runs
// there (with the listener's panic recovery) and, when it returns, the
// connection ends as it would have when ServeConn returned — closed,
// counted, its filters' OnClose work run — unless serve detached it
// again.
func (tc *Conn) Resume(serve func()) { go tc.run(serve) }

// end is the end of the connection: the serving listener's count and
// stats, the socket closed, the network filters' OnClose work, then the
// connection limits and the listeners' counts of it released.
func (tc *Conn) end() {
	if l := tc.served; l != nil {
		l.untrack(tc)
		l.stats.cxActive.Dec()
		l.stats.cxDestroy.Inc()
		l.stats.cxLength.Record(float64(time.Since(tc.Start).Milliseconds()))
	}
	// The connection as served last (TLS sends its close_notify), then
	// the socket itself.
	tc.Conn.Close()
	tc.raw.Close()
	for i := len(tc.closers) - 1; i >= 0; i-- {
		tc.closers[i]()
	}
	if tc.handedOff {
		tc.served.wg.Done()
	}
	tc.accepted.deps.globalConns.Add(-1)
	tc.release()
}

// release gives back the accepting listener's count of the connection:
// at its end, or at once when it is handed to another listener (a drain
// of this one does not wait for connections it gave away).
func (tc *Conn) release() {
	if !tc.released {
		tc.released = true
		tc.accepted.wg.Done()
	}
}

// count counts tc as l's own connection (once).
func (l *Listener) count(tc *Conn) {
	if tc.served == nil {
		tc.served = l
		l.stats.cxTotal.Inc()
		l.stats.cxActive.Inc()
	}
}

// serve runs the listener's listener filters on tc and then, unless the
// connection is handed to the listener of its original destination
// (handOff: use_original_dst on the accepting listener), serves it on the
// filter chain they choose. What ends the connection is tc.end's, run
// after serve returns.
func (l *Listener) serve(tc *Conn, handOff bool) {
	conn := tc.Conn
	cs := l.chains.Load()
	// As Envoy, a use_original_dst listener counts a connection as its own
	// (downstream_cx_total) only once it keeps it; other listeners count
	// it on accept, before their listener filters.
	if !handOff {
		l.count(tc)
	}
	for _, af := range l.accept {
		if err := af.Accept(tc); err != nil {
			if cs.insp.continueOnTimeout && errors.Is(err, os.ErrDeadlineExceeded) {
				// continue_on_listener_filters_timeout: Envoy skips the
				// listener filters left and serves the connection with
				// what is known (the filter leaves the bytes it read to
				// be read again).
				break
			}
			l.log.Debug("listener filter closed the connection", "listener", l.Name, "remote", conn.RemoteAddr().String(), "error", err)
			return
		}
	}
	conn = tc.Conn
	inspected, facts, ok := cs.insp.inspect(conn)
	if facts.origDstErr != nil {
		// The kernel could not say whether the connection was redirected
		// (an error other than "no NAT entry"): serving it on this
		// listener's own chains could send it somewhere it was not meant
		// for, so it is closed and counted.
		l.stats.origDstError.Inc()
		l.log.Warn("original_dst: cannot read the connection's original destination; the connection is closed",
			"listener", l.Name, "remote", conn.RemoteAddr().String(), "error", facts.origDstErr)
		return
	}
	if !ok {
		return // listener filters timed out
	}
	if facts.restored {
		tc.OriginalDst = facts.dst
	}
	if handOff && facts.restored {
		// use_original_dst: the listener on the original destination (or
		// its port's wildcard address) serves the connection, with its
		// own listener filters and filter chains, as Envoy's
		// ActiveTcpSocket::newConnection hands it over; it is never
		// handed on again.
		if target := l.deps.handoff.claim(facts.dst, l); target != nil {
			// claim counted it in target's wg.
			tc.Conn = inspected
			tc.release()
			tc.handedOff = true
			target.log.Debug("connection handed off by original destination", "from", l.Name, "listener", target.Name, "destination", facts.dst.String())
			target.serve(tc, false)
			return
		}
	}
	l.count(tc)
	facts.directSrc = tc.DirectRemote
	chain := cs.selectChain(facts)
	if chain == nil {
		l.stats.noChain.Inc()
		return
	}
	tc.Conn = inspected
	conn = inspected
	tc.chain = chain
	l.track(tc)
	if chain.transport != nil {
		var timer *time.Timer
		if chain.connectTimeout > 0 {
			// transport_socket_connect_timeout (scaled by reduce_timeouts):
			// a handshake not done in time closes the connection.
			timer = time.AfterFunc(l.deps.Overload.Scale(overload.TransportConnect, chain.connectTimeout), func() { conn.Close() })
		}
		tlsConn, err := chain.transport.Server(conn)
		// The timer bounds only the handshake: stopped here, a connection
		// that got through lives on; one it already closed is counted.
		if timer != nil && !timer.Stop() {
			l.stats.connectTimeout.Inc()
			return
		}
		if err != nil {
			return
		}
		tc.Conn = tlsConn
		conn = tlsConn
	}
	tc.describe(l.deps)
	if tc.SNI == "" {
		// A chain that passes TLS through still knows the SNI the TLS
		// inspector read (sni_cluster, RBAC requested_server_name).
		tc.SNI = facts.sni
	}
	for _, cf := range chain.conn {
		if err := cf.OnNewConnection(tc); err != nil {
			l.log.Debug("network filter closed the connection", "listener", l.Name, "remote", tc.Remote.String(), "error", err)
			return
		}
	}
	chain.filter.ServeConn(tc)
}

// admit applies the connection limits; Envoy closes connections over the
// limit at once and counts them in downstream_cx_overflow.
func (l *Listener) admit() bool {
	n := l.deps.globalConns.Add(1)
	if (l.deps.GlobalConnLimit > 0 && uint64(n) > l.deps.GlobalConnLimit && !l.ignoreGlobal) ||
		(l.ConnLimit > 0 && uint64(l.stats.cxActive.Value()) >= l.ConnLimit) {
		l.deps.globalConns.Add(-1)
		l.stats.cxOverflow.Inc()
		return false
	}
	return true
}

func (l *Listener) track(tc *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns[tc] = struct{}{}
}

func (l *Listener) untrack(tc *Conn) {
	l.mu.Lock()
	delete(l.conns, tc)
	l.mu.Unlock()
}

// FilterChainOnlyChange reports whether two configs of a listener differ
// only in their filter chains, as Envoy's ListenerMessageUtil does: only
// such a change is applied in place (Update); any other needs a new
// Listener that takes the socket over and the old one drained.
func FilterChainOnlyChange(a, b *listenerv3.Listener) bool {
	strip := func(pl *listenerv3.Listener) *listenerv3.Listener {
		c := proto.Clone(pl).(*listenerv3.Listener)
		c.FilterChains, c.DefaultFilterChain, c.FilterChainMatcher = nil, nil, nil
		return c
	}
	return proto.Equal(strip(a), strip(b))
}

// Update applies a filter-chain-only change (FilterChainOnlyChange) of the
// same listener in place: the chains and the listener filters that pick
// among them are swapped in one store; a chain whose config is unchanged
// is kept, with its connections, and connections on chains that are gone
// are drained over drainTime (Envoy's in-place filter chain update). It
// returns once the new chains are in place; the drain goes on in the
// background. Any other change is a new Listener (BindReplacing, then
// Drain the old one).
func (l *Listener) Update(next *Listener, drainTime time.Duration) {
	if l.udp != nil {
		// A QUIC listener swaps its one filter chain and drains the
		// connections of the old one; other UDP listeners have no filter
		// chains: a config whose only change is none keeps serving as it is.
		if q := l.udp.quic(); q != nil && next.udp != nil && next.udp.quic() != nil {
			nq := next.udp.quic()
			if old := q.update(nq); old != nil {
				go l.drainConns(func(tc *Conn) bool { return tc.chain == old }, drainTime)
			}
		}
		l.meta.Store(&listenerMeta{proto: next.Proto, version: next.VersionInfo, updated: next.LastUpdated})
		return
	}
	old := l.chains.Load()
	cs := next.chains.Load()
	cur, _, _ := l.Current()
	// Chains compiled against other listener-level settings (buffer
	// limits, traffic direction) are not the same chains.
	if FilterChainOnlyChange(cur, next.Proto) {
		keep := func(c *filterChain, from []*filterChain) *filterChain {
			for _, o := range from {
				if o != nil && proto.Equal(o.proto, c.proto) {
					return o
				}
			}
			return c
		}
		merged := &chainSet{insp: cs.insp, matcher: cs.matcher}
		for _, c := range cs.chains {
			merged.chains = append(merged.chains, keep(c, old.chains))
		}
		if cs.def != nil {
			merged.def = keep(cs.def, []*filterChain{old.def})
		}
		if cs.byName != nil {
			// The matcher names chains: point the names at the kept ones.
			merged.byName = make(map[string]*filterChain, len(merged.chains))
			for _, c := range merged.chains {
				merged.byName[c.name] = c
			}
		}
		cs = merged
	}
	// One swap: chains and their listener filters together (an update that
	// adds a server_names chain brings the TLS inspector with it).
	l.chains.Store(cs)
	l.meta.Store(&listenerMeta{proto: next.Proto, version: next.VersionInfo, updated: next.LastUpdated})
	go l.drainConns(func(tc *Conn) bool { return tc.chain != nil && !cs.has(tc.chain) }, drainTime)
}

// Drain stops accepting (the listener detaches from its socket and
// releases it: the socket closes unless a newer listener holds it), asks
// every connection to finish and close, and force-closes what remains
// after drainTime. It returns when all connections are gone.
func (l *Listener) Drain(drainTime time.Duration) {
	l.StopAccepting()
	l.drainConns(func(*Conn) bool { return true }, drainTime)
	l.wg.Wait()
}

// StopAccepting stops handing new connections to this listener and
// releases its socket, but leaves its connections alone.
func (l *Listener) StopAccepting() {
	l.stopOnce.Do(func() {
		l.draining.Store(true)
		// No hand-off reaches the listener once it is out of the table.
		l.deps.handoff.remove(l)
		if l.udp != nil {
			l.stopUDP()
		}
		if s := l.sock.Load(); s != nil {
			s.detach(l)
			s.Release()
		}
		l.releaseExtra()
		close(l.closed)
	})
}

// DrainConnections asks every current connection to close after its
// in-flight request, without waiting (the listener keeps accepting).
func (l *Listener) DrainConnections() {
	l.mu.Lock()
	victims := make([]*Conn, 0, len(l.conns))
	for tc := range l.conns {
		victims = append(victims, tc)
	}
	l.mu.Unlock()
	for _, tc := range victims {
		tc.startDrain()
	}
}

// drainConns asks the matching connections to finish and close, and
// force-closes those left after drainTime. The set is read again at every
// tick: a connection handed to the listener just before it stopped
// accepting (still in its listener filters when the drain began) is
// drained too, as is one whose codec had not yet installed its drain
// callback.
func (l *Listener) drainConns(match func(*Conn) bool, drainTime time.Duration) {
	deadline := time.Now().Add(drainTime)
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	asked := map[*Conn]bool{}
	for {
		l.mu.Lock()
		var left []*Conn
		for tc := range l.conns {
			if match(tc) {
				left = append(left, tc)
			}
		}
		l.mu.Unlock()
		if len(left) == 0 {
			return
		}
		for _, tc := range left {
			if !asked[tc] && tc.startDrain() {
				asked[tc] = true
			}
		}
		if !time.Now().Before(deadline) {
			for _, tc := range left {
				tc.Conn.Close()
			}
			return
		}
		if tick == nil {
			tick = time.NewTicker(20 * time.Millisecond)
		}
		<-tick.C
	}
}
