package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/stats"
)

// echoHandler answers with what it received: method, path, host, the
// x-test header, the body and its trailers (as response trailers).
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("x-method", r.Method)
	w.Header().Set("x-path", r.URL.RequestURI())
	w.Header().Set("x-host", r.Host)
	w.Header().Set("x-te", strings.Join(r.TransferEncoding, ","))
	w.Header().Set("Trailer", "x-req-trailer")
	if r.URL.Path == "/slow" {
		time.Sleep(2 * time.Second)
	}
	w.WriteHeader(200)
	w.Write(body)
	w.Header().Set("x-req-trailer", r.Trailer.Get("x-req-trailer"))
}

func testCluster(t *testing.T, addr string, h2 bool) (*Cluster, *Host) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	yaml := fmt.Sprintf(`name: c
type: STATIC
connect_timeout: 1s
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}`, host, port)
	if h2 {
		yaml += "\ntyped_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {\"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	} else {
		// Trailers cross HTTP/1 only with enable_trailers, as in Envoy.
		yaml += "\nhttp_protocol_options: {enable_trailers: true}"
	}
	pc := &clusterv3.Cluster{}
	if _, err := config.Decode([]byte(yaml), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	c, err := Compile(pc, "cluster", Deps{Stats: stats.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	<-c.Ready()
	h := c.Pick(&LBContext{})
	if h == nil {
		t.Fatal("no host")
	}
	return c, h
}

// TestExchange runs the same requests over HTTP/1.1 and HTTP/2: whole and
// streamed bodies of known and unknown length, request trailers, response
// trailers, and the head as the upstream saw it.
func TestExchange(t *testing.T) {
	h1srv := httptest.NewServer(http.HandlerFunc(echoHandler))
	defer h1srv.Close()
	h2srv := httptest.NewServer(h2c.NewHandler(http.HandlerFunc(echoHandler), &http2.Server{}))
	defer h2srv.Close()
	for _, proto := range []struct {
		name string
		addr string
		h2   bool
	}{{"http1", h1srv.Listener.Addr().String(), false}, {"http2", h2srv.Listener.Addr().String(), true}} {
		c, h := testCluster(t, proto.addr, proto.h2)
		for _, tc := range []struct {
			name     string
			body     []byte
			stream   string
			length   int64
			trailer  string
			wantBody string
			wantTE   string
		}{
			{name: "no body", wantBody: ""},
			{name: "whole body", body: []byte("hello"), length: 5, wantBody: "hello"},
			{name: "streamed, known length", body: []byte("he"), stream: "llo", length: 5, wantBody: "hello"},
			{name: "streamed, unknown length", body: []byte("he"), stream: "llo", length: -1, trailer: "t1", wantBody: "hello", wantTE: "chunked"},
		} {
			t.Run(proto.name+"/"+tc.name, func(t *testing.T) {
				var m headers.Map
				m.Add("x-test", "1")
				m.Add("te", "gzip") // dropped over HTTP/2 (RFC 9113 §8.2.2)
				req := Request{Method: "POST", Path: "/p?q=1", Authority: "example.com", Headers: &m, Body: tc.body, Length: tc.length}
				if tc.stream != "" {
					req.Stream = strings.NewReader(tc.stream)
				}
				if tc.trailer != "" {
					// Go's server keeps only declared trailers.
					m.Add("trailer", "x-req-trailer")
					req.Trailers = func() *headers.Map {
						var tr headers.Map
						tr.Add("x-req-trailer", tc.trailer)
						return &tr
					}
				}
				ex := c.Open(h, map[bool]Protocol{false: HTTP1, true: HTTP2}[proto.h2])
				var head http1.ResponseHead
				if err := ex.Send(&req, &head); err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(ex.Body())
				if err != nil {
					t.Fatal(err)
				}
				if head.Status != 200 || string(got) != tc.wantBody {
					t.Errorf("status %d body %q, want 200 %q", head.Status, got, tc.wantBody)
				}
				if v := head.Headers.Get("x-path"); v != "/p?q=1" {
					t.Errorf("path %q", v)
				}
				if v := head.Headers.Get("x-host"); v != "example.com" {
					t.Errorf("host %q", v)
				}
				if !proto.h2 {
					if v := head.Headers.Get("x-te"); v != tc.wantTE {
						t.Errorf("transfer-encoding %q, want %q", v, tc.wantTE)
					}
				}
				tr := ex.Trailers()
				if tc.trailer != "" && (tr == nil || tr.Get("x-req-trailer") != tc.trailer) {
					t.Errorf("trailers %v, want x-req-trailer %q", tr, tc.trailer)
				}
				ex.Close(true)
			})
		}
	}
}

// TestExchangeFailures: what each failure is called.
func TestExchangeFailures(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(echoHandler))
	defer srv.Close()
	c, h := testCluster(t, srv.Listener.Addr().String(), false)
	var m headers.Map

	t.Run("timeout", func(t *testing.T) {
		ex := c.Open(h, HTTP1)
		defer ex.Close(false)
		req := Request{Method: "GET", Path: "/slow", Authority: "a", Headers: &m, Deadline: time.Now().Add(100 * time.Millisecond)}
		var head http1.ResponseHead
		if k := FailOf(ex.Send(&req, &head)); k != FailTimeout {
			t.Errorf("kind %d, want FailTimeout", k)
		}
	})
	t.Run("idle", func(t *testing.T) {
		ex := c.Open(h, HTTP1)
		defer ex.Close(false)
		req := Request{Method: "GET", Path: "/slow", Authority: "a", Headers: &m, IdleTimeout: 100 * time.Millisecond}
		var head http1.ResponseHead
		if k := FailOf(ex.Send(&req, &head)); k != FailIdle {
			t.Errorf("kind %d, want FailIdle", k)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		ex := c.Open(h, HTTP1)
		defer ex.Close(false)
		req := Request{Method: "GET", Path: "/slow", Authority: "a", Headers: &m}
		time.AfterFunc(100*time.Millisecond, ex.Cancel)
		var head http1.ResponseHead
		start := time.Now()
		if err := ex.Send(&req, &head); err == nil {
			t.Error("a cancelled exchange succeeded")
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("cancel took %v", d)
		}
	})
	t.Run("source", func(t *testing.T) {
		ex := c.Open(h, HTTP1)
		defer ex.Close(false)
		bad := errors.New("client went away")
		req := Request{Method: "POST", Path: "/", Authority: "a", Headers: &m, Stream: io.MultiReader(strings.NewReader("x"), errReader{bad}), Length: -1}
		var head http1.ResponseHead
		err := ex.Send(&req, &head)
		if k := FailOf(err); k != FailSource || !errors.Is(err, bad) {
			t.Errorf("error %v (kind %d), want FailSource wrapping the body's error", err, k)
		}
	})
	t.Run("connect", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		c2, h2 := testCluster(t, addr, false)
		ex := c2.Open(h2, HTTP1)
		defer ex.Close(false)
		req := Request{Method: "GET", Path: "/", Authority: "a", Headers: &m}
		var head http1.ResponseHead
		if k := FailOf(ex.Send(&req, &head)); k != FailConnect {
			t.Errorf("kind %d, want FailConnect", k)
		}
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestExchangeReplaysOnStaleConnection: a pooled connection the upstream
// closed while idle is replaced once, transparently, when the request
// can be replayed.
func TestExchangeReplaysOnStaleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Each connection answers one request with keep-alive, then closes
	// without saying so (a stale pooled connection).
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := http1.NewReader(conn)
				if _, err := r.Head(64 * 1024); err != nil {
					return
				}
				conn.Write([]byte("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
			}()
		}
	}()
	c, h := testCluster(t, ln.Addr().String(), false)
	var m headers.Map
	for i := 0; i < 3; i++ {
		ex := c.Open(h, HTTP1)
		req := Request{Method: "POST", Path: "/", Authority: "a", Headers: &m, Body: []byte("x"), Length: 1}
		var head http1.ResponseHead
		if err := ex.Send(&req, &head); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(ex.Body())
		if !bytes.Equal(b, []byte("ok")) {
			t.Fatalf("request %d: body %q", i, b)
		}
		ex.Close(true)
		time.Sleep(20 * time.Millisecond) // let the server's close arrive
	}
}

// TestHealthEventLogHasNoCompileSideEffect: compiling a cluster (as a CDS
// update that may be rejected, or validate mode) creates no event log file;
// a missing directory is a config error naming the field.
func TestHealthEventLogHasNoCompileSideEffect(t *testing.T) {
	dir := t.TempDir()
	events := dir + "/events.log"
	compile := func(path string) error {
		yaml := `name: c
type: STATIC
connect_timeout: 1s
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, event_log_path: "` + path + `", tcp_health_check: {}}]`
		pc := &clusterv3.Cluster{}
		if _, err := config.Decode([]byte(yaml), pc, "cluster"); err != nil {
			t.Fatal(err)
		}
		_, err := Compile(pc, "cluster", Deps{Stats: stats.NewStore()})
		return err
	}
	if err := compile(events); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(events); !os.IsNotExist(err) {
		t.Errorf("compiling the cluster created %s (stat: %v)", events, err)
	}
	if err := compile(dir + "/missing/events.log"); err == nil || !strings.Contains(err.Error(), "event_log_path") {
		t.Errorf("error %v, want one naming event_log_path", err)
	}
}

// Regression: Manager.Get took the manager's lock, once per request on
// cluster_header routes; it must not wait for a cluster update in
// progress.
func TestManagerGetTakesNoLock(t *testing.T) {
	m := NewManager(Deps{Stats: stats.NewStore()})
	c, _ := testCluster(t, "127.0.0.1:1", false)
	m.Register(c)
	m.mu.Lock() // an update holds the lock
	got := make(chan *Cluster, 1)
	go func() { got <- m.Get(c.Name) }()
	select {
	case cl := <-got:
		if cl != c {
			t.Errorf("Get returned %v, want the registered cluster", cl)
		}
	case <-time.After(2 * time.Second):
		t.Error("Get waited for the manager's lock")
	}
	m.mu.Unlock()
}

// Regression (found by the soak): a connection in use when its host left
// the host set (an EDS update) went back to the removed host's pool, where
// nothing reused or swept it: the cluster's connection count only grew,
// until max_connections made requests wait for a release that never came
// (504 after the route timeout). It is closed on release now, and a
// request pending on a removed host fails at once (to be retried).
func TestRemovedHostConnectionsAreClosed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(echoHandler))
	defer srv.Close()
	c, h := testCluster(t, srv.Listener.Addr().String(), false)
	var m headers.Map
	ex := c.Open(h, HTTP1)
	req := Request{Method: "GET", Path: "/", Authority: "a", Headers: &m}
	var head http1.ResponseHead
	if err := ex.Send(&req, &head); err != nil {
		t.Fatal(err)
	}
	io.ReadAll(ex.Body())
	if n := c.cx.Load(); n != 1 {
		t.Fatalf("connections %d, want 1", n)
	}
	// The host leaves while its connection is still in use.
	other := newHost("127.0.0.1:1", HostConfig{Weight: 1})
	c.mu.Lock()
	c.setHosts([]*Host{other})
	c.mu.Unlock()
	ex.Close(true)
	if n := c.cx.Load(); n != 0 {
		t.Errorf("after its host was removed, the released connection is still counted (%d open): it leaked into the removed host's pool", n)
	}
	if !h.removed.Load() {
		t.Error("the host is not marked removed")
	}
}
