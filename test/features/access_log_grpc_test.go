// Access logs sent over gRPC: envoy.access_loggers.http_grpc and
// tcp_grpc (envoy.service.accesslog.v3.AccessLogService.StreamAccessLogs)
// and envoy.access_loggers.open_telemetry (OTLP logs,
// opentelemetry.proto.collector.logs.v1.LogsService.Export), received by
// real grpc-go servers on the official protos; and a collector that is
// gone, which must neither fail nor slow requests.

package features_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	collogsv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/testutil"
)

// logCollector is a gRPC server with the access log service and the
// OTLP logs service, recording what it receives.
type logCollector struct {
	collogsv1.UnimplementedLogsServiceServer
	addr string

	mu          sync.Mutex
	identifiers []*alsv3.StreamAccessLogsMessage_Identifier
	http        []*datav3.HTTPAccessLogEntry
	tcp         []*datav3.TCPAccessLogEntry
	otlp        []*collogsv1.ExportLogsServiceRequest
	streams     int
}

func startLogCollector(t *testing.T) *logCollector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &logCollector{addr: ln.Addr().String()}
	s := grpc.NewServer()
	alsv3.RegisterAccessLogServiceServer(s, alsServer{c})
	collogsv1.RegisterLogsServiceServer(s, c)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return c
}

// alsServer is the AccessLogService side of a logCollector.
type alsServer struct{ c *logCollector }

func (a alsServer) StreamAccessLogs(s alsv3.AccessLogService_StreamAccessLogsServer) error {
	a.c.mu.Lock()
	a.c.streams++
	a.c.mu.Unlock()
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return err
		}
		a.c.mu.Lock()
		if m.GetIdentifier() != nil {
			a.c.identifiers = append(a.c.identifiers, m.GetIdentifier())
		}
		a.c.http = append(a.c.http, m.GetHttpLogs().GetLogEntry()...)
		a.c.tcp = append(a.c.tcp, m.GetTcpLogs().GetLogEntry()...)
		a.c.mu.Unlock()
	}
}

func (c *logCollector) Export(_ context.Context, req *collogsv1.ExportLogsServiceRequest) (*collogsv1.ExportLogsServiceResponse, error) {
	c.mu.Lock()
	c.otlp = append(c.otlp, proto.Clone(req).(*collogsv1.ExportLogsServiceRequest))
	c.mu.Unlock()
	return &collogsv1.ExportLogsServiceResponse{}, nil
}

func (c *logCollector) httpEntries() []*datav3.HTTPAccessLogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*datav3.HTTPAccessLogEntry(nil), c.http...)
}

func (c *logCollector) tcpEntries() []*datav3.TCPAccessLogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*datav3.TCPAccessLogEntry(nil), c.tcp...)
}

// otlpRecords returns every received record with its resource's
// attributes.
func (c *logCollector) otlpRecords() (recs []*logsv1.LogRecord, resources [][]*commonv1.KeyValue) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.otlp {
		for _, rl := range r.GetResourceLogs() {
			for _, sl := range rl.GetScopeLogs() {
				for _, lr := range sl.GetLogRecords() {
					recs = append(recs, lr)
					resources = append(resources, rl.GetResource().GetAttributes())
				}
			}
		}
	}
	return recs, resources
}

// grpcLogProxy renders a proxy with an HTTP listener "http" logging with
// http_grpc and open_telemetry, and a TCP listener "tcp" logging with
// tcp_grpc, all to the collector cluster "als" at .Collector.
const grpcLogProxy = `
node: {id: node-a, cluster: cluster-a, locality: {zone: zone-a}}
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
          access_log:
          - name: envoy.access_loggers.http_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
              common_config:
                log_name: edge-http
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: als}}
                buffer_flush_interval: 0.2s
                custom_tags:
                - {tag: team, literal: {value: edge}}
                - {tag: client, request_header: {name: x-client, default_value: none}}
              additional_request_headers_to_log: [x-client, x-absent]
              additional_response_headers_to_log: [x-answer]
          - name: envoy.access_loggers.open_telemetry
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
              log_name: edge-otel
              grpc_service: {envoy_grpc: {cluster_name: als}}
              buffer_flush_interval: 0.2s
              stat_prefix: edge
              resource_attributes: {values: [{key: service.name, value: {string_value: legate-edge}}]}
              body: {string_value: "%REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE%"}
              attributes:
                values:
                - {key: status, value: {string_value: "%RESPONSE_CODE%"}}
                - {key: upstream, value: {kvlist_value: {values: [{key: cluster, value: {string_value: "%UPSTREAM_CLUSTER%"}}]}}}
                - {key: fixed, value: {int_value: 7}}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: app}, name: to-app}]
          http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
  - name: tcp
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
          access_log:
          - name: envoy.access_loggers.tcp_grpc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig
              common_config:
                log_name: edge-tcp
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: als}}
                buffer_flush_interval: 0.2s
  clusters:
  - name: app
    type: STATIC
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.App}}}}}}]}]}
  - {{.Echo}}
  - name: als
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: als, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: {{.Collector}}}}}}]}]}
`

func startGRPCLogProxy(t *testing.T, collectorPort string) (*testutil.Proxy, *testutil.Upstream, *tcpEchoUpstream) {
	t.Helper()
	app := testutil.StartUpstream(t, answerHeader{})
	_, appPort := app.Host()
	echo := startTCPEcho(t)
	p := testutil.StartProxy(t, grpcLogProxy, map[string]string{"App": appPort, "Echo": echo.Cluster("echo"), "Collector": collectorPort})
	return p, app, echo
}

// answerHeader answers 201 with an x-answer header.
type answerHeader struct{}

func (answerHeader) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("x-answer", "yes")
	w.WriteHeader(201)
	w.Write([]byte("created"))
}

func attr(kvs []*commonv1.KeyValue, key string) *commonv1.AnyValue {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

// TestGRPCAccessLogs: requests through the HTTP listener reach the
// access log service as HTTPAccessLogEntries (request, response, common
// properties, custom tags, additional headers) on a stream whose first
// message names the node and the log; the OpenTelemetry logger exports
// records with the formatted body and attributes under a resource with
// Envoy's built-in labels; a TCP connection is logged as a
// TCPAccessLogEntry with its byte counts. Stats count what was written.
func TestGRPCAccessLogs(t *testing.T) {
	col := startLogCollector(t)
	_, colPort, _ := net.SplitHostPort(col.addr)
	p, _, _ := startGRPCLogProxy(t, colPort)

	c := testutil.Client()
	for i := 0; i < 3; i++ {
		code, _, _ := testutil.Get(t, c, p.URL("http", fmt.Sprintf("/items/%d", i)), "x-client", "tester", "user-agent", "als-test")
		if code != 201 {
			t.Fatalf("request %d: status %d, want 201", i, code)
		}
	}
	conn, err := net.Dial("tcp", p.Addr("tcp"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	buf := make([]byte, 5)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("tcp echo: %v", err)
	}
	conn.Close()

	testutil.Eventually(t, 10*time.Second, func() bool {
		recs, _ := col.otlpRecords()
		return len(col.httpEntries()) >= 3 && len(col.tcpEntries()) >= 1 && len(recs) >= 3
	}, "the collector did not receive every entry")

	// HTTP entries.
	entries := col.httpEntries()
	if len(entries) != 3 {
		t.Fatalf("http entries: %d, want 3", len(entries))
	}
	e := entries[0]
	req, resp, cp := e.GetRequest(), e.GetResponse(), e.GetCommonProperties()
	if e.GetProtocolVersion() != datav3.HTTPAccessLogEntry_HTTP11 {
		t.Errorf("protocol_version %v, want HTTP11", e.GetProtocolVersion())
	}
	if req.GetRequestMethod().String() != "GET" || req.GetPath() != "/items/0" || req.GetScheme() != "http" || req.GetUserAgent() != "als-test" {
		t.Errorf("request properties: %v", req)
	}
	if req.GetRequestId() == "" || cp.GetStreamId() != req.GetRequestId() {
		t.Errorf("request_id %q, stream_id %q: want the x-request-id in both", req.GetRequestId(), cp.GetStreamId())
	}
	if h := req.GetRequestHeaders(); h["x-client"] != "tester" || len(h) != 1 {
		t.Errorf("request_headers %v, want only x-client: tester", h)
	}
	if resp.GetResponseCode().GetValue() != 201 || resp.GetResponseHeaders()["x-answer"] != "yes" || resp.GetResponseBodyBytes() != 7 {
		t.Errorf("response properties: %v", resp)
	}
	if cp.GetUpstreamCluster() != "app" || cp.GetRouteName() != "to-app" || cp.GetSampleRate() != 1 {
		t.Errorf("common properties: cluster %q route %q sample_rate %v", cp.GetUpstreamCluster(), cp.GetRouteName(), cp.GetSampleRate())
	}
	if cp.GetDownstreamRemoteAddress().GetSocketAddress().GetAddress() != "127.0.0.1" || cp.GetUpstreamRemoteAddress().GetSocketAddress().GetPortValue() == 0 {
		t.Errorf("addresses: downstream %v upstream %v", cp.GetDownstreamRemoteAddress(), cp.GetUpstreamRemoteAddress())
	}
	if cp.GetStartTime() == nil || cp.GetDuration() == nil || cp.GetTimeToLastDownstreamTxByte() == nil {
		t.Errorf("timings missing: start %v duration %v last tx %v", cp.GetStartTime(), cp.GetDuration(), cp.GetTimeToLastDownstreamTxByte())
	}
	if tags := cp.GetCustomTags(); tags["team"] != "edge" || tags["client"] != "tester" {
		t.Errorf("custom_tags %v", tags)
	}
	if cp.GetAccessLogType() != datav3.AccessLogType_DownstreamEnd {
		t.Errorf("access_log_type %v", cp.GetAccessLogType())
	}

	// Identifiers: one per stream, the first message's.
	col.mu.Lock()
	ids := append([]*alsv3.StreamAccessLogsMessage_Identifier(nil), col.identifiers...)
	col.mu.Unlock()
	names := map[string]bool{}
	for _, id := range ids {
		if id.GetNode().GetId() != "node-a" {
			t.Errorf("identifier node %v", id.GetNode())
		}
		names[id.GetLogName()] = true
	}
	if !names["edge-http"] || !names["edge-tcp"] {
		t.Errorf("identifier log names %v, want edge-http and edge-tcp", names)
	}

	// TCP entry.
	te := col.tcpEntries()[0]
	if te.GetConnectionProperties().GetReceivedBytes() != 5 || te.GetConnectionProperties().GetSentBytes() != 5 {
		t.Errorf("tcp connection properties %v, want 5 bytes each way", te.GetConnectionProperties())
	}
	if te.GetCommonProperties().GetUpstreamCluster() != "echo" || te.GetCommonProperties().GetAccessLogType() != datav3.AccessLogType_TcpConnectionEnd {
		t.Errorf("tcp common properties %v", te.GetCommonProperties())
	}

	// OpenTelemetry records.
	recs, res := col.otlpRecords()
	r := recs[0]
	if b := r.GetBody().GetStringValue(); b != "GET /items/0 201" {
		t.Errorf("otel body %q, want %q", b, "GET /items/0 201")
	}
	if v := attr(r.GetAttributes(), "status").GetStringValue(); v != "201" {
		t.Errorf("otel attribute status %q", v)
	}
	if v := attr(attr(r.GetAttributes(), "upstream").GetKvlistValue().GetValues(), "cluster").GetStringValue(); v != "app" {
		t.Errorf("otel attribute upstream.cluster %q", v)
	}
	if v := attr(r.GetAttributes(), "fixed").GetIntValue(); v != 7 {
		t.Errorf("otel attribute fixed %d", v)
	}
	if r.GetTimeUnixNano() == 0 {
		t.Error("otel record has no time")
	}
	want := map[string]string{"log_name": "edge-otel", "zone_name": "zone-a", "cluster_name": "cluster-a", "node_name": "node-a", "service.name": "legate-edge"}
	for k, v := range want {
		if got := attr(res[0], k).GetStringValue(); got != v {
			t.Errorf("resource attribute %s = %q, want %q", k, got, v)
		}
	}

	testutil.Eventually(t, 5*time.Second, func() bool {
		return p.Stat(t, "access_logs.grpc_access_log.logs_written") == 4 &&
			p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_written") == 3
	}, "logs_written: grpc %d, otel %d", p.Stat(t, "access_logs.grpc_access_log.logs_written"),
		p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_written"))
	if d := p.Stat(t, "access_logs.grpc_access_log.logs_dropped"); d != 0 {
		t.Errorf("logs_dropped %d, want 0", d)
	}
}

// TestGRPCAccessLogsCollectorGone: the collector's cluster points at a
// closed port. Requests are answered as fast as without access logs, and
// the lost entries are counted in logs_dropped.
func TestGRPCAccessLogsCollectorGone(t *testing.T) {
	port := testutil.FreePort(t)
	p, _, _ := startGRPCLogProxy(t, fmt.Sprint(port))
	c := testutil.Client()
	begin := time.Now()
	for i := 0; i < 20; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/x")); code != 201 {
			t.Fatalf("status %d, want 201", code)
		}
	}
	// Generous: 20 loopback requests take milliseconds; a request waiting
	// on the collector would take the export timeout (5 s) at least.
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("20 requests took %v with the collector gone", d)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		return p.Stat(t, "access_logs.grpc_access_log.logs_dropped") == 20 &&
			p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_dropped") == 20
	}, "logs_dropped: grpc %d, otel %d", p.Stat(t, "access_logs.grpc_access_log.logs_dropped"),
		p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_dropped"))
}

// TestGRPCAccessLogsCollectorHangs: the collector accepts connections and
// never answers (no HTTP/2 settings, nothing read). Requests are not
// slowed; the stuck exports time out and their entries are counted as
// dropped.
func TestGRPCAccessLogsCollectorHangs(t *testing.T) {
	_, port, _ := net.SplitHostPort(startBlackHole(t))
	p, _, _ := startGRPCLogProxy(t, port)
	c := testutil.Client()
	begin := time.Now()
	for i := 0; i < 20; i++ {
		if code, _, _ := testutil.Get(t, c, p.URL("http", "/x")); code != 201 {
			t.Fatalf("status %d, want 201", code)
		}
	}
	// Generous: a request waiting on the collector would take the export
	// timeout (5 s) at least.
	if d := time.Since(begin); d > 4*time.Second {
		t.Errorf("20 requests took %v with the collector hanging", d)
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		return p.Stat(t, "access_logs.grpc_access_log.logs_dropped") > 0 &&
			p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_dropped") > 0
	}, "logs_dropped: grpc %d, otel %d", p.Stat(t, "access_logs.grpc_access_log.logs_dropped"),
		p.Stat(t, "access_logs.open_telemetry_access_log.edge.logs_dropped"))
}

// startBlackHole listens on loopback, accepts connections and never reads
// or writes: a collector that hangs. It returns its address.
func startBlackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
