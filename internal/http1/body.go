package http1

import (
	"io"

	"github.com/legateproxy/legate/internal/headers"
)

// Framing says how a message body is delimited.
type Framing uint8

// Body framings.
const (
	NoBody  Framing = iota // no body at all
	Length                 // Content-Length bytes
	Chunked                // chunked transfer coding
	ToClose                // until the connection closes (responses only)
)

// BodyReader reads one message body from a Reader according to its framing,
// decoding the chunked coding and collecting trailers.
type BodyReader struct {
	src       *Reader
	framing   Framing
	remaining int64 // bytes left in a Length body or the current chunk
	state     uint8
	trailers  headers.Map
	maxTrail  int
}

const (
	stChunkHead uint8 = iota
	stChunkData
	stDone
)

// Reset prepares b to read a body with the given framing from src.
func (b *BodyReader) Reset(src *Reader, f Framing, length int64) {
	tr := b.trailers
	tr.Reset()
	*b = BodyReader{src: src, framing: f, remaining: length, trailers: tr, maxTrail: 60 * 1024}
	if f == NoBody || (f == Length && length == 0) {
		b.state = stDone
	}
}

// Done reports whether the whole body has been read.
func (b *BodyReader) Done() bool { return b.state == stDone }

// Framing returns the body's framing.
func (b *BodyReader) Framing() Framing { return b.framing }

// Remaining returns the bytes left of a Length body.
func (b *BodyReader) Remaining() int64 { return b.remaining }

// Trailers returns the chunked trailers, once the body is done.
func (b *BodyReader) Trailers() *headers.Map { return &b.trailers }

// Read reads decoded body bytes; it returns io.EOF at the end of the body
// and io.ErrUnexpectedEOF if the connection ends first.
func (b *BodyReader) Read(p []byte) (int, error) {
	if b.state == stDone {
		return 0, io.EOF
	}
	switch b.framing {
	case Length:
		if int64(len(p)) > b.remaining {
			p = p[:b.remaining]
		}
		n, err := b.src.Read(p)
		b.remaining -= int64(n)
		if b.remaining == 0 {
			b.state = stDone
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	case ToClose:
		n, err := b.src.Read(p)
		if err == io.EOF {
			b.state = stDone
		}
		return n, err
	case Chunked:
		return b.readChunked(p)
	}
	return 0, io.EOF
}

func (b *BodyReader) readChunked(p []byte) (int, error) {
	for {
		switch b.state {
		case stChunkHead:
			line, err := b.src.line(4096)
			if err != nil {
				return 0, err
			}
			size, ok := parseChunkSize(line)
			if !ok {
				return 0, perr(400, "http1.invalid_chunk_size")
			}
			if size == 0 {
				if err := b.readTrailers(); err != nil {
					return 0, err
				}
				b.state = stDone
				return 0, io.EOF
			}
			b.remaining = size
			b.state = stChunkData
		case stChunkData:
			if int64(len(p)) > b.remaining {
				p = p[:b.remaining]
			}
			n, err := b.src.Read(p)
			b.remaining -= int64(n)
			if b.remaining == 0 {
				// The chunk's data ends with CRLF.
				line, lerr := b.src.line(2)
				if lerr != nil {
					return n, lerr
				}
				if len(line) != 0 {
					return n, perr(400, "http1.invalid_chunk_size")
				}
				b.state = stChunkHead
			}
			if n > 0 {
				return n, nil
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return 0, err
			}
		default:
			return 0, io.EOF
		}
	}
}

func (b *BodyReader) readTrailers() error {
	total := 0
	for {
		line, err := b.src.line(b.maxTrail)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		total += len(line)
		if total > b.maxTrail {
			return ErrHeadersTooLarge
		}
		// Copy: the line's bytes are in the unpinned part of the buffer.
		cp := append([]byte(nil), line...)
		name, value, err := splitHeader(cp)
		if err != nil {
			return err
		}
		b.trailers.Add(name, value)
	}
}

// parseChunkSize parses "1a;ext=1" into 26.
func parseChunkSize(line []byte) (int64, bool) {
	var n int64
	digits := 0
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			goto rest
		}
		digits++
		// Leading zeros are valid (RFC 9112 §7.1: chunk-size = 1*HEXDIG);
		// only significant digits count toward the 60-bit bound.
		if n == 0 && v == 0 {
			continue
		}
		if n>>56 != 0 {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
rest:
	if digits == 0 {
		return 0, false
	}
	for ; i < len(line); i++ {
		c := line[i]
		if c == ';' {
			return n, true // chunk extensions are ignored
		}
		if c != ' ' && c != '\t' {
			return 0, false
		}
	}
	return n, true
}

// RequestFraming returns how the body of the parsed request is framed.
func (h *RequestHead) Framing() (Framing, int64) {
	switch {
	case h.Chunked:
		return Chunked, -1
	case h.ContentLength > 0:
		return Length, h.ContentLength
	}
	return NoBody, 0
}

// ResponseFraming returns how the body of a response to a request with the
// given method is framed (RFC 9112 section 6.3).
func (h *ResponseHead) Framing(method string) (Framing, int64) {
	switch {
	case method == "HEAD" || h.Status == 204 || h.Status == 304 || (h.Status >= 100 && h.Status < 200):
		return NoBody, 0
	case method == "CONNECT" && h.Status >= 200 && h.Status < 300:
		return NoBody, 0
	case h.Chunked:
		return Chunked, -1
	case h.ContentLength >= 0:
		if h.ContentLength == 0 {
			return NoBody, 0
		}
		return Length, h.ContentLength
	}
	return ToClose, -1
}
