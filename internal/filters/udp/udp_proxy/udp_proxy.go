// Package udp_proxy is envoy.filters.udp_listener.udp_proxy: a UDP
// listener filter that proxies datagrams between downstream peers and the
// hosts of a cluster (the deprecated cluster field, or a matcher over the
// datagram's addresses whose actions are udp_proxy.v3.Route). Datagrams
// from one downstream peer on one local address form a session, bound to
// one host the cluster's load balancer chose (hash_policies feed a hashing
// balancer) and to a connected upstream socket of its own; sessions end
// after idle_timeout (60 s) without traffic either way, when their host
// leaves the cluster or the listener stops. use_per_packet_load_balancing
// picks a host for every datagram. Sessions count against the cluster's
// max_connections circuit breaker, and the session table and each
// session's queue are bounded, so a flood of datagrams from new source
// addresses is dropped and counted rather than held. Stats are Envoy's:
// udp.<stat_prefix>.downstream_sess_*, idle_timeout, and
// cluster.<name>.udp.sess_*; session and proxy access logs carry Envoy's
// udp.proxy.session / udp.proxy.proxy dynamic metadata.
package udp_proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	udpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/udp/udp_proxy/v3"
	networkinputsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/matching/common_inputs/network/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

const (
	// defaultIdleTimeout is idle_timeout's default (Envoy: 60 s).
	defaultIdleTimeout = 60 * time.Second
	// maxSessions bounds one listener's session table whatever the
	// clusters' circuit breakers allow.
	maxSessions = 1 << 16
	// queueLen bounds the datagrams waiting to be written upstream per
	// session; more are dropped (sess_tx_errors).
	queueLen = 64
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.udp_listener.udp_proxy",
		Category: extension.UDPListenerFilter, Config: &udpv3.UdpProxyConfig{},
		Factory: listener.UDPFilterFactory(func(ctx *listener.Context, cfg proto.Message, path string) (listener.UDPFilter, error) {
			return compile(cfg.(*udpv3.UdpProxyConfig), path, ctx)
		}),
		Notes: "session_filters, tunneling_config and use_original_src_ip are not implemented"})
}

// dsStats are udp.<stat_prefix>.*.
type dsStats struct {
	noRoute, rxBytes, rxDatagrams, rxErrors, total, txBytes, txDatagrams, txErrors, idleTimeout *stats.Counter
	active                                                                                      *stats.Gauge
}

// clusterStats are cluster.<name>.udp.*.
type clusterStats struct {
	rxDatagrams, rxDropped, rxErrors, txDatagrams, txErrors *stats.Counter
}

// proxy is a compiled udp_proxy config; immutable.
type proxy struct {
	cluster *upstream.Ref
	// routes is the matcher form; its actions are *upstream.Ref.
	routes      *matcher.Matcher
	idle        time.Duration
	perPacket   bool
	hash        *hashPolicy
	upMaxRx     int
	sessionLogs []*accesslog.Logger
	proxyLogs   []*accesslog.Logger
	flushEvery  time.Duration
	ds          dsStats
	store       *stats.Store
	log         *slog.Logger
	hostname    string
	ids         *atomic.Uint64

	csMu sync.Mutex
	cs   map[string]*clusterStats
}

func compile(c *udpv3.UdpProxyConfig, path string, d *listener.Context) (*proxy, error) {
	if err := config.CheckFields(c, path, "stat_prefix", "cluster", "matcher", "idle_timeout", "use_original_src_ip",
		"hash_policies", "upstream_socket_config", "use_per_packet_load_balancing", "access_log", "proxy_access_log",
		"session_filters", "tunneling_config", "access_log_options"); err != nil {
		return nil, err
	}
	if c.GetUseOriginalSrcIp() {
		return nil, config.Unsupported(config.Join(path, "use_original_src_ip"), "use_original_src_ip (transparent UDP proxying)")
	}
	if len(c.GetSessionFilters()) > 0 {
		return nil, config.Unsupported(config.Join(path, "session_filters"), "UDP session filters")
	}
	if c.GetTunnelingConfig() != nil {
		return nil, config.Unsupported(config.Join(path, "tunneling_config"), "UDP tunneling over HTTP")
	}
	p := &proxy{idle: defaultIdleTimeout, perPacket: c.GetUsePerPacketLoadBalancing(), upMaxRx: listener.DefaultUDPMaxRxDatagramSize,
		store: d.Stats, log: d.Log, hostname: d.Hostname, ids: d.ConnIDs, cs: map[string]*clusterStats{}}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.ids == nil {
		p.ids = new(atomic.Uint64)
	}
	if v := c.GetIdleTimeout(); v != nil {
		p.idle = v.AsDuration()
	}
	switch rs := c.GetRouteSpecifier().(type) {
	case *udpv3.UdpProxyConfig_Cluster:
		p.cluster = d.Clusters.Ref(rs.Cluster)
	case *udpv3.UdpProxyConfig_Matcher:
		m, err := compileRoutes(rs.Matcher, config.Join(path, "matcher"), d)
		if err != nil {
			return nil, err
		}
		p.routes = m
	default:
		return nil, config.Errorf(path, "udp_proxy needs a cluster or a matcher")
	}
	if hp := c.GetHashPolicies(); len(hp) > 0 {
		// Envoy allows one hash policy (max_items: 1, checked on load).
		h := hp[0]
		hpath := config.Index(config.Join(path, "hash_policies"), 0)
		if err := config.CheckFields(h, hpath, "source_ip", "key"); err != nil {
			return nil, err
		}
		switch pol := h.GetPolicySpecifier().(type) {
		case *udpv3.UdpProxyConfig_HashPolicy_SourceIp:
			p.hash = &hashPolicy{sourceIP: true}
		case *udpv3.UdpProxyConfig_HashPolicy_Key:
			p.hash = &hashPolicy{key: xxhash.Sum64String(pol.Key)}
		default:
			return nil, config.Errorf(hpath, "a hash policy needs source_ip or key")
		}
	}
	if sc := c.GetUpstreamSocketConfig(); sc != nil {
		n, err := listener.UDPSocketConfig(sc, config.Join(path, "upstream_socket_config"))
		if err != nil {
			return nil, err
		}
		p.upMaxRx = n
	}
	var err error
	if p.sessionLogs, err = d.AccessLogs(c.GetAccessLog(), config.Join(path, "access_log")); err != nil {
		return nil, err
	}
	if p.proxyLogs, err = d.AccessLogs(c.GetProxyAccessLog(), config.Join(path, "proxy_access_log")); err != nil {
		return nil, err
	}
	if o := c.GetAccessLogOptions(); o != nil {
		op := config.Join(path, "access_log_options")
		// flush_access_log_on_tunnel_connected only acts with
		// tunneling_config, which is refused above.
		if err := config.CheckFields(o, op, "access_log_flush_interval", "flush_access_log_on_tunnel_connected"); err != nil {
			return nil, err
		}
		p.flushEvery = o.GetAccessLogFlushInterval().AsDuration()
	}
	s := d.Stats.Scope("udp." + stats.SanitizeName(c.GetStatPrefix()) + ".")
	p.ds = dsStats{
		noRoute: s.Counter("downstream_sess_no_route"), rxBytes: s.Counter("downstream_sess_rx_bytes"),
		rxDatagrams: s.Counter("downstream_sess_rx_datagrams"), rxErrors: s.Counter("downstream_sess_rx_errors"),
		total: s.Counter("downstream_sess_total"), txBytes: s.Counter("downstream_sess_tx_bytes"),
		txDatagrams: s.Counter("downstream_sess_tx_datagrams"), txErrors: s.Counter("downstream_sess_tx_errors"),
		idleTimeout: s.Counter("idle_timeout"), active: s.Gauge("downstream_sess_active"),
	}
	return p, nil
}

// compileRoutes compiles the matcher form: UDP datagrams have only their
// addresses to match on (Envoy's UDP network inputs), and every action is
// a udp_proxy.v3.Route naming a cluster.
func compileRoutes(m *xdsmatcherv3.Matcher, path string, d *listener.Context) (*matcher.Matcher, error) {
	return matcher.CompileWith(m, path, matcher.Options{
		Input: func(cfg proto.Message, p string) error {
			switch cfg.(type) {
			case *networkinputsv3.SourceIPInput, *networkinputsv3.SourcePortInput,
				*networkinputsv3.DestinationIPInput, *networkinputsv3.DestinationPortInput:
				return nil
			}
			return config.Errorf(p, "%s is not a UDP network input (UDP routing matches on source_ip, source_port, destination_ip and destination_port)",
				cfg.ProtoReflect().Descriptor().FullName())
		},
		Action: func(tc *xdscorev3.TypedExtensionConfig, p string) (any, error) {
			r := &udpv3.Route{}
			tp := config.Join(p, "typed_config")
			if !tc.GetTypedConfig().MessageIs(r) {
				return nil, config.Errorf(tp, "udp_proxy matcher actions must be envoy.extensions.filters.udp.udp_proxy.v3.Route, not %s", tc.GetTypedConfig().GetTypeUrl())
			}
			if err := tc.GetTypedConfig().UnmarshalTo(r); err != nil {
				return nil, config.Errorf(tp, "%v", err)
			}
			if err := config.CheckFields(r, tp, "cluster"); err != nil {
				return nil, err
			}
			if r.GetCluster() == "" {
				return nil, config.Errorf(config.Join(tp, "cluster"), "a route needs a cluster")
			}
			return d.Clusters.Ref(r.GetCluster()), nil
		},
	})
}

// clusterStats returns cluster.<name>.udp.* of cl.
func (p *proxy) clusterStats(cl *upstream.Cluster) *clusterStats {
	name := cl.StatName()
	p.csMu.Lock()
	defer p.csMu.Unlock()
	if cs := p.cs[name]; cs != nil {
		return cs
	}
	s := p.store.Scope("cluster." + stats.SanitizeName(name) + ".udp.")
	cs := &clusterStats{rxDatagrams: s.Counter("sess_rx_datagrams"), rxDropped: s.Counter("sess_rx_datagrams_dropped"),
		rxErrors: s.Counter("sess_rx_errors"), txDatagrams: s.Counter("sess_tx_datagrams"), txErrors: s.Counter("sess_tx_errors")}
	p.cs[name] = cs
	return cs
}

// route returns the cluster a datagram goes to (nil: no route).
func (p *proxy) route(d *listener.Datagram) *upstream.Ref {
	if p.routes == nil {
		return p.cluster
	}
	info := &streaminfo.Info{DownstreamLocal: d.Local, DownstreamRemote: d.Peer, DownstreamDirectRemote: d.Peer}
	a, ok := p.routes.Match(&matcher.Data{Info: info})
	if !ok {
		return nil
	}
	ref, _ := a.(*upstream.Ref)
	return ref
}

// Start implements listener.UDPFilter.
func (p *proxy) Start(out listener.UDPSender) listener.UDPInstance {
	return &instance{p: p, out: out, table: newSessionTable[*session](maxSessions), start: time.Now()}
}

// instance is udp_proxy running on one listener.
type instance struct {
	p     *proxy
	out   listener.UDPSender
	start time.Time
	// rx and tx are the bytes of the whole instance (proxy access log).
	rx, tx atomic.Uint64

	mu     sync.Mutex
	table  *sessionTable[*session]
	closed bool
}

// OnData implements listener.UDPInstance: find or make the datagram's
// session and hand the datagram to it. Never blocks.
func (in *instance) OnData(d *listener.Datagram) bool {
	p := in.p
	in.rx.Add(uint64(len(d.Data)))
	ref := p.route(d)
	var cl *upstream.Cluster
	if ref != nil {
		cl = ref.Get()
	}
	if cl == nil {
		p.ds.noRoute.Inc()
		return false
	}
	s := in.sessionFor(d, cl)
	if s != nil {
		s.onDownstream(d.Data)
	}
	return false
}

// sessionFor returns the datagram's session, making it if needed; nil
// when the datagram is dropped (no healthy host, overflow, socket error),
// which is counted.
func (in *instance) sessionFor(d *listener.Datagram, cl *upstream.Cluster) *session {
	p := in.p
	key := sessionKey{cluster: cl.Name, local: d.Local, peer: d.Peer}
	var host *upstream.Host
	if p.perPacket {
		// Envoy's PerPacketLoadBalancingClusterInfo: a host per datagram,
		// a session per (peer, host).
		if host = in.pick(cl, d.Peer); host == nil {
			cl.Stats.CxNoneHealthy.Inc()
			return nil
		}
		key.host = host.Address
	}
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	s, _ := in.table.get(key)
	in.mu.Unlock()
	if s != nil {
		switch {
		case s.cluster != cl || s.host.Removed():
			// The cluster was replaced (CDS) or the host left it: Envoy
			// drops the cluster's (the host's) sessions; a new one starts.
			in.remove(s)
			s = nil
		case !p.perPacket && !s.host.Healthy():
			// Envoy: an unhealthy host's session moves to a healthy host
			// when one is found; otherwise it stays.
			if h := in.pick(cl, d.Peer); h != nil && h.Healthy() && h != s.host {
				in.remove(s)
				s, host = nil, h
			}
		}
	}
	if s != nil {
		return s
	}
	return in.newSession(key, cl, host, d)
}

func (in *instance) pick(cl *upstream.Cluster, peer netip.AddrPort) *upstream.Host {
	lb := &upstream.LBContext{}
	if k, ok := in.p.hash.hash(peer); ok {
		lb.HashKey, lb.HasHash = k, true
	}
	return cl.Pick(lb)
}

// newSession opens a session to host (nil: the load balancer picks one).
func (in *instance) newSession(key sessionKey, cl *upstream.Cluster, host *upstream.Host, d *listener.Datagram) *session {
	p := in.p
	in.mu.Lock()
	full := in.table.len() >= in.table.max
	in.mu.Unlock()
	if full {
		cl.CountSessionOverflow()
		return nil
	}
	if !cl.TryStartSession() {
		return nil // upstream_cx_overflow counted
	}
	if host == nil {
		if host = in.pick(cl, d.Peer); host == nil {
			cl.EndSession()
			cl.Stats.CxNoneHealthy.Inc()
			return nil
		}
	}
	cs := p.clusterStats(cl)
	ap, err := netip.ParseAddrPort(host.Address)
	var conn *net.UDPConn
	if err == nil {
		// A connected socket per session, as Envoy: only the host's
		// datagrams come back on it, from any local port the kernel picks.
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	}
	if err != nil {
		cl.EndSession()
		cs.txErrors.Inc()
		p.log.Debug("udp_proxy: cannot open an upstream socket", "host", host.Address, "error", err)
		return nil
	}
	s := &session{in: in, key: key, cluster: cl, host: host, cs: cs, conn: conn,
		queue: make(chan []byte, queueLen), done: make(chan struct{}), id: p.ids.Add(1), start: time.Now()}
	s.touch()
	// Everything end undoes is in place before the session is visible;
	// the idle timer is armed only once it is in the table, so it cannot
	// fire on a session that is not there yet.
	s.idle = time.AfterFunc(time.Hour, s.onIdle)
	s.idle.Stop()
	if p.flushEvery > 0 && len(p.sessionLogs) > 0 {
		s.flush = time.AfterFunc(p.flushEvery, s.onFlush)
	}
	p.ds.active.Inc() // end takes it back
	in.mu.Lock()
	ok := !in.closed && in.table.add(key, s)
	if ok {
		s.idle.Reset(p.idle)
	}
	in.mu.Unlock()
	if !ok {
		// Closed meanwhile (only OnData adds, so the table cannot have
		// filled since the check above); nobody else saw s, and a session
		// that never was is not logged.
		s.endOnce.Do(func() {
			close(s.done)
			conn.Close()
			s.idle.Stop()
			if s.flush != nil {
				s.flush.Stop()
			}
			cl.EndSession()
			p.ds.active.Dec()
		})
		return nil
	}
	p.ds.total.Inc()
	p.log.Debug("udp_proxy: new session", "downstream", key.peer.String(), "local", key.local.String(), "upstream", host.Address)
	go s.writeLoop()
	go s.readLoop()
	return s
}

// remove ends s and takes it out of the table.
func (in *instance) remove(s *session) {
	in.mu.Lock()
	in.table.remove(s.key, func(x *session) bool { return x == s })
	in.mu.Unlock()
	s.end()
}

// OnReceiveError implements listener.UDPInstance.
func (in *instance) OnReceiveError(error) { in.p.ds.rxErrors.Inc() }

// Close implements listener.UDPInstance: every session ends, then the
// proxy access log is written (Envoy writes it when the filter goes).
func (in *instance) Close() {
	in.mu.Lock()
	in.closed = true
	all := in.table.drain()
	in.mu.Unlock()
	for _, s := range all {
		s.end()
	}
	p := in.p
	if len(p.proxyLogs) == 0 {
		return
	}
	num := func(c *stats.Counter) *structpb.Value { return structpb.NewNumberValue(float64(c.Value())) }
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"bytes_sent": num(p.ds.txBytes), "bytes_received": num(p.ds.rxBytes),
		"errors_sent": num(p.ds.txErrors), "errors_received": num(p.ds.rxErrors),
		"datagrams_sent": num(p.ds.txDatagrams), "datagrams_received": num(p.ds.rxDatagrams),
		"no_route": num(p.ds.noRoute), "session_total": num(p.ds.total), "idle_timeout": num(p.ds.idleTimeout),
	}}
	info := &streaminfo.Info{StartTime: in.start, Done: time.Since(in.start), Hostname: p.hostname,
		BytesReceived: in.rx.Load(), BytesSent: in.tx.Load(), DownstreamLocal: in.out.LocalAddr(),
		DynamicMetadata: map[string]*structpb.Struct{"udp.proxy.proxy": md}}
	for _, l := range p.proxyLogs {
		l.Log(info)
	}
}

// session is one downstream peer's flow to one upstream host.
type session struct {
	in      *instance
	key     sessionKey
	cluster *upstream.Cluster
	host    *upstream.Host
	cs      *clusterStats
	conn    *net.UDPConn
	queue   chan []byte
	done    chan struct{}
	id      uint64
	start   time.Time
	idle    *time.Timer
	flush   *time.Timer
	endOnce sync.Once
	// last is the time of the last datagram either way (unix ns).
	last atomic.Int64
	// Per-session figures (udp.proxy.session metadata, access logs).
	rxBytes, rxDatagrams, txBytes, txDatagrams, txErrors atomic.Uint64
}

func (s *session) touch() { s.last.Store(time.Now().UnixNano()) }

// onDownstream queues a downstream datagram for the upstream host.
func (s *session) onDownstream(b []byte) {
	ds := &s.in.p.ds
	n := uint64(len(b))
	ds.rxBytes.Add(n)
	ds.rxDatagrams.Inc()
	s.rxBytes.Add(n)
	s.rxDatagrams.Add(1)
	s.touch()
	select {
	case s.queue <- append([]byte(nil), b...):
	default:
		// The upstream socket does not keep up: the datagram is dropped
		// (UDP may drop), never held without bound.
		s.cs.txErrors.Inc()
	}
}

func (s *session) writeLoop() {
	for {
		select {
		case <-s.done:
			return
		case b := <-s.queue:
			if _, err := s.conn.Write(b); err != nil {
				s.cs.txErrors.Inc()
				continue
			}
			s.cs.txDatagrams.Inc()
			s.cluster.Stats.CxTxBytes.Add(uint64(len(b)))
		}
	}
}

func (s *session) readLoop() {
	p := s.in.p
	buf := make([]byte, p.upMaxRx)
	for {
		n, _, flags, _, err := s.conn.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable and the like (ECONNREFUSED on a
			// connected socket): counted, the session goes on.
			s.cs.rxErrors.Inc()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				time.Sleep(time.Millisecond) // no busy loop on a persistent error
			}
			continue
		}
		if flags&syscall.MSG_TRUNC != 0 {
			s.cs.rxDropped.Inc()
			continue
		}
		s.cs.rxDatagrams.Inc()
		s.cluster.Stats.CxRxBytes.Add(uint64(n))
		s.touch()
		if err := s.in.out.SendTo(buf[:n], s.key.peer); err != nil {
			p.ds.txErrors.Inc()
			s.txErrors.Add(1)
			continue
		}
		s.in.tx.Add(uint64(n))
		p.ds.txBytes.Add(uint64(n))
		p.ds.txDatagrams.Inc()
		s.txBytes.Add(uint64(n))
		s.txDatagrams.Add(1)
	}
}

// onIdle ends the session once idle_timeout passed with no datagram
// either way (Envoy resets the timer on both directions).
func (s *session) onIdle() {
	p := s.in.p
	since := time.Since(time.Unix(0, s.last.Load()))
	if since < p.idle {
		s.idle.Reset(p.idle - since)
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	p.ds.idleTimeout.Inc()
	p.log.Debug("udp_proxy: session idle timeout", "downstream", s.key.peer.String(), "local", s.key.local.String())
	s.in.remove(s)
}

// onFlush writes the periodic session access log (access_log_flush_interval).
func (s *session) onFlush() {
	select {
	case <-s.done:
		return
	default:
	}
	s.logAccess()
	s.flush.Reset(s.in.p.flushEvery)
}

// end closes the session once: its socket, its goroutines, its breaker
// slot; then its access log is written.
func (s *session) end() {
	s.endOnce.Do(func() {
		close(s.done)
		s.conn.Close()
		s.idle.Stop()
		if s.flush != nil {
			s.flush.Stop()
		}
		s.cluster.EndSession()
		s.in.p.ds.active.Dec()
		s.logAccess()
	})
}

// logAccess writes the session access logs: the session's addresses, host
// and byte counts, and Envoy's udp.proxy.session dynamic metadata.
func (s *session) logAccess() {
	p := s.in.p
	if len(p.sessionLogs) == 0 {
		return
	}
	num := func(v uint64) *structpb.Value { return structpb.NewNumberValue(float64(v)) }
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"cluster_name": structpb.NewStringValue(s.cluster.Name),
		"bytes_sent":   num(s.txBytes.Load()), "bytes_received": num(s.rxBytes.Load()),
		"errors_sent":    num(s.txErrors.Load()),
		"datagrams_sent": num(s.txDatagrams.Load()), "datagrams_received": num(s.rxDatagrams.Load()),
	}}
	info := &streaminfo.Info{StartTime: s.start, Done: time.Since(s.start), Hostname: p.hostname,
		DownstreamLocal: s.key.local, DownstreamRemote: s.key.peer, DownstreamDirectRemote: s.key.peer,
		ConnectionID: s.id, UpstreamCluster: s.cluster.Name, UpstreamHost: s.host.Address,
		BytesReceived: s.rxBytes.Load(), BytesSent: s.txBytes.Load(),
		DynamicMetadata: map[string]*structpb.Struct{"udp.proxy.session": md}}
	if la, ok := s.conn.LocalAddr().(*net.UDPAddr); ok {
		info.UpstreamLocalAddress = la.String()
	}
	for _, l := range p.sessionLogs {
		l.Log(info)
	}
}
