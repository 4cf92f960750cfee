// HTTP/2: h2c downstream, HTTP/2 upstreams, headers across codecs.

package features_test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestHTTP2CleartextDownstream(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		hcm:      "codec_type: AUTO",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	code, _, body := testutil.Get(t, testutil.H2CClient(), p.URL("http", "/h2"))
	if code != 200 || !strings.Contains(body, "path=/h2") || !strings.Contains(body, "proto=HTTP/1.1") {
		t.Fatalf("h2c downstream → HTTP/1.1 upstream: %d\n%s", code, body)
	}
	if n := p.Stat(t, "http.ingress.downstream_cx_http2_total"); n != 1 {
		t.Errorf("downstream_cx_http2_total = %d", n)
	}
	// And with curl, as users do.
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command("curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", p.URL("http", "/curl")).Output()
		if err != nil || string(out) != "2 200" {
			t.Errorf("curl --http2-prior-knowledge: %q %v", out, err)
		}
	}
}

func TestHTTP2Upstream(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("h2"))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	down := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, use_downstream_protocol_config: {}}}"
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /h2}, route: {cluster: h2}}", "{match: {prefix: /down}, route: {cluster: down}}"),
		clusters: "[" + staticCluster("h2", h2, u.Addr) + ", " + staticCluster("down", down, u.Addr) + "]",
	})
	_, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/h2"))
	if !strings.Contains(body, "proto=HTTP/2.0") {
		t.Fatalf("explicit http2: upstream saw\n%s", body)
	}
	_, _, body = testutil.Get(t, testutil.Client(), p.URL("http", "/down"))
	if !strings.Contains(body, "proto=HTTP/1.1") {
		t.Fatalf("use_downstream_protocol with HTTP/1.1 downstream: upstream saw\n%s", body)
	}
	_, _, body = testutil.Get(t, testutil.H2CClient(), p.URL("http", "/down"))
	if !strings.Contains(body, "proto=HTTP/2.0") {
		t.Fatalf("use_downstream_protocol with HTTP/2 downstream: upstream saw\n%s", body)
	}
	if n := p.Stat(t, "cluster.h2.upstream_cx_http2_total"); n != 1 {
		t.Errorf("upstream_cx_http2_total = %d", n)
	}
}

// TestHTTP2ResponseHeadersOutliveUpstreamBuffer: response headers from an
// HTTP/1 upstream (parsed in place in the upstream connection's buffer)
// reach HTTP/2 clients intact even though x/net/http2 encodes them when
// the stream's handler ends, after the upstream connection went back to
// the pool and read the next response into that buffer. Before, clients
// saw corrupted values and the proxy could panic in the HPACK encoder.
func TestHTTP2ResponseHeadersOutliveUpstreamBuffer(t *testing.T) {
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "type/"+r.URL.Query().Get("id"))
		w.Header().Set("X-Echo", r.URL.Query().Get("id"))
		w.Write([]byte(r.URL.Query().Get("id")))
	}))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          codec_type: AUTO
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    # Two upstream connections for many streams: each is reused at once.
    circuit_breakers: {thresholds: [{max_connections: 2, max_pending_requests: 10000}]}
    load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, h, port), nil)
	c := testutil.H2CClient()
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	var first string
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				id := fmt.Sprintf("w%02d-%03d-%s", w, i, "abcdefghijklmnopqrstuvwxyz"[i%26:])
				resp, err := c.Get(p.URL("main", "/?id="+id))
				if err != nil {
					mu.Lock()
					bad++
					first = err.Error()
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.Header.Get("Content-Type") != "type/"+id || resp.Header.Get("X-Echo") != id || string(b) != id {
					mu.Lock()
					bad++
					first = fmt.Sprintf("want %s, got content-type %q x-echo %q body %q", id, resp.Header.Get("Content-Type"), resp.Header.Get("X-Echo"), b)
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of 1600 responses had wrong headers, e.g. %s", bad, first)
	}
}

// TestHTTP2RequestTrailers: request trailers a client declares (the
// Trailer field) reach an HTTP/2 upstream after the body, from an HTTP/2
// client and from an HTTP/1.1 chunked one (with enable_trailers, without
// which Envoy's HTTP/1 codec drops them).
func TestHTTP2RequestTrailers(t *testing.T) {
	got := make(chan string, 4)
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got <- r.Trailer.Get("x-checksum")
	}))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		hcm:      "codec_type: AUTO\nhttp_protocol_options: {enable_trailers: true}",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: h2}}"),
		clusters: "[" + staticCluster("h2", h2, u.Addr) + "]",
	})
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h2c client", testutil.H2CClient()}, {"http/1.1 client", testutil.Client()}} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", p.URL("http", "/upload"), pr)
		req.Trailer = http.Header{"X-Checksum": nil}
		go func() {
			io.WriteString(pw, "some body")
			req.Trailer.Set("X-Checksum", "abc123")
			pw.Close()
		}()
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		resp.Body.Close()
		if v := <-got; v != "abc123" {
			t.Errorf("%s: upstream saw trailer x-checksum %q, want abc123", c.name, v)
		}
	}
}
