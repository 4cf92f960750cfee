package listener

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/userspace"
)

// listenAddr is a compiled listener address.
type listenAddr struct {
	// network and address are what the socket table binds.
	network, address string
	mode             os.FileMode
	// display is Listener.Address; statPrefix names the listener's stats
	// when it has no stat_prefix (Envoy's listenerStatsScope).
	display, statPrefix string
}

// maxPipePath is the size of sockaddr_un's sun_path: Envoy refuses a path
// of this length or more.
const maxPipePath = 108

// compileAddress compiles what a listener binds: a TCP socket address, a
// pipe (Unix socket) or, with internal_listener, a name in the server's
// internal listener registry. The checks and messages are Envoy's
// (ListenerImpl::buildInternalListener, PipeInstance).
func compileAddress(pl *listenerv3.Listener, path string, d *Context) (listenAddr, error) {
	if pl.GetInternalListener() != nil {
		return internalAddress(pl, path, d)
	}
	a, ap := pl.GetAddress(), config.Join(path, "address")
	if a.GetEnvoyInternalAddress() != nil {
		return listenAddr{}, config.Errorf(ap, "error adding listener named '%s': use internal_listener field instead of address for internal listeners", pl.GetName())
	}
	if p := a.GetPipe(); p != nil {
		return pipeAddress(p, config.Join(ap, "pipe"))
	}
	if a.GetSocketAddress() == nil {
		if a == nil {
			return listenAddr{}, config.Errorf(ap, "a listener needs an address (or internal_listener)")
		}
		return listenAddr{}, config.Unsupported(ap, "this address type", "socket_address", "pipe", "internal_listener")
	}
	network, hostPort, err := socketAddress(a.GetSocketAddress(), config.Join(ap, "socket_address"))
	if err != nil {
		return listenAddr{}, err
	}
	return listenAddr{network: network, address: hostPort, display: hostPort, statPrefix: hostPort}, nil
}

// socketAddress compiles a TCP listener address: the socket family as
// Envoy binds (an IPv4 address binds IPv4 only, an IPv6 one IPv6 only
// unless ipv4_compat is set) and host:port.
func socketAddress(sa *corev3.SocketAddress, path string) (string, string, error) {
	if err := config.CheckFields(sa, path, "address", "port_value", "protocol", "ipv4_compat"); err != nil {
		return "", "", err
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", "", config.Unsupported(config.Join(path, "protocol"), "UDP listeners", "TCP")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return "", "", config.Errorf(config.Join(path, "address"), "%q is not an IP address (listeners bind to IPs)", sa.GetAddress())
	}
	network := "tcp6"
	switch {
	case ip.Is4():
		network = "tcp4"
	case sa.GetIpv4Compat():
		network = "tcp"
	}
	return network, net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

// pipeAddress compiles a Unix socket address; "@" starts a name in
// Linux's abstract namespace, which has no file and so no mode.
func pipeAddress(p *corev3.Pipe, path string) (listenAddr, error) {
	if err := CheckPipe(p, path); err != nil {
		return listenAddr{}, err
	}
	return listenAddr{network: "unix", address: p.GetPath(), mode: os.FileMode(p.GetMode()), display: p.GetPath(), statPrefix: p.GetPath()}, nil
}

// CheckPipe applies Envoy's checks of a pipe address (listeners, the
// admin): a path, short enough for sun_path, no mode on an abstract one,
// a mode of permission bits only.
func CheckPipe(p *corev3.Pipe, path string) error {
	if err := config.CheckFields(p, path, "path", "mode"); err != nil {
		return err
	}
	switch name := p.GetPath(); {
	case name == "":
		return config.Errorf(config.Join(path, "path"), "a pipe needs a path")
	case len(name) >= maxPipePath:
		return config.Errorf(config.Join(path, "path"), "Path \"%s\" exceeds maximum UNIX domain socket path size of %d.", name, maxPipePath)
	case strings.HasPrefix(name, "@") && p.GetMode() != 0:
		return config.Errorf(config.Join(path, "mode"), "Cannot set mode for Abstract AF_UNIX sockets (pipe %q)", name)
	case p.GetMode() > 0o777:
		return config.Errorf(config.Join(path, "mode"), "mode %#o of pipe %q is not a permission mode (at most 0777)", p.GetMode(), name)
	}
	return nil
}

// internalAddress compiles an internal listener: it binds nothing on the
// network, only its name in the server's registry, so Envoy refuses the
// TCP-only settings and requires the envoy.bootstrap.internal_listener
// extension.
func internalAddress(pl *listenerv3.Listener, path string, d *Context) (listenAddr, error) {
	name := pl.GetName()
	if pl.GetAddress() != nil || len(pl.GetAdditionalAddresses()) > 0 {
		return listenAddr{}, config.Errorf(config.Join(path, "address"), "error adding listener '%s': address should not be used when an internal listener config is provided", name)
	}
	if pl.GetConnectionBalanceConfig().GetExactBalance() != nil || pl.GetEnableMptcp() || pl.GetEnableReusePort() != nil ||
		pl.GetFreebind().GetValue() || pl.GetTcpBacklogSize() != nil || pl.GetTcpFastOpenQueueLength() != nil || pl.GetTransparent().GetValue() {
		return listenAddr{}, config.Errorf(path, "error adding listener named '%s': has unsupported tcp listener feature", name)
	}
	if len(pl.GetSocketOptions()) > 0 {
		return listenAddr{}, config.Errorf(config.Join(path, "socket_options"), "error adding listener named '%s': does not support socket option", name)
	}
	if d == nil || d.Sockets == nil || d.Sockets.Internal == nil {
		return listenAddr{}, config.Errorf(config.Join(path, "internal_listener"), "error adding listener named '%s': InternalListener bootstrap extension is mandatory (add envoy.bootstrap.internal_listener to bootstrap_extensions)", name)
	}
	return listenAddr{network: "internal", address: name, display: userspace.Addr{Listener: name}.String(),
		statPrefix: "envoy_internal_" + name}, nil
}
