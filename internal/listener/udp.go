package listener

// UDP listeners: a listener whose socket_address protocol is UDP binds a
// datagram socket and hands every datagram it reads to its UDP listener
// filters (extension.UDPListenerFilter: udp_proxy), in listener_filters
// order, as Envoy's ActiveRawUdpListener does. Like a TCP
// listener it shares its socket with the listener that replaces it (a full
// update): the socket's read loop hands each datagram to the newest
// attached listener, and a listener that stops serving (replaced, removed,
// drained) ends its filters' instances — a replaced listener's sessions end.
// A QUIC listener (udp_listener_config.quic_options, quic.go) has one
// filter chain, served by a QUIC endpoint in the place of the UDP
// listener filters.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

// DefaultUDPMaxRxDatagramSize is UdpSocketConfig.max_rx_datagram_size's
// default (Envoy's DEFAULT_UDP_MAX_DATAGRAM_SIZE).
const DefaultUDPMaxRxDatagramSize = 1500

// maxUDPDatagram is the largest UDP payload (IPv4: 65535 - 8 - 20).
const maxUDPDatagram = 65507

// Datagram is one datagram a UDP listener read: the local address it
// arrived on (the socket's bound address), the peer that sent it and its
// payload. Data is only valid during the OnData call: a filter that keeps
// it copies it.
type Datagram struct {
	Local, Peer netip.AddrPort
	Data        []byte
}

// UDPSender sends datagrams from a UDP listener's socket (the replies of
// a UDP proxy go back from the address the downstream peer sent to).
type UDPSender interface {
	// SendTo writes one datagram to peer.
	SendTo(b []byte, peer netip.AddrPort) error
	// LocalAddr is the socket's bound address.
	LocalAddr() netip.AddrPort
}

// UDPFilter is a compiled UDP listener filter (the Factory product of an
// extension.UDPListenerFilter registration). Compiling it has no side
// effects; Start makes the running instance when the listener starts
// serving.
type UDPFilter interface {
	// Start returns the filter's instance for one serving listener: it
	// gets the listener's datagrams until Close.
	Start(out UDPSender) UDPInstance
}

// UDPInstance is a running UDP listener filter (Envoy's
// UdpListenerReadFilter). OnData and OnReceiveError are called from the
// socket's read loop, one at a time, and must not block.
type UDPInstance interface {
	// OnData handles one datagram; false stops the iteration (the next
	// listener filters do not see it), as Envoy's StopIteration.
	OnData(d *Datagram) bool
	// OnReceiveError reports a failed read.
	OnReceiveError(err error)
	// Close ends the instance (its sessions end); it is called once,
	// when the listener stops serving, never concurrently with OnData.
	Close()
}

// UDPFilterFactory compiles a UDP listener filter's typed config; it is
// the Factory of an extension.UDPListenerFilter registration.
type UDPFilterFactory func(ctx *Context, cfg proto.Message, path string) (UDPFilter, error)

// udpListener is the UDP side of a Listener.
type udpListener struct {
	filters []UDPFilter
	// maxRx is downstream_socket_config.max_rx_datagram_size: a longer
	// datagram is truncated by the kernel, so it is dropped and counted.
	maxRx   int
	dropped *stats.Counter
	sock    atomic.Pointer[udpSocket]

	mu sync.Mutex
	// insts are the filters' instances while the listener serves.
	insts   []UDPInstance
	stopped bool
}

// isUDP reports whether pl is a UDP listener.
func isUDP(pl *listenerv3.Listener) bool {
	return pl.GetAddress().GetSocketAddress().GetProtocol() == corev3.SocketAddress_UDP
}

// compileUDP compiles a UDP listener: its address, udp_listener_config and
// UDP listener filters.
func compileUDP(pl *listenerv3.Listener, path string, d *Context) (*Listener, error) {
	// Filter chains on a UDP listener are QUIC's (HTTP/3, quic.go).
	isQUIC := pl.GetUdpListenerConfig().GetQuicOptions() != nil
	if !isQUIC && (len(pl.GetFilterChains()) > 0 || pl.GetDefaultFilterChain() != nil) {
		return nil, config.Errorf(config.Join(path, "filter_chains"), "filter chains on a UDP listener are QUIC's: add udp_listener_config.quic_options (HTTP/3), or use listener_filters with envoy.filters.udp_listener.udp_proxy")
	}
	if err := config.CheckFields(pl, path, "name", "address", "listener_filters", "udp_listener_config", "stat_prefix",
		"drain_type", "filter_chains", "default_filter_chain", "filter_chain_matcher",
		// no behavioural effect on a datagram socket
		"metadata", "traffic_direction", "enable_reuse_port", "reuse_port", "bind_to_port", "ignore_global_conn_limit",
		"per_connection_buffer_limit_bytes", "listener_filters_timeout", "continue_on_listener_filters_timeout",
		"bypass_overload_manager"); err != nil {
		return nil, err
	}
	if pl.GetBindToPort() != nil && !pl.GetBindToPort().GetValue() {
		return nil, config.Unsupported(config.Join(path, "bind_to_port"), "bind_to_port: false")
	}
	ap := config.Join(path, "address.socket_address")
	sa := pl.GetAddress().GetSocketAddress()
	if err := config.CheckFields(sa, ap, "address", "port_value", "protocol", "ipv4_compat"); err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return nil, config.Errorf(config.Join(ap, "address"), "%q is not an IP address (listeners bind to IPs)", sa.GetAddress())
	}
	// The socket family as for TCP: an IPv4 address binds IPv4 only, an
	// IPv6 one IPv6 only unless ipv4_compat is set.
	network := "udp6"
	switch {
	case ip.Is4():
		network = "udp4"
	case sa.GetIpv4Compat():
		network = "udp"
	}
	hostPort := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	u := &udpListener{maxRx: DefaultUDPMaxRxDatagramSize}
	if uc := pl.GetUdpListenerConfig(); uc != nil {
		up := config.Join(path, "udp_listener_config")
		// udp_packet_packet_writer_config picks the default or the GSO
		// batch writer: how datagrams are written, not what is sent.
		if err := config.CheckFields(uc, up, "downstream_socket_config", "quic_options", "udp_packet_packet_writer_config"); err != nil {
			return nil, err
		}
		if sc := uc.GetDownstreamSocketConfig(); sc != nil {
			n, err := UDPSocketConfig(sc, config.Join(up, "downstream_socket_config"))
			if err != nil {
				return nil, err
			}
			u.maxRx = n
		}
	}
	if len(pl.GetListenerFilters()) == 0 && !isQUIC {
		return nil, config.Errorf(config.Join(path, "listener_filters"), "a UDP listener needs a UDP listener filter (envoy.filters.udp_listener.udp_proxy)")
	}
	var qf *quicFilter
	if isQUIC {
		sp := pl.GetStatPrefix()
		if sp == "" {
			sp = stats.SanitizeName(hostPort)
		}
		var err error
		if qf, err = compileQUIC(pl, path, d, "listener."+sp+".ssl."); err != nil {
			return nil, err
		}
		u.filters = append(u.filters, qf)
	}
	for i, lf := range pl.GetListenerFilters() {
		p := config.Index(config.Join(path, "listener_filters"), i)
		if err := config.CheckFields(lf, p, "name", "typed_config"); err != nil {
			return nil, err
		}
		r, err := extension.Lookup(extension.UDPListenerFilter, lf.GetTypedConfig(), config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		f, ok := r.Ext.Factory.(UDPFilterFactory)
		if !ok {
			return nil, config.Errorf(p, "UDP listener filter %q has no UDP listener filter factory", r.Ext.Name)
		}
		uf, err := f(d, r.Config, config.Join(p, "typed_config"))
		if err != nil {
			return nil, err
		}
		u.filters = append(u.filters, uf)
	}
	prefix := pl.GetStatPrefix()
	if prefix == "" {
		prefix = stats.SanitizeName(hostPort)
	}
	// Envoy's UDP listener stats: listener.<address>.udp.*.
	u.dropped = d.Stats.Scope("listener." + prefix + ".udp.").Counter("downstream_rx_datagram_dropped")
	l := &Listener{
		Name:        pl.GetName(),
		Proto:       pl,
		Address:     hostPort,
		sockNet:     network,
		sockAddr:    hostPort,
		LastUpdated: time.Now(),
		deps:        d,
		conns:       map[*Conn]struct{}{},
		closed:      make(chan struct{}),
		log:         d.Log,
		udp:         u,
	}
	if qf != nil {
		// A QUIC listener's connections are the listener's, as TCP ones.
		qf.l = l
		ls := d.Stats.Scope("listener." + prefix + ".")
		l.stats = listenerStats{
			cxTotal: ls.Counter("downstream_cx_total"), cxDestroy: ls.Counter("downstream_cx_destroy"),
			noChain: ls.Counter("no_filter_chain_match"), cxOverflow: ls.Counter("downstream_cx_overflow"),
			overloadReject: ls.Counter("downstream_cx_overload_reject"), connectTimeout: ls.Counter("downstream_cx_transport_socket_connect_timeout"),
			cxActive: ls.Gauge("downstream_cx_active"), cxLength: ls.Histogram("downstream_cx_length_ms"),
			origDstError: ls.Counter("downstream_cx_original_dst_error"),
		}
		l.ConnLimit = d.ListenerConnLimits[pl.GetName()]
		l.ignoreGlobal = pl.GetIgnoreGlobalConnLimit()
	}
	return l, nil
}

// UDPSocketConfig compiles a UdpSocketConfig (a UDP listener's
// downstream_socket_config, udp_proxy's upstream_socket_config) into the
// receive buffer size: max_rx_datagram_size (1500 by default). prefer_gro
// only changes how the kernel batches reads.
func UDPSocketConfig(sc *corev3.UdpSocketConfig, path string) (int, error) {
	if err := config.CheckFields(sc, path, "max_rx_datagram_size", "prefer_gro"); err != nil {
		return 0, err
	}
	n := DefaultUDPMaxRxDatagramSize
	if v := sc.GetMaxRxDatagramSize(); v != nil {
		n = int(v.GetValue())
	}
	if n > maxUDPDatagram+1 {
		// Nothing longer can arrive; one more byte than that still tells
		// truncation apart.
		n = maxUDPDatagram + 1
	}
	return n, nil
}

// bindUDP takes the listener's UDP socket: prev's when it has the same
// address (a full update keeps the socket and its port), else the one
// open on the address, else a new one.
func (l *Listener) bindUDP(prev *Listener) error {
	u := l.udp
	if u.sock.Load() != nil {
		return nil
	}
	if prev != nil && prev.udp != nil && prev.sockAddr == l.sockAddr && prev.sockNet == l.sockNet {
		if s := prev.udp.sock.Load(); s != nil && s.share() {
			u.sock.Store(s)
			return nil
		}
	}
	t := l.deps.Sockets
	if t == nil {
		t = NewSockets(l.log)
	}
	s, err := t.acquireUDP(l.sockNet, l.sockAddr)
	if err != nil {
		return fmt.Errorf("listener %q: %w", l.Name, err)
	}
	u.sock.Store(s)
	return nil
}

// startUDP starts the filters' instances and attaches the listener to its
// socket: from now on it gets the socket's datagrams.
func (l *Listener) startUDP() bool {
	u := l.udp
	s := u.sock.Load()
	if s == nil || l.draining.Load() {
		return false
	}
	u.mu.Lock()
	if u.stopped {
		u.mu.Unlock()
		return false
	}
	if u.insts == nil {
		for _, f := range u.filters {
			u.insts = append(u.insts, f.Start(s))
		}
	}
	u.mu.Unlock()
	return s.attach(l)
}

// stopUDP detaches the listener from its socket, releases it and ends the
// filters' instances (their sessions end).
func (l *Listener) stopUDP() {
	u := l.udp
	if s := u.sock.Load(); s != nil {
		s.detach(l)
		s.Release()
	}
	u.mu.Lock()
	insts := u.insts
	u.insts, u.stopped = nil, true
	u.mu.Unlock()
	for _, in := range insts {
		in.Close()
	}
}

// deliver runs the listener filters on one datagram (from the socket's
// read loop).
func (l *Listener) deliver(d *Datagram) {
	u := l.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, in := range u.insts {
		if !in.OnData(d) {
			return
		}
	}
}

// receiveError reports a failed read to the listener filters.
func (l *Listener) receiveError(err error) {
	u := l.udp
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, in := range u.insts {
		in.OnReceiveError(err)
	}
}

// udpSocket is one bound UDP socket and its read loop, shared like a TCP
// Socket by the listeners on its address.
type udpSocket struct {
	sharedSocket
	pc *net.UDPConn
}

// acquireUDP returns the open UDP socket for network and address with one
// more reference, or binds a new one.
func (t *Sockets) acquireUDP(network, address string) (*udpSocket, error) {
	key := shareKey(network, address)
	t.mu.Lock()
	defer t.mu.Unlock()
	return shareOrBind(&t.udp, key, func() (*udpSocket, error) {
		ua, err := net.ResolveUDPAddr(network, address)
		if err != nil {
			return nil, fmt.Errorf("bind udp %s: %w", address, err)
		}
		pc, err := net.ListenUDP(network, ua)
		if err != nil {
			return nil, fmt.Errorf("bind udp %s: %w", address, err)
		}
		s := &udpSocket{pc: pc}
		s.init(t, key, pc)
		return s, nil
	})
}

// SendTo implements UDPSender.
func (s *udpSocket) SendTo(b []byte, peer netip.AddrPort) error {
	_, err := s.pc.WriteToUDPAddrPort(b, peer)
	return err
}

// LocalAddr implements UDPSender.
func (s *udpSocket) LocalAddr() netip.AddrPort {
	if a, ok := s.pc.LocalAddr().(*net.UDPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// Release drops one reference; the last one closes the socket.
func (s *udpSocket) Release() {
	s.release(func() {
		if s.t.udp[s.key] == s {
			delete(s.t.udp, s.key)
		}
	})
}

// attach makes l the listener new datagrams go to, starting the read
// loop on first use.
func (s *udpSocket) attach(l *Listener) bool { return s.sharedSocket.attach(l, s.readLoop) }

func (s *udpSocket) readLoop() {
	log := s.logger()
	buf := make([]byte, maxUDPDatagram+1)
	local := s.LocalAddr()
	var d Datagram
	for {
		// Datagrams wait in the kernel's buffer while no listener is
		// attached, as connections on a TCP socket's backlog.
		l := s.newest(nil)
		if l == nil {
			return
		}
		n, _, flags, peer, err := s.pc.ReadMsgUDPAddrPort(buf[:l.udp.maxRx], nil)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Debug("UDP listener read failed", "address", local.String(), "error", err)
			l.receiveError(err)
			continue
		}
		if flags&syscall.MSG_TRUNC != 0 {
			// Longer than max_rx_datagram_size: the kernel cut it, so it
			// is dropped, as Envoy counts a truncated datagram.
			l.udp.dropped.Inc()
			continue
		}
		// The listener that was current when the read began may have
		// been replaced meanwhile: the datagram goes to the newest one.
		if cur := s.newest(nil); cur != nil {
			l = cur
		}
		d = Datagram{Local: local, Peer: peer, Data: buf[:n]}
		l.deliver(&d)
	}
}
