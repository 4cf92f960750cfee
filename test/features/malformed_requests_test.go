// Malformed HTTP/1 requests: smuggling, bad framing, oversized headers.

package features_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestMalformedRequests(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	var mu sync.Mutex
	var seen []string
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	p := start(t, cfg{
		hcm:      "max_request_headers_kb: 8",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	cases := []struct {
		name, raw, status string
	}{
		{"content-length with transfer-encoding (smuggling)", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400"},
		{"two content-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "HTTP/1.1 400"},
		{"space before colon", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "HTTP/1.1 400"},
		{"obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", "HTTP/1.1 400"},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "HTTP/1.1 501"},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 9000) + "\r\n\r\n", "HTTP/1.1 431"},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400"},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400"},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", ""},
		{"http/1.0 refused by default", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 426"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := rawExchange(t, p.Addr("http"), tc.raw)
			if tc.status != "" && !strings.HasPrefix(out, tc.status) {
				t.Fatalf("got %q, want %s", firstLine(out), tc.status)
			}
			if tc.status != "" && !strings.Contains(strings.ToLower(out), "connection: close") && tc.status != "HTTP/1.1 426" {
				t.Errorf("the connection must be closed after a protocol error:\n%s", out)
			}
		})
	}
	mu.Lock()
	for _, s := range seen {
		if strings.Contains(s, "smuggled") {
			t.Errorf("a smuggled request reached the upstream: %v", seen)
		}
	}
	mu.Unlock()
	// The proxy still serves after all of that.
	if code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/fine")); code != 200 || body != "ok" {
		t.Fatalf("proxy stopped serving: %d %q", code, body)
	}
	if n := p.Stat(t, "http.ingress.downstream_cx_protocol_error"); n < 6 {
		t.Errorf("downstream_cx_protocol_error = %d, want ≥ 6", n)
	}
}
