// Package testutil starts real servers for tests: upstream HTTP/1.1 and
// HTTP/2 servers on loopback and Legate proxies from YAML, and finds the
// repository's shared test inputs.
package testutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/legateproxy/legate/internal/server"
)

// Upstream is a real HTTP server on 127.0.0.1.
type Upstream struct {
	Addr string
	Srv  *http.Server
	mu   sync.Mutex
	hits int
}

// Hits returns how many requests the upstream served.
func (u *Upstream) Hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

// Host returns the upstream's IP and port separately.
func (u *Upstream) Host() (string, string) {
	h, p, _ := net.SplitHostPort(u.Addr)
	return h, p
}

// StartUpstream serves h over HTTP/1.1 and h2c (prior knowledge) on a
// loopback port until the test ends.
func StartUpstream(t testing.TB, h http.Handler) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &Upstream{Addr: ln.Addr().String()}
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	})
	u.Srv = &http.Server{Handler: h2c.NewHandler(counted, &http2.Server{})}
	go u.Srv.Serve(ln)
	t.Cleanup(func() { u.Srv.Close() })
	return u
}

// EchoHandler answers with a description of the request: the upstream's
// name, method, path, host and every header, one per line.
func EchoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var b strings.Builder
		fmt.Fprintf(&b, "upstream=%s\nmethod=%s\npath=%s\nhost=%s\nproto=%s\nbody=%s\n", name, r.Method, r.RequestURI, r.Host, r.Proto, body)
		for k, vs := range r.Header {
			for _, v := range vs {
				fmt.Fprintf(&b, "header:%s=%s\n", strings.ToLower(k), v)
			}
		}
		w.Header().Set("x-upstream", name)
		w.Write([]byte(b.String()))
	})
}

// Proxy is a running Legate instance.
type Proxy struct {
	Srv       *server.Server
	Listeners map[string]string // name → bound address
	Admin     string
	Logs      *bytes.Buffer
}

// URL returns http://<address of the named listener><path>.
func (p *Proxy) URL(listener, path string) string {
	return "http://" + p.Listeners[listener] + path
}

// Addr returns the bound address of the named listener.
func (p *Proxy) Addr(listener string) string { return p.Listeners[listener] }

// LogBuffer collects a process's output while a test reads it.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type syncBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// StartProxy renders the YAML template with data (Go text/template), loads
// it as `legate proxy --config-yaml` would, and starts it. Use port 0 for
// listeners and admin: the bound addresses are read back.
func StartProxy(t testing.TB, yamlTmpl string, data any) *Proxy {
	t.Helper()
	p, err := TryStartProxy(t, yamlTmpl, data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TryStartProxy is StartProxy returning the load error.
func TryStartProxy(t testing.TB, yamlTmpl string, data any) (*Proxy, error) {
	t.Helper()
	var y bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(yamlTmpl)).Execute(&y, data); err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug)
	log := slog.New(slog.NewTextHandler(&syncBuffer{b: logs}, &slog.HandlerOptions{Level: lv}))
	srv, err := server.Load(server.Options{ConfigYAML: y.String(), Log: log, LogLevel: lv, DrainTime: 2 * time.Second, Version: "test"})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("proxy logs:\n%s", logs.String())
		}
	})
	return &Proxy{Srv: srv, Listeners: srv.ListenerAddresses(), Admin: srv.AdminAddress(), Logs: logs}, nil
}

// Client returns an HTTP/1.1 client that does not follow redirects and
// does not reuse connections across tests.
func Client() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16},
	}
}

// H2CClient returns an HTTP/2 cleartext (prior knowledge) client.
func H2CClient() *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		},
	}
}

// Get performs a GET and returns status, headers and body.
func Get(t testing.TB, c *http.Client, url string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	return Do(t, c, "GET", url, "", hdr...)
}

// Do sends one request (hdr are name, value pairs; "host" sets the
// authority) and returns the status, headers and body.
func Do(t testing.TB, c *http.Client, method, url, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rb)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// SharedDir returns ../shared beside the repository (the conformance
// inputs); the test fails if it is missing, as CI always has it.
func SharedDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(RepoRoot(t), "..", "shared")
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("../shared is missing beside the repository: %v", err)
	}
	return d
}

// Eventually polls cond until it is true or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out: "+msg, args...)
}

// Stat reads one counter or gauge (-1 if absent).
func (p *Proxy) Stat(t testing.TB, name string) int64 {
	t.Helper()
	v, ok := p.Srv.Stats.Value(name)
	if !ok {
		return -1
	}
	return v
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that is free now and outside
// the kernel's ephemeral range (32768-60999 by default), so that nothing
// binding port 0 (an admin API, a client socket) can take it before the
// test binds it. Ports are drawn at random per process.
func FreePort(t testing.TB) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for i := 0; i < 1000; i++ {
		p := 20000 + rand.IntN(12000)
		if portsUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}
