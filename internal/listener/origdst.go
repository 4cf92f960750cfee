package listener

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

// Linux's SO_ORIGINAL_DST (netfilter's getsockopt for the destination a
// connection had before iptables REDIRECT/DNAT rewrote it): level SOL_IP
// for IPv4, SOL_IPV6 with IP6T_SO_ORIGINAL_DST for IPv6 (both 80).
const (
	soOriginalDst     = 80
	ip6tSoOriginalDst = 80
)

// originalDst reads a connection's original destination; ok is false
// when the kernel has none (no NAT rule applied to it).
func originalDst(conn net.Conn) (netip.AddrPort, bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	local, _ := conn.LocalAddr().(*net.TCPAddr)
	v6 := local != nil && local.IP.To4() == nil
	var out netip.AddrPort
	var gerr error
	rc.Control(func(fd uintptr) {
		var buf [28]byte // sockaddr_in6 is the larger
		n := uint32(len(buf))
		level, opt := uintptr(syscall.SOL_IP), uintptr(soOriginalDst)
		if v6 {
			level, opt = uintptr(syscall.SOL_IPV6), uintptr(ip6tSoOriginalDst)
		}
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, level, opt, uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			gerr = e
			return
		}
		port := binary.BigEndian.Uint16(buf[2:4])
		if v6 {
			var a [16]byte
			copy(a[:], buf[8:24])
			out = netip.AddrPortFrom(netip.AddrFrom16(a), port)
		} else {
			var a [4]byte
			copy(a[:], buf[4:8])
			out = netip.AddrPortFrom(netip.AddrFrom4(a), port)
		}
	})
	return out, gerr == nil && out.IsValid()
}

// origDstConn is a connection whose local address was restored to its
// original destination (Envoy's restoreLocalAddress).
type origDstConn struct {
	net.Conn
	local *net.TCPAddr
}

func (c *origDstConn) LocalAddr() net.Addr { return c.local }

// TCPSocket tells netx the wrapper buffers nothing.
func (c *origDstConn) TCPSocket() {}

// SyscallConn keeps the socket reachable through the wrapper.
func (c *origDstConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}
