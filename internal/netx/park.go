package netx

import (
	"errors"
	"sync"
)

// A Parker holds idle connections without a goroutine each: a parked
// socket sits in one shared epoll instance (Linux) that the parker's
// single goroutine waits on through the runtime poller, so an idle
// keep-alive connection costs neither a goroutine stack nor a thread.
// When the socket becomes readable (a request, or the peer closing), when
// its deadline passes, or when Wake is called (a drain), the connection's
// Waker is called, once; it starts whatever serves the connection again.
//
// Only the wake-up moves through the parker: the connection's state stays
// with its owner, which reads the socket as usual once woken (a wake-up
// is a hint to look, never data).
//
// Where parking is not supported (not Linux) NewParker fails and
// SharedParker returns nil: callers then keep their goroutine.

// A Waker is told that its parked connection needs attention. Wake is
// called at most once per Park, from the parker's goroutine or from the
// goroutine calling Parker.Wake, with no lock of the parker held; it must
// not block (it starts a goroutine).
type Waker interface {
	Wake()
}

// Parked is one connection's place in a Parker. Its zero value is ready;
// embed it in the connection's state, use it with one Parker only, and
// keep it for the connection's life (it remembers that its socket is
// registered, which makes the next Park cheaper).
type Parked struct {
	w Waker
	// deadline is when the parker wakes the connection by itself, in
	// nanoseconds since the parker's epoch (0: none).
	deadline int64
	// slot is the index in the parker's slots plus one while parked, 0
	// when not; heap its index in the deadline heap (-1: none).
	slot int32
	heap int32
	fd   int32
	// armed: fd is in the epoll set (disabled after its one-shot event).
	armed bool
}

// ErrParkerClosed is returned by Park after Close.
var ErrParkerClosed = errors.New("netx: parker closed")

// errParked is returned by Park for a Parked that is parked already.
var errParked = errors.New("netx: connection already parked")

var shared struct {
	once sync.Once
	p    *Parker
}

// SharedParker returns the process's parker, started on first use, or nil
// where parking is not available (not Linux, or the epoll instance could
// not be made): a nil result means "do not park".
func SharedParker() *Parker {
	shared.once.Do(func() {
		if p, err := NewParker(); err == nil {
			shared.p = p
		}
	})
	return shared.p
}
