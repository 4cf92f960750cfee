// gRPC to plain HTTP/1.1 upstreams: envoy.filters.http.grpc_http1_reverse_bridge.

package features_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/testutil"
)

// bridgeUpstream is an HTTP/1.1 server that knows nothing of gRPC: it
// records what it got and answers by path.
type bridgeUpstream struct {
	mu   sync.Mutex
	got  map[string]bridgeRequest
	resp []byte // the body of /test.Svc/OK
}

type bridgeRequest struct {
	proto, contentType, accept string
	body                       []byte
}

func (u *bridgeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.got[r.URL.Path] = bridgeRequest{proto: r.Proto, contentType: r.Header.Get("content-type"), accept: r.Header.Get("accept"), body: body}
	u.mu.Unlock()
	switch r.URL.Path {
	case "/test.Svc/OK", "/test.Svc/Sized":
		w.Header().Set("content-type", "application/x-protobuf")
		w.Header().Set("x-size", strconv.Itoa(len(u.resp)))
		w.Write(u.resp)
	case "/test.Svc/Lies":
		w.Header().Set("content-type", "application/x-protobuf")
		w.Header().Set("x-size", "100")
		w.Write(u.resp)
	case "/test.Svc/Empty":
		w.Header().Set("content-type", "application/x-protobuf")
		w.Header().Set("content-length", "0")
	case "/test.Svc/Missing":
		w.Header().Set("content-type", "application/x-protobuf")
		w.WriteHeader(404)
	case "/test.Svc/Busy":
		w.Header().Set("content-type", "application/x-protobuf")
		w.WriteHeader(503)
	case "/test.Svc/Framed":
		// Without withhold_grpc_frames the upstream speaks gRPC frames.
		w.Header().Set("content-type", "application/x-protobuf")
		w.Write(append([]byte{0, 0, 0, 0, byte(len(u.resp))}, u.resp...))
	case "/test.Svc/Disabled":
		w.Header().Set("content-type", "application/grpc")
		w.Header().Set("trailer", "grpc-status")
		w.Write(append([]byte{0, 0, 0, 0, byte(len(u.resp))}, u.resp...))
		w.Header().Set("grpc-status", "0")
	default:
		w.Header().Set("content-type", "text/html")
		w.Write([]byte("<html>"))
	}
}

func (u *bridgeUpstream) request(path string) bridgeRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[path]
}

// TestGRPCReverseBridge: a grpc-go client calls through the proxy to a
// plain HTTP/1.1 server. With withhold_grpc_frames the server gets the
// bare protobuf with the configured content-type and accept, and its
// answer comes back framed with grpc-status in the trailers: 200 is OK,
// 404 UNIMPLEMENTED, 503 UNAVAILABLE, another content-type UNKNOWN with
// Envoy's message, an empty body an empty message; response_size_header
// streams the answer and a wrong size is INTERNAL. Without it the frames
// pass as they are; a route's FilterConfigPerRoute disables the bridge.
func TestGRPCReverseBridge(t *testing.T) {
	want := &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}
	respBytes, _ := proto.Marshal(want)
	up := &bridgeUpstream{got: map[string]bridgeRequest{}, resp: respBytes}
	u := testutil.StartUpstream(t, up)
	proxy := func(fields string) *testutil.Proxy {
		return start(t, cfg{
			hcm: `http_filters: [{name: envoy.filters.http.grpc_http1_reverse_bridge, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfig, content_type: application/x-protobuf, ` + fields + `}},
			  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
			vhosts: vhost(
				`{match: {path: /test.Svc/Disabled}, route: {cluster: h1, timeout: 5s}, typed_per_filter_config: {envoy.filters.http.grpc_http1_reverse_bridge: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_reverse_bridge.v3.FilterConfigPerRoute, disabled: true}}}`,
				"{match: {prefix: /}, route: {cluster: h1, timeout: 5s}}"),
			// enable_trailers: the disabled route's gRPC answer carries
			// grpc-status in HTTP/1 trailers, which Envoy's codec (and
			// Legate's) drops without it.
			clusters: "[" + staticCluster("h1", "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: "+
				"{'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http_protocol_options: {enable_trailers: true}}}}", u.Addr) + "]",
		})
	}
	dial := func(p *testutil.Proxy) *grpc.ClientConn {
		cc, err := grpc.NewClient(p.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &healthpb.HealthCheckRequest{Service: "svc"}
	reqBytes, _ := proto.Marshal(req)
	call := func(cc *grpc.ClientConn, method string) (*healthpb.HealthCheckResponse, error) {
		var resp healthpb.HealthCheckResponse
		err := cc.Invoke(ctx, "/test.Svc/"+method, req, &resp)
		return &resp, err
	}

	cc := dial(proxy("withhold_grpc_frames: true"))
	resp, err := call(cc, "OK")
	if err != nil || !proto.Equal(resp, want) {
		t.Fatalf("OK: %v %v", resp, err)
	}
	got := up.request("/test.Svc/OK")
	if got.proto != "HTTP/1.1" || got.contentType != "application/x-protobuf" || got.accept != "application/x-protobuf" || string(got.body) != string(reqBytes) {
		t.Errorf("the upstream got %+v, want HTTP/1.1, application/x-protobuf twice and the bare message %q", got, reqBytes)
	}
	for _, c := range []struct {
		method string
		code   codes.Code
		msg    string
	}{
		{"Missing", codes.Unimplemented, ""},
		{"Busy", codes.Unavailable, ""},
		{"HTML", codes.Unknown, "envoy reverse bridge: upstream responded with unsupported content-type text/html, status code 200"},
	} {
		_, err := call(cc, c.method)
		if st := status.Convert(err); st.Code() != c.code || (c.msg != "" && st.Message() != c.msg) {
			t.Errorf("%s: %v, want %v %q", c.method, err, c.code, c.msg)
		}
	}
	if resp, err := call(cc, "Empty"); err != nil || !proto.Equal(resp, &healthpb.HealthCheckResponse{}) {
		t.Errorf("an empty body is an empty message: %v %v", resp, err)
	}
	// The route that disables the bridge: gRPC reaches the upstream as is.
	if resp, err := call(cc, "Disabled"); err != nil || !proto.Equal(resp, want) {
		t.Errorf("disabled route: %v %v", resp, err)
	}
	if got := up.request("/test.Svc/Disabled"); got.contentType != "application/grpc" || len(got.body) != len(reqBytes)+5 {
		t.Errorf("disabled route: the upstream got %+v", got)
	}

	// response_size_header: the answer streams, a wrong size is INTERNAL.
	ccs := dial(proxy("withhold_grpc_frames: true, response_size_header: x-size"))
	if resp, err := call(ccs, "Sized"); err != nil || !proto.Equal(resp, want) {
		t.Errorf("response_size_header: %v %v", resp, err)
	}
	if _, err := call(ccs, "Lies"); status.Code(err) != codes.Internal {
		t.Errorf("wrong response size: %v, want Internal", err)
	}
	if _, err := call(ccs, "HTML"); status.Code(err) != codes.Unknown {
		t.Errorf("response_size_header, wrong content-type: %v", err)
	}

	// Without withhold_grpc_frames the frames pass through both ways.
	ccf := dial(proxy(""))
	if resp, err := call(ccf, "Framed"); err != nil || !proto.Equal(resp, want) {
		t.Errorf("framed: %v %v", resp, err)
	}
	if got := up.request("/test.Svc/Framed"); got.contentType != "application/x-protobuf" || string(got.body) != string(append([]byte{0, 0, 0, 0, byte(len(reqBytes))}, reqBytes...)) {
		t.Errorf("framed: the upstream got %+v", got)
	}
}
