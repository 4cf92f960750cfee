package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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

// /debug/pprof/ is off unless --enable-pprof asks for it.
func TestPprofOffByDefault(t *testing.T) {
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"})
	resp, err := http.Get("http://" + p.Admin + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/debug/pprof/: %d, want 404 without --enable-pprof", resp.StatusCode)
	}
}

// waitGoAway reads frames on an HTTP/2 connection until GOAWAY (true) or
// the deadline (false).
func waitGoAway(t *testing.T, c net.Conn, d time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	fr := http2.NewFramer(c, c)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return false
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return true
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
}

func h2Conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, http2.ClientPreface)
	http2.NewFramer(c, c).WriteSettings()
	return c
}

// Regression: HTTP/2 drain was one sync.Once per filter chain, so after
// /healthcheck/fail then /healthcheck/ok, later HTTP/2 connections never got
// GOAWAY when draining again.
func TestHTTP2DrainAfterHealthcheckOK(t *testing.T) {
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, direct_response: {status: 200}}`), clusters: "[]"})
	post := func(path string) {
		resp, err := http.Post("http://"+p.Admin+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	c1 := h2Conn(t, p.Addr("http"))
	time.Sleep(100 * time.Millisecond) // let the proxy take the connection
	post("/healthcheck/fail")
	if !waitGoAway(t, c1, 5*time.Second) {
		t.Fatal("the first drain sent no GOAWAY")
	}
	post("/healthcheck/ok")
	c2 := h2Conn(t, p.Addr("http"))
	time.Sleep(100 * time.Millisecond)
	post("/healthcheck/fail")
	if !waitGoAway(t, c2, 5*time.Second) {
		t.Fatal("a connection opened after /healthcheck/ok got no GOAWAY on the next drain")
	}
}

// Regression: when the client went away (an HTTP/2 stream reset) the
// retry chain went on upstream; now the back-off ends and no retry goes out.
func TestClientResetCancelsRetries(t *testing.T) {
	var hits atomic.Int64
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(503)
	}))
	p := start(t, cfg{
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: c, timeout: 30s, retry_policy: {retry_on: 5xx, num_retries: 20,
			retry_back_off: {base_interval: 0.3s, max_interval: 0.3s}}}}`),
		clusters: "[" + staticCluster("c", "", up.Addr) + "]",
	})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", p.URL("http", "/"), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := testutil.H2CClient().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return hits.Load() >= 2 }, "no retries started")
	cancel() // RST_STREAM
	<-done
	at := hits.Load()
	time.Sleep(time.Second) // three more back-offs would have passed
	if n := hits.Load(); n > at+1 {
		t.Errorf("upstream got %d requests after the client reset (at %d)", n-at, at)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.downstream_rq_rx_reset") >= 1 }, "downstream_rq_rx_reset not counted")
}
