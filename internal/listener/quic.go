package listener

// QUIC listeners (HTTP/3): a UDP listener with udp_listener_config.
// quic_options has one filter chain whose transport socket is
// envoy.transport_sockets.quic and whose terminal filter serves QUIC
// connections (QUICFilter: the HTTP connection manager with codec_type
// HTTP3). The listener's shared UDP socket and its read loop stay as for
// any UDP listener: the QUIC endpoint (quic-go) is the listener's one UDP
// "filter" and reads the datagrams the loop hands it through a
// packetConn, and writes through the socket. Each QUIC connection is a
// Conn of the listener (counted, drained, closed as TCP connections are).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/overload"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
)

// QUICFilter is a terminal network filter that serves QUIC connections
// (the HTTP connection manager with codec_type HTTP3). ServeQUIC returns
// when the connection is done.
type QUICFilter interface {
	ServeQUIC(tc *Conn, qc *quic.Conn)
}

// QUICTransport is a filter chain's transport socket as a QUIC listener
// needs it (tlsx.ServerContext of a QuicDownstreamTransport).
type QUICTransport interface {
	// QUIC reports whether the transport is envoy.transport_sockets.quic.
	QUIC() bool
	// QUICConfig is the TLS config of the QUIC handshakes.
	QUICConfig() *tls.Config
	// QUICHandshakeDone records a completed handshake.
	QUICHandshakeDone(st tls.ConnectionState)
}

// h3NoError is H3_NO_ERROR (RFC 9114 §8.1), the code QUIC connections
// close with: the application on QUIC listeners is HTTP/3.
const h3NoError quic.ApplicationErrorCode = 0x100

// quicQueue is how many datagrams wait for the QUIC endpoint; more are
// dropped (and counted), as a full socket buffer would drop them.
const quicQueue = 1024

// quicFilter is the compiled QUIC side of a listener.
type quicFilter struct {
	l *Listener
	// cur is the filter chain; a filter-chain-only update swaps it.
	cur   atomic.Pointer[quicChain]
	qconf *quic.Config
}

// quicChain is a QUIC listener's filter chain and its transport.
type quicChain struct {
	chain     *filterChain
	transport QUICTransport
}

// update takes next's filter chain (a filter-chain-only update) and
// returns the chain it replaces, nil when the chain is unchanged.
func (q *quicFilter) update(next *quicFilter) *filterChain {
	old, nc := q.cur.Load(), next.cur.Load()
	if proto.Equal(old.chain.proto, nc.chain.proto) {
		return nil
	}
	q.cur.Store(nc)
	return old.chain
}

// tlsConfig asks the current chain's transport for each handshake's config.
func (q *quicFilter) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			return q.cur.Load().transport.QUICConfig().GetConfigForClient(h)
		},
	}
}

// compileQUIC compiles the QUIC parts of a UDP listener: quic_options
// and its one filter chain.
func compileQUIC(pl *listenerv3.Listener, path string, d *Context, sslPrefix string) (*quicFilter, error) {
	qp := config.Join(path, "udp_listener_config.quic_options")
	qo := pl.GetUdpListenerConfig().GetQuicOptions()
	if err := config.CheckFields(qo, qp, "quic_protocol_options", "idle_timeout", "crypto_handshake_timeout",
		// how the endpoint reads and balances datagrams, not what it serves
		"packets_to_read_to_connection_count_ratio", "max_sessions_per_event_loop"); err != nil {
		return nil, err
	}
	// Envoy's defaults: idle_timeout 300 s, crypto_handshake_timeout 20 s.
	qc := &quic.Config{MaxIdleTimeout: 300 * time.Second, HandshakeIdleTimeout: 20 * time.Second}
	if v := qo.GetIdleTimeout(); v != nil {
		qc.MaxIdleTimeout = v.AsDuration()
	}
	if v := qo.GetCryptoHandshakeTimeout(); v != nil {
		qc.HandshakeIdleTimeout = v.AsDuration()
	}
	if err := upstream.QUICProtocolOptions(qo.GetQuicProtocolOptions(), config.Join(qp, "quic_protocol_options"), qc); err != nil {
		return nil, err
	}
	if len(pl.GetListenerFilters()) > 0 {
		return nil, config.Errorf(config.Join(path, "listener_filters"), "a QUIC listener (udp_listener_config.quic_options) takes no listener filters: UDP listener filters such as udp_proxy need a listener without quic_options")
	}
	if pl.GetFilterChainMatcher() != nil {
		return nil, config.Unsupported(config.Join(path, "filter_chain_matcher"), "filter_chain_matcher on a QUIC listener")
	}
	chains := pl.GetFilterChains()
	fc, p := pl.GetDefaultFilterChain(), config.Join(path, "default_filter_chain")
	switch {
	case len(chains) > 1:
		return nil, config.Unsupported(config.Index(config.Join(path, "filter_chains"), 1), "more than one filter chain on a QUIC listener")
	case len(chains) == 1 && fc != nil:
		return nil, config.Unsupported(p, "a default_filter_chain besides a filter chain on a QUIC listener")
	case len(chains) == 1:
		fc, p = chains[0], config.Index(config.Join(path, "filter_chains"), 0)
	case fc == nil:
		return nil, config.Errorf(config.Join(path, "filter_chains"), "a QUIC listener needs a filter chain (transport_socket envoy.transport_sockets.quic, an http_connection_manager with codec_type HTTP3)")
	}
	if m := fc.GetFilterChainMatch(); m != nil {
		if _, err := compileChainMatch(m, config.Join(p, "filter_chain_match")); err != nil {
			return nil, err
		}
		var empty listenerv3.FilterChainMatch
		if !protoEqualMatch(m, &empty) {
			return nil, config.Unsupported(config.Join(p, "filter_chain_match"), "filter_chain_match on a QUIC listener's filter chain")
		}
	}
	opts := chainOptions(pl)
	opts.QUIC = true
	c, err := compileChain(fc, p, d, opts, sslPrefix)
	if err != nil {
		return nil, err
	}
	c.proto = fc
	qt, ok := c.transport.(QUICTransport)
	if !ok || !qt.QUIC() {
		return nil, config.Errorf(config.Join(p, "transport_socket"), "a QUIC listener's filter chain needs transport_socket envoy.transport_sockets.quic (QuicDownstreamTransport)")
	}
	if len(c.conn) > 0 {
		return nil, config.Unsupported(config.Index(config.Join(p, "filters"), 0), "network filters before the connection manager on a QUIC listener")
	}
	if _, ok := c.filter.(QUICFilter); !ok {
		return nil, config.Errorf(config.Index(config.Join(p, "filters"), len(fc.GetFilters())-1), "the terminal filter of a QUIC listener must be an http_connection_manager with codec_type HTTP3")
	}
	q := &quicFilter{qconf: qc}
	q.cur.Store(&quicChain{chain: c, transport: qt})
	return q, nil
}

// protoEqualMatch reports whether a filter_chain_match selects nothing.
func protoEqualMatch(a, b *listenerv3.FilterChainMatch) bool {
	ka, _ := compileChainMatch(a, "")
	kb, _ := compileChainMatch(b, "")
	return ka.key() == kb.key()
}

// Start implements UDPFilter: a QUIC endpoint on the listener's socket.
func (q *quicFilter) Start(out UDPSender) UDPInstance {
	pc := &packetConn{out: out, in: make(chan datagram, quicQueue), closed: make(chan struct{}), deadline: make(chan struct{})}
	pc.local = net.UDPAddrFromAddrPort(out.LocalAddr())
	tr := &quic.Transport{Conn: pc}
	inst := &quicInstance{q: q, pc: pc, tr: tr}
	ln, err := tr.Listen(q.tlsConfig(), q.qconf)
	if err != nil {
		q.l.log.Error("QUIC listener cannot start", "listener", q.l.Name, "error", err)
		return inst
	}
	inst.ln = ln
	go inst.accept()
	return inst
}

// quicInstance is a running QUIC endpoint.
type quicInstance struct {
	q         *quicFilter
	pc        *packetConn
	tr        *quic.Transport
	ln        *quic.Listener
	closeOnce sync.Once
}

func (in *quicInstance) accept() {
	l := in.q.l
	for {
		qc, err := in.ln.Accept(context.Background())
		if err != nil {
			return
		}
		if l.draining.Load() {
			// The listener stopped while the handshake finished.
			qc.CloseWithError(h3NoError, "listener stopped")
			continue
		}
		l.wg.Add(1)
		go in.serve(qc)
	}
}

// serve runs one QUIC connection through the listener's filter chain.
func (in *quicInstance) serve(qc *quic.Conn) {
	l := in.q.l
	defer l.wg.Done()
	if l.deps.Overload.Active(overload.RejectIncomingConnections) {
		// As for TCP: accepted (the handshake is quic-go's), then closed.
		l.stats.overloadReject.Inc()
		qc.CloseWithError(h3NoError, "overloaded")
		return
	}
	if !l.admit() {
		qc.CloseWithError(h3NoError, "connection limit")
		return
	}
	defer l.deps.globalConns.Add(-1)
	st := qc.ConnectionState().TLS
	cur := in.q.cur.Load()
	cur.transport.QUICHandshakeDone(st)
	tc := &Conn{Conn: &quicNetConn{qc: qc}, Start: time.Now(), chain: cur.chain}
	if d := l.deps; d.ConnIDs != nil {
		tc.ID = d.ConnIDs.Add(1)
	}
	if a, ok := qc.RemoteAddr().(*net.UDPAddr); ok {
		tc.Remote = a.AddrPort()
		tc.DirectRemote = tc.Remote
	}
	if a, ok := qc.LocalAddr().(*net.UDPAddr); ok {
		tc.Local = a.AddrPort()
	}
	var info *streaminfo.TLSInfo
	info, tc.SNI = tlsx.QUICTLSInfo(st)
	tc.TLS = info
	l.stats.cxTotal.Inc()
	l.stats.cxActive.Inc()
	l.track(tc)
	defer func() {
		if r := recover(); r != nil {
			l.deps.Panics.Inc()
			l.log.Error("panic while serving a QUIC connection; the connection is closed, the server keeps serving",
				"listener", l.Name, "remote", tc.Remote.String(), "panic", r, "stack", string(debug.Stack()))
		}
		qc.CloseWithError(h3NoError, "")
		l.untrack(tc)
		l.stats.cxActive.Dec()
		l.stats.cxDestroy.Inc()
		l.stats.cxLength.Record(float64(time.Since(tc.Start).Milliseconds()))
		for i := len(tc.closers) - 1; i >= 0; i-- {
			tc.closers[i]()
		}
	}()
	cur.chain.filter.(QUICFilter).ServeQUIC(tc, qc)
}

// OnData implements UDPInstance: the datagram is queued for quic-go.
func (in *quicInstance) OnData(d *Datagram) bool {
	b := make([]byte, len(d.Data))
	copy(b, d.Data)
	select {
	case in.pc.in <- datagram{b: b, peer: d.Peer}:
	default:
		in.q.l.udp.dropped.Inc()
	}
	return false
}

// OnReceiveError implements UDPInstance.
func (in *quicInstance) OnReceiveError(error) {}

// Close implements UDPInstance: the endpoint and its connections end (a
// stopped listener no longer gets its socket's datagrams).
func (in *quicInstance) Close() {
	in.closeOnce.Do(func() {
		if in.ln != nil {
			in.ln.Close()
		}
		in.tr.Close()
		in.pc.Close()
	})
}

// datagram is one queued datagram and its sender.
type datagram struct {
	b    []byte
	peer netip.AddrPort
}

// packetConn is the net.PacketConn quic-go reads the listener's
// datagrams from and writes through the listener's socket.
type packetConn struct {
	out      UDPSender
	local    net.Addr
	in       chan datagram
	closed   chan struct{}
	once     sync.Once
	mu       sync.Mutex
	deadline chan struct{}
	// deadlineClose closes deadlineOf (the current deadline channel) at
	// most once, for SetReadDeadline and its timers alike.
	deadlineClose func()
	deadlineOf    chan struct{}
	timer         *time.Timer
}

// ReadFrom implements net.PacketConn.
func (p *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	p.mu.Lock()
	dl := p.deadline
	p.mu.Unlock()
	select {
	case d := <-p.in:
		return copy(b, d.b), net.UDPAddrFromAddrPort(d.peer), nil
	case <-p.closed:
		return 0, nil, net.ErrClosed
	case <-dl:
		return 0, nil, os.ErrDeadlineExceeded
	}
}

// WriteTo implements net.PacketConn.
func (p *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("QUIC listener: not a UDP address: %v", addr)
	}
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	default:
	}
	if err := p.out.SendTo(b, ua.AddrPort()); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Close implements net.PacketConn; the listener's socket stays open.
func (p *packetConn) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// LocalAddr implements net.PacketConn.
func (p *packetConn) LocalAddr() net.Addr { return p.local }

// SetDeadline implements net.PacketConn.
func (p *packetConn) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn: quic-go sets one in the
// past to stop its read loop.
func (p *packetConn) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	select {
	case <-p.deadline:
		p.deadline = make(chan struct{}) // a passed deadline is cleared
	default:
	}
	if t.IsZero() {
		return nil
	}
	// A timer that fired while Stop ran above may close ch yet; the
	// channel is closed once, whoever comes first.
	ch := p.deadline
	closeCh := sync.OnceFunc(func() { close(ch) })
	if p.deadlineClose != nil && p.deadlineOf == ch {
		closeCh = p.deadlineClose
	}
	p.deadlineClose, p.deadlineOf = closeCh, ch
	if d := time.Until(t); d <= 0 {
		closeCh()
	} else {
		p.timer = time.AfterFunc(d, closeCh)
	}
	return nil
}

// SetWriteDeadline implements net.PacketConn (writes do not block).
func (p *packetConn) SetWriteDeadline(time.Time) error { return nil }

// quicNetConn is a QUIC connection as the net.Conn of a Conn: a drain's
// force-close closes it; it carries no bytes (the filter serves streams).
type quicNetConn struct{ qc *quic.Conn }

var errQUICConn = errors.New("a QUIC connection carries streams, not bytes")

func (c *quicNetConn) Read([]byte) (int, error)         { return 0, errQUICConn }
func (c *quicNetConn) Write([]byte) (int, error)        { return 0, errQUICConn }
func (c *quicNetConn) Close() error                     { return c.qc.CloseWithError(h3NoError, "") }
func (c *quicNetConn) LocalAddr() net.Addr              { return c.qc.LocalAddr() }
func (c *quicNetConn) RemoteAddr() net.Addr             { return c.qc.RemoteAddr() }
func (c *quicNetConn) SetDeadline(time.Time) error      { return nil }
func (c *quicNetConn) SetReadDeadline(time.Time) error  { return nil }
func (c *quicNetConn) SetWriteDeadline(time.Time) error { return nil }

// quic returns the QUIC endpoint of a UDP listener (nil: none).
func (u *udpListener) quic() *quicFilter {
	for _, f := range u.filters {
		if q, ok := f.(*quicFilter); ok {
			return q
		}
	}
	return nil
}

// SetReadBuffer sizes the socket's receive buffer (quic-go asks for a
// large one, as bursts of QUIC packets need).
func (s *udpSocket) SetReadBuffer(n int) error { return s.pc.SetReadBuffer(n) }

// SetWriteBuffer sizes the socket's send buffer.
func (s *udpSocket) SetWriteBuffer(n int) error { return s.pc.SetWriteBuffer(n) }

// SetReadBuffer implements quic-go's buffer sizing on the listener's socket.
func (p *packetConn) SetReadBuffer(n int) error {
	if b, ok := p.out.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer implements quic-go's buffer sizing on the listener's socket.
func (p *packetConn) SetWriteBuffer(n int) error {
	if b, ok := p.out.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(n)
	}
	return nil
}

// AddressKey is what two listeners may not share: the address with its
// protocol (a UDP listener and a TCP one may have the same address, as
// Envoy's HTTP/3 examples serve QUIC and TCP on one port).
func (l *Listener) AddressKey() string {
	if l.udp != nil {
		return "udp:" + l.Address
	}
	return l.Address
}
