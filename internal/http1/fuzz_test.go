package http1

import (
	"bytes"
	"io"
	"testing"
)

// FuzzRequest feeds arbitrary bytes through the reader, head parser and
// body decoder: they must never panic, and a parsed head must never mix
// Content-Length with chunked framing.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX: y\r\n\r\n",
		"GET http://x/y HTTP/1.0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 4; i++ {
			head, err := r.Head(8192)
			if err != nil {
				return
			}
			h := &RequestHead{}
			if err := ParseRequest(head, h, 0); err != nil {
				return
			}
			if h.Chunked && h.ContentLength >= 0 {
				t.Fatalf("both chunked and content-length accepted: %q", head)
			}
			r.Consume(len(head))
			fr, n := h.Framing()
			var br BodyReader
			br.Reset(r, fr, n)
			if _, err := io.Copy(io.Discard, &br); err != nil {
				return
			}
			r.EndMessage()
		}
	})
}
