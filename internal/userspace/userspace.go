// Package userspace is Envoy's internal listeners' plumbing
// (source/extensions/io_socket/user_space and
// source/extensions/bootstrap/internal_listener): a per-server table of
// internal listeners by name, and the in-process connections a cluster
// endpoint with an envoy_internal_address opens to them.
//
// A connection is a Unix socketpair: it never touches the network, and
// both ends are ordinary sockets, so deadlines, half-close (CloseWrite),
// the raw-syscall I/O of internal/netx and TLS all work as on TCP.
// Envoy's buffer_size_kb becomes the pair's socket buffer sizes.
//
// As in Envoy, a connection to a name no internal listener has fails at
// once (a connect failure), and a connection can carry state for the
// listener side (Passthrough: the internal_upstream transport socket's
// metadata and filter state), which the accepting listener merges into
// the connection's dynamic metadata and filter state.
package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// DefaultBufferSize is Envoy's default buffer_size_kb (1024 KiB).
const DefaultBufferSize = 1024 * 1024

// Network is the net.Addr network of internal addresses.
const Network = "envoy_internal"

// ErrNoListener is the error of a connection to a name no internal
// listener has.
var ErrNoListener = errors.New("no internal listener by that name")

// Addr is an Envoy internal address (EnvoyInternalAddress): the server
// listener's name and an optional endpoint id.
type Addr struct {
	Listener, Endpoint string
}

// Network returns "envoy_internal".
func (a Addr) Network() string { return Network }

// String renders the address as Envoy does: envoy://<listener>/<endpoint>.
func (a Addr) String() string { return "envoy://" + a.Listener + "/" + a.Endpoint }

// clientAddr is the client end's address: the OS gives a user space
// socket none, so Envoy fills in this one.
var clientAddr = Addr{Listener: "internal_client_address"}

// Passthrough is the state a connection carries to the internal listener
// (the internal_upstream transport socket's passthrough_metadata and
// passthrough_filter_state_objects).
type Passthrough struct {
	// Metadata is dynamic metadata by namespace.
	Metadata map[string]*structpb.Struct
	// FilterState is filter-state objects by name.
	FilterState map[string]streaminfo.FilterStateValue
}

// Conn is one end of an internal connection.
type Conn struct {
	*net.UnixConn
	local, remote Addr
	pt            *Passthrough
}

// LocalAddr returns the end's internal address.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's internal address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// Passthrough returns what the connecting side handed to the listener
// side (nil on the client end, or when nothing was passed).
func (c *Conn) Passthrough() *Passthrough { return c.pt }

// TCPSocket marks the connection as a plain socket with no buffering of
// its own, so internal/netx does its raw-syscall I/O on it.
func (c *Conn) TCPSocket() {}

// Registry is one server's internal listeners by name (the
// envoy.bootstrap.internal_listener bootstrap extension).
type Registry struct {
	bufferSize int
	mu         sync.Mutex
	listeners  map[string]*Listener
}

// NewRegistry returns an empty registry whose connections buffer
// bufferSize bytes each way (0: DefaultBufferSize).
func NewRegistry(bufferSize int) *Registry {
	if bufferSize <= 0 {
		bufferSize = DefaultBufferSize
	}
	return &Registry{bufferSize: bufferSize, listeners: map[string]*Listener{}}
}

// BufferSize returns the per-connection buffer size in bytes.
func (r *Registry) BufferSize() int { return r.bufferSize }

// backlog is how many connections wait for an internal listener's accept
// loop (one whose listener is still warming) before connecting blocks.
const backlog = 128

// Listen registers an internal listener by name. The name must be free.
func (r *Registry) Listen(name string) (*Listener, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.listeners[name]; dup {
		return nil, fmt.Errorf("internal listener %q is already registered", name)
	}
	l := &Listener{r: r, name: name, backlog: make(chan *Conn, backlog), done: make(chan struct{})}
	r.listeners[name] = l
	return l, nil
}

// Has reports whether an internal listener is registered by name.
func (r *Registry) Has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listeners[name] != nil
}

// Dial connects to the internal listener named by a.Listener and hands
// the listener side pt. A name with no listener is ErrNoListener at once;
// a listener whose backlog is full makes Dial wait until ctx ends.
func (r *Registry) Dial(ctx context.Context, a Addr, pt *Passthrough) (*Conn, error) {
	r.mu.Lock()
	l := r.listeners[a.Listener]
	r.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("connect to %s: %w", a, ErrNoListener)
	}
	client, server, err := pair(r.bufferSize)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", a, err)
	}
	// As Envoy's client connection factory: the server end's local
	// address is the one dialled, its peer the pivotal client address.
	client.local, client.remote = clientAddr, a
	server.local, server.remote = a, clientAddr
	server.pt = pt
	select {
	case l.backlog <- server:
		if l.closed.Load() {
			// Close may have drained the backlog before this send.
			l.drain()
		}
		return client, nil
	case <-l.done:
		client.Close()
		server.Close()
		return nil, fmt.Errorf("connect to %s: %w", a, ErrNoListener)
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, fmt.Errorf("connect to %s: %w", a, ctx.Err())
	}
}

// pair makes a connected socketpair with both socket buffers set to size.
func pair(size int) (*Conn, *Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	var conns [2]*Conn
	for i, fd := range fds {
		// Best effort: the kernel caps the sizes at its own maximum.
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, size)
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
		f := os.NewFile(uintptr(fd), "envoy_internal")
		c, err := net.FileConn(f) // dups the descriptor
		f.Close()
		if err != nil {
			if i == 0 {
				syscall.Close(fds[1])
			} else {
				conns[0].Close()
			}
			return nil, nil, err
		}
		conns[i] = &Conn{UnixConn: c.(*net.UnixConn)}
	}
	return conns[0], conns[1], nil
}

// Listener is a registered internal listener: a net.Listener whose
// connections come from Registry.Dial.
type Listener struct {
	r       *Registry
	name    string
	backlog chan *Conn
	done    chan struct{}
	closed  atomic.Bool
	once    sync.Once
}

// Accept returns the next connection; after Close, an error wrapping
// net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.backlog:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: Network, Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close unregisters the listener: connecting to its name fails from now
// on, and connections not yet accepted are closed (as a closed TCP
// listener resets its backlog).
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.r.mu.Lock()
		if l.r.listeners[l.name] == l {
			delete(l.r.listeners, l.name)
		}
		l.r.mu.Unlock()
		l.closed.Store(true)
		close(l.done)
		l.drain()
	})
	return nil
}

// drain closes the connections waiting in the backlog.
func (l *Listener) drain() {
	for {
		select {
		case c := <-l.backlog:
			c.Close()
		default:
			return
		}
	}
}

// Addr returns the listener's internal address (envoy://<name>/).
func (l *Listener) Addr() net.Addr { return Addr{Listener: l.name} }
