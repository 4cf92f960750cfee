package http1

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func parseReq(t testing.TB, raw string) (*RequestHead, error) {
	t.Helper()
	b := []byte(raw)
	end := HeadEnd(b)
	if end < 0 {
		return nil, errors.New("incomplete")
	}
	h := &RequestHead{}
	return h, ParseRequest(b[:end], h, 0)
}

func TestParseRequest(t *testing.T) {
	cases := []struct {
		name   string
		raw    string
		status int // expected ProtocolError status, 0 for success
		check  func(t *testing.T, h *RequestHead)
	}{
		{"simple", "GET /a?b=1 HTTP/1.1\r\nHost: x.com\r\nX-Foo:  bar \r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if h.Method != "GET" || h.Path != "/a?b=1" || h.Authority != "x.com" || h.Headers.Get("x-foo") != "bar" || !h.KeepAlive || h.ContentLength != -1 {
				t.Fatalf("%+v", h)
			}
			if h.Headers.Has("host") {
				t.Fatal("host must be kept as authority, not a header")
			}
		}},
		{"bare LF lines", "GET / HTTP/1.1\nHost: a\n\n", 0, nil},
		{"absolute form", "GET http://h.example:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if h.Authority != "h.example:8080" || h.Path != "/p?q" || h.Scheme != "http" {
				t.Fatalf("%+v", h)
			}
		}},
		{"http/1.0 closes by default", "GET / HTTP/1.0\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if h.KeepAlive || h.Minor != 0 {
				t.Fatalf("%+v", h)
			}
		}},
		{"http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if !h.KeepAlive {
				t.Fatal("keep-alive not honoured")
			}
		}},
		{"connection close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if h.KeepAlive {
				t.Fatal("close not honoured")
			}
		}},
		{"upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if h.Upgrade != "websocket" {
				t.Fatalf("upgrade = %q", h.Upgrade)
			}
		}},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 0, func(t *testing.T, h *RequestHead) {
			if f, _ := h.Framing(); f != Chunked {
				t.Fatal("not chunked")
			}
		}},
		{"identical duplicate content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 0, nil},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, nil},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, nil},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400, nil},
		{"conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, nil},
		{"CL with sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400, nil},
		{"CL list differing", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400, nil},
		{"TE not chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, nil},
		{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, nil},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, nil},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400, nil},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400, nil},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, nil},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400, nil},
		{"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, nil},
		{"http/0.9", "GET /\r\n\r\n", 400, nil},
		{"http/2.0 on h1", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, nil},
		{"control char in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, nil},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nbogus\r\n\r\n", 400, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := parseReq(t, tc.raw)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if tc.check != nil {
					tc.check(t, h)
				}
				return
			}
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Status != tc.status {
				t.Fatalf("error = %v, want status %d", err, tc.status)
			}
		})
	}
}

func TestTooManyHeaders(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X: y\r\n", 101) + "\r\n"
	_, err := parseReq(t, raw)
	if !errors.Is(err, ErrTooManyHeaders) {
		t.Fatalf("err = %v", err)
	}
}

func TestReaderHeadLimit(t *testing.T) {
	raw := "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 10000) + "\r\n\r\n"
	r := NewReader(strings.NewReader(raw))
	if _, err := r.Head(8192); !errors.Is(err, ErrHeadersTooLarge) {
		t.Fatalf("err = %v", err)
	}
	r = NewReader(strings.NewReader(raw))
	head, err := r.Head(16384)
	if err != nil || len(head) != len(raw) {
		t.Fatalf("head %d err %v", len(head), err)
	}
}

// oneByteReader delivers input one byte per Read, to exercise buffering.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

func TestPipelinedRequestsAndBodies(t *testing.T) {
	raw := "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nTrailer-A: 1\r\n\r\n" +
		"GET /c HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, src := range []io.Reader{strings.NewReader(raw), oneByteReader{strings.NewReader(raw)}} {
		r := NewReader(src)
		var paths, bodies []string
		var trailer string
		for {
			head, err := r.Head(1 << 16)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			h := &RequestHead{}
			if err := ParseRequest(head, h, 0); err != nil {
				t.Fatal(err)
			}
			r.Consume(len(head))
			f, n := h.Framing()
			var br BodyReader
			br.Reset(r, f, n)
			body, err := io.ReadAll(&br)
			if err != nil {
				t.Fatalf("%s: %v", h.Path, err)
			}
			paths = append(paths, strings.Clone(h.Path))
			bodies = append(bodies, string(body))
			if v := br.Trailers().Get("trailer-a"); v != "" {
				trailer = v
			}
			r.EndMessage()
		}
		if strings.Join(paths, ",") != "/a,/b,/c" || strings.Join(bodies, ",") != "hello,abcde," || trailer != "1" {
			t.Fatalf("paths %v bodies %q trailer %q", paths, bodies, trailer)
		}
	}
}

func TestBadChunks(t *testing.T) {
	for _, body := range []string{"zz\r\nabc\r\n0\r\n\r\n", "3\r\nabcX\r\n0\r\n\r\n", "ffffffffffffffffff\r\n", "-1\r\n", "3\r\nab"} {
		raw := "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
		r := NewReader(strings.NewReader(raw))
		head, _ := r.Head(1 << 16)
		h := &RequestHead{}
		if err := ParseRequest(head, h, 0); err != nil {
			t.Fatal(err)
		}
		r.Consume(len(head))
		var br BodyReader
		br.Reset(r, Chunked, -1)
		if _, err := io.ReadAll(&br); err == nil {
			t.Errorf("body %q: no error", body)
		}
	}
}

func TestParseResponse(t *testing.T) {
	cases := []struct {
		raw     string
		method  string
		framing Framing
		ok      bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "GET", Length, true},
		{"HTTP/1.1 200 OK\r\n\r\n", "GET", ToClose, true},
		{"HTTP/1.1 204 No Content\r\n\r\n", "GET", NoBody, true},
		{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD", NoBody, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", Chunked, true},
		{"HTTP/1.1 200\r\n\r\n", "GET", ToClose, true},
		{"HTTP/1.1 20 OK\r\n\r\n", "GET", NoBody, false},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "GET", NoBody, false},
	}
	for _, tc := range cases {
		h := &ResponseHead{}
		b := []byte(tc.raw)
		err := ParseResponse(b[:HeadEnd(b)], h, 0)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v", tc.raw, err)
			continue
		}
		if f, _ := h.Framing(tc.method); err == nil && f != tc.framing {
			t.Errorf("%q %s: framing %v want %v", tc.raw, tc.method, f, tc.framing)
		}
	}
}

func TestSerialize(t *testing.T) {
	h := &RequestHead{}
	if _, err := parseReq(t, "x"); err == nil {
		t.Fatal("incomplete head parsed")
	}
	h2, _ := parseReq(t, "GET /p HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
	out := AppendRequestHead(nil, "POST", "/q", "up", &h2.Headers, Length, 4, "")
	want := "POST /q HTTP/1.1\r\nhost: up\r\nx-a: 1\r\ncontent-length: 4\r\n\r\n"
	if string(out) != want {
		t.Fatalf("got %q want %q", out, want)
	}
	_ = h
	resp := AppendResponseHead(nil, 1, 503, &h2.Headers, Chunked, -1, true)
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 503 Service Unavailable\r\nx-a: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")) {
		t.Fatalf("%q", resp)
	}
	if got := string(AppendLastChunk(AppendChunk(nil, []byte("hello")), nil)); got != "5\r\nhello\r\n0\r\n\r\n" {
		t.Fatalf("%q", got)
	}
}

func TestChunkSize(t *testing.T) {
	for _, tc := range []struct {
		line string
		n    int64
		ok   bool
	}{
		{"1a", 26, true},
		{"1A;name=value", 26, true},
		{"0", 0, true},
		{"000", 0, true},
		{"0000000000000000000000001a", 26, true}, // leading zeros are valid (RFC 9112 §7.1)
		{"fffffffffffffff", 1<<60 - 1, true},
		{"ffffffffffffffff", 0, false}, // beyond 60 bits
		{"FFFFFFFFFFFFFFFFF1", 0, false},
		{"", 0, false},
		{"-1", 0, false},
		{"1a x", 0, false},
		{"1a \t", 26, true},
	} {
		n, ok := parseChunkSize([]byte(tc.line))
		if n != tc.n || ok != tc.ok {
			t.Errorf("parseChunkSize(%q) = %d %v, want %d %v", tc.line, n, ok, tc.n, tc.ok)
		}
	}
}

func TestProperCaseHead(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"GET /a-b HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n\r\nbody-x: y", "GET /a-b HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\r\nbody-x: y"},
		{"HTTP/1.1 200 OK\r\nfoo$b#$are: v-v\r\nx-1a: z\r\n\r\n", "HTTP/1.1 200 OK\r\nFoo$B#$Are: v-v\r\nX-1a: z\r\n\r\n"},
		{"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 204 No Content\r\n\r\n"},
	} {
		b := []byte(tc.in)
		ProperCaseHead(b)
		if string(b) != tc.want {
			t.Errorf("ProperCaseHead(%q) = %q, want %q", tc.in, b, tc.want)
		}
	}
}
