package listener

import (
	"encoding/binary"
	"errors"
	"fmt"
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
// when the kernel has none: no NAT rule applied to it (ENOENT), or no
// netfilter connection tracking loaded (ENOPROTOOPT), or the connection
// is no kernel socket (an internal listener's). Any other getsockopt
// error is returned: the connection's destination is unknown.
func originalDst(conn net.Conn) (netip.AddrPort, bool, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, false, nil
	}
	local, isTCP := conn.LocalAddr().(*net.TCPAddr)
	if !isTCP || local == nil {
		// As Envoy, only an IP socket has an original destination to ask
		// for (a pipe's does not).
		return netip.AddrPort{}, false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false, nil
	}
	v6 := local.IP.To4() == nil
	var out netip.AddrPort
	var gerr error
	cerr := rc.Control(func(fd uintptr) {
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
	if cerr != nil {
		return netip.AddrPort{}, false, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", cerr)
	}
	if gerr == nil {
		return netip.AddrPortFrom(out.Addr().Unmap(), out.Port()), out.IsValid(), nil
	}
	if noOriginalDst(gerr) {
		return netip.AddrPort{}, false, nil
	}
	return netip.AddrPort{}, false, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", gerr)
}

// noOriginalDst reports whether a getsockopt(SO_ORIGINAL_DST) error means
// the connection simply has no original destination: netfilter has no
// NAT entry for it (ENOENT) or is not loaded (ENOPROTOOPT: no rule can
// have redirected it). Envoy keeps the local address then.
func noOriginalDst(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOPROTOOPT)
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
