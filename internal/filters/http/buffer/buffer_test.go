package buffer_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// The buffer filter with a 1 KiB limit, as Envoy's integration tests
// configure it (small_buffer_filter), and routes that override it per
// route. A Lua filter after it reports the content-length it sees, the
// way a later filter of Envoy's chain would.
const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/disabled"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
                    disabled: true
              - match: {prefix: "/small"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
                    buffer: {max_request_bytes: 16}
              - match: {prefix: "/large"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
                    buffer: {max_request_bytes: 65536}
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: 1024
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  function envoy_on_request(h)
                    h:headers():add("x-seen-content-length", h:headers():get("content-length") or "none")
                  end
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`

// seen is what the backend received.
type seen struct {
	contentLength    int64 // -1: none (chunked)
	transferEncoding string
	seenByFilter     string // the content-length the filter after the buffer filter saw
	body             string
}

// String shortens the body for failure messages.
func (s seen) String() string {
	b := s.body
	if len(b) > 40 {
		b = fmt.Sprintf("%s… (%d bytes)", b[:20], len(b))
	}
	return fmt.Sprintf("{content-length %d, transfer-encoding %q, content-length seen by the next filter %q, body %q}",
		s.contentLength, s.transferEncoding, s.seenByFilter, b)
}

// backend records each request; started is signalled when a request's
// head reaches it (before its body is read).
type backend struct {
	mu      sync.Mutex
	reqs    []seen
	started chan string
}

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case b.started <- r.URL.Path:
	default:
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	b.mu.Lock()
	b.reqs = append(b.reqs, seen{r.ContentLength, strings.Join(r.TransferEncoding, ","), r.Header.Get("x-seen-content-length"), string(body)})
	b.mu.Unlock()
	w.Write([]byte("ok"))
}

func (b *backend) last(t *testing.T) seen {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reqs) == 0 {
		t.Fatal("the backend got no request")
	}
	return b.reqs[len(b.reqs)-1]
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.reqs)
}

func start(t *testing.T) (*backend, *testutil.Proxy) {
	b := &backend{started: make(chan string, 16)}
	up := testutil.StartUpstream(t, b)
	h, port := up.Host()
	return b, testutil.StartProxy(t, cfg, map[string]string{"Host": h, "Port": port})
}

// chunkedRequest writes a chunked POST to path on a raw connection: the
// head and the first chunk, then, after between(), the other chunks and
// the end of the body. It returns the response.
func chunkedRequest(t *testing.T, addr, path string, between func(), chunks ...string) (*http.Response, string) {
	t.Helper()
	return chunkedRequestWithTrailers(t, addr, path, "", between, chunks...)
}

// chunkedRequestWithTrailers is chunkedRequest ending the body with
// trailers (header lines, each ending in CRLF).
func chunkedRequestWithTrailers(t *testing.T, addr, path, trailers string, between func(), chunks ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	write := func(s string) {
		if _, err := io.WriteString(c, s); err != nil {
			t.Fatal(err)
		}
	}
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
	write("POST " + path + " HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(chunks[0]))
	if between != nil {
		between()
	}
	var rest strings.Builder
	for _, s := range chunks[1:] {
		rest.WriteString(chunk(s))
	}
	write(rest.String() + "0\r\n" + trailers + "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// A chunked body is held until it is complete, then arrives at the backend
// in one piece with content-length set (Envoy's maybeAddContentLength) and
// without transfer-encoding; a later filter sees the content-length too.
func TestBufferedChunkedBodyGetsContentLength(t *testing.T) {
	b, p := start(t)
	resp, body := chunkedRequest(t, p.Addr("http"), "/", func() {
		select {
		case path := <-b.started:
			t.Errorf("the request reached the backend (%s) before its body was complete", path)
		case <-time.After(300 * time.Millisecond):
		}
	}, "hello ", "buffered ", "world")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s), want 200", resp.StatusCode, body)
	}
	got := b.last(t)
	want := seen{contentLength: 20, seenByFilter: "20", body: "hello buffered world"}
	if got != want {
		t.Fatalf("backend saw %v, want %v", got, want)
	}

	// A body ending in trailers gets content-length too (Envoy's
	// RouterRequestPopulateContentLengthOnTrailers).
	resp, body = chunkedRequestWithTrailers(t, p.Addr("http"), "/", "x-trailer: t\r\n", nil, "0123", "456", "789")
	if resp.StatusCode != 200 {
		t.Fatalf("with trailers: status %d (%s), want 200", resp.StatusCode, body)
	}
	if got, want := b.last(t), (seen{contentLength: 10, seenByFilter: "10", body: "0123456789"}); got != want {
		t.Fatalf("with trailers: backend saw %v, want %v", got, want)
	}

	// A request with content-length keeps it (ContentLengthPopulationAlreadyPresent).
	code, _, rb := testutil.Do(t, testutil.Client(), "POST", p.URL("http", "/"), "abc")
	if code != 200 {
		t.Fatalf("status %d (%s), want 200", code, rb)
	}
	if got, want := b.last(t), (seen{contentLength: 3, seenByFilter: "3", body: "abc"}); got != want {
		t.Fatalf("backend saw %v, want %v", got, want)
	}
}

// A body over max_request_bytes gets the filter manager's 413 and never
// reaches the backend; one at the limit passes.
func TestBodyOverLimitIs413(t *testing.T) {
	b, p := start(t)
	c := testutil.Client()
	code, _, body := testutil.Do(t, c, "POST", p.URL("http", "/"), strings.Repeat("x", 1025))
	if code != 413 || body != "Payload Too Large" {
		t.Fatalf("got %d %q, want 413 \"Payload Too Large\"", code, body)
	}
	resp, body := chunkedRequest(t, p.Addr("http"), "/", nil, strings.Repeat("y", 600), strings.Repeat("z", 600))
	if resp.StatusCode != 413 || body != "Payload Too Large" {
		t.Fatalf("chunked: got %d %q, want 413 \"Payload Too Large\"", resp.StatusCode, body)
	}
	if n := b.count(); n != 0 {
		t.Fatalf("the backend got %d requests, want none", n)
	}
	code, _, body = testutil.Do(t, c, "POST", p.URL("http", "/"), strings.Repeat("x", 1024))
	if code != 200 {
		t.Fatalf("a body of max_request_bytes: got %d %q, want 200", code, body)
	}
	_, _, stats := testutil.Get(t, c, "http://"+p.Admin+"/stats?filter=downstream_rq_too_large")
	if !strings.Contains(stats, "http.ingress.downstream_rq_too_large: 2") {
		t.Fatalf("stats: %q, want http.ingress.downstream_rq_too_large: 2", stats)
	}
}

// BufferPerRoute disabled: the body streams to the backend as it comes
// (chunked, no content-length added) and the filter's limit does not apply.
func TestPerRouteDisabledStreams(t *testing.T) {
	b, p := start(t)
	big := strings.Repeat("b", 2048)
	resp, body := chunkedRequest(t, p.Addr("http"), "/disabled", func() {
		select {
		case <-b.started:
		case <-time.After(5 * time.Second):
			t.Error("the request did not reach the backend before its body was complete")
		}
	}, "first ", big)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s), want 200", resp.StatusCode, body)
	}
	want := seen{contentLength: -1, transferEncoding: "chunked", seenByFilter: "none", body: "first " + big}
	if got := b.last(t); got != want {
		t.Fatalf("backend saw %v, want %v", got, want)
	}
}

// BufferPerRoute buffer: the route's max_request_bytes replaces the
// filter's, smaller (413) or larger (Envoy's RouteOverride test).
func TestPerRouteOverride(t *testing.T) {
	b, p := start(t)
	resp, body := chunkedRequest(t, p.Addr("http"), "/small", nil, "0123456789", "0123456789")
	if resp.StatusCode != 413 || body != "Payload Too Large" {
		t.Fatalf("/small, 20 bytes: got %d %q, want 413", resp.StatusCode, body)
	}
	if n := b.count(); n != 0 {
		t.Fatalf("the backend got %d requests, want none", n)
	}
	resp, body = chunkedRequest(t, p.Addr("http"), "/small", nil, "0123456789", "012345")
	if resp.StatusCode != 200 {
		t.Fatalf("/small, 16 bytes: got %d %q, want 200", resp.StatusCode, body)
	}
	if got, want := b.last(t), (seen{contentLength: 16, seenByFilter: "16", body: "0123456789012345"}); got != want {
		t.Fatalf("backend saw %v, want %v", got, want)
	}
	big := strings.Repeat("l", 20000)
	resp, body = chunkedRequest(t, p.Addr("http"), "/large", nil, big, big)
	if resp.StatusCode != 200 {
		t.Fatalf("/large, 40000 bytes: got %d %q, want 200", resp.StatusCode, body)
	}
	if got := b.last(t); got.contentLength != 40000 || got.seenByFilter != "40000" || got.transferEncoding != "" {
		t.Fatalf("backend saw content-length %d (filter saw %q), transfer-encoding %q; want 40000 and none",
			got.contentLength, got.seenByFilter, got.transferEncoding)
	}
}

// max_request_bytes is required (protoc-gen-validate), and the v2 name
// envoy.buffer selects the filter.
func TestConfig(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	h, port := up.Host()
	noMax := strings.Replace(cfg, "              max_request_bytes: 1024\n", "", 1)
	if _, err := testutil.TryStartProxy(t, noMax, map[string]string{"Host": h, "Port": port}); err == nil || !strings.Contains(err.Error(), "max_request_bytes") {
		t.Fatalf("no max_request_bytes: got %v, want an error naming max_request_bytes", err)
	}
	v2 := strings.Replace(cfg, `          - name: envoy.filters.http.buffer
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
              max_request_bytes: 1024
`, `          - name: envoy.buffer
            config: {max_request_bytes: 16}
`, 1)
	p := testutil.StartProxy(t, v2, map[string]string{"Host": h, "Port": port})
	c := testutil.Client()
	if code, _, body := testutil.Do(t, c, "POST", p.URL("http", "/"), strings.Repeat("x", 17)); code != 413 {
		t.Fatalf("envoy.buffer with v2 config, 17 bytes: got %d %q, want 413", code, body)
	}
	if code, _, body := testutil.Do(t, c, "POST", p.URL("http", "/"), strings.Repeat("x", 16)); code != 200 {
		t.Fatalf("envoy.buffer with v2 config, 16 bytes: got %d %q, want 200", code, body)
	}
	// A per-route key with the v2 name finds the filter the loader renamed
	// (it used to be silently not applied).
	v2pr := strings.Replace(v2, `                typed_per_filter_config:
                  envoy.filters.http.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
                    disabled: true`, `                typed_per_filter_config:
                  envoy.buffer:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute
                    disabled: true`, 1)
	p = testutil.StartProxy(t, v2pr, map[string]string{"Host": h, "Port": port})
	if code, _, body := testutil.Do(t, c, "POST", p.URL("http", "/disabled"), strings.Repeat("x", 17)); code != 200 {
		t.Fatalf("per-route envoy.buffer disabled, 17 bytes: got %d %q, want 200 (the filter disabled on the route)", code, body)
	}
}

// As an upstream HTTP filter (a cluster's HttpProtocolOptions.http_filters,
// which Envoy allows for the buffer filter), the request to the host is
// buffered within max_request_bytes: a larger body is 413 and never
// reaches the host; a smaller chunked one arrives with content-length.
func TestUpstreamFilter(t *testing.T) {
	b := &backend{started: make(chan string, 16)}
	up := testutil.StartUpstream(t, b)
	h, port := up.Host()
	p := testutil.StartProxy(t, upstreamCfg, map[string]string{"Host": h, "Port": port})
	resp, body := chunkedRequest(t, p.Addr("http"), "/", nil, "0123456789", "0123456789")
	if resp.StatusCode != 413 || body != "Payload Too Large" {
		t.Fatalf("20 bytes: got %d %q, want 413 \"Payload Too Large\"", resp.StatusCode, body)
	}
	if n := b.count(); n != 0 {
		t.Fatalf("the backend got %d requests, want none", n)
	}
	resp, body = chunkedRequest(t, p.Addr("http"), "/", func() {
		select {
		case <-b.started:
			t.Error("the request reached the backend before its body was complete")
		case <-time.After(300 * time.Millisecond):
		}
	}, "01234567", "89")
	if resp.StatusCode != 200 {
		t.Fatalf("10 bytes: got %d %q, want 200", resp.StatusCode, body)
	}
	if got := b.last(t); got.contentLength != 10 || got.transferEncoding != "" || got.body != "0123456789" {
		t.Fatalf("backend saw %v, want content-length 10 and no transfer-encoding", got)
	}
}

const upstreamCfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http_protocol_options: {}}
        http_filters:
        - name: envoy.filters.http.buffer
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
            max_request_bytes: 16
        - name: envoy.filters.http.upstream_codec
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`
