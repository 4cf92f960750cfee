// Package netx does the proxy's socket I/O with raw non-blocking system
// calls through the Go runtime's poller.
//
// net.Conn.Read and Write enter the scheduler's "blocking syscall" state,
// so a write that takes a few microseconds on a busy loopback can make
// sysmon hand the P to another thread: measured under load, that cost
// 0.9 context switches per proxied request against nginx's 0.24. Reads and
// writes on a non-blocking socket never block, so they are issued as raw
// syscalls; when the socket is not ready the goroutine parks in the
// poller exactly as net.Conn does (deadlines included).
//
// Deadlines are armed lazily. Every request re-arms a connection's
// deadlines (idle, stream idle, route timeout) and clears them when it
// ends; each of those is a runtime timer update under the poller's lock,
// about a tenth of the proxy's own CPU per request when measured. A Conn
// keeps the deadline its caller wants and the one the poller holds, and
// reaches the poller only when the held one is later than wanted (it
// would fire late) or absent: a held deadline that is earlier than
// wanted, or one left over after the caller cleared it, may expire
// early, and an I/O call that then fails with os.ErrDeadlineExceeded
// re-arms the wanted deadline and goes on. A deadline therefore never
// fires late and an expired one is reported only once it has passed.
package netx

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Conn is a TCP connection whose Read and Write use raw syscalls.
type Conn struct {
	net.Conn
	rc syscall.RawConn

	rbuf    []byte
	rn      int
	rerr    error
	readFn  func(fd uintptr) bool
	lazyFn  func(fd uintptr) bool
	acquire func() []byte
	release func()
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(fd uintptr) bool

	// dl is the connection's deadlines (see the package comment).
	dl deadlines
}

// deadlines are a Conn's read and write deadlines in Unix nanoseconds (0:
// none): want is what the caller set, armed what the runtime poller holds.
type deadlines struct {
	mu           sync.Mutex
	rWant, wWant int64
	rArmed       int64
	wArmed       int64
}

// Wrap returns c with raw-syscall I/O when c is a TCP connection, or c
// unchanged otherwise (TLS, pipes).
func Wrap(c net.Conn) net.Conn {
	var sc syscall.Conn
	switch t := c.(type) {
	case *net.TCPConn:
		sc = t
	case interface {
		syscall.Conn
		// TCPSocket marks wrappers that add no buffering of their own
		// (a restored original destination), so raw reads see all.
		TCPSocket()
	}:
		sc = t
	default:
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	x := &Conn{Conn: c, rc: rc}
	x.readFn = x.doRead
	x.lazyFn = x.doLazyRead
	x.writeFn = x.doWrite
	return x
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case 0:
			c.rn = int(n)
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = errno
			return true
		}
	}
}

// doLazyRead takes the buffer only for the read attempt and gives it back
// if the socket has nothing to read, so a parked connection holds none.
func (c *Conn) doLazyRead(fd uintptr) bool {
	c.rbuf = c.acquire()
	if c.doRead(fd) {
		return true
	}
	c.rbuf = nil
	c.release()
	return false
}

// needArm reports whether the poller must get the wanted deadline: it has
// none, or one later than wanted.
func needArm(armed, want int64) bool {
	return want != 0 && (armed == 0 || armed > want)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1 // the Unix epoch itself: long past, still a deadline
}

func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// setDeadlines records t as the wanted read and/or write deadline and arms
// what must be armed now.
func (c *Conn) setDeadlines(t time.Time, read, write bool) error {
	want := unixNano(t)
	d := &c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	armR, armW := false, false
	if read {
		d.rWant = want
		armR = needArm(d.rArmed, want)
	}
	if write {
		d.wWant = want
		armW = needArm(d.wArmed, want)
	}
	var err error
	switch {
	case armR && armW:
		err = c.Conn.SetDeadline(t)
	case armR:
		err = c.Conn.SetReadDeadline(t)
	case armW:
		err = c.Conn.SetWriteDeadline(t)
	default:
		if want == 0 {
			// Nothing reaches the poller, but a closed connection still
			// reports it, as net.Conn's setters do: callers probe with
			// a cleared deadline.
			return c.rc.Control(noControl)
		}
		return nil
	}
	if err == nil {
		if armR {
			d.rArmed = want
		}
		if armW {
			d.wArmed = want
		}
	}
	return err
}

func noControl(uintptr) {}

// expired is called when the poller reported a deadline: it reports
// whether the wanted one has passed (the error stands); if not, the
// poller gets the wanted deadline and the I/O call is retried.
func (c *Conn) expired(err error, read bool) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	d := &c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	want := d.wWant
	if read {
		want = d.rWant
	}
	if want != 0 && want <= time.Now().UnixNano() {
		return true
	}
	if read {
		if c.Conn.SetReadDeadline(timeOf(want)) != nil {
			return true
		}
		d.rArmed = want
	} else {
		if c.Conn.SetWriteDeadline(timeOf(want)) != nil {
			return true
		}
		d.wArmed = want
	}
	return false
}

// sync gives the poller exactly the wanted deadlines, for callers of the
// raw connection (SyscallConn), which do not retry.
func (c *Conn) sync() {
	d := &c.dl
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rArmed != d.rWant && c.Conn.SetReadDeadline(timeOf(d.rWant)) == nil {
		d.rArmed = d.rWant
	}
	if d.wArmed != d.wWant && c.Conn.SetWriteDeadline(timeOf(d.wWant)) == nil {
		d.wArmed = d.wWant
	}
}

// SetDeadline sets the read and write deadlines (see the package comment).
func (c *Conn) SetDeadline(t time.Time) error { return c.setDeadlines(t, true, true) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.setDeadlines(t, true, false) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.setDeadlines(t, false, true) }

// ReadLazy reads into a buffer obtained from acquire just before each read
// attempt; when the socket would block, release is called and the
// goroutine parks without a buffer. An idle keep-alive connection then
// costs no buffer memory. acquire and release must not change between
// calls on one Conn (they are kept to avoid allocating).
func (c *Conn) ReadLazy(acquire func() []byte, release func()) (int, error) {
	c.acquire, c.release, c.rn, c.rerr = acquire, release, 0, nil
	for {
		err := c.rc.Read(c.lazyFn)
		if err == nil {
			break
		}
		if c.expired(err, true) {
			c.rbuf = nil
			return 0, mapErr(err)
		}
	}
	n, err := c.rn, c.rerr
	c.rbuf = nil
	return n, err
}

// Read reads into p.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = p, 0, nil
	for {
		err := c.rc.Read(c.readFn)
		if err == nil {
			break
		}
		if c.expired(err, true) {
			c.rbuf = nil
			return 0, mapErr(err)
		}
	}
	n, err := c.rn, c.rerr
	c.rbuf = nil
	return n, err
}

func (c *Conn) doWrite(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[c.wn])), uintptr(len(c.wbuf)-c.wn))
		switch errno {
		case 0:
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = errno
			return true
		}
	}
	return true
}

// Write writes all of p, waiting in the poller when the socket is full.
func (c *Conn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wbuf, c.wn, c.werr = p, 0, nil
	for {
		err := c.rc.Write(c.writeFn)
		if err == nil {
			break
		}
		if c.expired(err, false) {
			n := c.wn
			c.wbuf = nil
			return n, mapErr(err)
		}
	}
	n, err := c.wn, c.werr
	c.wbuf = nil
	return n, err
}

// CloseWrite shuts down the writing side (half-close).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// Unwrap returns the underlying connection.
func (c *Conn) Unwrap() net.Conn { return c.Conn }

// mapErr keeps net.Conn's error forms (os.ErrDeadlineExceeded, net.ErrClosed).
func mapErr(err error) error { return err }

// SyscallConn gives access to the socket (for liveness probes). Its
// callers do not retry an early deadline, so the poller first gets
// exactly the wanted deadlines.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	c.sync()
	return c.rc, nil
}
