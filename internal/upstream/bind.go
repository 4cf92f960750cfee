package upstream

import (
	"fmt"
	"net/netip"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/legateproxy/legate/internal/config"
)

// BindConfig is a compiled upstream_bind_config (a cluster's, else the
// bootstrap's cluster_manager.upstream_bind_config): the source address
// upstream connections bind before they connect — Istio binds its inbound
// passthrough cluster to 127.0.0.6 —, IP_FREEBIND and socket options. Of
// source_address and extra_source_addresses (at most one of each IP
// family, as Envoy's DefaultUpstreamLocalAddressSelector requires) the
// one of the upstream host's family is bound, else source_address.
type BindConfig struct {
	addrs []netip.AddrPort
	// freebind is the freebind field: nil leaves IP_FREEBIND alone.
	freebind *bool
	opts     []sockOpt
}

// sockOpt is one SocketOption of a bind config.
type sockOpt struct {
	level, name int
	intVal      int
	buf         []byte
	isBuf       bool
	bound       bool // STATE_BOUND (after bind), else STATE_PREBIND
	v4, v6      bool // the socket families it applies to
}

// Linux socket options the bind config sets (golang.org/x/sys names
// them; these are the kernel's values).
const (
	ipFreebind         = 15 // IP_FREEBIND, SOL_IP
	ipv6Freebind       = 78 // IPV6_FREEBIND, SOL_IPV6
	ipBindAddrNoPort   = 24 // IP_BIND_ADDRESS_NO_PORT, SOL_IP
	maxBindSourceAddrs = 2
)

// CompileBindConfig compiles an upstream_bind_config at path; nil is no
// bind config.
func CompileBindConfig(bc *corev3.BindConfig, path string) (*BindConfig, error) {
	if bc == nil {
		return nil, nil
	}
	// validate_network_namespaces checks the network_namespace_filepath
	// of source addresses, which Legate refuses: with no namespace to
	// check it has nothing to do.
	if err := config.CheckFields(bc, path, "source_address", "freebind", "socket_options", "extra_source_addresses",
		"additional_source_addresses", "validate_network_namespaces"); err != nil {
		return nil, err
	}
	b := &BindConfig{}
	if bc.GetSourceAddress() == nil {
		return nil, config.Errorf(config.Join(path, "source_address"), "an upstream bind config needs a source_address")
	}
	a, err := bindAddress(bc.GetSourceAddress(), config.Join(path, "source_address"))
	if err != nil {
		return nil, err
	}
	b.addrs = append(b.addrs, a)
	for i, e := range bc.GetExtraSourceAddresses() {
		p := config.Index(config.Join(path, "extra_source_addresses"), i)
		if err := config.CheckFields(e, p, "address"); err != nil {
			return nil, err
		}
		a, err := bindAddress(e.GetAddress(), config.Join(p, "address"))
		if err != nil {
			return nil, err
		}
		b.addrs = append(b.addrs, a)
	}
	// The deprecated form of extra_source_addresses, as Envoy reads it.
	for i, sa := range bc.GetAdditionalSourceAddresses() {
		a, err := bindAddress(sa, config.Index(config.Join(path, "additional_source_addresses"), i))
		if err != nil {
			return nil, err
		}
		b.addrs = append(b.addrs, a)
	}
	if len(bc.GetExtraSourceAddresses()) > 0 && len(bc.GetAdditionalSourceAddresses()) > 0 {
		return nil, config.Errorf(config.Join(path, "additional_source_addresses"), "use extra_source_addresses or additional_source_addresses, not both")
	}
	if len(b.addrs) > maxBindSourceAddrs {
		return nil, config.Errorf(config.Join(path, "extra_source_addresses"), "%d source addresses: the default local address selector takes at most two, one IPv4 and one IPv6", len(b.addrs))
	}
	if len(b.addrs) == 2 && b.addrs[0].Addr().Is4() == b.addrs[1].Addr().Is4() {
		return nil, config.Errorf(config.Join(path, "extra_source_addresses"), "source_address %s and the extra source address %s are of the same IP version; the default local address selector needs one IPv4 and one IPv6 address", b.addrs[0].Addr(), b.addrs[1].Addr())
	}
	if f := bc.GetFreebind(); f != nil {
		v := f.GetValue()
		b.freebind = &v
	}
	for i, o := range bc.GetSocketOptions() {
		p := config.Index(config.Join(path, "socket_options"), i)
		so, skip, err := compileSockOpt(o, p)
		if err != nil {
			return nil, err
		}
		if !skip {
			b.opts = append(b.opts, so)
		}
	}
	return b, nil
}

// bindAddress compiles a source address: an IP (no name to resolve) and
// a port, 0 for the kernel to choose.
func bindAddress(sa *corev3.SocketAddress, path string) (netip.AddrPort, error) {
	if err := config.CheckFields(sa, path, "address", "port_value", "protocol"); err != nil {
		return netip.AddrPort{}, err
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return netip.AddrPort{}, config.Unsupported(config.Join(path, "protocol"), "UDP source addresses", "TCP")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.AddrPort{}, config.Errorf(config.Join(path, "address"), "%q is not an IP address (a source address is bound, not resolved)", sa.GetAddress())
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, config.Errorf(config.Join(path, "port_value"), "%d is not a port", sa.GetPortValue())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}

// compileSockOpt compiles one socket option of a bind config; skip is
// an option for datagram sockets only, which upstream TCP connections
// never are.
func compileSockOpt(o *corev3.SocketOption, path string) (sockOpt, bool, error) {
	if err := config.CheckFields(o, path, "description", "level", "name", "int_value", "buf_value", "state", "type", "ip_version"); err != nil {
		return sockOpt{}, false, err
	}
	so := sockOpt{level: int(o.GetLevel()), name: int(o.GetName()), v4: true, v6: true}
	switch v := o.GetValue().(type) {
	case *corev3.SocketOption_IntValue:
		so.intVal = int(v.IntValue)
	case *corev3.SocketOption_BufValue:
		so.buf, so.isBuf = v.BufValue, true
	default:
		return sockOpt{}, false, config.Errorf(path, "a socket option needs int_value or buf_value")
	}
	switch o.GetState() {
	case corev3.SocketOption_STATE_PREBIND:
	case corev3.SocketOption_STATE_BOUND:
		so.bound = true
	default:
		return sockOpt{}, false, config.Errorf(config.Join(path, "state"), "state %s does not apply to upstream connections (STATE_PREBIND or STATE_BOUND)", o.GetState())
	}
	switch o.GetIpVersion() {
	case corev3.SocketOption_SOCKET_IP_VERSION_IPV4:
		so.v6 = false
	case corev3.SocketOption_SOCKET_IP_VERSION_IPV6:
		so.v4 = false
	}
	if t := o.GetType(); t != nil && t.GetStream() == nil && t.GetDatagram() != nil {
		return so, true, nil
	}
	return so, false, nil
}

// source picks the address to bind for a connection to dst: the one of
// dst's family, else source_address (Envoy's default selector).
func (b *BindConfig) source(dst string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(dst); err == nil {
		v4 := ap.Addr().Unmap().Is4()
		for _, a := range b.addrs {
			if a.Addr().Is4() == v4 {
				return a
			}
		}
	}
	return b.addrs[0]
}

// control is the net.Dialer Control for a connection to dst: options
// before the bind, IP_FREEBIND, the bind to the source address, options
// after it. The bind is done here rather than through Dialer.LocalAddr
// so that STATE_BOUND options run between the bind and the connect.
func (b *BindConfig) control(dst string) func(network, address string, c syscall.RawConn) error {
	src := b.source(dst)
	return func(network, _ string, c syscall.RawConn) error {
		var err error
		cerr := c.Control(func(fd uintptr) {
			err = b.prepare(int(fd), network == "tcp6", src)
		})
		if cerr != nil {
			return cerr
		}
		return err
	}
}

// prepare applies the bind config to a new socket of family v6 or v4.
func (b *BindConfig) prepare(fd int, v6 bool, src netip.AddrPort) error {
	apply := func(bound bool) error {
		for _, o := range b.opts {
			if o.bound != bound || (v6 && !o.v6) || (!v6 && !o.v4) {
				continue
			}
			var err error
			if o.isBuf {
				err = syscall.SetsockoptString(fd, o.level, o.name, string(o.buf))
			} else {
				err = syscall.SetsockoptInt(fd, o.level, o.name, o.intVal)
			}
			if err != nil {
				return fmt.Errorf("upstream_bind_config: setting socket option level %d name %d: %w", o.level, o.name, err)
			}
		}
		return nil
	}
	if err := apply(false); err != nil {
		return err
	}
	if b.freebind != nil {
		v := 0
		if *b.freebind {
			v = 1
		}
		level, name := syscall.SOL_IP, ipFreebind
		if v6 {
			level, name = syscall.SOL_IPV6, ipv6Freebind
		}
		if err := syscall.SetsockoptInt(fd, level, name, v); err != nil {
			return fmt.Errorf("upstream_bind_config.freebind: %w", err)
		}
	}
	if src.Port() == 0 {
		// As Envoy: with no port to bind, the kernel picks the port at
		// connect time, per destination, so the source address does not
		// exhaust the ephemeral ports bind() would reserve.
		syscall.SetsockoptInt(fd, syscall.SOL_IP, ipBindAddrNoPort, 1)
	}
	var sa syscall.Sockaddr
	switch {
	case v6 && src.Addr().Is4():
		return fmt.Errorf("upstream_bind_config: source address %s is IPv4 but the upstream is IPv6 (add an IPv6 address in extra_source_addresses)", src.Addr())
	case v6:
		sa = &syscall.SockaddrInet6{Port: int(src.Port()), Addr: src.Addr().As16()}
	case src.Addr().Is6():
		return fmt.Errorf("upstream_bind_config: source address %s is IPv6 but the upstream is IPv4 (add an IPv4 address in extra_source_addresses)", src.Addr())
	default:
		sa = &syscall.SockaddrInet4{Port: int(src.Port()), Addr: src.Addr().As4()}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		return fmt.Errorf("upstream_bind_config: bind %s: %w", src, err)
	}
	return apply(true)
}
