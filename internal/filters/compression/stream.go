package compression

import (
	"io"
)

// streamDecoder turns a pull decoder (an io.Reader over the compressed
// stream) into a push one: a goroutine runs the decoder over a reader that
// takes input chunk by chunk, and reports when it needs more. Decompress
// hands it a chunk and collects what it produced until it asks again.
type streamDecoder struct {
	in      chan []byte
	out     chan msg
	waiting bool // the decoder is blocked waiting for input
	done    bool
	// inClosed is set once in is closed (end of input); exited once the
	// decoder goroutine sent its final message.
	inClosed, exited         bool
	err                      error
	inBytes, outBytes, ratio uint64
}

type msg struct {
	data      []byte
	needInput bool
	err       error // final: io.EOF at the end of the stream
}

func newStreamDecoder(ratio uint64, open func(io.Reader) (io.Reader, error)) *streamDecoder {
	d := &streamDecoder{in: make(chan []byte), out: make(chan msg), ratio: ratio}
	go d.run(open)
	return d
}

type chunkReader struct {
	d   *streamDecoder
	cur []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		r.d.out <- msg{needInput: true}
		c, ok := <-r.d.in
		if !ok {
			return 0, io.EOF
		}
		r.cur = c
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (d *streamDecoder) run(open func(io.Reader) (io.Reader, error)) {
	src := &chunkReader{d: d}
	zr, err := open(src)
	if err != nil {
		d.out <- msg{err: err}
		return
	}
	buf := make([]byte, 16*1024)
	for {
		n, err := zr.Read(buf)
		if n > 0 {
			d.out <- msg{data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			if c, ok := zr.(io.Closer); ok {
				c.Close()
			}
			d.out <- msg{err: err}
			return
		}
	}
}

// collect gathers output until the decoder needs input or ends.
func (d *streamDecoder) collect(dst []byte) ([]byte, error) {
	for {
		m := <-d.out
		switch {
		case m.needInput:
			d.waiting = true
			return dst, nil
		case m.data != nil:
			d.outBytes += uint64(len(m.data))
			if d.ratio > 0 && d.outBytes > d.ratio*max(d.inBytes, 1) {
				d.fail(ErrInflateRatio)
				return dst, ErrInflateRatio
			}
			dst = append(dst, m.data...)
		default:
			d.done, d.exited = true, true
			if m.err != io.EOF {
				d.err = m.err
			}
			return dst, d.err
		}
	}
}

// Decompress implements Decompressor.
func (d *streamDecoder) Decompress(dst, p []byte, finish bool) ([]byte, error) {
	if d.done {
		return dst, d.err
	}
	var err error
	if !d.waiting {
		if dst, err = d.collect(dst); err != nil || d.done {
			return dst, err
		}
	}
	if len(p) > 0 {
		d.inBytes += uint64(len(p))
		d.waiting = false
		d.in <- p
		if dst, err = d.collect(dst); err != nil || d.done {
			return dst, err
		}
	}
	if finish {
		d.waiting = false
		d.inClosed = true
		close(d.in)
		for !d.done {
			if dst, err = d.collect(dst); err != nil {
				return dst, err
			}
			if !d.done && d.waiting {
				// The decoder wants more after the end: truncated input.
				d.fail(io.ErrUnexpectedEOF)
				return dst, io.ErrUnexpectedEOF
			}
		}
	}
	return dst, d.err
}

// fail stops the decoder goroutine.
func (d *streamDecoder) fail(err error) {
	d.err = err
	d.Close()
}

// Close ends the decoder goroutine (if it still runs): its input is
// closed and its output drained until it returns.
func (d *streamDecoder) Close() {
	if d.exited {
		return
	}
	d.exited = true
	d.done = true
	in, out := d.in, d.out
	closeIn := func() {}
	if !d.inClosed {
		d.inClosed = true
		once := false
		closeIn = func() {
			if !once {
				once = true
				close(in)
			}
		}
	}
	waiting := d.waiting
	go func() {
		if waiting {
			closeIn()
		}
		for m := range out {
			if m.needInput {
				closeIn()
				continue
			}
			if m.data == nil {
				return // the decoder's final message
			}
		}
	}()
}
