package listener

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/userspace"
)

// Sockets is one server's table of listening sockets, keyed by network and
// address. As in Envoy, a listener that replaces another on the same
// address — a full listener update, a listener renamed — takes the socket
// that is already open instead of binding again, so no connection is
// refused in between. A
// socket is reference counted and closed when its last listener releases
// it. Port 0 sockets are never shared by address (each such listener
// binds its own port). The zero value is ready to use.
type Sockets struct {
	mu   sync.Mutex
	open map[string]*Socket
	// Log reports accept errors (nil: slog.Default).
	Log *slog.Logger
	// Gate pauses every accept loop while it says so (the overload
	// action stop_accepting_connections); nil never pauses.
	Gate AcceptGate
	// Internal is the server's internal listener registry (the
	// envoy.bootstrap.internal_listener extension); nil: internal
	// listeners are refused.
	Internal *userspace.Registry
	// udp are the UDP listeners' sockets (udp.go), guarded by mu.
	udp map[string]*udpSocket
}

// AcceptGate says whether listeners should stop accepting for now.
type AcceptGate interface {
	StopAccepting() bool
}

// NewSockets returns an empty socket table.
func NewSockets(log *slog.Logger) *Sockets { return &Sockets{Log: log} }

// Socket is one listening socket and its accept loop. The loop hands each
// connection to the newest attached listener; a listener attaches when it
// starts serving and detaches when it drains.
type Socket struct {
	sharedSocket
	ln net.Listener
}

// sharedSocket is what a TCP Socket and a UDP socket (udp.go) have in
// common: the reference count that lets a listener replacing another on
// the same address take the socket over, and the listeners attached to
// it, the newest of which gets the traffic.
type sharedSocket struct {
	t    *Sockets
	key  string    // table key; "" when not shared (port 0)
	sock io.Closer // the OS socket, closed by the last release
	refs int       // guarded by t.mu

	mu       sync.Mutex
	wake     *sync.Cond // attached or closed changed
	attached []*Listener
	closed   bool
	started  bool
}

// init sets up a socket just bound, with one reference.
func (s *sharedSocket) init(t *Sockets, key string, sock io.Closer) {
	s.t, s.key, s.sock, s.refs = t, key, sock, 1
	s.wake = sync.NewCond(&s.mu)
}

// shareKey is the table key of a socket on network and address: "" for
// port 0, which binds a new port each time and is never shared.
func shareKey(network, address string) string {
	if network != "unix" && network != "internal" {
		if ap, err := netip.ParseAddrPort(address); err != nil || ap.Port() == 0 {
			return ""
		}
	}
	return network + " " + address
}

// shareOrBind returns the socket *table holds under key with one more
// reference or, when there is none (or key is ""), the one bind opens,
// which it keeps under key. It is called with t.mu held.
func shareOrBind[S interface{ shared() *sharedSocket }](table *map[string]S, key string, bind func() (S, error)) (S, error) {
	if s, ok := (*table)[key]; ok && key != "" {
		s.shared().refs++
		return s, nil
	}
	s, err := bind()
	if err != nil {
		var none S
		return none, err
	}
	if key != "" {
		if *table == nil {
			*table = map[string]S{}
		}
		(*table)[key] = s
	}
	return s, nil
}

// shared is the shared part of a TCP or UDP socket (for shareOrBind).
func (s *sharedSocket) shared() *sharedSocket { return s }

// share adds a reference to s, which another listener holds; false when
// s was closed meanwhile.
func (s *sharedSocket) share() bool {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.refs == 0 {
		return false
	}
	s.refs++
	return true
}

// Refs returns the socket's reference count (0 once closed).
func (s *sharedSocket) Refs() int {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	return s.refs
}

// release drops one reference; the last one calls forget (with t.mu
// held) to take s out of its table, closes the OS socket and wakes the
// loop waiting for a listener.
func (s *sharedSocket) release(forget func()) {
	s.t.mu.Lock()
	if s.refs == 0 {
		s.t.mu.Unlock()
		return
	}
	s.refs--
	last := s.refs == 0
	if last && s.key != "" {
		forget()
	}
	s.t.mu.Unlock()
	if !last {
		return
	}
	s.sock.Close()
	s.mu.Lock()
	s.closed = true
	s.wake.Broadcast()
	s.mu.Unlock()
}

// attach makes l the listener new traffic goes to, starting loop (the
// accept or read loop) on first use. A listener already draining does not
// attach.
func (s *sharedSocket) attach(l *Listener, loop func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || l.draining.Load() {
		return false
	}
	s.attached = append(s.attached, l)
	s.wake.Broadcast()
	if !s.started {
		s.started = true
		go loop()
	}
	return true
}

// detach stops handing traffic to l; once it returns, l gets no more.
func (s *sharedSocket) detach(l *Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range s.attached {
		if a == l {
			s.attached = append(s.attached[:i:i], s.attached[i+1:]...)
			break
		}
	}
}

// newest returns the newest attached listener, waiting while there is
// none (a listener removed while the one replacing it still warms: new
// traffic waits in the kernel meanwhile, as on an Envoy socket no worker
// reads yet); nil once the socket is closed. claim, when not nil, runs
// on the listener before another can detach it.
func (s *sharedSocket) newest(claim func(*Listener)) *Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.attached) == 0 && !s.closed {
		s.wake.Wait()
	}
	if s.closed {
		return nil
	}
	l := s.attached[len(s.attached)-1]
	if claim != nil {
		claim(l)
	}
	return l
}

func (s *sharedSocket) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// logger is the table's log for a socket's loop.
func (s *sharedSocket) logger() *slog.Logger {
	if s.t.Log == nil {
		return slog.Default()
	}
	return s.t.Log
}

// Acquire returns the open socket for network ("tcp4", "tcp6", "tcp";
// "unix" for a pipe's path; "internal" for an internal listener's name)
// and address with one more reference, or binds a new one. Release each
// successful Acquire.
func (t *Sockets) Acquire(network, address string) (*Socket, error) {
	return t.acquire(network, address, 0)
}

// acquire is Acquire with the mode a new pipe gets (0: the umask's).
func (t *Sockets) acquire(network, address string, mode os.FileMode) (*Socket, error) {
	key := shareKey(network, address)
	t.mu.Lock()
	defer t.mu.Unlock()
	return shareOrBind(&t.open, key, func() (*Socket, error) {
		ln, err := t.listen(network, address, mode)
		if err != nil {
			return nil, fmt.Errorf("bind %s: %w", address, err)
		}
		s := &Socket{ln: ln}
		s.init(t, key, ln)
		return s, nil
	})
}

// listen binds a new listening socket.
func (t *Sockets) listen(network, address string, mode os.FileMode) (net.Listener, error) {
	switch network {
	case "internal":
		if t.Internal == nil {
			return nil, errors.New("internal listeners need the envoy.bootstrap.internal_listener bootstrap extension")
		}
		return t.Internal.Listen(address)
	case "unix":
		return ListenPipe(address, mode)
	}
	return net.Listen(network, address)
}

// ListenPipe binds a Unix socket (a listener's or the admin's pipe
// address) as Envoy does: whatever socket file a previous run left at the
// path is removed first, and a mode is applied after the bind. Envoy
// unlinks any file there; only a socket is removed here, so a mistyped
// path never deletes a regular file (the bind fails instead). "@" starts
// an abstract socket, which has no file.
func ListenPipe(path string, mode os.FileMode) (net.Listener, error) {
	abstract := strings.HasPrefix(path, "@")
	if !abstract {
		if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(path)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if mode != 0 && !abstract {
		if err := os.Chmod(path, mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("failed to create socket with mode %#o: %w", mode, err)
		}
	}
	return ln, nil
}

// Len returns the number of shared sockets open (for tests and debugging).
func (t *Sockets) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// Addr returns the bound address (the real port of a port 0 socket).
func (s *Socket) Addr() net.Addr { return s.ln.Addr() }

// Release drops one reference; the last one closes the socket (connections
// still waiting in its backlog are reset, as when Envoy closes a listener).
func (s *Socket) Release() {
	s.release(func() {
		if s.t.open[s.key] == s {
			delete(s.t.open, s.key)
		}
	})
}

// attach makes l the listener new connections go to, starting the accept
// loop on first use. A listener already draining does not attach.
func (s *Socket) attach(l *Listener) bool { return s.sharedSocket.attach(l, s.acceptLoop) }

func (s *Socket) acceptLoop() {
	log := s.logger()
	var delay time.Duration
	for {
		for s.t.Gate != nil && s.t.Gate.StopAccepting() && !s.isClosed() {
			// As Envoy: new connections wait in the kernel's backlog
			// until the action turns off.
			time.Sleep(50 * time.Millisecond)
		}
		conn, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay < time.Second {
				delay *= 2
			}
			log.Error("accept failed", "address", s.ln.Addr().String(), "error", err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.dispatch(conn)
	}
}

// dispatch hands conn to the newest attached listener. With none attached
// (a listener removed while the one replacing it still warms), it waits
// for one — further connections wait in the kernel's backlog, as they do
// on an Envoy socket no worker accepts on yet — or for the socket to
// close.
func (s *Socket) dispatch(conn net.Conn) {
	// Counted under mu: a Drain that detached l waits for this connection.
	l := s.newest(func(l *Listener) { l.wg.Add(1) })
	if l == nil {
		conn.Close()
		return
	}
	go l.handle(conn)
}
