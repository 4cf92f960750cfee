// External processing: envoy.filters.http.ext_proc against a real
// grpc-go ExternalProcessor server on loopback (go-control-plane's
// envoy.service.ext_proc.v3), reached through an HTTP/2 cluster.

package features_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/testutil"
)

// procFunc answers one processing request of the stream whose request
// path is path (empty when request headers are not sent); nil sends no
// answer.
type procFunc func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse

// processor is a real ExternalProcessor gRPC server; it records what it
// received.
type processor struct {
	extprocsvc.UnimplementedExternalProcessorServer
	fn   procFunc
	mu   sync.Mutex
	reqs []*extprocsvc.ProcessingRequest
	// md is each stream's initial metadata, by the request path.
	md map[string]metadata.MD
}

func (p *processor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	path := ""
	md, _ := metadata.FromIncomingContext(s.Context())
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		if h := req.GetRequestHeaders(); h != nil {
			path = procHeader(h.GetHeaders(), ":path")
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		if p.md == nil {
			p.md = map[string]metadata.MD{}
		}
		p.md[path] = md
		p.mu.Unlock()
		if resp := p.fn(path, req); resp != nil {
			if err := s.Send(resp); err != nil {
				return nil
			}
		}
	}
}

// received returns the requests of the given kind, in order.
func (p *processor) received(match func(*extprocsvc.ProcessingRequest) bool) []*extprocsvc.ProcessingRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*extprocsvc.ProcessingRequest
	for _, r := range p.reqs {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func startProcessor(t *testing.T, fn procFunc) (*processor, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &processor{fn: fn}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, p)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return p, ln.Addr().String()
}

func procHeader(m *corev3.HeaderMap, name string) string {
	for _, h := range m.GetHeaders() {
		if h.GetKey() == name {
			if len(h.GetRawValue()) > 0 {
				return string(h.GetRawValue())
			}
			return h.GetValue()
		}
	}
	return ""
}

// mutation builds a HeaderMutation: set is name, value pairs.
func mutation(remove []string, set ...string) *extprocsvc.HeaderMutation {
	m := &extprocsvc.HeaderMutation{RemoveHeaders: remove}
	for i := 0; i+1 < len(set); i += 2 {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: set[i], RawValue: []byte(set[i+1])}})
	}
	return m
}

func reqHeadersResp(c *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: c}}}
}

func respHeadersResp(c *extprocsvc.CommonResponse) *extprocsvc.ProcessingResponse {
	return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocsvc.HeadersResponse{Response: c}}}
}

func bodyMut(b []byte) *extprocsvc.BodyMutation {
	return &extprocsvc.BodyMutation{Mutation: &extprocsvc.BodyMutation_Body{Body: b}}
}

// extProcCluster is the processor's HTTP/2 cluster.
func extProcCluster(addr string) string {
	return staticCluster("extproc", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}", addr)
}

// extProcFilters renders http_filters: ext_proc (with extra fields) and
// the router.
func extProcFilters(extra string) string {
	return `http_filters: [{name: envoy.filters.http.ext_proc, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor, grpc_service: {envoy_grpc: {cluster_name: extproc}}, ` + extra + `}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
}

// perRoute renders a route's ExtProcPerRoute.
func perRoute(body string) string {
	return `typed_per_filter_config: {envoy.filters.http.ext_proc: {"@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute, ` + body + `}}`
}

// TestExtProcHeaders: the processor adds and removes request headers (the
// upstream sees it) and adds a response header (the client sees it);
// /deny gets the processor's immediate response (status, body, headers);
// a per-route disabled route is not processed, and a per-route
// processing_mode override processes only the response headers.
func TestExtProcHeaders(t *testing.T) {
	proc, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		switch {
		case req.GetRequestHeaders() != nil && path == "/deny":
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocsvc.ImmediateResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: []byte("denied by processor"),
				Headers: mutation(nil, "x-why", "policy"), Details: "custom denial"}}}
		case req.GetRequestHeaders() != nil:
			return reqHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation([]string{"x-remove"}, "x-added", "yes", "x-method-seen", procHeader(req.GetRequestHeaders().GetHeaders(), ":method"))})
		case req.GetResponseHeaders() != nil:
			return respHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation([]string{"x-upstream"}, "x-resp", "status-"+procHeader(req.GetResponseHeaders().GetHeaders(), ":status"))})
		}
		return nil
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm: extProcFilters("message_timeout: 5s"),
		vhosts: vhost(
			`{match: {prefix: /off}, route: {cluster: up}, `+perRoute(`disabled: true`)+`}`,
			`{match: {prefix: /resp-only}, route: {cluster: up}, `+perRoute(`overrides: {processing_mode: {request_header_mode: SKIP}}`)+`}`,
			`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	c := testutil.Client()

	code, h, body := testutil.Get(t, c, p.URL("http", "/hello"), "x-remove", "gone", "x-keep", "kept")
	if code != 200 || !strings.Contains(body, "header:x-added=yes") || !strings.Contains(body, "header:x-method-seen=GET") ||
		strings.Contains(body, "x-remove") || !strings.Contains(body, "header:x-keep=kept") {
		t.Fatalf("processed request: %d\n%s", code, body)
	}
	if h.Get("x-resp") != "status-200" || h.Get("x-upstream") != "" {
		t.Fatalf("processed response headers: %v", h)
	}

	code, h, body = testutil.Get(t, c, p.URL("http", "/deny"))
	if code != 403 || body != "denied by processor" || h.Get("x-why") != "policy" {
		t.Fatalf("immediate response: %d %v %q", code, h, body)
	}

	before := len(proc.received(func(*extprocsvc.ProcessingRequest) bool { return true }))
	code, h, body = testutil.Get(t, c, p.URL("http", "/off"))
	if code != 200 || strings.Contains(body, "x-added") || h.Get("x-resp") != "" {
		t.Fatalf("disabled route was processed: %d %v\n%s", code, h, body)
	}
	if n := len(proc.received(func(*extprocsvc.ProcessingRequest) bool { return true })); n != before {
		t.Fatalf("the processor got %d messages for a disabled route", n-before)
	}

	code, h, body = testutil.Get(t, c, p.URL("http", "/resp-only"))
	if code != 200 || strings.Contains(body, "x-added") || h.Get("x-resp") != "status-200" {
		t.Fatalf("per-route mode override: %d %v\n%s", code, h, body)
	}

	// Three processed requests opened streams; /deny's immediate response
	// counts as a received message.
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "http.ingress.ext_proc.streams_closed") == 3 }, "streams_closed")
	if s := p.Stat(t, "http.ingress.ext_proc.streams_started"); s != 3 {
		t.Fatalf("streams_started = %d", s)
	}
	if s := p.Stat(t, "http.ingress.ext_proc.stream_msgs_sent"); s != 4 {
		t.Fatalf("stream_msgs_sent = %d", s)
	}
	if s := p.Stat(t, "http.ingress.ext_proc.stream_msgs_received"); s != 4 {
		t.Fatalf("stream_msgs_received = %d", s)
	}
}

// TestExtProcBodies: BUFFERED bodies are replaced in both directions (the
// upstream and the client see the processor's bodies, with the request's
// content-length fixed by a header mutation of the body response); a
// STREAMED request body reaches the processor chunk by chunk and each
// chunk is upper-cased; a mode_override from the headers response turns
// on response body processing for one request.
func TestExtProcBodies(t *testing.T) {
	_, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		switch {
		case req.GetRequestHeaders() != nil:
			r := reqHeadersResp(&extprocsvc.CommonResponse{})
			if path == "/override" {
				r.ModeOverride = &extprocv3.ProcessingMode{ResponseBodyMode: extprocv3.ProcessingMode_BUFFERED, ResponseHeaderMode: extprocv3.ProcessingMode_SKIP}
			}
			return r
		case req.GetResponseHeaders() != nil:
			return respHeadersResp(&extprocsvc.CommonResponse{})
		case req.GetRequestBody() != nil:
			b := req.GetRequestBody()
			if path == "" { // the streamed route sends no headers
				return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{
					Response: &extprocsvc.CommonResponse{BodyMutation: bodyMut(bytes.ToUpper(b.GetBody()))}}}}
			}
			nb := []byte("replaced[" + string(b.GetBody()) + "]")
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{
				Response: &extprocsvc.CommonResponse{HeaderMutation: mutation(nil, "content-length", fmt.Sprint(len(nb)), "x-body-seen", fmt.Sprint(b.GetEndOfStream())),
					BodyMutation: bodyMut(nb)}}}}
		case req.GetResponseBody() != nil:
			nb := []byte("response from processor, upstream said " + fmt.Sprint(len(req.GetResponseBody().GetBody())) + " bytes")
			// In BUFFERED mode with the headers held, the content-length
			// must match the new body (Envoy rejects it otherwise).
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseBody{ResponseBody: &extprocsvc.BodyResponse{
				Response: &extprocsvc.CommonResponse{HeaderMutation: mutation(nil, "x-resp-body", "processed", "content-length", fmt.Sprint(len(nb))),
					BodyMutation: bodyMut(nb)}}}}
		}
		return nil
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm: extProcFilters("message_timeout: 5s, allow_mode_override: true, processing_mode: {request_body_mode: BUFFERED, response_body_mode: BUFFERED}"),
		vhosts: vhost(
			`{match: {prefix: /stream}, route: {cluster: up}, `+perRoute(`overrides: {processing_mode: {request_header_mode: SKIP, response_header_mode: SKIP, request_body_mode: STREAMED}}`)+`}`,
			`{match: {prefix: /override}, route: {cluster: up}, `+perRoute(`overrides: {processing_mode: {}}`)+`}`,
			`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	c := testutil.Client()

	code, h, body := testutil.Do(t, c, "POST", p.URL("http", "/buffered"), "original body")
	if code != 200 || !strings.HasPrefix(body, "response from processor, upstream said ") || strings.HasSuffix(body, " 0 bytes") {
		t.Fatalf("buffered response body: %d %q", code, body)
	}
	if h.Get("x-resp-body") != "processed" {
		t.Fatalf("body response header mutation: %v", h)
	}

	code, _, body = testutil.Do(t, c, "POST", p.URL("http", "/override"), "xyz")
	if code != 200 || !strings.HasPrefix(body, "response from processor") {
		t.Fatalf("mode_override (response body BUFFERED): %d %q", code, body)
	}

	// A streamed request body, written in pieces.
	pr, pw := io.Pipe()
	go func() {
		for _, s := range []string{"first chunk ", "second chunk ", "last chunk"} {
			pw.Write([]byte(s))
			time.Sleep(20 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", p.URL("http", "/stream"), pr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(rb), "body=FIRST CHUNK SECOND CHUNK LAST CHUNK\n") {
		t.Fatalf("streamed body: %d\n%s", resp.StatusCode, rb)
	}
}

// TestExtProcBufferedRequestReplaced: the upstream receives the body the
// processor made, with the content-length the processor set.
func TestExtProcBufferedRequestReplaced(t *testing.T) {
	_, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		switch {
		case req.GetRequestHeaders() != nil:
			return reqHeadersResp(&extprocsvc.CommonResponse{})
		case req.GetRequestBody() != nil:
			nb := []byte("replaced[" + string(req.GetRequestBody().GetBody()) + "]")
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{
				Response: &extprocsvc.CommonResponse{HeaderMutation: mutation(nil, "content-length", fmt.Sprint(len(nb)),
					"x-end-of-stream", fmt.Sprint(req.GetRequestBody().GetEndOfStream())), BodyMutation: bodyMut(nb)}}}}
		}
		return nil
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s, processing_mode: {request_body_mode: BUFFERED, response_header_mode: SKIP}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	code, _, body := testutil.Do(t, testutil.Client(), "POST", p.URL("http", "/x"), "original body")
	if code != 200 || !strings.Contains(body, "body=replaced[original body]\n") || !strings.Contains(body, "header:x-end-of-stream=true") {
		t.Fatalf("upstream view: %d\n%s", code, body)
	}
}

// TestExtProcFailures: an unreachable processor fails the request with
// 500 (streams_failed), or lets it through with failure_mode_allow
// (failure_mode_allowed); a processor that does not answer within
// message_timeout gets 504 (message_timeouts), or, with
// failure_mode_allow, the request goes on unprocessed.
func TestExtProcFailures(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	_, silent := startProcessor(t, func(string, *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse { return nil })
	c := testutil.Client()
	for _, tc := range []struct {
		name, addr, extra string
		code              int
		details           string
		counters          []string
	}{
		// 14 is UNAVAILABLE, as Envoy's ext_proc_error_gRPC_error_%i.
		{"unreachable", dead, "", 500, "ext_proc_error_gRPC_error_14", []string{"streams_failed"}},
		{"unreachable allowed", dead, "failure_mode_allow: true", 200, "via_upstream", []string{"streams_failed", "failure_mode_allowed"}},
		{"timeout", silent, "message_timeout: 0.2s", 504, "ext_proc_error_per-message_timeout_exceeded", []string{"message_timeouts"}},
		{"timeout allowed", silent, "message_timeout: 0.2s, failure_mode_allow: true", 200, "via_upstream", []string{"message_timeouts", "failure_mode_allowed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "access.log")
			p := start(t, cfg{
				hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"}}}]
` + extProcFilters(tc.extra),
				vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
				clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(tc.addr) + "]",
			})
			code, _, body := testutil.Get(t, c, p.URL("http", "/x"))
			if code != tc.code {
				t.Fatalf("status %d, want %d\n%s", code, tc.code, body)
			}
			if tc.code == 200 && !strings.Contains(body, "upstream=up") {
				t.Fatalf("the request did not reach the upstream: %s", body)
			}
			for _, n := range tc.counters {
				if v := p.Stat(t, "http.ingress.ext_proc."+n); v != 1 {
					t.Fatalf("%s = %d, want 1", n, v)
				}
			}
			want := fmt.Sprintf("%d %s\n", tc.code, tc.details)
			testutil.Eventually(t, 5*time.Second, func() bool {
				b, _ := os.ReadFile(logPath)
				return string(b) == want
			}, "access log %q", want)
		})
	}
}

// TestExtProcMutationRules: by default an x-envoy header mutation is
// ignored (rejected_header_mutations) and the request goes on; with
// disallow_system and disallow_is_error, a processor changing :path fails
// the request with 500.
func TestExtProcMutationRules(t *testing.T) {
	_, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() != nil {
			return reqHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation(nil, "x-envoy-sneaky", "1", ":path", "/rewritten", "x-fine", "ok")})
		}
		return respHeadersResp(&extprocsvc.CommonResponse{})
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	c := testutil.Client()

	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	code, _, body := testutil.Get(t, c, p.URL("http", "/orig"))
	if code != 200 || strings.Contains(body, "x-envoy-sneaky") || !strings.Contains(body, "path=/rewritten\n") || !strings.Contains(body, "header:x-fine=ok") {
		t.Fatalf("default rules: %d\n%s", code, body)
	}
	if v := p.Stat(t, "http.ingress.ext_proc.rejected_header_mutations"); v != 1 {
		t.Fatalf("rejected_header_mutations = %d", v)
	}

	strict := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s, mutation_rules: {disallow_system: true, disallow_is_error: true}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	hits := up.Hits()
	code, _, _ = testutil.Get(t, c, strict.URL("http", "/orig"))
	if code != 500 || up.Hits() != hits {
		t.Fatalf("disallow_is_error: %d (upstream hits %d → %d)", code, hits, up.Hits())
	}
}

// TestExtProcConfigRefused: what Legate does not implement is refused at
// load, naming the field.
func TestExtProcConfigRefused(t *testing.T) {
	for _, tc := range []struct{ extra, want string }{
		{"observability_mode: true", "observability_mode"},
		{"processing_mode: {request_body_mode: FULL_DUPLEX_STREAMED}", "request_body_mode"},
		{"request_attributes: [request.path]", "request_attributes"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{hcm: extProcFilters(tc.extra), vhosts: vhost(`{match: {prefix: /}, route: {cluster: extproc}}`),
			clusters: "[" + extProcCluster("127.0.0.1:1") + "]"}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: %v", tc.extra, err)
		}
	}
}

// TestExtProcTrailers: with response_trailer_mode SEND, the processor
// sees the trailers of an HTTP/2 upstream and changes them; the client
// receives the changed trailers.
func TestExtProcTrailers(t *testing.T) {
	proc, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if tr := req.GetResponseTrailers(); tr != nil {
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocsvc.TrailersResponse{
				HeaderMutation: mutation(nil, "x-proc-trailer", "saw-"+procHeader(tr.GetTrailers(), "x-up-trailer"))}}}
		}
		return nil
	})
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "x-up-trailer")
		w.Write([]byte("body"))
		w.Header().Set("x-up-trailer", "t1")
	}))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s, processing_mode: {request_header_mode: SKIP, response_header_mode: SKIP, response_trailer_mode: SEND}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", h2, up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	resp, err := testutil.H2CClient().Get(p.URL("http", "/t"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "body" {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	if got := resp.Trailer.Get("x-proc-trailer"); got != "saw-t1" || resp.Trailer.Get("x-up-trailer") != "t1" {
		t.Fatalf("trailers %v", resp.Trailer)
	}
	if n := len(proc.received(func(r *extprocsvc.ProcessingRequest) bool { return r.GetResponseTrailers() != nil })); n != 1 {
		t.Fatalf("the processor got %d trailers messages", n)
	}
}

// metadataOf returns the initial metadata the processor got with the
// stream of a request path.
func (p *processor) metadataOf(path, key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.md[path].Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// TestExtProcRouting: a :path mutation with clear_route_cache re-routes
// the request (without it the route stays); the processor's
// dynamic_metadata is published in the receiving namespaces only; a
// CONTINUE_AND_REPLACE headers response gives a header-only request the
// processor's body; grpc_service.initial_metadata goes with every stream
// and a route's grpc_initial_metadata is merged in.
func TestExtProcRouting(t *testing.T) {
	proc, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() == nil {
			return respHeadersResp(&extprocsvc.CommonResponse{})
		}
		md, _ := structpb.NewStruct(map[string]any{"proc.ns": map[string]any{"k": "v1"}, "other.ns": map[string]any{"k": "x"}})
		var r *extprocsvc.ProcessingResponse
		switch path {
		case "/reroute":
			r = reqHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation(nil, ":path", "/other/x"), ClearRouteCache: true})
		case "/reroute-nocache":
			r = reqHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation(nil, ":path", "/other/y")})
		case "/replace":
			r = reqHeadersResp(&extprocsvc.CommonResponse{Status: extprocsvc.CommonResponse_CONTINUE_AND_REPLACE, BodyMutation: bodyMut([]byte("made by processor"))})
		default:
			r = reqHeadersResp(&extprocsvc.CommonResponse{})
		}
		r.DynamicMetadata = md
		return r
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	other := testutil.StartUpstream(t, testutil.EchoHandler("other"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := start(t, cfg{
		hcm: `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%DYNAMIC_METADATA(proc.ns:k)% %DYNAMIC_METADATA(other.ns:k)% %UPSTREAM_CLUSTER%\n"}}}]
` + strings.Replace(extProcFilters("message_timeout: 5s, metadata_options: {receiving_namespaces: {untyped: [proc.ns]}}"),
			"{envoy_grpc: {cluster_name: extproc}}", "{envoy_grpc: {cluster_name: extproc}, initial_metadata: [{key: x-filter-md, value: f1}, {key: x-shared, value: filter}]}", 1),
		vhosts: vhost(
			`{match: {prefix: /other}, route: {cluster: other}}`,
			`{match: {prefix: /meta}, route: {cluster: up}, `+perRoute(`overrides: {grpc_initial_metadata: [{key: x-route-md, value: r1}, {key: x-shared, value: route}]}`)+`}`,
			`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + staticCluster("other", "", other.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	c := testutil.Client()
	if _, _, body := testutil.Get(t, c, p.URL("http", "/reroute")); upstreamOf(body) != "upstream=other" || !strings.Contains(body, "path=/other/x\n") {
		t.Fatalf("clear_route_cache: %s", body)
	}
	if _, _, body := testutil.Get(t, c, p.URL("http", "/reroute-nocache")); upstreamOf(body) != "upstream=up" || !strings.Contains(body, "path=/other/y\n") {
		t.Fatalf("without clear_route_cache: %s", body)
	}
	if _, _, body := testutil.Get(t, c, p.URL("http", "/replace")); !strings.Contains(body, "body=made by processor\n") {
		t.Fatalf("CONTINUE_AND_REPLACE: %s", body)
	}
	testutil.Get(t, c, p.URL("http", "/meta"))
	if proc.metadataOf("/meta", "x-route-md") != "r1" || proc.metadataOf("/meta", "x-filter-md") != "f1" || proc.metadataOf("/meta", "x-shared") != "route" {
		t.Fatalf("route metadata: %v", proc.md["/meta"])
	}
	if proc.metadataOf("/replace", "x-filter-md") != "f1" || proc.metadataOf("/replace", "x-route-md") != "" || proc.metadataOf("/replace", "x-shared") != "filter" {
		t.Fatalf("filter metadata: %v", proc.md["/replace"])
	}
	want := "v1 - other\nv1 - up\nv1 - up\nv1 - up\n"
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return string(b) == want
	}, "access log %q", want)
}

// TestExtProcOverrideTimeout: a processor that needs longer than
// message_timeout asks for more time with override_message_timeout
// (within max_message_timeout) and its late answer is used; a second
// override for the same message, or one above the maximum, is ignored.
func TestExtProcOverrideTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(srv, slowProcessor{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 0.3s, max_message_timeout: 10s, processing_mode: {response_header_mode: SKIP}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(ln.Addr().String()) + "]",
	})
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/slow"))
	if code != 200 || !strings.Contains(body, "header:x-late=yes") {
		t.Fatalf("%d\n%s", code, body)
	}
	if v := p.Stat(t, "http.ingress.ext_proc.override_message_timeout_received"); v != 1 {
		t.Fatalf("override_message_timeout_received = %d", v)
	}
	if v := p.Stat(t, "http.ingress.ext_proc.override_message_timeout_ignored"); v != 2 {
		t.Fatalf("override_message_timeout_ignored = %d", v)
	}
	if v := p.Stat(t, "http.ingress.ext_proc.message_timeouts"); v != 0 {
		t.Fatalf("message_timeouts = %d", v)
	}
}

// slowProcessor answers request headers late, after asking for more time
// (one override above the maximum, one valid, one repeated).
type slowProcessor struct {
	extprocsvc.UnimplementedExternalProcessorServer
}

func (slowProcessor) Process(s extprocsvc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		if req.GetRequestHeaders() == nil {
			continue
		}
		for _, d := range []time.Duration{time.Minute, 8 * time.Second, 9 * time.Second} {
			if err := s.Send(&extprocsvc.ProcessingResponse{OverrideMessageTimeout: durationpb.New(d)}); err != nil {
				return nil
			}
		}
		// Well past message_timeout (0.3 s), well within the override.
		time.Sleep(time.Second)
		if err := s.Send(reqHeadersResp(&extprocsvc.CommonResponse{HeaderMutation: mutation(nil, "x-late", "yes")})); err != nil {
			return nil
		}
	}
}

// TestExtProcBufferLimit: a BUFFERED request body over the buffer limit
// is refused with 413 before the processor sees a body, as Envoy.
func TestExtProcBufferLimit(t *testing.T) {
	proc, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if req.GetRequestHeaders() != nil {
			return reqHeadersResp(&extprocsvc.CommonResponse{})
		}
		return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{}}}
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s, processing_mode: {request_body_mode: BUFFERED, response_header_mode: SKIP}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}, per_request_buffer_limit_bytes: 1024}`),
		clusters: "[" + staticCluster("up", "", up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	c := testutil.Client()
	if code, _, body := testutil.Do(t, c, "POST", p.URL("http", "/small"), "tiny"); code != 200 || !strings.Contains(body, "body=tiny\n") {
		t.Fatalf("small body: %d\n%s", code, body)
	}
	// Chunked, so that the proxy cannot refuse it from a content-length.
	req, _ := http.NewRequest("POST", p.URL("http", "/big"), io.MultiReader(strings.NewReader(strings.Repeat("a", 4096))))
	req.ContentLength = -1
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("big body: %d", resp.StatusCode)
	}
	if n := len(proc.received(func(r *extprocsvc.ProcessingRequest) bool { return r.GetRequestBody() != nil })); n != 1 {
		t.Fatalf("the processor got %d bodies, want 1 (the small one)", n)
	}
}

// TestExtProcRequestTrailers: with request_trailer_mode SEND, the
// processor receives the request trailers of an HTTP/2 request (after its
// body) and answers with a trailers mutation; the request goes on.
// (Whether the upstream then receives request trailers is the router's
// business: Legate does not forward them to this upstream today.)
func TestExtProcRequestTrailers(t *testing.T) {
	proc, paddr := startProcessor(t, func(path string, req *extprocsvc.ProcessingRequest) *extprocsvc.ProcessingResponse {
		if tr := req.GetRequestTrailers(); tr != nil {
			return &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocsvc.TrailersResponse{
				HeaderMutation: mutation([]string{"x-drop"}, "x-proc", "saw-"+procHeader(tr.GetTrailers(), "x-client"))}}}
		}
		return nil
	})
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		hcm:      extProcFilters("message_timeout: 5s, processing_mode: {request_header_mode: SKIP, response_header_mode: SKIP, request_trailer_mode: SEND}"),
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: up}}`),
		clusters: "[" + staticCluster("up", h2, up.Addr) + ", " + extProcCluster(paddr) + "]",
	})
	req, _ := http.NewRequest("POST", p.URL("http", "/t"), strings.NewReader("payload"))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Client": {"c1"}, "X-Drop": {"d"}}
	resp, err := testutil.H2CClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "body=payload\n") {
		t.Fatalf("%d %q", resp.StatusCode, b)
	}
	got := proc.received(func(r *extprocsvc.ProcessingRequest) bool { return r.GetRequestTrailers() != nil })
	if len(got) != 1 || procHeader(got[0].GetRequestTrailers().GetTrailers(), "x-client") != "c1" {
		t.Fatalf("trailers messages: %v", got)
	}
	if v := p.Stat(t, "http.ingress.ext_proc.stream_msgs_received"); v != 1 {
		t.Fatalf("stream_msgs_received = %d", v)
	}
}
