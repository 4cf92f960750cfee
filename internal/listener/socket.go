package listener

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
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
}

// NewSockets returns an empty socket table.
func NewSockets(log *slog.Logger) *Sockets { return &Sockets{Log: log} }

// Socket is one listening socket and its accept loop. The loop hands each
// connection to the newest attached listener; a listener attaches when it
// starts serving and detaches when it drains.
type Socket struct {
	t    *Sockets
	key  string // table key; "" when not shared (port 0)
	ln   net.Listener
	refs int // guarded by t.mu

	mu       sync.Mutex
	wake     *sync.Cond // attached or closed changed
	attached []*Listener
	closed   bool
	started  bool
}

// Acquire returns the open socket for network ("tcp4", "tcp6", "tcp") and
// address with one more reference, or binds a new one. Release each
// successful Acquire.
func (t *Sockets) Acquire(network, address string) (*Socket, error) {
	key := network + " " + address
	if ap, err := netip.ParseAddrPort(address); err != nil || ap.Port() == 0 {
		key = "" // port 0: a new port each time, never shared
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.open[key]; key != "" && s != nil {
		s.refs++
		return s, nil
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", address, err)
	}
	s := &Socket{t: t, key: key, ln: ln, refs: 1}
	s.wake = sync.NewCond(&s.mu)
	if key != "" {
		if t.open == nil {
			t.open = map[string]*Socket{}
		}
		t.open[key] = s
	}
	return s, nil
}

// Len returns the number of shared sockets open (for tests and debugging).
func (t *Sockets) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// share adds a reference to s, which another listener holds; false when
// s was closed meanwhile.
func (s *Socket) share() bool {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	if s.refs == 0 {
		return false
	}
	s.refs++
	return true
}

// Refs returns the socket's reference count (0 once closed).
func (s *Socket) Refs() int {
	s.t.mu.Lock()
	defer s.t.mu.Unlock()
	return s.refs
}

// Addr returns the bound address (the real port of a port 0 socket).
func (s *Socket) Addr() net.Addr { return s.ln.Addr() }

// Release drops one reference; the last one closes the socket (connections
// still waiting in its backlog are reset, as when Envoy closes a listener).
func (s *Socket) Release() {
	s.t.mu.Lock()
	if s.refs == 0 {
		s.t.mu.Unlock()
		return
	}
	s.refs--
	last := s.refs == 0
	if last && s.key != "" && s.t.open[s.key] == s {
		delete(s.t.open, s.key)
	}
	s.t.mu.Unlock()
	if !last {
		return
	}
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	s.wake.Broadcast()
	s.mu.Unlock()
}

// attach makes l the listener new connections go to, starting the accept
// loop on first use. A listener already draining does not attach.
func (s *Socket) attach(l *Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || l.draining.Load() {
		return false
	}
	s.attached = append(s.attached, l)
	s.wake.Broadcast()
	if !s.started {
		s.started = true
		go s.acceptLoop()
	}
	return true
}

// detach stops handing connections to l; once it returns, l gets no more.
func (s *Socket) detach(l *Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range s.attached {
		if a == l {
			s.attached = append(s.attached[:i:i], s.attached[i+1:]...)
			break
		}
	}
}

func (s *Socket) acceptLoop() {
	log := s.t.Log
	if log == nil {
		log = slog.Default()
	}
	var delay time.Duration
	for {
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
	s.mu.Lock()
	for len(s.attached) == 0 && !s.closed {
		s.wake.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return
	}
	l := s.attached[len(s.attached)-1]
	// Counted under mu: a Drain that detached l waits for this connection.
	l.wg.Add(1)
	s.mu.Unlock()
	go l.handle(conn)
}
