package upstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/userspace"
)

// This file is how a cluster reaches its hosts' addresses: TCP, a pipe
// ("unix:<path>"), or an internal listener of this server
// ("envoy://<listener>/<endpoint id>", an envoy_internal_address
// endpoint), which is a connection through the server's internal listener
// registry rather than the network.

// internalScheme starts an internal host's address, as Envoy writes an
// EnvoyInternalAddress.
const internalScheme = "envoy://"

// internalAddress renders an envoy_internal_address endpoint.
func internalAddress(listener, endpoint string) string {
	return userspace.Addr{Listener: listener, Endpoint: endpoint}.String()
}

// parseInternal splits an internal host's address; ok is false for any
// other address.
func parseInternal(addr string) (a userspace.Addr, ok bool) {
	rest, ok := strings.CutPrefix(addr, internalScheme)
	if !ok {
		return userspace.Addr{}, false
	}
	a.Listener, a.Endpoint, _ = strings.Cut(rest, "/")
	return a, true
}

// InternalPassthrough is a TransportSocket that hands state to the
// internal listener a connection goes to (envoy.transport_sockets.
// internal_upstream): what it returns for a host and the connection's
// options is merged into the listener side's dynamic metadata and filter
// state. It applies only to internal hosts, as in Envoy.
type InternalPassthrough interface {
	Passthrough(h *Host, o ConnOptions) *userspace.Passthrough
}

// errNoRegistry is connecting to an internal address on a server without
// the internal listener bootstrap extension (Envoy closes such a
// connection at once: a connect failure).
var errNoRegistry = errors.New("no internal listener registry (the envoy.bootstrap.internal_listener bootstrap extension is not configured)")

// dialAddr opens a raw connection to a host address within ctx. h may be
// nil (a host no longer in the cluster); o are the connection's options,
// for an internal_upstream transport socket's passthrough state.
func (c *Cluster) dialAddr(ctx context.Context, addr string, h *Host, o ConnOptions) (net.Conn, error) {
	if a, ok := parseInternal(addr); ok {
		if c.internal == nil {
			return nil, errNoRegistry
		}
		var pt *userspace.Passthrough
		if ip, ok := c.transport.(InternalPassthrough); ok && h != nil {
			pt = ip.Passthrough(h, o)
		}
		if c.connectTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.connectTimeout)
			defer cancel()
		}
		conn, err := c.internal.Dial(ctx, a, pt)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, &timeoutError{err}
			}
			return nil, err
		}
		return conn, nil
	}
	d := net.Dialer{Timeout: c.connectTimeout, KeepAliveConfig: c.keepAlive}
	network, address := dialNetwork(addr)
	if c.bind != nil && network == "tcp" {
		// upstream_bind_config (bind.go): the source address, bound in
		// Control before the connect.
		d.Control = c.bind.control(address)
	}
	return d.DialContext(ctx, network, address)
}

// dialDeadline is dialAddr bounded by deadline (zero: none beyond the
// connect timeout).
func (c *Cluster) dialDeadline(deadline time.Time, h *Host, o ConnOptions) (net.Conn, error) {
	ctx := context.Background()
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return c.dialAddr(ctx, h.Address, h, o)
}

// timeoutError is an internal connection that timed out: a net.Error with
// Timeout, as a TCP connect timeout is, so it counts as one.
type timeoutError struct{ err error }

func (e *timeoutError) Error() string   { return e.err.Error() }
func (e *timeoutError) Unwrap() error   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
