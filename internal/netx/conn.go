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
package netx

import (
	"io"
	"net"
	"syscall"
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

// ReadLazy reads into a buffer obtained from acquire just before each read
// attempt; when the socket would block, release is called and the
// goroutine parks without a buffer. An idle keep-alive connection then
// costs no buffer memory. acquire and release must not change between
// calls on one Conn (they are kept to avoid allocating).
func (c *Conn) ReadLazy(acquire func() []byte, release func()) (int, error) {
	c.acquire, c.release, c.rn, c.rerr = acquire, release, 0, nil
	if err := c.rc.Read(c.lazyFn); err != nil {
		c.rbuf = nil
		return 0, mapErr(err)
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
	if err := c.rc.Read(c.readFn); err != nil {
		c.rbuf = nil
		return 0, mapErr(err)
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
	if err := c.rc.Write(c.writeFn); err != nil {
		n := c.wn
		c.wbuf = nil
		return n, mapErr(err)
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

// SyscallConn gives access to the socket (for liveness probes).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }
