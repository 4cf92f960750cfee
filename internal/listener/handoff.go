package listener

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// handoffTable is one server's listeners by IP address and port, for
// use_original_dst: a connection whose original destination a listener
// filter restored is handed to the listener on that address, as Envoy's
// ConnectionHandlerImpl::getBalancedHandlerByAddress finds it. Listeners
// enter it when they start (bound or bind_to_port: false) and leave it
// when they stop accepting, so a listener being drained never takes a
// new hand-off, and one that replaces another on the same address (an
// LDS update) takes them from the moment it starts. Lookups read an
// immutable map through an atomic pointer; changes copy it under mu.
type handoffTable struct {
	mu sync.Mutex
	m  atomic.Pointer[map[netip.AddrPort][]handoffEntry]
}

// handoffEntry is one listener on one address; compat marks an
// ipv4_compat [::]:port listener, which Envoy also files under
// 0.0.0.0:port when no IPv4 listener is there.
type handoffEntry struct {
	l      *Listener
	compat bool
}

// handoffAddrs are the addresses a TCP listener is found by: its own and
// its additional_addresses (their bound ports when configured with 0).
func (l *Listener) handoffAddrs() []handoffAddr {
	var out []handoffAddr
	add := func(network, addr string) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return
		}
		out = append(out, handoffAddr{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), compat: network == "tcp" && ap.Addr().Is6()})
	}
	if l.sockNet != "tcp" && l.sockNet != "tcp4" && l.sockNet != "tcp6" {
		return nil
	}
	main := l.sockAddr
	if s := l.sock.Load(); s != nil {
		if a, ok := s.Addr().(*net.TCPAddr); ok && a.Port != 0 {
			main = netip.AddrPortFrom(addrOf(l.sockAddr), uint16(a.Port)).String()
		}
	}
	add(l.sockNet, main)
	for _, e := range l.extra {
		a := e.address
		if s := e.sock.Load(); s != nil {
			if ta, ok := s.Addr().(*net.TCPAddr); ok && ta.Port != 0 {
				a = netip.AddrPortFrom(addrOf(e.address), uint16(ta.Port)).String()
			}
		}
		add(e.network, a)
	}
	return out
}

// handoffAddr is an address a listener registers under.
type handoffAddr struct {
	ap     netip.AddrPort
	compat bool
}

// addrOf is the IP of host:port (the zero Addr when it has none).
func addrOf(hostPort string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// add files l under its addresses, newest last.
func (t *handoffTable) add(l *Listener) {
	addrs := l.handoffAddrs()
	if len(addrs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next := t.clone()
	for _, a := range addrs {
		next[a.ap] = append(next[a.ap], handoffEntry{l: l, compat: a.compat})
	}
	t.m.Store(&next)
}

// remove takes l out of the table; once it returns, no hand-off reaches
// l (claims are made under mu too).
func (t *handoffTable) remove(l *Listener) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.m.Load()
	if cur == nil {
		return
	}
	next := t.clone()
	for ap, es := range next {
		kept := es[:0:0]
		for _, e := range es {
			if e.l != l {
				kept = append(kept, e)
			}
		}
		if len(kept) == 0 {
			delete(next, ap)
		} else {
			next[ap] = kept
		}
	}
	t.m.Store(&next)
}

// clone copies the current map (called with mu held).
func (t *handoffTable) clone() map[netip.AddrPort][]handoffEntry {
	next := map[netip.AddrPort][]handoffEntry{}
	if cur := t.m.Load(); cur != nil {
		for k, v := range *cur {
			next[k] = append([]handoffEntry(nil), v...)
		}
	}
	return next
}

// claim finds the listener a connection to dst is handed to, in Envoy's
// order: the listener on exactly dst; else the one on the wildcard
// address of dst's family and port (0.0.0.0:port, [::]:port); for IPv4,
// else an ipv4_compat [::]:port. Of several on one address (one replacing
// another) the newest wins. A listener that stopped accepting is never
// chosen. The chosen one's connection count (wg) is taken under mu, so a
// drain that removed it cannot miss the connection. nil: none, the
// accepting listener keeps the connection.
func (t *handoffTable) claim(dst netip.AddrPort, self *Listener) *Listener {
	if cur := t.m.Load(); cur == nil || len(*cur) == 0 {
		return nil
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	t.mu.Lock()
	defer t.mu.Unlock()
	m := *t.m.Load()
	pick := func(ap netip.AddrPort, compatOnly bool) *Listener {
		es := m[ap]
		for i := len(es) - 1; i >= 0; i-- {
			e := es[i]
			if (compatOnly && !e.compat) || e.l.draining.Load() {
				continue
			}
			return e.l
		}
		return nil
	}
	any4, any6 := netip.AddrPortFrom(netip.IPv4Unspecified(), dst.Port()), netip.AddrPortFrom(netip.IPv6Unspecified(), dst.Port())
	l := pick(dst, false)
	if l == nil && dst.Addr().Is4() {
		if l = pick(any4, false); l == nil {
			l = pick(any6, true)
		}
	}
	if l == nil && dst.Addr().Is6() {
		l = pick(any6, false)
	}
	if l == nil || l == self {
		// The accepting listener is the destination's own: it serves the
		// connection as is (Envoy hands off only once, never back).
		return nil
	}
	l.wg.Add(1)
	return l
}
