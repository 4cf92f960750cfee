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
		{"%REQUEST_HEADER(USER-AGENT):4% %RESPONSE_HEADER(X-MISSING)%", "curl -"},
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

// plainObject has only a string form (no typed form, no fields), like
// filter-state objects Envoy cannot serialize as a proto.
type plainObject string

func (p plainObject) String() string { return string(p) }

// addrObject has fields, as Envoy's address objects (ip, port).
type addrObject struct{}

func (addrObject) String() string { return "10.0.0.2:8080" }
func (addrObject) Field(name string) (any, bool) {
	switch name {
	case "ip":
		return "10.0.0.2", true
	case "port":
		return int64(8080), true
	}
	return nil, false
}

func metadataInfo() *streaminfo.Info {
	info := sampleInfo()
	ns, _ := structpb.NewStruct(map[string]any{
		"tier": "gold", "weight": 5, "ratio": 1.5, "on": true, "none": nil,
		"list": []any{"a", 1}, "nested": map[string]any{"zone": "z1", "n": 2}, "quote": `say "hi"`,
	})
	info.DynamicMetadata = map[string]*structpb.Struct{"acme": ns}
	info.SetFilterState("tenant", streaminfo.StringObject("blue"))
	info.SetFilterState("quoted", streaminfo.StringObject(`a"b\c`))
	info.SetFilterState("plain.only", plainObject("registry"))
	info.SetFilterState("addr", addrObject{})
	return info
}

// TestMetadataAndFilterState: %DYNAMIC_METADATA(NS:KEY:...)% and
// %FILTER_STATE(KEY:F:FIELD)% as Envoy renders them (stream_info_formatter.cc:
// MetadataFormatter, FilterStateFormatter) in text formats.
func TestMetadataAndFilterState(t *testing.T) {
	info := metadataInfo()
	cases := []struct{ format, want string }{
		// A string as is; anything else as JSON; the namespace as an object.
		{"%DYNAMIC_METADATA(acme:tier)%", "gold"},
		{"%DYNAMIC_METADATA(acme:weight)%", "5"},
		{"%DYNAMIC_METADATA(acme:ratio)%", "1.5"},
		{"%DYNAMIC_METADATA(acme:on)%", "true"},
		{"%DYNAMIC_METADATA(acme:list)%", `["a",1]`},
		{"%DYNAMIC_METADATA(acme:nested)%", `{"n":2,"zone":"z1"}`},
		{"%DYNAMIC_METADATA(acme:nested:zone)%", "z1"},
		{"%DYNAMIC_METADATA(acme:quote)%", `say "hi"`},
		{"%DYNAMIC_METADATA(acme:nested:zone):1%", "z"},
		// Missing: namespace, key, path through a non-struct, null.
		{"%DYNAMIC_METADATA(other)%", "-"},
		{"%DYNAMIC_METADATA(other:tier)%", "-"},
		{"%DYNAMIC_METADATA(acme:missing)%", "-"},
		{"%DYNAMIC_METADATA(acme:tier:deeper)%", "-"},
		{"%DYNAMIC_METADATA(acme:none)%", "-"},
		// FILTER_STATE: TYPED (the default) is the typed form as JSON — a
		// JSON string for a string object; PLAIN the string itself.
		{"%FILTER_STATE(tenant)%", `"blue"`},
		{"%FILTER_STATE(tenant:TYPED)%", `"blue"`},
		{"%FILTER_STATE(tenant:PLAIN)%", "blue"},
		{"%FILTER_STATE(quoted:TYPED)%", `"a\"b\\c"`},
		{"%FILTER_STATE(quoted:PLAIN)%", `a"b\c`},
		{"%FILTER_STATE(tenant:PLAIN):2%", "bl"},
		{"%FILTER_STATE(tenant:TYPED):3%", `"bl`},
		{"%FILTER_STATE(missing:PLAIN)%", "-"},
		{"%FILTER_STATE(missing)%", "-"},
		// An object without a typed form renders as missing for TYPED.
		{"%FILTER_STATE(plain.only:PLAIN)%", "registry"},
		{"%FILTER_STATE(plain.only)%", "-"},
		// FIELD: string and integer fields; a string object has none.
		{"%FILTER_STATE(addr:FIELD:ip)%", "10.0.0.2"},
		{"%FILTER_STATE(addr:FIELD:port)%", "8080"},
		{"%FILTER_STATE(addr:FIELD:zone)%", "-"},
		{"%FILTER_STATE(tenant:FIELD:ip)%", "-"},
		// Tokens after the third are ignored, as in Envoy.
		{"%FILTER_STATE(addr:FIELD:port:extra)%", "8080"},
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
	// Header values: missing is empty.
	hv, _ := CompileHeaderValue("%FILTER_STATE(missing:PLAIN)%|%DYNAMIC_METADATA(acme:missing)%")
	if got := hv.String(info); got != "|" {
		t.Errorf("header value: %q", got)
	}
	for bad, want := range map[string]string{
		"%FILTER_STATE()%":               "key cannot be empty",
		"%FILTER_STATE(:PLAIN)%":         "key cannot be empty",
		"%FILTER_STATE(k:RAW)%":          "only PLAIN/TYPED/FIELD",
		"%FILTER_STATE(k:FIELD)%":        "FIELD should be used with the field name",
		"%FILTER_STATE(k:PLAIN:ip)%":     "FIELD should be used with the field name",
		"%FILTER_STATE(k:TYPED:ip)%":     "FIELD should be used with the field name",
		"%DYNAMIC_METADATA()%":           "needs a namespace",
		"%DYNAMIC_METADATA(:key)%":       "needs a namespace",
		"%FILTER_STATE(k:FIELDS:port)%":  "only PLAIN/TYPED/FIELD",
		"%FILTER_STATE(k:plain)%":        "only PLAIN/TYPED/FIELD",
		"%DYNAMIC_METADATA(acme:tier:x%": "unterminated",
		"%FILTER_STATE(k:PLAIN)%%FOO%":   "not supported field",
	} {
		if _, err := Compile(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", bad, err, want)
		}
	}
}

// TestJSONTypedValues: in json_format a lone %FILTER_STATE% (TYPED) or
// %DYNAMIC_METADATA% operator is a JSON value (Envoy's formatValue), not a
// string holding JSON; PLAIN and FIELD are strings.
func TestJSONTypedValues(t *testing.T) {
	s, _ := structpb.NewStruct(map[string]any{
		"typed": "%FILTER_STATE(tenant)%", "plain": "%FILTER_STATE(tenant:PLAIN)%", "port": "%FILTER_STATE(addr:FIELD:port)%",
		"missing": "%FILTER_STATE(missing)%", "untyped": "%FILTER_STATE(plain.only:TYPED)%",
		"ns": "%DYNAMIC_METADATA(acme:nested)%", "weight": "%DYNAMIC_METADATA(acme:weight)%", "tier": "%DYNAMIC_METADATA(acme:tier)%",
		"mixed": "t=%FILTER_STATE(tenant)%", "cut": "%DYNAMIC_METADATA(acme:tier):2%",
	})
	j, err := CompileJSON(s, false)
	if err != nil {
		t.Fatal(err)
	}
	got := string(j.Append(nil, metadataInfo()))
	want := `{"cut":"go","missing":null,"mixed":"t=\"blue\"","ns":{"n":2,"zone":"z1"},"plain":"blue","port":"8080",` +
		`"tier":"gold","typed":"blue","untyped":null,"weight":5}` + "\n"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	j2, _ := CompileJSON(s, true)
	if got := string(j2.Append(nil, metadataInfo())); strings.Contains(got, "missing") || strings.Contains(got, "untyped") {
		t.Fatalf("omit_empty_values kept an empty typed value: %s", got)
	}
}

// TestAddressOperators: every address operator Envoy has for the
// downstream and upstream connections, with and without port, the port
// alone, and _WITHOUT_PORT's MASK_PREFIX_LEN (CIDR notation).
func TestAddressOperators(t *testing.T) {
	info := &streaminfo.Info{
		DownstreamRemote:       netip.MustParseAddrPort("[::ffff:10.1.10.23]:5555"),
		DownstreamDirectRemote: netip.MustParseAddrPort("192.0.2.7:4444"),
		DownstreamLocal:        netip.MustParseAddrPort("[2001:db8:1234:5678:9abc:def0:1234:5678]:10000"),
		UpstreamLocalAddress:   "127.0.0.3:8443",
		UpstreamHost:           "10.0.0.1:443",
	}
	cases := []struct{ format, want string }{
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.1.10.23:5555"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.1.10.23"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(16)%", "10.1.0.0/16"},
		{"%DOWNSTREAM_REMOTE_PORT%", "5555"},
		{"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "192.0.2.7:4444"},
		{"%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "192.0.2.7"},
		{"%DOWNSTREAM_DIRECT_REMOTE_PORT%", "4444"},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", "[2001:db8:1234:5678:9abc:def0:1234:5678]:10000"},
		{"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "2001:db8:1234:5678:9abc:def0:1234:5678"},
		{"%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT(64)%", "2001:db8:1234:5678::/64"},
		{"%DOWNSTREAM_LOCAL_PORT%", "10000"},
		{"%UPSTREAM_LOCAL_ADDRESS%", "127.0.0.3:8443"},
		{"%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "127.0.0.3"},
		{"%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT(8)%", "127.0.0.0/8"},
		{"%UPSTREAM_LOCAL_PORT%", "8443"},
		{"%UPSTREAM_REMOTE_ADDRESS%", "10.0.0.1:443"},
		{"%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.0.1"},
		{"%UPSTREAM_REMOTE_PORT%", "443"},
		// No host name: the host's address, as Envoy.
		{"%UPSTREAM_HOST_NAME%", "10.0.0.1:443"},
		{"%UPSTREAM_HOST_NAME_WITHOUT_PORT%", "10.0.0.1"},
		// An IPv4 address cannot be masked to more than 32 bits.
		{"%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(64)%", "-"},
	}
	for _, tc := range cases {
		f, err := Compile(tc.format)
		if err != nil {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if got := f.String(info); got != tc.want {
			t.Errorf("%s: got %q want %q", tc.format, got, tc.want)
		}
		// Before the upstream is chosen (or without a connection) every
		// operator renders "-".
		if got := f.String(&streaminfo.Info{}); got != "-" {
			t.Errorf("%s on an empty stream: got %q want -", tc.format, got)
		}
	}
	named := &streaminfo.Info{UpstreamHost: "10.0.0.1:443", UpstreamHostname: "api.example.com"}
	for format, want := range map[string]string{"%UPSTREAM_HOST_NAME%": "api.example.com", "%UPSTREAM_HOST_NAME_WITHOUT_PORT%": "api.example.com"} {
		f, err := Compile(format)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		if got := f.String(named); got != want {
			t.Errorf("%s with a host name: %q, want %q", format, got, want)
		}
	}
	for _, bad := range []string{"%UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT(x)%", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT(129)%", "%UPSTREAM_LOCAL_PORT(8)%", "%UPSTREAM_FOO_PORT%"} {
		if _, err := Compile(bad); err == nil {
			t.Errorf("%q compiled; want an error", bad)
		}
	}
	// json_format renders the ports as numbers, as Envoy.
	st, _ := structpb.NewStruct(map[string]any{"p": "%UPSTREAM_REMOTE_PORT%", "l": "%UPSTREAM_LOCAL_PORT%"})
	j, err := CompileJSON(st, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(j.Append(nil, info)); !strings.Contains(got, `"p":443`) || !strings.Contains(got, `"l":8443`) {
		t.Errorf("json: %s", got)
	}
}
