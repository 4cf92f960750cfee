package proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

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

func TestGRPCThroughProxy(t *testing.T) {
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
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		vhosts: vhost(
			"{match: {prefix: /grpc.health.v1.Health/, grpc: {}}, route: {cluster: grpc, timeout: 5s}}",
		),
		clusters: "[" + staticCluster("grpc", h2, ln.Addr().String()) + "]",
	})
	cc, err := grpc.NewClient(p.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("unary call through the proxy: %v %v", resp, err)
	}
	// An error status travels in the trailers.
	_, err = client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("error status: got %v, want NotFound", err)
	}
	// Server streaming: the first update arrives, then a change.
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch first: %v %v", m, err)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := stream.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch update: %v %v", m, err)
	}
	// A method with no route gets a local reply as a gRPC status.
	err = cc.Invoke(ctx, "/other.Service/Method", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("no route for a gRPC call: got %v, want Unimplemented (Envoy maps 404)", err)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	echo := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		brw.Flush()
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				conn.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				return
			}
		}
	}))
	p := start(t, cfg{
		hcm:      "upgrade_configs: [{upgrade_type: websocket}]",
		vhosts:   vhost("{match: {prefix: /ws}, route: {cluster: echo}}", "{match: {prefix: /nows}, route: {cluster: echo, upgrade_configs: [{upgrade_type: websocket, enabled: false}]}}"),
		clusters: "[" + staticCluster("echo", "", echo.Addr) + "]",
	})
	conn, err := net.Dial("tcp", p.Addr("http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(conn, "hello frames")
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(br, buf, len("hello frames"))
	if err != nil || string(buf[:n]) != "HELLO FRAMES" {
		t.Fatalf("echo through the upgraded connection: %q %v", buf[:n], err)
	}
	// Disabled on a route: 403 as Envoy.
	out := rawExchange(t, p.Addr("http"), "GET /nows HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 403") {
		t.Fatalf("upgrade disabled on the route: %q", firstLine(out))
	}
}
