package http1

import (
	"bytes"
	"io"
	"sync"
)

// Reader buffers one connection's input for the codec.
//
// Heads are parsed in place: while a message is being read, bytes before
// the pin (the head) are never overwritten, so strings that point at them
// stay valid until EndMessage. The buffer is taken from a pool when input
// is expected and returned when the connection is idle, so idle connections
// hold no buffer.
type Reader struct {
	src  io.Reader
	lazy LazyReader // src, when it can read without holding a buffer
	// acquire and release are r's buffer hooks for lazy reads.
	acquire func() []byte
	release func()
	bufp    *[]byte // pooled buffer, nil when buf is not from the pool
	buf     []byte
	r, w    int
	pin     int // bytes [0:pin) belong to the current message's head
	err     error
}

// LazyReader is a source that takes a read buffer only when input is
// ready (netx.Conn), so a Reader waiting on an idle connection holds no
// buffer.
type LazyReader interface {
	ReadLazy(acquire func() []byte, release func()) (int, error)
}

// NewReader returns a Reader over src.
func NewReader(src io.Reader) *Reader {
	r := &Reader{}
	r.acquire = func() []byte { r.ensureBuf(); return r.buf[r.w:] }
	r.release = r.Release
	r.setSrc(src)
	return r
}

func (r *Reader) setSrc(src io.Reader) {
	r.src = src
	r.lazy, _ = src.(LazyReader)
}

// Reset points r at a new source, dropping any buffered input.
func (r *Reader) Reset(src io.Reader) {
	r.Release()
	*r = Reader{buf: r.buf, bufp: r.bufp, acquire: r.acquire, release: r.release}
	r.setSrc(src)
}

const bufSize = 4096

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Buffered returns the number of unread bytes.
func (r *Reader) Buffered() int { return r.w - r.r }

// Release returns the buffer to the pool if nothing is buffered. Call it
// when the connection goes idle.
func (r *Reader) Release() {
	if r.buf != nil && r.r == r.w && r.pin == 0 {
		if r.bufp != nil {
			bufPool.Put(r.bufp)
		}
		r.buf, r.bufp, r.r, r.w = nil, nil, 0, 0
	}
}

func (r *Reader) ensureBuf() {
	if r.buf == nil {
		r.bufp = bufPool.Get().(*[]byte)
		r.buf = *r.bufp
		r.r, r.w = 0, 0
	}
}

// fill reads more input after w, making room first by moving unread bytes
// down to the pin, or growing the buffer up to limit bytes.
func (r *Reader) fill(limit int) error {
	if r.err != nil {
		return r.err
	}
	if r.buf == nil && r.lazy != nil {
		// Idle: take a buffer only once the socket is readable.
		n, err := r.lazy.ReadLazy(r.acquire, r.release)
		r.w += n
		if err != nil && n == 0 {
			r.err = err
			return err
		}
		return nil
	}
	r.ensureBuf()
	if r.w == len(r.buf) {
		if r.r > r.pin {
			n := copy(r.buf[r.pin:], r.buf[r.r:r.w])
			r.r, r.w = r.pin, r.pin+n
		} else {
			if len(r.buf) >= limit {
				return ErrHeadersTooLarge
			}
			size := 2 * len(r.buf)
			if size > limit {
				size = limit
			}
			nb := make([]byte, size)
			copy(nb, r.buf[:r.w])
			r.buf, r.bufp = nb, nil // the old buffer is not pooled: strings may point at it
		}
	}
	n, err := r.src.Read(r.buf[r.w:])
	r.w += n
	if err != nil && n == 0 {
		r.err = err
		return err
	}
	return nil
}

// Head waits for a complete message head and returns it (including the
// blank line). The head must be parsed and then passed to Consume. max
// bounds the head's size; beyond it Head fails with ErrHeadersTooLarge.
// Head must only be called between messages.
func (r *Reader) Head(max int) ([]byte, error) {
	r.pin = 0
	if r.r > 0 {
		n := copy(r.buf, r.buf[r.r:r.w])
		r.r, r.w = 0, n
	}
	scanned := 0
	for {
		if r.buf != nil {
			data := r.buf[r.r:r.w]
			from := scanned - 3
			if from < 0 {
				from = 0
			}
			if end := HeadEnd(data[from:]); end >= 0 {
				end += from
				if end > max {
					return nil, ErrHeadersTooLarge
				}
				return data[:end], nil
			}
			scanned = len(data)
			if scanned > max {
				return nil, ErrHeadersTooLarge
			}
		}
		if err := r.fill(max + 4); err != nil {
			if err == ErrHeadersTooLarge {
				return nil, err
			}
			if r.w > r.r && err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Consume marks the head (n bytes) read and pins it for the message.
func (r *Reader) Consume(n int) {
	r.r += n
	r.pin = r.r
}

// Inject puts bytes read from the source elsewhere (a background read
// that watched for the peer closing) back in front of the input. The
// reader must be empty and unpinned (between messages).
func (r *Reader) Inject(b []byte) {
	if r.r != r.w || r.pin != 0 {
		panic("http1: Inject with buffered or pinned input")
	}
	r.ensureBuf()
	r.r, r.w = 0, copy(r.buf, b)
}

// EndMessage unpins the finished message's head; its strings are dead.
func (r *Reader) EndMessage() { r.pin = 0 }

// Read reads body bytes: buffered ones first, then straight from the source.
func (r *Reader) Read(p []byte) (int, error) {
	if r.r < r.w {
		n := copy(p, r.buf[r.r:r.w])
		r.r += n
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(p) >= bufSize || r.buf == nil {
		n, err := r.src.Read(p)
		if err != nil && n == 0 {
			r.err = err
		}
		return n, err
	}
	if err := r.fill(1 << 20); err != nil {
		return 0, err
	}
	n := copy(p, r.buf[r.r:r.w])
	r.r += n
	return n, nil
}

// line returns the next line (without CRLF/LF), up to max bytes, from the
// buffer; the slice is valid until the next read.
func (r *Reader) line(max int) ([]byte, error) {
	scanned := 0
	for {
		if r.buf != nil {
			data := r.buf[r.r:r.w]
			if i := bytes.IndexByte(data[scanned:], '\n'); i >= 0 {
				i += scanned
				l := data[:i]
				r.r += i + 1
				if n := len(l); n > 0 && l[n-1] == '\r' {
					l = l[:n-1]
				}
				return l, nil
			}
			scanned = len(data)
			if scanned > max {
				return nil, perr(400, "http1.codec_error")
			}
		}
		if err := r.fill(r.pin + max + 2*bufSize); err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// Peek returns up to n buffered bytes, reading once if nothing is buffered.
func (r *Reader) Peek(n int) ([]byte, error) {
	if r.r == r.w {
		if err := r.fill(bufSize); err != nil {
			return nil, err
		}
	}
	if r.w-r.r < n {
		n = r.w - r.r
	}
	return r.buf[r.r : r.r+n], nil
}

// BufferedBytes returns and consumes every buffered byte (for handing a
// connection over, as after an upgrade).
func (r *Reader) BufferedBytes() []byte {
	b := r.buf[r.r:r.w]
	r.r = r.w
	return b
}

// ReadMore reads once more from the source into the buffer.
func (r *Reader) ReadMore() error { return r.fill(bufSize) }
