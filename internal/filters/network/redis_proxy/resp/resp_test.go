package resp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	tests := []struct {
		name, in string
		want     Value
		err      error
	}{
		{"simple", "+OK\r\n", Simple("OK"), nil},
		{"error", "-ERR bad\r\n", Err("ERR bad"), nil},
		{"integer", ":-42\r\n", Int(-42), nil},
		{"bulk", "$5\r\nhe\r\no\r\n", Bulk("he\r\no"), nil},
		{"empty bulk", "$0\r\n\r\n", Bulk(""), nil},
		{"null bulk", "$-1\r\n", Value{Type: Null}, nil},
		{"null array", "*-1\r\n", Value{Type: Null}, nil},
		{"empty array", "*0\r\n", Arr(), nil},
		{"command", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", Command("GET", "k"), nil},
		{"nested", "*2\r\n*1\r\n:1\r\n$-1\r\n", Arr(Arr(Int(1)), Value{Type: Null}), nil},
		{"eof", "", Value{}, io.EOF},
		{"truncated bulk", "$5\r\nab", Value{}, io.ErrUnexpectedEOF},
		{"truncated array", "*2\r\n:1\r\n", Value{}, io.ErrUnexpectedEOF},
		{"bad type", "!x\r\n", Value{}, ErrProtocol},
		{"inline command", "PING\r\n", Value{}, ErrProtocol},
		{"bare LF", "+OK\n", Value{}, ErrProtocol},
		{"bad integer", ":1x\r\n", Value{}, ErrProtocol},
		{"plus sign", ":+1\r\n", Value{}, ErrProtocol},
		{"negative bulk", "$-2\r\n", Value{}, ErrProtocol},
		{"huge bulk", "$999999999999\r\n", Value{}, ErrProtocol},
		{"huge array", "*99999999\r\n", Value{}, ErrProtocol},
		{"bulk without CRLF", "$1\r\nab\r\n", Value{}, ErrProtocol},
		{"empty line", "\r\n", Value{}, ErrProtocol},
		{"too deep", strings.Repeat("*1\r\n", MaxDepth+1) + ":1\r\n", Value{}, ErrProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewReader(strings.NewReader(tt.in)).Read()
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Read(%q) = %v, %v; want error %v", tt.in, v, err, tt.err)
				}
				return
			}
			if err != nil || !v.Equal(tt.want) {
				t.Fatalf("Read(%q) = %v, %v; want %v", tt.in, v, err, tt.want)
			}
		})
	}
}

func TestAppend(t *testing.T) {
	tests := []struct {
		v    Value
		want string
	}{
		{Simple("OK"), "+OK\r\n"},
		{Err("ERR x"), "-ERR x\r\n"},
		{Int(7), ":7\r\n"},
		{Bulk("a\r\nb"), "$4\r\na\r\nb\r\n"},
		{Value{Type: Null}, "$-1\r\n"},
		{Arr(Bulk("x"), Int(1)), "*2\r\n$1\r\nx\r\n:1\r\n"},
		{Arr(), "*0\r\n"},
	}
	for _, tt := range tests {
		if got := string(Append(nil, tt.v)); got != tt.want {
			t.Errorf("Append(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestReadPipelined reads values written back to back, as a pipelining
// client sends them.
func TestReadPipelined(t *testing.T) {
	var b []byte
	want := []Value{Command("SET", "a", "1"), Command("GET", "a"), Simple("PONG")}
	for _, v := range want {
		b = Append(b, v)
	}
	r := NewReader(bytes.NewReader(b))
	for _, w := range want {
		v, err := r.Read()
		if err != nil || !v.Equal(w) {
			t.Fatalf("Read = %v, %v; want %v", v, err, w)
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last value: %v, want EOF", err)
	}
}

// FuzzRead checks that any input either fails cleanly or parses to a
// value that encodes and parses back to itself.
func FuzzRead(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "$-1\r\n", ":12\r\n", "-ERR\r\n", "*1\r\n*0\r\n", "$3\r\nab"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		for {
			v, err := r.Read()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			enc := Append(nil, v)
			back, err := NewReader(bytes.NewReader(enc)).Read()
			if err != nil || !back.Equal(v) {
				t.Fatalf("round trip of %v (%q): %v, %v", v, enc, back, err)
			}
		}
	})
}
