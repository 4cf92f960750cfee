package accesslog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// hcmLogs decodes an access_log list given in YAML.
func hcmLogs(t *testing.T, y string) []*accesslogv3.AccessLog {
	t.Helper()
	// Wrap in a message with a repeated AccessLog field: the TcpProxy config.
	var out []*accesslogv3.AccessLog
	for _, item := range strings.Split(strings.TrimSpace(y), "\n---\n") {
		al := &accesslogv3.AccessLog{}
		if _, err := config.Decode([]byte(item), al, "access_log"); err != nil {
			t.Fatal(err)
		}
		out = append(out, al)
	}
	return out
}

func info(code int, ms int, flags streaminfo.Flags, ua string) *streaminfo.Info {
	req := &headers.Request{Method: "GET", Path: "/p", Authority: "h"}
	if ua != "" {
		req.Add("user-agent", ua)
	}
	return &streaminfo.Info{StartTime: time.Now(), ResponseCode: code, Done: time.Duration(ms) * time.Millisecond, ResponseFlags: flags, Request: req, Protocol: "HTTP/1.1"}
}

func TestFiltersAndFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	logs := hcmLogs(t, `
name: envoy.access_loggers.file
typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: `+path+`, log_format: {text_format: "%RESPONSE_CODE% %DURATION% %RESPONSE_FLAGS% %REQ(USER-AGENT)%\n"}}
filter:
  or_filter:
    filters:
    - status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: x}}}
    - and_filter: {filters: [{duration_filter: {comparison: {op: GE, value: {default_value: 100, runtime_key: y}}}}, {header_filter: {header: {name: user-agent, string_match: {prefix: slow}}}}]}
    - response_flag_filter: {flags: [UH]}`)
	files := NewFiles(stats.NewStore())
	defer files.Close()
	ls, err := Compile(logs, "access_log", files)
	if err != nil {
		t.Fatal(err)
	}
	l := ls[0]
	l.Log(info(200, 5, 0, "curl"))                                          // filtered out
	l.Log(info(503, 5, 0, "curl"))                                          // 5xx
	l.Log(info(200, 150, 0, "slowclient"))                                  // slow and UA matches
	l.Log(info(200, 150, 0, "curl"))                                        // slow but UA does not match
	l.Log(info(200, 1, streaminfo.Flags(streaminfo.NoHealthyUpstream), "")) // UH
	files.Flush()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "503 5 - curl\n200 150 - slowclient\n200 1 UH -\n"
	if string(b) != want {
		t.Fatalf("log file:\n%s\nwant:\n%s", b, want)
	}
	// Reopen (log rotation): the old file moves away, new entries go to a new file.
	os.Rename(path, path+".1")
	files.Reopen()
	l.Log(info(500, 1, 0, "x"))
	files.Flush()
	b, _ = os.ReadFile(path)
	if string(b) != "500 1 - x\n" {
		t.Fatalf("after reopen: %q", b)
	}
}

func TestRejectedLoggers(t *testing.T) {
	cases := []struct{ yaml, want string }{
		{`{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /nonexistent-dir/a.log}}`, "access_log[0].typed_config.path: open access log"},
		{`{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /tmp/x.log, log_format: {text_format: "%BOGUS%"}}}`, "not supported field in StreamInfo: BOGUS"},
		{`{name: x, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: /tmp/x.log}, filter: {extension_filter: {name: e, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter, expression: "request.path =="}}}}`, "access_log[0].filter.extension_filter.typed_config.expression"},
	}
	for _, tc := range cases {
		_, err := Compile(hcmLogs(t, tc.yaml), "access_log", NewFiles(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
}

func BenchmarkLogDefault(b *testing.B) {
	dir := b.TempDir()
	al := &accesslogv3.AccessLog{}
	config.Decode([]byte(`{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: `+filepath.Join(dir, "a.log")+`}}`), al, "")
	files := NewFiles(nil)
	defer files.Close()
	ls, err := Compile([]*accesslogv3.AccessLog{al}, "access_log", files)
	if err != nil {
		b.Fatal(err)
	}
	in := info(200, 3, 0, "bench")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ls[0].Log(in)
	}
}
