// Pipe (Unix domain socket) addresses: listeners and the admin on a pipe
// (a path with a mode, or a name in Linux's abstract namespace, "@…"),
// and cluster endpoints on a pipe, as Envoy binds and dials them.

package features_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/legateproxy/legate/internal/testutil"
)

// unixClient is an HTTP client that dials the Unix socket at path
// whatever the URL's host.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
}

// curlUnix runs curl --unix-socket against path and returns its output
// (status code on the last line).
func curlUnix(t *testing.T, path, url string) string {
	t.Helper()
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl is not installed")
	}
	out, err := exec.Command(curl, "-sS", "--max-time", "5", "--unix-socket", path, "-w", "\n%{http_code}", url).CombinedOutput()
	if err != nil {
		t.Fatalf("curl --unix-socket %s %s: %v\n%s", path, url, err, out)
	}
	return string(out)
}

// TestPipeListenerAndAdmin: an HTTP listener and the admin on pipes,
// reached with curl --unix-socket; the pipe's mode is applied and the
// listener's stats are named by its path, as Envoy names them.
func TestPipeListenerAndAdmin(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	dir := t.TempDir()
	sock, adminSock := filepath.Join(dir, "http.sock"), filepath.Join(dir, "admin.sock")
	// A socket file left by an earlier run is replaced, as Envoy does.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	p := testutil.StartProxy(t, `admin: {address: {pipe: {path: `+adminSock+`}}}
static_resources:
  listeners:
  - name: http
    address: {pipe: {path: `+sock+`, mode: 0600}}
    filter_chains: [{filters: [`+hcmTo("pipe", "backend", ", use_remote_address: true")+`]}]
  clusters:
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("listener pipe %s has mode %v, want a socket with 0600", sock, fi.Mode())
	}
	out := curlUnix(t, sock, "http://pipe.example/through-pipe")
	if !strings.HasSuffix(out, "\n200") || !strings.Contains(out, "upstream=backend") || !strings.Contains(out, "path=/through-pipe") {
		t.Fatalf("curl through the pipe listener:\n%s", out)
	}
	// A peer with no IP address adds nothing to x-forwarded-for.
	if strings.Contains(out, "header:x-forwarded-for=") {
		t.Errorf("x-forwarded-for set for a pipe peer:\n%s", out)
	}
	if got := p.Stat(t, "listener."+sock+".downstream_cx_total"); got != 1 {
		t.Errorf("listener.%s.downstream_cx_total = %d, want 1", sock, got)
	}
	if got := p.Stat(t, "http.pipe.downstream_rq_total"); got != 1 {
		t.Errorf("http.pipe.downstream_rq_total = %d, want 1", got)
	}
	if p.Admin != adminSock {
		t.Errorf("admin address = %q, want %q", p.Admin, adminSock)
	}
	out = curlUnix(t, adminSock, "http://admin/ready")
	if out != "LIVE\n\n200" {
		t.Errorf("curl the admin's pipe /ready: %q", out)
	}
	out = curlUnix(t, adminSock, "http://admin/listeners")
	if !strings.Contains(out, "http::"+sock) {
		t.Errorf("admin /listeners over the pipe: %q", out)
	}
}

// TestPipeAbstractNamespace: "@name" binds in Linux's abstract namespace:
// no file, reached by the same name.
func TestPipeAbstractNamespace(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	name := fmt.Sprintf("@legate-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	p := testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {pipe: {path: "`+name+`"}}
    filter_chains: [{filters: [`+hcmTo("abstract", "backend", "")+`]}]
  clusters:
  - `+staticCluster("backend", "", u.Addr)+"\n", nil)
	if p.Addr("http") != name {
		t.Errorf("bound address %q, want %q", p.Addr("http"), name)
	}
	code, _, body := testutil.Get(t, unixClient(name), "http://abstract/x")
	if code != 200 || !strings.Contains(body, "upstream=backend") {
		t.Fatalf("through the abstract socket: %d %q", code, body)
	}
	if got := p.Stat(t, "listener."+name+".downstream_cx_total"); got != 1 {
		t.Errorf("listener.%s.downstream_cx_total = %d, want 1", name, got)
	}
}

// TestPipeClusterEndpoint: a cluster endpoint on a pipe, served by a real
// Go HTTP server on a Unix socket, over HTTP/1.1 and HTTP/2.
func TestPipeClusterEndpoint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "backend.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// HTTP/1.1 and h2c (prior knowledge), as testutil's upstreams.
	hs := &http.Server{Handler: h2c.NewHandler(testutil.EchoHandler("unix-backend"), &http2.Server{})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	pipeCluster := func(name, extra string) string {
		return fmt.Sprintf(`{name: %s, connect_timeout: 1s, type: STATIC%s, load_assignment: {cluster_name: %s, endpoints: [{lb_endpoints: [{endpoint: {address: {pipe: {path: %s}}}}]}]}}`, name, extra, name, sock)
	}
	h2 := `, typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}`
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /h2}, route: {cluster: unix_h2}}", "{match: {prefix: /}, route: {cluster: unix}}"),
		clusters: "[" + pipeCluster("unix", "") + ", " + pipeCluster("unix_h2", h2) + "]",
	})
	c := testutil.Client()
	code, _, body := testutil.Get(t, c, p.URL("http", "/over-unix"))
	if code != 200 || !strings.Contains(body, "upstream=unix-backend") || !strings.Contains(body, "proto=HTTP/1.1") {
		t.Fatalf("to the pipe endpoint: %d %q", code, body)
	}
	code, _, body = testutil.Get(t, c, p.URL("http", "/h2"))
	if code != 200 || !strings.Contains(body, "proto=HTTP/2.0") {
		t.Fatalf("HTTP/2 to the pipe endpoint: %d %q", code, body)
	}
	if got := p.Stat(t, "cluster.unix.upstream_cx_total"); got != 1 {
		t.Errorf("cluster.unix.upstream_cx_total = %d, want 1", got)
	}
	_, _, clusters := testutil.Get(t, c, "http://"+p.Admin+"/clusters")
	if !strings.Contains(clusters, "unix::unix:"+sock+"::cx_total::1") {
		t.Errorf("/clusters does not show the pipe host:\n%s", clusters)
	}
	// Gone: a connect failure, as for any refused connection.
	hs.Close()
	os.Remove(sock)
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/gone"), "connection", "close"); code != 503 {
		t.Errorf("to a removed pipe: %d, want 503", code)
	}
	if got := p.Stat(t, "cluster.unix.upstream_cx_connect_fail"); got < 1 {
		t.Errorf("cluster.unix.upstream_cx_connect_fail = %d", got)
	}
}

// TestPipeConfigErrors: what Envoy refuses at load, naming the path.
func TestPipeConfigErrors(t *testing.T) {
	long := "/tmp/" + strings.Repeat("p", 110)
	for _, tc := range []struct{ name, addr, want string }{
		{"abstract with mode", `{pipe: {path: "@legate-abstract", mode: 0600}}`, `Cannot set mode for Abstract AF_UNIX sockets (pipe "@legate-abstract")`},
		{"path too long", `{pipe: {path: ` + long + `}}`, `Path "` + long + `" exceeds maximum UNIX domain socket path size of 108.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, where := range []string{"listener", "admin"} {
				admin, laddr := "{socket_address: {address: 127.0.0.1, port_value: 0}}", "{socket_address: {address: 127.0.0.1, port_value: 0}}"
				if where == "admin" {
					admin = tc.addr
				} else {
					laddr = tc.addr
				}
				_, err := testutil.TryStartProxy(t, `admin: {address: `+admin+`}
static_resources:
  listeners:
  - name: l
    address: `+laddr+`
    filter_chains: [{filters: [{name: echo, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}]}]
`, nil)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: error = %v, want one containing %q", where, err, tc.want)
				}
			}
		})
	}
}

// TestPipeListenerRawTCP: a tcp_proxy listener on a pipe relays bytes both
// ways with half-close.
func TestPipeListenerRawTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				c.Write(append([]byte("echo:"), b...))
			}()
		}
	}()
	sock := filepath.Join(t.TempDir(), "tcp.sock")
	testutil.StartProxy(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: tcp
    address: {pipe: {path: `+sock+`}}
    filter_chains: [{filters: [{name: tcp, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: pipe, cluster: echo}}]}]
  clusters:
  - `+staticCluster("echo", "", ln.Addr().String())+"\n", nil)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "over a pipe")
	conn.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "echo:over a pipe" {
		t.Fatalf("tcp_proxy on a pipe: %q, %v", b, err)
	}
}
