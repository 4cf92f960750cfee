// Header validation: Host/:authority, HTTP/2 pseudo-headers, headers with
// underscores.

package features_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/testutil"
)

// h2Status sends one HEADERS frame with the given header fields over h2c
// (prior knowledge) and returns the response :status.
func h2Status(t *testing.T, addr string, fields [][2]string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range fields {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return "reset: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			hs, _ := dec.DecodeFull(f.HeaderBlockFragment())
			for _, h := range hs {
				if h.Name == ":status" {
					return h.Value
				}
			}
		case *http2.RSTStreamFrame:
			return "rst"
		case *http2.GoAwayFrame:
			return "goaway"
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
}

// Regression (HTTP/2 → HTTP/1.1 request-line injection): whitespace in
// :method or :path was copied into the upstream request line.
func TestHTTP2PseudoHeaderInjection(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		vhosts:   vhost(`{match: {prefix: /internal}, direct_response: {status: 403}}`, `{match: {prefix: /}, route: {cluster: c}}`),
		clusters: "[" + staticCluster("c", "", up.Addr) + "]",
	})
	for _, c := range []struct {
		name, method, path string
		want               string
	}{
		{"space in :method", "GET /internal", "/allowed", "400"},
		{"tab in :method", "GET\t/internal", "/allowed", "400"},
		{"space in :path", "GET", "/allowed HTTP/1.1\r\nX: y", "400"},
		{"space in :path 2", "GET", "/a b", "400"},
		{"valid", "GET", "/allowed", "200"},
	} {
		got := h2Status(t, p.Addr("http"), [][2]string{{":method", c.method}, {":scheme", "http"}, {":authority", "a.example"}, {":path", c.path}})
		if got != c.want && !(c.want == "400" && (got == "rst" || strings.HasPrefix(got, "reset"))) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if up.Hits() != 1 {
		t.Errorf("upstream saw %d requests, want only the valid one", up.Hits())
	}
}

// Regression (loose Host validation): RFC 9112 §3.2 / RFC 9110 §4.2.
func TestHostValidation(t *testing.T) {
	// A security test: raw inputs and faults, in a network namespace of its own.
	if !testutil.InNetns(t) {
		return
	}
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: c}}`), clusters: "[" + staticCluster("c", "", up.Addr) + "]"})
	for _, c := range []struct{ name, req, want string }{
		{"space in Host", "GET / HTTP/1.1\r\nHost: a.example b\r\n\r\n", "400"},
		{"slash in Host", "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n", "400"},
		{"userinfo in the target", "GET http://user@evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", "400"},
		{"valid with port", "GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", "200"},
		{"IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", "200"},
	} {
		conn, err := net.Dial("tcp", p.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(conn, c.req)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		got := "no response"
		if err == nil {
			got = resp.Status[:3]
		}
		if got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
	if n := p.Stat(t, "http.ingress.downstream_rq_invalid_authority"); n < 2 {
		t.Errorf("downstream_rq_invalid_authority = %d", n)
	}
}

// TestHeadersWithUnderscores: common_http_protocol_options.
// headers_with_underscores_action REJECT_REQUEST answers 400 and closes;
// DROP_HEADER removes the header before the upstream sees it.
func TestHeadersWithUnderscores(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	for _, tc := range []struct {
		action string
		check  func(code int, body string) bool
		stat   string
	}{
		{"REJECT_REQUEST", func(code int, _ string) bool { return code == 400 }, "http.ingress.requests_rejected_with_underscores_in_headers"},
		{"DROP_HEADER", func(code int, body string) bool { return code == 200 && !strings.Contains(body, "x_bad") }, "http.ingress.dropped_headers_with_underscores"},
	} {
		p := start(t, cfg{
			hcm:      "common_http_protocol_options: {headers_with_underscores_action: " + tc.action + "}",
			vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
			clusters: "[" + staticCluster("up", "", up.Addr) + "]",
		})
		code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x_bad", "1", "x-good", "1")
		if !tc.check(code, body) || p.Stat(t, tc.stat) != 1 {
			t.Errorf("%s: %d %q, %s = %d", tc.action, code, body, tc.stat, p.Stat(t, tc.stat))
		}
	}
}
