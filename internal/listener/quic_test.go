package listener

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// loopSender records what a packetConn sends.
type loopSender struct{ sent [][]byte }

func (l *loopSender) SendTo(b []byte, _ netip.AddrPort) error {
	l.sent = append(l.sent, append([]byte(nil), b...))
	return nil
}
func (l *loopSender) LocalAddr() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:443") }

func TestPacketConn(t *testing.T) {
	out := &loopSender{}
	pc := &packetConn{out: out, in: make(chan datagram, 2), closed: make(chan struct{}), deadline: make(chan struct{})}
	peer := netip.MustParseAddrPort("127.0.0.2:5000")
	pc.in <- datagram{b: []byte("hello"), peer: peer}
	buf := make([]byte, 10)
	n, addr, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || addr.(*net.UDPAddr).AddrPort() != peer {
		t.Fatalf("ReadFrom = %d %v %v", n, addr, err)
	}
	if _, err := pc.WriteTo([]byte("reply"), net.UDPAddrFromAddrPort(peer)); err != nil || string(out.sent[0]) != "reply" {
		t.Fatalf("WriteTo: %v %q", err, out.sent)
	}
	// A deadline in the past stops a read (quic-go's way to end its loop);
	// clearing it lets reads go on.
	pc.SetReadDeadline(time.Unix(1, 0))
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	pc.SetReadDeadline(time.Time{})
	pc.in <- datagram{b: []byte("again"), peer: peer}
	if n, _, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("read after clearing the deadline: %q %v", buf[:n], err)
	}
	pc.Close()
	if _, _, err := pc.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if _, err := pc.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(peer)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}
