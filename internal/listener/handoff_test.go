package listener

import (
	"net/netip"
	"testing"
)

// TestHandoffClaim: the listener a restored connection is handed to, in
// Envoy's order (exact address, the family's wildcard of the port, an
// ipv4_compat [::]:port for IPv4), the newest of several on one address,
// never a draining one or the accepting one itself.
func TestHandoffClaim(t *testing.T) {
	mk := func(network, addr string) *Listener {
		return &Listener{Name: network + " " + addr, sockNet: network, sockAddr: addr}
	}
	self := mk("tcp4", "0.0.0.0:15001")
	exact := mk("tcp4", "198.51.100.10:80")
	any4 := mk("tcp4", "0.0.0.0:80")
	any4New := mk("tcp4", "0.0.0.0:80")
	any6 := mk("tcp6", "[::]:80")
	compat := mk("tcp", "[::]:81")
	v6only := mk("tcp6", "[::]:82")
	draining := mk("tcp4", "0.0.0.0:83")
	draining.draining.Store(true)
	var tab handoffTable
	for _, l := range []*Listener{self, exact, any4, any4New, any6, compat, v6only, draining} {
		tab.add(l)
	}
	tab.remove(any4New) // a replacement that stopped again: the older one serves
	newer := mk("tcp4", "0.0.0.0:80")
	tab.add(newer)
	for _, c := range []struct {
		dst  string
		want *Listener
	}{
		{"198.51.100.10:80", exact},
		{"198.51.100.11:80", newer},
		{"[::ffff:198.51.100.11]:80", newer},
		{"[2001:db8::10]:80", any6},
		{"198.51.100.11:81", compat},
		{"[2001:db8::10]:81", compat},
		{"198.51.100.11:82", nil}, // an IPv6-only listener takes no IPv4
		{"198.51.100.11:83", nil}, // draining
		{"198.51.100.11:15001", nil},
		{"198.51.100.11:9", nil},
	} {
		got := tab.claim(netip.MustParseAddrPort(c.dst), self)
		if got != c.want {
			name := func(l *Listener) string {
				if l == nil {
					return "none"
				}
				return l.Name
			}
			t.Errorf("%s: handed to %s, want %s", c.dst, name(got), name(c.want))
		}
		if got != nil {
			got.wg.Done()
		}
	}
}
