package listener

import (
	"fmt"
	"sync/atomic"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/legateproxy/legate/internal/config"
)

// extraAddr is one of Listener.additional_addresses: another socket whose
// connections the listener serves with the same filter chains (Envoy's
// multi-address listener, used for dual-stack IPv4 + IPv6).
type extraAddr struct {
	network, address string
	sock             atomic.Pointer[Socket]
}

// compileAdditional compiles additional_addresses: TCP socket addresses
// (pipes and internal addresses are single-address), each distinct from
// the main address and from each other, as Envoy requires.
func compileAdditional(pl *listenerv3.Listener, path string, main listenAddr) ([]*extraAddr, error) {
	if len(pl.GetAdditionalAddresses()) == 0 {
		return nil, nil
	}
	if main.network != "tcp" && main.network != "tcp4" && main.network != "tcp6" {
		return nil, config.Errorf(config.Join(path, "additional_addresses"), "additional_addresses need a socket_address listener")
	}
	seen := map[string]bool{main.network + " " + main.address: true}
	var out []*extraAddr
	for i, aa := range pl.GetAdditionalAddresses() {
		p := config.Index(config.Join(path, "additional_addresses"), i)
		if err := config.CheckFields(aa, p, "address", "socket_options"); err != nil {
			return nil, err
		}
		if so := aa.GetSocketOptions(); so != nil && len(so.GetSocketOptions()) > 0 {
			return nil, config.Unsupported(config.Join(p, "socket_options"), "socket options on an additional address")
		}
		sa := aa.GetAddress().GetSocketAddress()
		if sa == nil {
			return nil, config.Unsupported(config.Join(p, "address"), "this address type for an additional address", "socket_address")
		}
		network, hostPort, err := socketAddress(sa, config.Join(p, "address.socket_address"))
		if err != nil {
			return nil, err
		}
		if seen[network+" "+hostPort] && sa.GetPortValue() != 0 {
			return nil, config.Errorf(config.Join(p, "address"), "the address %s is already an address of this listener", hostPort)
		}
		seen[network+" "+hostPort] = true
		out = append(out, &extraAddr{network: network, address: hostPort})
	}
	return out, nil
}

// bindExtra binds the additional addresses, sharing prev's sockets for
// the addresses both have (as the main socket is shared on an update).
func (l *Listener) bindExtra(prev *Listener) error {
	for _, e := range l.extra {
		if e.sock.Load() != nil {
			continue
		}
		if prev != nil {
			shared := false
			for _, pe := range prev.extra {
				if pe.network == e.network && pe.address == e.address {
					if s := pe.sock.Load(); s != nil && s.share() {
						e.sock.Store(s)
						shared = true
					}
					break
				}
			}
			if shared {
				continue
			}
		}
		t := l.deps.Sockets
		if t == nil {
			t = NewSockets(l.log)
		}
		s, err := t.acquire(e.network, e.address, 0)
		if err != nil {
			l.releaseExtra()
			return fmt.Errorf("listener %q: additional address: %w", l.Name, err)
		}
		e.sock.Store(s)
	}
	return nil
}

// startExtra attaches the listener to its additional sockets.
func (l *Listener) startExtra() {
	for _, e := range l.extra {
		if s := e.sock.Load(); s != nil {
			s.attach(l)
		}
	}
}

// releaseExtra detaches from and releases the additional sockets.
func (l *Listener) releaseExtra() {
	for _, e := range l.extra {
		if s := e.sock.Swap(nil); s != nil {
			s.detach(l)
			s.Release()
		}
	}
}

// ExtraAddresses returns the bound additional addresses (their real
// ports when configured with port 0), in config order.
func (l *Listener) ExtraAddresses() []string {
	out := make([]string, 0, len(l.extra))
	for _, e := range l.extra {
		if s := e.sock.Load(); s != nil {
			out = append(out, s.Addr().String())
		} else {
			out = append(out, e.address)
		}
	}
	return out
}
