package grpc_web_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/testutil"
)

// Both bridges in front of a real gRPC server (grpc-go's health service):
// gRPC-Web (binary and text) and gRPC over HTTP/1.1.
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
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: grpc}}]}]}
          http_filters:
          - {name: envoy.filters.http.grpc_web, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb}}
          - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: bridge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bridge
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: grpc}}]}]}
          http_filters:
          - {name: envoy.filters.http.grpc_http1_bridge, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_http1_bridge.v3.Config, upgrade_protobuf_to_grpc: true}}
          - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: grpc
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: grpc, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Port}}}}}}]}]}
`

func start(t *testing.T) *testutil.Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return testutil.StartProxy(t, cfg, map[string]string{"Port": port})
}

func frame(m proto.Message) []byte {
	b, _ := proto.Marshal(m)
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// frames splits a gRPC-Web body into its frames.
func frames(t *testing.T, b []byte) (msgs [][]byte, trailers string) {
	for len(b) >= 5 {
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if len(b) < 5+n {
			t.Fatalf("truncated frame: %d of %d bytes", len(b)-5, n)
		}
		if b[0]&0x80 != 0 {
			trailers += string(b[5 : 5+n])
		} else {
			msgs = append(msgs, b[5:5+n])
		}
		b = b[5+n:]
	}
	return
}

func post(t *testing.T, url, ct string, body []byte) (*http.Response, []byte) {
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestGRPCWeb(t *testing.T) {
	p := start(t)
	url := p.URL("http", "/grpc.health.v1.Health/Check")
	for _, text := range []bool{false, true} {
		ct, body := "application/grpc-web+proto", frame(&healthpb.HealthCheckRequest{Service: "svc"})
		if text {
			ct, body = "application/grpc-web-text", []byte(base64.StdEncoding.EncodeToString(body))
		}
		resp, b := post(t, url, ct, body)
		if text {
			// Each chunk is its own padded base64 segment: decode quantum
			// by quantum, as gRPC-Web clients do.
			var dec []byte
			for i := 0; i+4 <= len(b); i += 4 {
				d, err := base64.StdEncoding.DecodeString(string(b[i : i+4]))
				if err != nil {
					t.Fatalf("text response is not base64: %v: %q", err, b)
				}
				dec = append(dec, d...)
			}
			b = dec
		}
		msgs, trailers := frames(t, b)
		var hr healthpb.HealthCheckResponse
		if resp.StatusCode != 200 || len(msgs) != 1 || proto.Unmarshal(msgs[0], &hr) != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("text=%v: %d, %d messages, %v", text, resp.StatusCode, len(msgs), &hr)
		}
		if !strings.Contains(trailers, "grpc-status:0\r\n") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc-web") {
			t.Errorf("text=%v: trailer frame %q, content-type %q", text, trailers, resp.Header.Get("Content-Type"))
		}
	}
	// An error status reaches the client in the trailer frame (or headers).
	resp, b := post(t, url, "application/grpc-web+proto", frame(&healthpb.HealthCheckRequest{Service: "unknown"}))
	_, trailers := frames(t, b)
	if !strings.Contains(trailers+resp.Header.Get("grpc-status"), "5") {
		t.Errorf("NOT_FOUND lost: headers %v trailers %q", resp.Header, trailers)
	}
}

func TestGRPCHTTP1Bridge(t *testing.T) {
	p := start(t)
	url := p.URL("bridge", "/grpc.health.v1.Health/Check")
	resp, b := post(t, url, "application/grpc", frame(&healthpb.HealthCheckRequest{Service: "svc"}))
	if resp.StatusCode != 200 || resp.Header.Get("grpc-status") != "0" || len(b) < 5 {
		t.Errorf("HTTP/1.1 gRPC call: %d grpc-status %q, %d bytes", resp.StatusCode, resp.Header.Get("grpc-status"), len(b))
	}
	resp, _ = post(t, url, "application/grpc", frame(&healthpb.HealthCheckRequest{Service: "unknown"}))
	if resp.StatusCode != 503 || resp.Header.Get("grpc-status") != "5" {
		t.Errorf("failed call: %d grpc-status %q, want 503 and 5 (NOT_FOUND) in the headers", resp.StatusCode, resp.Header.Get("grpc-status"))
	}
	// upgrade_protobuf_to_grpc: a plain protobuf body in and out.
	req, _ := proto.Marshal(&healthpb.HealthCheckRequest{Service: "svc"})
	resp, b = post(t, url, "application/x-protobuf", req)
	var hr healthpb.HealthCheckResponse
	if resp.StatusCode != 200 || proto.Unmarshal(b, &hr) != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("protobuf upgrade: %d %q (%v)", resp.StatusCode, b, &hr)
	}
}
