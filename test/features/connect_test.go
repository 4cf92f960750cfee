// HTTP CONNECT: terminated by the proxy (connect_config), proxied to an
// upstream proxy, and tcp_proxy's tunneling_config carrying TCP over
// HTTP/1.1 CONNECT, HTTP/2 CONNECT and POST into a second proxy that
// terminates it — with real clients (curl --proxytunnel, Go's Transport,
// a raw HTTP/2 framer) and real TCP and HTTP backends.

package features_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/testutil"
)

const (
	connectHCM   = "upgrade_configs: [{upgrade_type: CONNECT}]\nhttp2_protocol_options: {allow_connect: true}"
	terminate    = "upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]"
	h2ProtoOpts  = "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	h1ProtoOpts  = "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http_protocol_options: {}}}}"
	connectLogFm = "%REQ(:METHOD)% %REQ(:AUTHORITY)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% %REQ(X-TUNNEL)%\n"
)

// accessLog renders an access_log entry writing connectLogFm to path.
func connectAccessLog(path string) string {
	return fmt.Sprintf(`access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format_source: {inline_string: %q}}}}]`, path, connectLogFm)
}

// logLines waits for n lines in an access log file and returns them.
func connectLogLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		lines = strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		return len(b) > 0 && len(lines) >= n
	}, "access log %s has fewer than %d lines", path, n)
	return lines
}

// statIs waits for a stat to reach want.
func connectWaitStat(t *testing.T, p *testutil.Proxy, name string, want int64) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, name) == want }, "%s = %d, want %d", name, p.Stat(t, name), want)
}

// startTerminator is a proxy that terminates CONNECT (and POST with
// allow_post) to the TCP echo, with an access log at logPath.
func startConnectTerminator(t *testing.T, echo string, logPath string) *testutil.Proxy {
	t.Helper()
	return start(t, cfg{
		hcm: connectHCM + "\n" + connectAccessLog(logPath),
		vhosts: vhost("{match: {connect_matcher: {}}, route: {cluster: echo, "+terminate+"}}",
			"{match: {prefix: /, headers: [{name: ':method', string_match: {exact: POST}}]}, route: {cluster: echo, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]}}"),
		clusters: "[" + staticCluster("echo", "", echo) + "]",
	})
}

// readHead reads an HTTP/1.1 response head from r.
func readRespHead(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading response head: %v (so far %q)", err, b.String())
		}
		b.WriteString(l)
		if l == "\r\n" {
			return b.String()
		}
	}
}

func TestConnectTerminateCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	web := testutil.StartUpstream(t, testutil.EchoHandler("web"))
	logPath := t.TempDir() + "/access.log"
	p := start(t, cfg{
		hcm:      connectHCM + "\n" + connectAccessLog(logPath),
		vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: web, " + terminate + "}}"),
		clusters: "[" + staticCluster("web", "", web.Addr) + "]",
	})
	// curl --proxytunnel sends CONNECT backend.test:8080, then its GET
	// through the tunnel: the proxy connects to the cluster's host,
	// whatever the CONNECT target.
	out, err := exec.Command("curl", "-s", "--max-time", "5", "-p", "-x", "http://"+p.Addr("http"),
		"-w", "\nconnect=%{http_connect} code=%{http_code}", "http://backend.test:8080/through?x=1").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"upstream=web", "path=/through?x=1", "host=backend.test:8080", "connect=200 code=200"} {
		if !strings.Contains(s, want) {
			t.Errorf("curl output lacks %q:\n%s", want, s)
		}
	}
	if web.Hits() != 1 {
		t.Errorf("backend served %d requests, want 1", web.Hits())
	}
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_total", 1)
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_active", 0)
	connectWaitStat(t, p, "cluster.web.upstream_rq_200", 1)
	connectWaitStat(t, p, "http.ingress.downstream_rq_2xx", 1)
	f := strings.Fields(connectLogLines(t, logPath, 1)[0])
	// CONNECT backend.test:8080 - HTTP/1.1 200 - <host> <rx> <tx> -
	if len(f) != 10 || f[0] != "CONNECT" || f[1] != "backend.test:8080" || f[2] != "-" || f[3] != "HTTP/1.1" ||
		f[4] != "200" || f[5] != "-" || f[6] != web.Addr {
		t.Fatalf("access log line: %q", f)
	}
	rx, _ := strconv.Atoi(f[7])
	tx, _ := strconv.Atoi(f[8])
	if !strings.HasPrefix(s, "upstream=web") || rx < len("GET /through?x=1 HTTP/1.1\r\n") || tx < len(s)-len("\nconnect=200 code=200") {
		t.Errorf("tunnel bytes in the access log: received %d, sent %d (curl got %d bytes)", rx, tx, len(s))
	}
}

func TestConnectGoTransportTLS(t *testing.T) {
	// Go's Transport tunnels https:// through an HTTP proxy with CONNECT:
	// the TLS handshake and the request pass the tunnel untouched.
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "secret %s %s", r.Method, r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	p := start(t, cfg{
		hcm:      connectHCM,
		vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: tls, " + terminate + "}}"),
		clusters: "[" + staticCluster("tls", "", srv.Listener.Addr().String()) + "]",
	})
	proxyURL, _ := url.Parse("http://" + p.Addr("http"))
	var connectStatus int
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.Proxy = http.ProxyURL(proxyURL)
	tr.OnProxyConnectResponse = func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
		connectStatus = resp.StatusCode
		return nil
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := 0; i < 2; i++ {
		resp, err := c.Get(srv.URL + "/vault")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "secret GET /vault" || resp.TLS == nil {
			t.Fatalf("through the tunnel: %q (TLS %v)", b, resp.TLS != nil)
		}
	}
	if connectStatus != 200 {
		t.Errorf("CONNECT answered %d", connectStatus)
	}
	// The two requests reused the tunnel (one CONNECT).
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_total", 1)
	tr.CloseIdleConnections()
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_active", 0)
}

// h2tunnel is a raw HTTP/2 client stream (prior knowledge).
type h2tunnel struct {
	t     *testing.T
	c     net.Conn
	fr    *http2.Framer
	enc   *hpack.Encoder
	hbuf  bytes.Buffer
	data  bytes.Buffer
	ended bool
	reset http2.ErrCode
	isRST bool
}

func dialH2Tunnel(t *testing.T, addr string) *h2tunnel {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2tunnel{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hbuf)
	io.WriteString(c, http2.ClientPreface)
	h.fr.WriteSettings()
	return h
}

// open sends the request headers of stream 1.
func (h *h2tunnel) open(fields ...string) {
	h.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.hbuf.Bytes(), EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// next reads frames until stream 1's response headers, a DATA frame, its
// end or its reset; it returns the :status of response headers.
func (h *h2tunnel) next() string {
	h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("reading HTTP/2 frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				h.ended = true
			}
			return f.PseudoValue("status")
		case *http2.DataFrame:
			h.data.Write(f.Data())
			if len(f.Data()) > 0 {
				h.fr.WriteWindowUpdate(0, uint32(len(f.Data())))
				h.fr.WriteWindowUpdate(1, uint32(len(f.Data())))
			}
			if f.StreamEnded() {
				h.ended = true
			}
			return ""
		case *http2.RSTStreamFrame:
			h.isRST, h.reset = true, f.ErrCode
			return ""
		case *http2.GoAwayFrame:
			h.t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
}

// readData reads until want bytes of DATA arrived.
func (h *h2tunnel) readData(want int) string {
	for h.data.Len() < want && !h.ended && !h.isRST {
		h.next()
	}
	return h.data.String()
}

func TestConnectHTTP2Framer(t *testing.T) {
	echo := startTCPEcho(t)
	logPath := t.TempDir() + "/access.log"
	p := startConnectTerminator(t, echo.Addr, logPath)
	h := dialH2Tunnel(t, p.Addr("http"))
	// RFC 9113 §8.5: CONNECT carries :method and :authority only.
	h.open(":method", "CONNECT", ":authority", "echo.test:7")
	if st := h.next(); st != "200" {
		t.Fatalf("CONNECT answered %q", st)
	}
	h.fr.WriteData(1, false, []byte("hello"))
	if got := h.readData(5); got != "hello" {
		t.Fatalf("echoed %q", got)
	}
	// END_STREAM half-closes the upstream; the echo then closes, which
	// ends the response stream cleanly (no reset).
	h.fr.WriteData(1, true, []byte(" there"))
	for !h.ended && !h.isRST {
		h.next()
	}
	if h.isRST || h.data.String() != "hello there" {
		t.Fatalf("stream end: reset %v (%v), data %q", h.isRST, h.reset, h.data.String())
	}
	if echo.Received() != "hello there" || echo.HalfClosed() != 1 {
		t.Errorf("upstream saw %q, half-closes %d", echo.Received(), echo.HalfClosed())
	}
	f := strings.Fields(connectLogLines(t, logPath, 1)[0])
	if f[0] != "CONNECT" || f[1] != "echo.test:7" || f[3] != "HTTP/2" || f[4] != "200" || f[6] != echo.Addr || f[7] != "11" || f[8] != "11" {
		t.Errorf("access log: %q", f)
	}
	connectWaitStat(t, p, "http.ingress.downstream_rq_http2_total", 1)
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_total", 1)
}

func TestConnectNotEnabled(t *testing.T) {
	echo := startTCPEcho(t)
	// Without upgrade_configs CONNECT, Envoy answers 403.
	p := start(t, cfg{
		vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: echo}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	got := rawExchange(t, p.Addr("http"), "CONNECT echo.test:7 HTTP/1.1\r\nhost: echo.test:7\r\n\r\nhello")
	if firstLine(got) != "HTTP/1.1 403 Forbidden" {
		t.Fatalf("got %q", got)
	}
	connectWaitStat(t, p, "http.ingress.downstream_rq_ws_on_non_ws_route", 1)
	if echo.Received() != "" {
		t.Errorf("the payload reached the upstream: %q", echo.Received())
	}
	// A route's upgrade_configs enable it where the HCM does not (Envoy's
	// table: HCM F, route T → T); non-CONNECT routes never match CONNECT.
	p2 := start(t, cfg{
		vhosts: vhost("{match: {prefix: /}, direct_response: {status: 200}}",
			"{match: {connect_matcher: {}}, route: {cluster: echo, "+terminate+"}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	c, err := net.Dial("tcp", p2.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "CONNECT echo.test:7 HTTP/1.1\r\nhost: echo.test:7\r\n\r\n")
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if head := readRespHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") ||
		strings.Contains(strings.ToLower(head), "transfer-encoding") || strings.Contains(strings.ToLower(head), "content-length") {
		t.Fatalf("CONNECT answered:\n%s", head)
	}
	io.WriteString(c, "ping")
	b := make([]byte, 4)
	if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q %v", b, err)
	}
}

func TestConnectProxiedToUpstreamProxy(t *testing.T) {
	// proxy_connect.yaml: without connect_config the CONNECT goes on to
	// the cluster as a CONNECT — here a second proxy that terminates it.
	for _, tc := range []struct{ name, opts, proto string }{
		{"http2", h2ProtoOpts, "HTTP/2"},
		{"http1", h1ProtoOpts, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := startTCPEcho(t)
			bLog := t.TempDir() + "/b.log"
			b := startConnectTerminator(t, echo.Addr, bLog)
			a := start(t, cfg{
				hcm:      connectHCM,
				vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: b}}"),
				clusters: "[" + staticCluster("b", tc.opts, b.Addr("http")) + "]",
			})
			c, err := net.Dial("tcp", a.Addr("http"))
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			// As curl sends it (proxy-connection is HTTP/1-only, never sent
			// on over HTTP/2).
			io.WriteString(c, "CONNECT echo.test:7 HTTP/1.1\r\nhost: echo.test:7\r\nproxy-connection: Keep-Alive\r\nuser-agent: curl/7.88.1\r\n\r\n")
			br := bufio.NewReader(c)
			if head := readRespHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") {
				t.Fatalf("CONNECT answered:\n%s", head)
			}
			io.WriteString(c, "ping")
			buf := make([]byte, 4)
			if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("echo through both proxies: %q %v", buf, err)
			}
			c.Close()
			testutil.Eventually(t, 5*time.Second, func() bool { return echo.HalfClosed() == 1 }, "the echo never saw the tunnel end")
			f := strings.Fields(connectLogLines(t, bLog, 1)[0])
			if f[0] != "CONNECT" || f[1] != "echo.test:7" || f[3] != tc.proto || f[4] != "200" {
				t.Errorf("the upstream proxy saw: %q", f)
			}
			connectWaitStat(t, a, "cluster.b.upstream_rq_200", 1)
			connectWaitStat(t, a, "http.ingress.downstream_cx_upgrades_total", 1)
			connectWaitStat(t, b, "http.ingress.downstream_cx_upgrades_total", 1)
		})
	}
}

func TestConnectProxiedRefused(t *testing.T) {
	// An upstream proxy's refusal is relayed as the response.
	px := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("proxy-authenticate", "Basic")
		w.WriteHeader(407)
		io.WriteString(w, "who are you "+r.Method+" "+r.Host)
	}))
	p := start(t, cfg{
		hcm:      connectHCM,
		vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: px}}"),
		clusters: "[" + staticCluster("px", "", px.Addr) + "]",
	})
	got := rawExchange(t, p.Addr("http"), "CONNECT secret.test:443 HTTP/1.1\r\nhost: secret.test:443\r\n\r\n")
	if firstLine(got) != "HTTP/1.1 407 Proxy Authentication Required" || !strings.Contains(got, "proxy-authenticate: Basic") ||
		!strings.HasSuffix(got, "who are you CONNECT secret.test:443") {
		t.Fatalf("got %q", got)
	}
	connectWaitStat(t, p, "cluster.px.upstream_rq_407", 1)
	connectWaitStat(t, p, "http.ingress.downstream_rq_4xx", 1)
	connectWaitStat(t, p, "http.ingress.downstream_cx_upgrades_total", 0)
}

func TestConnectTimeouts(t *testing.T) {
	echo := startTCPEcho(t)
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {connect_matcher: {}, headers: [{name: x-case, string_match: {exact: timeout}}]}, route: {cluster: echo, timeout: 0.2s, "+terminate+"}}",
			"{match: {connect_matcher: {}, headers: [{name: x-case, string_match: {exact: idle}}]}, route: {cluster: echo, idle_timeout: 0.3s, "+terminate+"}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	open := func(which string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "CONNECT echo.test:7 HTTP/1.1\r\nhost: echo.test:7\r\nx-case: "+which+"\r\n\r\n")
		br := bufio.NewReader(c)
		if head := readRespHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 200") {
			t.Fatalf("%s: CONNECT answered:\n%s", which, head)
		}
		return c, br
	}
	// The route timeout does not cut an established tunnel.
	c, br := open("timeout")
	time.Sleep(600 * time.Millisecond)
	io.WriteString(c, "late")
	buf := make([]byte, 4)
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "late" {
		t.Fatalf("after the route timeout: %q %v", buf, err)
	}
	// The idle timeout does.
	c2, br2 := open("idle")
	io.WriteString(c2, "once")
	if _, err := io.ReadFull(br2, buf); err != nil || string(buf) != "once" {
		t.Fatalf("idle tunnel: %q %v", buf, err)
	}
	start := time.Now()
	if n, err := br2.Read(buf); err == nil {
		t.Fatalf("an idle tunnel stayed open (read %q)", buf[:n])
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
		t.Errorf("the idle tunnel closed after %v, want about 0.3s", d)
	}
	connectWaitStat(t, p, "http.ingress.downstream_rq_idle_timeout", 1)
	if p.Stat(t, "http.ingress.downstream_rq_timeout") > 0 {
		t.Errorf("request timeouts counted")
	}
}

// tunnelA renders proxy A: a tcp_proxy listener "tcp" whose
// tunneling_config carries connections to cluster b (proxy B at bAddr).
func tunnelingProxy(bAddr, clusterOpts, tunneling, logPath string) string {
	return fmt.Sprintf(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: tcp
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tun
          cluster: b
          tunneling_config: %s
          access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s, log_format: {text_format_source: {inline_string: "%%RESPONSE_FLAGS%% %%UPSTREAM_HOST%% %%BYTES_RECEIVED%% %%BYTES_SENT%% %%FILTER_STATE(envoy.tcp_proxy.propagate_response_headers:FIELD:server)%%\n"}}}}]
  clusters: [%s]
`, tunneling, logPath, staticCluster("b", clusterOpts, bAddr))
}

func TestTunnelingConfigChained(t *testing.T) {
	for _, tc := range []struct {
		name, opts, post, method, path, proto string
	}{
		{"http1-connect", h1ProtoOpts, "", "CONNECT", "-", "HTTP/1.1"},
		{"http2-connect", h2ProtoOpts, "", "CONNECT", "-", "HTTP/2"},
		{"http2-post", h2ProtoOpts, ", use_post: true, post_path: /tcp", "POST", "/tcp", "HTTP/2"},
		{"http1-post", h1ProtoOpts, ", use_post: true", "POST", "/", "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := startTCPEcho(t)
			dir := t.TempDir()
			b := startConnectTerminator(t, echo.Addr, dir+"/b.log")
			tunneling := "{hostname: 'tunnel.test:%DOWNSTREAM_LOCAL_PORT%', propagate_response_headers: true, headers_to_add: [{header: {key: x-tunnel, value: 'from-%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%'}}]" + tc.post + "}"
			a := testutil.StartProxy(t, tunnelingProxy(b.Addr("http"), tc.opts, tunneling, dir+"/a.log"), nil)
			c, err := net.Dial("tcp", a.Addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(8 * time.Second))
			buf := make([]byte, 5)
			for _, w := range []string{"hello", "world"} {
				io.WriteString(c, w)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != w {
					t.Fatalf("echo of %q through the tunnel: %q %v", w, buf, err)
				}
			}
			// The client's FIN ends the tunnel; the echo's close comes back
			// as a clean end of stream.
			c.(*net.TCPConn).CloseWrite()
			rest, err := io.ReadAll(c)
			if err != nil || len(rest) != 0 {
				t.Fatalf("after the half-close: %q %v", rest, err)
			}
			if echo.Received() != "helloworld" || echo.HalfClosed() != 1 {
				t.Errorf("the backend saw %q, half-closes %d", echo.Received(), echo.HalfClosed())
			}
			_, aPort, _ := net.SplitHostPort(a.Addr("tcp"))
			f := strings.Fields(connectLogLines(t, dir+"/b.log", 1)[0])
			if f[0] != tc.method || f[1] != "tunnel.test:"+aPort || f[2] != tc.path || f[3] != tc.proto || f[4] != "200" ||
				f[6] != echo.Addr || f[7] != "10" || f[8] != "10" || f[9] != "from-127.0.0.1" {
				t.Errorf("proxy B saw: %q", f)
			}
			af := strings.Fields(connectLogLines(t, dir+"/a.log", 1)[0])
			// propagate_response_headers: B's response headers in A's
			// filter state.
			if af[0] != "-" || af[1] != b.Addr("http") || af[2] != "10" || af[3] != "10" || af[4] != "envoy" {
				t.Errorf("proxy A logged: %q", af)
			}
			connectWaitStat(t, a, "tcp.tun.downstream_cx_rx_bytes_total", 10)
			connectWaitStat(t, a, "tcp.tun.downstream_cx_tx_bytes_total", 10)
			connectWaitStat(t, a, "cluster.b.upstream_rq_200", 1)
			if tc.method == "CONNECT" {
				connectWaitStat(t, b, "http.ingress.downstream_cx_upgrades_total", 1)
			}
		})
	}
}

func TestTunnelingConfigRefused(t *testing.T) {
	// Envoy's rule: any 2xx establishes an HTTP/1.1 tunnel, only 200 an
	// HTTP/2 one; anything else closes the downstream connection (UF).
	for _, tc := range []struct {
		name, opts string
		status     int
	}{
		{"http1-403", h1ProtoOpts, 403},
		{"http2-201", h2ProtoOpts, 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen sync.Map
			px := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Method+" "+r.Host+" "+r.Proto, true)
				w.WriteHeader(tc.status)
				w.(http.Flusher).Flush()
				if r.ProtoMajor == 2 {
					// Were the stream taken as a tunnel, the payload would
					// come back.
					buf := make([]byte, 64)
					for {
						n, err := r.Body.Read(buf)
						w.Write(buf[:n])
						w.(http.Flusher).Flush()
						if err != nil {
							return
						}
					}
				}
			}))
			logPath := t.TempDir() + "/a.log"
			a := testutil.StartProxy(t, tunnelingProxy(px.Addr, tc.opts, "{hostname: dest.test:22}", logPath), nil)
			c, err := net.Dial("tcp", a.Addr("tcp"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "early bytes")
			b, err := io.ReadAll(c)
			// The proxy closes without reading the early bytes, which the
			// kernel may turn into a reset: either way, no byte and no wait.
			if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
				t.Fatalf("refused tunnel: read %q, %v (want the connection closed)", b, err)
			}
			proto := "HTTP/1.1"
			if tc.opts == h2ProtoOpts {
				proto = "HTTP/2.0"
			}
			if _, ok := seen.Load("CONNECT dest.test:22 " + proto); !ok {
				var keys []any
				seen.Range(func(k, _ any) bool { keys = append(keys, k); return true })
				t.Fatalf("the upstream saw %v", keys)
			}
			connectWaitStat(t, a, fmt.Sprintf("cluster.b.upstream_rq_%d", tc.status), 1)
			if f := strings.Fields(connectLogLines(t, logPath, 1)[0]); f[0] != "UF" || f[1] != px.Addr || f[2] != "0" {
				t.Errorf("access log: %q", f)
			}
		})
	}
}

func TestUpstreamConfigTCPPool(t *testing.T) {
	// envoy.upstreams.http.tcp: every request's body goes to the host as
	// TCP; the response is a 200 with what the host sends back.
	echo := startTCPEcho(t)
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: raw}}"),
		clusters: "[" + staticCluster("raw", `upstream_config: {name: envoy.upstreams.http.tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.tcp.v3.TcpConnectionPoolProto}}`, echo.Addr) + "]",
	})
	code, _, body := testutil.Do(t, testutil.Client(), "POST", p.URL("http", "/anything"), "ping over tcp")
	if code != 200 || body != "ping over tcp" {
		t.Fatalf("got %d %q", code, body)
	}
	if echo.Received() != "ping over tcp" || echo.HalfClosed() != 1 {
		t.Errorf("the host saw %q, half-closes %d", echo.Received(), echo.HalfClosed())
	}
	connectWaitStat(t, p, "cluster.raw.upstream_rq_200", 1)
}

func TestConnectConfigErrors(t *testing.T) {
	echo := startTCPEcho(t)
	for _, tc := range []struct{ name, c, want string }{
		{"golang upstream", cfg{vhosts: vhost("{match: {prefix: /}, route: {cluster: g}}"),
			clusters: "[" + staticCluster("g", `upstream_config: {name: envoy.upstreams.http.tcp.golang, typed_config: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.tcp.golang.v3alpha.Config, library_id: x, library_path: x.so, plugin_name: x}}`, echo.Addr) + "]"}.String(),
			"upstream_config.typed_config"},
		{"connect_config on websocket", cfg{vhosts: vhost("{match: {prefix: /}, route: {cluster: e, upgrade_configs: [{upgrade_type: websocket, connect_config: {}}]}}"),
			clusters: "[" + staticCluster("e", "", echo.Addr) + "]"}.String(),
			"upgrade_configs[0].connect_config"},
		{"post_path without use_post", tunnelingProxy(echo.Addr, "", "{hostname: h.test:1, post_path: /x}", t.TempDir()+"/a.log"),
			"tunneling_config.post_path"},
		{"tunneling hostname missing", tunnelingProxy(echo.Addr, "", "{use_post: true}", t.TempDir()+"/a.log"),
			"tunneling_config.hostname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, tc.c, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestTunnelingConfigOriginalDst(t *testing.T) {
	// encapsulate_in_http1_connect.yaml + terminate_http1_connect.yaml:
	// the tunnel names its destination as the CONNECT target and adds
	// foo: bar; the terminating proxy's route for it sends the payload to
	// an ORIGINAL_DST cluster that reads :authority.
	echo := startTCPEcho(t)
	other := startTCPEcho(t)
	b := start(t, cfg{
		hcm: "upgrade_configs: [{upgrade_type: CONNECT}]",
		vhosts: vhost("{match: {connect_matcher: {}, headers: [{name: foo, string_match: {exact: bar}}]}, route: {cluster: local_original_dst, "+terminate+"}}",
			"{match: {connect_matcher: {}}, route: {cluster: other, "+terminate+"}}"),
		clusters: "[{name: local_original_dst, connect_timeout: 1s, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, original_dst_lb_config: {use_http_header: true, http_header_name: ':authority'}}, " +
			staticCluster("other", "", other.Addr) + "]",
	})
	for _, tc := range []struct {
		tunneling string
		backend   *tcpEchoUpstream
	}{
		{"{hostname: '" + echo.Addr + "', headers_to_add: [{header: {key: foo, value: bar}}]}", echo},
		{"{hostname: 'host.com:443'}", other},
	} {
		a := testutil.StartProxy(t, tunnelingProxy(b.Addr("http"), h1ProtoOpts, tc.tunneling, t.TempDir()+"/a.log"), nil)
		c, err := net.Dial("tcp", a.Addr("tcp"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "which")
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "which" {
			t.Fatalf("%s: %q %v", tc.tunneling, buf, err)
		}
		c.Close()
		if tc.backend.Received() != "which" {
			t.Errorf("%s reached the wrong backend (echo %q, other %q)", tc.tunneling, echo.Received(), other.Received())
		}
	}
}

func TestConnectProxyProtocolHeader(t *testing.T) {
	// connect_config.proxy_protocol_config: the downstream connection's
	// addresses go first on the TCP connection, then the payload.
	echo := startTCPEcho(t)
	p := start(t, cfg{
		hcm:      connectHCM,
		vhosts:   vhost("{match: {connect_matcher: {}}, route: {cluster: echo, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {proxy_protocol_config: {version: V1}}}]}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	c, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "CONNECT echo.test:7 HTTP/1.1\r\nhost: echo.test:7\r\n\r\n")
	br := bufio.NewReader(c)
	if head := readRespHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("CONNECT answered:\n%s", head)
	}
	io.WriteString(c, "data")
	_, cport, _ := net.SplitHostPort(c.LocalAddr().String())
	_, pport, _ := net.SplitHostPort(p.Addr("http"))
	want := "PROXY TCP4 127.0.0.1 127.0.0.1 " + cport + " " + pport + "\r\ndata"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
		t.Fatalf("echoed %q (%v), want %q", got, err, want)
	}
}
