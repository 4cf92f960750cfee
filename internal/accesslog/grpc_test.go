package accesslog

import (
	"errors"
	"strings"
	"testing"
	"time"

	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// TestCompileGRPCLoggers: what the gRPC and OpenTelemetry loggers accept
// and what they refuse, with the path of the field.
func TestCompileGRPCLoggers(t *testing.T) {
	const als = `name: envoy.access_loggers.http_grpc
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig
`
	const otel = `name: envoy.access_loggers.open_telemetry
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
`
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"http_grpc", als + `  common_config: {log_name: a, transport_api_version: V3, grpc_service: {envoy_grpc: {cluster_name: c}}}`, ""},
		{"tcp_grpc", `name: envoy.access_loggers.tcp_grpc
typed_config:
  "@type": type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig
  common_config: {log_name: a, grpc_service: {envoy_grpc: {cluster_name: c}}}`, ""},
		{"no service", als + `  common_config: {log_name: a}`, "grpc_service"},
		{"google_grpc", als + `  common_config: {log_name: a, grpc_service: {google_grpc: {target_uri: x, stat_prefix: s}}}`, ""},
		{"google_grpc default credentials", als + `  common_config: {log_name: a, grpc_service: {google_grpc: {target_uri: x, stat_prefix: s, channel_credentials: {google_default: {}}}}}`, "channel_credentials"},
		{"retry policy", als + `  common_config: {log_name: a, grpc_service: {envoy_grpc: {cluster_name: c}}, grpc_stream_retry_policy: {num_retries: 2}}`, "grpc_stream_retry_policy"},
		{"metadata tag", als + `  common_config: {log_name: a, grpc_service: {envoy_grpc: {cluster_name: c}}, custom_tags: [{tag: t, metadata: {kind: {request: {}}, metadata_key: {key: k, path: [{key: p}]}}}]}`, "custom_tags[0].metadata"},
		{"otel grpc", otel + `  grpc_service: {envoy_grpc: {cluster_name: c}}
  body: {string_value: "%RESPONSE_CODE%"}`, ""},
		{"otel http", otel + `  http_service: {http_uri: {uri: "http://c/v1/logs", cluster: c, timeout: 1s}}`, ""},
		{"otel both", otel + `  grpc_service: {envoy_grpc: {cluster_name: c}}
  http_service: {http_uri: {uri: "http://c/v1/logs", cluster: c, timeout: 1s}}`, "only one of"},
		{"otel bad format", otel + `  grpc_service: {envoy_grpc: {cluster_name: c}}
  body: {string_value: "%NOT_A_COMMAND%"}`, "body"},
		{"otel detectors", otel + `  grpc_service: {envoy_grpc: {cluster_name: c}}
  resource_detectors: [{name: d, typed_config: {"@type": type.googleapis.com/envoy.extensions.tracers.opentelemetry.resource_detectors.v3.EnvironmentResourceDetectorConfig}}]`, "resource_detectors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := NewFiles(stats.NewStore())
			defer fs.Close()
			_, err := Compile(hcmLogs(t, tc.yaml), "access_log", fs)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one naming %q", err, tc.err)
			}
		})
	}
}

// slowExporter blocks every export until released and records batches.
type slowExporter struct {
	release chan struct{}
	batches chan int
	fail    bool
}

func (e *slowExporter) export(_ *batcher, batch []proto.Message) error {
	<-e.release
	e.batches <- len(batch)
	if e.fail {
		return errors.New("collector gone")
	}
	return nil
}

func (e *slowExporter) close() {}

// TestBatcherBounds: entries beyond one batch waiting and one being sent
// are dropped and counted; adding never blocks; a failed export counts
// its entries as dropped.
func TestBatcherBounds(t *testing.T) {
	st := stats.NewStore()
	fs := NewFiles(st)
	exp := &slowExporter{release: make(chan struct{}), batches: make(chan int, 10)}
	entry := &datav3.HTTPAccessLogEntry{Request: &datav3.HTTPRequestProperties{Path: strings.Repeat("p", 100)}}
	size := proto.Size(entry)
	// Two entries fill a batch.
	b := newBatcher(fs, "test", time.Hour, 2*size, exp, st.Scope("t."))
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10; i++ {
			b.add(entry)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("add blocked while the exporter is stuck")
	}
	// At most 2 in the batch being sent, 2 waiting and 2 pending; the
	// rest dropped (4 or 6 written, as the sender took its first batch
	// before or after the next ones were added).
	written, dropped := st.Counter("t.logs_written").Value(), st.Counter("t.logs_dropped").Value()
	if written+dropped != 10 || written < 4 || written > 6 {
		t.Fatalf("written %d dropped %d, want 4 to 6 written and the rest dropped", written, dropped)
	}
	exp.fail = true
	close(exp.release)
	b.shutdown()
	if d := st.Counter("t.logs_dropped").Value(); d != 10 {
		t.Errorf("logs_dropped %d after every export failed, want 10", d)
	}
}

// TestHTTPEntry: the HTTPAccessLogEntry fields from a stream info.
func TestHTTPEntry(t *testing.T) {
	req := &headers.Request{Method: "POST", Path: "/a", Authority: "h", Scheme: "https"}
	req.Add("x-request-id", "rid")
	req.Add("x-keep", "1")
	req.Add("x-keep", "2")
	resp := &headers.Response{Status: 404}
	resp.Add("x-r", "v")
	info := &streaminfo.Info{StartTime: time.Now(), Protocol: "HTTP/2", Request: req, Response: resp, ResponseCode: 404,
		BytesReceived: 3, BytesSent: 9, ResponseFlags: streaminfo.Flags(streaminfo.NoRouteFound), RouteName: "r",
		FilterState: map[string]streaminfo.FilterStateValue{"k": streaminfo.StringObject("v")}}
	a := &alsLogger{common: &grpcCommon{filterState: []string{"k", "absent"}}, reqHeaders: []string{"x-keep"}, respHeaders: []string{"x-r"}}
	e := httpEntry(info, commonProperties(info, a.common), a)
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"protocol", e.GetProtocolVersion() == datav3.HTTPAccessLogEntry_HTTP2},
		{"method", e.GetRequest().GetRequestMethod().String() == "POST"},
		{"scheme", e.GetRequest().GetScheme() == "https"},
		{"request id", e.GetRequest().GetRequestId() == "rid" && e.GetCommonProperties().GetStreamId() == "rid"},
		{"request headers", e.GetRequest().GetRequestHeaders()["x-keep"] == "1,2"},
		{"body bytes", e.GetRequest().GetRequestBodyBytes() == 3 && e.GetResponse().GetResponseBodyBytes() == 9},
		{"response code", e.GetResponse().GetResponseCode().GetValue() == 404},
		{"response headers", e.GetResponse().GetResponseHeaders()["x-r"] == "v"},
		{"flags", e.GetCommonProperties().GetResponseFlags().GetNoRouteFound()},
		{"route", e.GetCommonProperties().GetRouteName() == "r"},
		{"filter state", len(e.GetCommonProperties().GetFilterStateObjects()) == 1},
	} {
		if !c.ok {
			t.Errorf("%s: wrong in %v", c.name, e)
		}
	}
	var sv wrapperspb.StringValue
	if err := e.GetCommonProperties().GetFilterStateObjects()["k"].UnmarshalTo(&sv); err != nil || sv.GetValue() != "v" {
		t.Errorf("filter state k: %v %v", sv.GetValue(), err)
	}
}
