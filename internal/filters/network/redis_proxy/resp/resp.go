// Package resp is the Redis serialization protocol, version 2 (RESP2), as
// Envoy's redis_proxy speaks it (source/extensions/filters/network/common/
// redis/codec_impl.cc): simple strings, errors, integers, bulk strings and
// arrays, with the null bulk string and the null array both read as Null.
// The Reader parses values from a stream, bounded so that a hostile peer
// cannot make it allocate more than it actually sent; the encoder writes
// values back in the canonical form.
package resp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Type is a RESP value's type.
type Type byte

// The RESP2 types. Null stands for both "$-1" and "*-1", which Envoy does
// not tell apart and always writes as the null bulk string.
const (
	Null Type = iota
	SimpleString
	Error
	Integer
	BulkString
	Array
)

// String names the type as Envoy's RespType does.
func (t Type) String() string {
	switch t {
	case Null:
		return "null"
	case SimpleString:
		return "simple string"
	case Error:
		return "error"
	case Integer:
		return "integer"
	case BulkString:
		return "bulk string"
	case Array:
		return "array"
	}
	return "unknown"
}

// Value is one RESP value.
type Value struct {
	Type Type
	// Str is a simple string's, an error's or a bulk string's bytes.
	Str string
	// Int is an integer's value.
	Int int64
	// Elems are an array's values.
	Elems []Value
}

// Simple returns a simple string.
func Simple(s string) Value { return Value{Type: SimpleString, Str: s} }

// Err returns an error reply.
func Err(s string) Value { return Value{Type: Error, Str: s} }

// Bulk returns a bulk string.
func Bulk(s string) Value { return Value{Type: BulkString, Str: s} }

// Int returns an integer.
func Int(n int64) Value { return Value{Type: Integer, Int: n} }

// Arr returns an array.
func Arr(elems ...Value) Value { return Value{Type: Array, Elems: elems} }

// Command returns a request: an array of bulk strings.
func Command(args ...string) Value {
	v := Value{Type: Array, Elems: make([]Value, len(args))}
	for i, a := range args {
		v.Elems[i] = Bulk(a)
	}
	return v
}

// Equal reports whether two values are the same.
func (v Value) Equal(o Value) bool {
	if v.Type != o.Type {
		return false
	}
	switch v.Type {
	case Integer:
		return v.Int == o.Int
	case Array:
		if len(v.Elems) != len(o.Elems) {
			return false
		}
		for i := range v.Elems {
			if !v.Elems[i].Equal(o.Elems[i]) {
				return false
			}
		}
		return true
	case Null:
		return true
	}
	return v.Str == o.Str
}

// String renders the value for logs and tests, as Envoy's toString.
func (v Value) String() string {
	switch v.Type {
	case Null:
		return "null"
	case Integer:
		return strconv.FormatInt(v.Int, 10)
	case Array:
		var b bytes.Buffer
		b.WriteByte('[')
		for i, e := range v.Elems {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.String())
		}
		b.WriteByte(']')
		return b.String()
	}
	return strconv.Quote(v.Str)
}

// ErrProtocol is wrapped by every error for bytes that are not RESP.
var ErrProtocol = errors.New("RESP protocol error")

// Limits bound what a Reader accepts.
const (
	// MaxBulkLen is Redis's proto-max-bulk-len default (512 MB).
	MaxBulkLen = 512 << 20
	// MaxArrayLen bounds an array's declared length.
	MaxArrayLen = 1 << 20
	// MaxDepth bounds the nesting of arrays.
	MaxDepth = 32
)

// Reader reads RESP values from a stream.
type Reader struct {
	r *bufio.Reader
}

// NewReader reads from r; a line (a value's header) longer than the
// buffer, 64 KiB, is a protocol error.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Buffered is how many bytes are read but not yet parsed.
func (r *Reader) Buffered() int { return r.r.Buffered() }

// Read returns the next value. An io.EOF before a value starts is
// returned as is; a stream that ends inside a value is io.ErrUnexpectedEOF,
// and bytes that are not RESP wrap ErrProtocol.
func (r *Reader) Read() (Value, error) { return r.read(0) }

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// line reads one header line without its CRLF.
func (r *Reader) line() ([]byte, error) {
	l, err := r.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, protoErr("line longer than %d bytes", r.r.Size())
		}
		return nil, err
	}
	// RESP ends every line with CRLF; a bare LF is not RESP (Envoy's
	// decoder expects '\r' then '\n').
	if len(l) < 2 || l[len(l)-2] != '\r' {
		return nil, protoErr("line not ended by CRLF")
	}
	return l[:len(l)-2], nil
}

// parseInt parses a RESP integer: an optional '-' then decimal digits,
// nothing else (no '+', no spaces), within int64.
func parseInt(b []byte) (int64, error) {
	if len(b) == 0 || (len(b) == 1 && b[0] == '-') {
		return 0, protoErr("empty integer")
	}
	for i, c := range b {
		if !(c >= '0' && c <= '9') && !(i == 0 && c == '-') {
			return 0, protoErr("invalid integer %q", b)
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, protoErr("integer %q out of range", b)
	}
	return n, nil
}

func (r *Reader) read(depth int) (Value, error) {
	l, err := r.line()
	if err != nil {
		if depth > 0 && errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Value{}, err
	}
	if len(l) == 0 {
		return Value{}, protoErr("empty line")
	}
	body := l[1:]
	switch l[0] {
	case '+':
		return Value{Type: SimpleString, Str: string(body)}, nil
	case '-':
		return Value{Type: Error, Str: string(body)}, nil
	case ':':
		n, err := parseInt(body)
		if err != nil {
			return Value{}, err
		}
		return Value{Type: Integer, Int: n}, nil
	case '$':
		n, err := parseInt(body)
		if err != nil {
			return Value{}, err
		}
		if n == -1 {
			return Value{Type: Null}, nil
		}
		if n < 0 || n > MaxBulkLen {
			return Value{}, protoErr("bulk string length %d", n)
		}
		// Read what the peer sent, not what it declared: the buffer
		// grows with the bytes, so a lying length costs nothing.
		var b bytes.Buffer
		if n <= 64<<10 {
			b.Grow(int(n))
		}
		if _, err := io.CopyN(&b, r.r, n); err != nil {
			return Value{}, unexpected(err)
		}
		var crlf [2]byte
		if _, err := io.ReadFull(r.r, crlf[:]); err != nil {
			return Value{}, unexpected(err)
		}
		if crlf != [2]byte{'\r', '\n'} {
			return Value{}, protoErr("bulk string not ended by CRLF")
		}
		return Value{Type: BulkString, Str: b.String()}, nil
	case '*':
		n, err := parseInt(body)
		if err != nil {
			return Value{}, err
		}
		if n == -1 {
			return Value{Type: Null}, nil
		}
		if n < 0 || n > MaxArrayLen {
			return Value{}, protoErr("array length %d", n)
		}
		if depth >= MaxDepth {
			return Value{}, protoErr("arrays nested deeper than %d", MaxDepth)
		}
		v := Value{Type: Array, Elems: make([]Value, 0, min(n, 1024))}
		for range n {
			e, err := r.read(depth + 1)
			if err != nil {
				return Value{}, unexpected(err)
			}
			v.Elems = append(v.Elems, e)
		}
		return v, nil
	}
	return Value{}, protoErr("invalid type byte %q", l[0])
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Append appends v's encoding to dst. Simple strings and errors must not
// hold CR or LF (those from the codec never do; callers build the rest).
func Append(dst []byte, v Value) []byte {
	switch v.Type {
	case Null:
		return append(dst, "$-1\r\n"...)
	case SimpleString:
		dst = append(dst, '+')
		dst = append(dst, v.Str...)
	case Error:
		dst = append(dst, '-')
		dst = append(dst, v.Str...)
	case Integer:
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, v.Int, 10)
	case BulkString:
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(v.Str)), 10)
		dst = append(dst, "\r\n"...)
		dst = append(dst, v.Str...)
	case Array:
		dst = append(dst, '*')
		dst = strconv.AppendInt(dst, int64(len(v.Elems)), 10)
		dst = append(dst, "\r\n"...)
		for _, e := range v.Elems {
			dst = Append(dst, e)
		}
		return dst
	}
	return append(dst, "\r\n"...)
}
