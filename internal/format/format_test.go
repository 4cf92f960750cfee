package format

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func sampleInfo() *streaminfo.Info {
	req := &headers.Request{Method: "GET", Path: "/api/x?y=1", Authority: "example.com"}
	req.Add("user-agent", "curl/8")
	req.Add("x-request-id", "abc")
	resp := &headers.Response{Status: 200}
	resp.Add("x-envoy-upstream-service-time", "3")
	return &streaminfo.Info{
		StartTime:        time.Date(2026, 11, 22, 15, 4, 5, 123456789, time.UTC),
		Protocol:         "HTTP/1.1",
		Request:          req,
		Response:         resp,
		ResponseCode:     200,
		BytesReceived:    0,
		BytesSent:        42,
		Done:             7 * time.Millisecond,
		UpstreamHost:     "10.0.0.1:80",
		UpstreamCluster:  "web",
		DownstreamRemote: netip.MustParseAddrPort("192.0.2.9:5555"),
		ResponseFlags:    streaminfo.Flags(streaminfo.UpstreamRetryLimitExceeded | streaminfo.NoHealthyUpstream),
		RouteName:        "r1",
	}
}

func TestOperators(t *testing.T) {
	info := sampleInfo()
	cases := []struct{ format, want string }{
		{"%START_TIME%", "2026-11-22T15:04:05.123Z"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S.%6f %s)%", "2026/11/22 15:04:05.123456 1795359845"},
		{"%START_TIME(%E3S)%", "05.123"},
		{"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%", "GET /api/x?y=1 HTTP/1.1"},
		{"%REQ(USER-AGENT):4%", "curl"},
		{"%REQ(X-MISSING)%", "-"},
		{"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "3"},
		{"%RESPONSE_CODE% %RESPONSE_FLAGS%", "200 UH,URX"},
		{"%RESPONSE_FLAGS_LONG%", "NoHealthyUpstream,UpstreamRetryLimitExceeded"},
		{"%BYTES_RECEIVED% %BYTES_SENT% %DURATION%", "0 42 7"},
		{"%UPSTREAM_HOST% %UPSTREAM_CLUSTER% %ROUTE_NAME%", "10.0.0.1:80 web r1"},
		{"%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_PORT%", "192.0.2.9:5555 192.0.2.9 5555"},
		{"100%% done", "100% done"},
		{"%DOWNSTREAM_TLS_VERSION%", "-"},
	}
	for _, tc := range cases {
		f, err := Compile(tc.format)
		if err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if got := f.String(info); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.format, got, tc.want)
		}
	}
	for _, bad := range []string{"%NOT_A_FIELD%", "%REQ(x%", "%START_TIME(%Q)%", "50% off"} {
		if _, err := Compile(bad); err == nil {
			t.Errorf("%q compiled; want an error", bad)
		}
	}
	// Header values render missing values as empty, not "-".
	hv, _ := CompileHeaderValue("id=%REQ(x-missing)%")
	if got := hv.String(info); got != "id=" {
		t.Errorf("header value: %q", got)
	}
}

func TestDefaultFormat(t *testing.T) {
	f, err := Compile(DefaultFormat)
	if err != nil {
		t.Fatal(err)
	}
	want := `[2026-11-22T15:04:05.123Z] "GET /api/x?y=1 HTTP/1.1" 200 UH,URX 0 42 7 3 "-" "curl/8" "abc" "example.com" "10.0.0.1:80"` + "\n"
	if got := f.String(sampleInfo()); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestJSONFormat(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{
		"status": "%RESPONSE_CODE%", "path": "%REQ(:PATH)%", "missing": "%REQ(X-NONE)%",
		"nested": map[string]any{"cluster": "%UPSTREAM_CLUSTER%"}, "const": 1.5, "flag": true,
	})
	j, err := CompileJSON(s, false)
	if err != nil {
		t.Fatal(err)
	}
	got := string(j.Append(nil, sampleInfo()))
	want := `{"const":1.5,"flag":true,"missing":null,"nested":{"cluster":"web"},"path":"/api/x?y=1","status":200}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	j2, _ := CompileJSON(s, true)
	if got := string(j2.Append(nil, sampleInfo())); strings.Contains(got, "missing") {
		t.Fatalf("omit_empty_values kept an empty key: %s", got)
	}
}

func BenchmarkFormatDefault(b *testing.B) {
	f, _ := Compile(DefaultFormat)
	info := sampleInfo()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		buf = f.Append(buf[:0], info)
	}
}
