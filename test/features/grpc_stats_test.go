// gRPC statistics: envoy.filters.http.grpc_stats.

package features_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
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

// startGRPCStatsBackend serves grpc.health.v1.Health and, for any other
// method, a bidirectional echo that answers each message with one.
func startGRPCStatsBackend(t *testing.T) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		for {
			var m healthpb.HealthCheckRequest
			if err := stream.RecvMsg(&m); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
			if err := stream.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
				return err
			}
		}
	}))
	hs := health.NewServer()
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String(), hs
}

// chat sends n messages on /test.Echo/Chat and reads the answers.
func chat(t *testing.T, cc *grpc.ClientConn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Chat", ClientStreams: true, ServerStreams: true}, "/test.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := st.SendMsg(&healthpb.HealthCheckRequest{Service: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	st.CloseSend()
	got := 0
	for {
		var m healthpb.HealthCheckResponse
		if err := st.RecvMsg(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("chat: %v", err)
		}
		got++
	}
	if got != n {
		t.Fatalf("chat: %d answers, want %d", got, n)
	}
}

func histogramCount(p *testutil.Proxy, name string) uint64 {
	for _, h := range p.Srv.Stats.Snapshot().Histograms {
		if h.Name() == name {
			return h.Count()
		}
	}
	return 0
}

// TestGRPCStats: envoy.filters.http.grpc_stats over a real grpc-go client
// and server — with stats_for_all_methods the route's cluster counts
// cluster.<c>.grpc.<service>.<method>.{<grpc-status>,success,failure,
// total,request_message_count,response_message_count} from the frames
// and trailers (3 messages each way on a bidirectional stream, none back
// on an error status), upstream_rq_time with enable_upstream_stats, and
// emit_filter_state exposes "<req>,<resp>" to access logs; with an
// allowlist, other methods are counted without service and method.
func TestGRPCStats(t *testing.T) {
	addr, hs := startGRPCStatsBackend(t)
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	logPath := filepath.Join(t.TempDir(), "a.log")
	proxy := func(filterFields string, logged bool) *testutil.Proxy {
		hcm := `http_filters: [{name: envoy.filters.http.grpc_stats, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig, ` + filterFields + `}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
		if logged {
			hcm = `access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)% %FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)% %FILTER_STATE(envoy.filters.http.grpc_stats)%\n"}}}]
			` + hcm
		}
		return start(t, cfg{
			hcm:      hcm,
			vhosts:   vhost("{match: {prefix: /, grpc: {}}, route: {cluster: grpc, timeout: 5s}}"),
			clusters: "[" + staticCluster("grpc", h2, addr) + "]",
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

	p := proxy("stats_for_all_methods: true, emit_filter_state: true, enable_upstream_stats: true", true)
	cc := dial(p)
	client := healthpb.NewHealthClient(cc)
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown service: %v, want NotFound", err)
	}
	chat(t, cc, 3)
	const check, echo = "cluster.grpc.grpc.grpc.health.v1.Health.Check.", "cluster.grpc.grpc.test.Echo.Chat."
	want := map[string]int64{
		check + "0": 1, check + "5": 1, check + "success": 1, check + "failure": 1, check + "total": 2,
		check + "request_message_count": 2, check + "response_message_count": 1,
		echo + "0": 1, echo + "success": 1, echo + "total": 1, echo + "request_message_count": 3, echo + "response_message_count": 3,
		"cluster.grpc.grpc.success": -1, // nothing without service and method
	}
	for name, w := range want {
		if got := p.Stat(t, name); got != w {
			t.Errorf("%s = %d, want %d", name, got, w)
		}
	}
	if n := histogramCount(p, check+"upstream_rq_time"); n != 2 {
		t.Errorf("%supstream_rq_time has %d samples, want 2", check, n)
	}

	// Server streaming: the messages are counted as they pass.
	wctx, wcancel := context.WithCancel(ctx)
	watch, err := client.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	watch.Recv()
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	watch.Recv()
	testutil.Eventually(t, 5*time.Second, func() bool {
		return p.Stat(t, "cluster.grpc.grpc.grpc.health.v1.Health.Watch.response_message_count") == 2
	}, "watch messages not counted: %d", p.Stat(t, "cluster.grpc.grpc.grpc.health.v1.Health.Watch.response_message_count"))
	wcancel()

	var text string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		text = string(b)
		return strings.Contains(text, "/test.Echo/Chat")
	}, "access log not written")
	for _, line := range []string{
		`/test.Echo/Chat 3,3 {"requestMessageCount":"3","responseMessageCount":"3"}` + "\n",
		`/grpc.health.v1.Health/Check 1,0 {"requestMessageCount":"1"}` + "\n",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("access log lacks %q:\n%s", line, text)
		}
	}

	// An allowlist: Check keeps its names, Chat is counted under grpc.*.
	pa := proxy("individual_method_stats_allowlist: {services: [{name: grpc.health.v1.Health, method_names: [Check]}]}", false)
	cca := dial(pa)
	if _, err := healthpb.NewHealthClient(cca).Check(ctx, &healthpb.HealthCheckRequest{Service: "svc"}); err != nil {
		t.Fatal(err)
	}
	chat(t, cca, 2)
	for name, w := range map[string]int64{
		check + "success": 1, check + "request_message_count": 1,
		"cluster.grpc.grpc.success": 1, "cluster.grpc.grpc.0": 1, "cluster.grpc.grpc.request_message_count": 2, "cluster.grpc.grpc.response_message_count": 2,
		echo + "success": -1,
	} {
		if got := pa.Stat(t, name); got != w {
			t.Errorf("allowlist: %s = %d, want %d", name, got, w)
		}
	}
}

// A decoder filter (grpc_stats reads request messages) on a bidirectional
// stream whose answers start before the client is done: each message is
// answered before the next is sent. The request body must keep flowing
// after the response started (it used to end with "a filter answered the
// request" and a stream without trailers).
func TestGRPCStatsBidiPingPong(t *testing.T) {
	addr, _ := startGRPCStatsBackend(t)
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	p := start(t, cfg{
		hcm: `http_filters: [{name: envoy.filters.http.grpc_stats, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig, stats_for_all_methods: true}},
		  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /, grpc: {}}, route: {cluster: grpc, timeout: 5s}}"),
		clusters: "[" + staticCluster("grpc", h2, addr) + "]",
	})
	cc, err := grpc.NewClient(p.Addr("http"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Chat", ClientStreams: true, ServerStreams: true}, "/test.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := st.SendMsg(&healthpb.HealthCheckRequest{Service: fmt.Sprint(i)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var m healthpb.HealthCheckResponse
		if err := st.RecvMsg(&m); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
	}
	st.CloseSend()
	if err := st.RecvMsg(&healthpb.HealthCheckResponse{}); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want a clean end (trailers with status OK)", err)
	}
	if got := p.Stat(t, "cluster.grpc.grpc.test.Echo.Chat.request_message_count"); got != 4 {
		t.Errorf("request_message_count = %d, want 4", got)
	}
}
