// Access logs through the proxy.

package features_test

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestAccessLogThroughProxy(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	logPath := t.TempDir() + "/access.log"
	p := start(t, cfg{
		hcm: `access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `}},
		  {name: json, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `.json, log_format: {json_format: {code: "%RESPONSE_CODE%", cluster: "%UPSTREAM_CLUSTER%", flags: "%RESPONSE_FLAGS%", route: "%ROUTE_NAME%"}}}}]`,
		vhosts:   vhost("{name: main, match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	testutil.Get(t, testutil.Client(), p.URL("http", "/logged?q=1"), "user-agent", "test-agent", "x-request-id", "rid-1")
	testutil.Get(t, testutil.Client(), p.URL("http", "/logged"), "host", "nomatch.example")
	var text, js []byte
	testutil.Eventually(t, 5*time.Second, func() bool {
		text, _ = os.ReadFile(logPath)
		js, _ = os.ReadFile(logPath + ".json")
		return strings.Count(string(text), "\n") >= 2 && strings.Count(string(js), "\n") >= 2
	}, "access log not written")
	var line string
	for _, l := range strings.Split(string(text), "\n") {
		if strings.Contains(l, "/logged?q=1") {
			line = l
		}
	}
	re := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /logged\?q=1 HTTP/1.1" 200 - 0 \d+ \d+ \d+ "-" "test-agent" "rid-1" "127\.0\.0\.1:\d+" "` + regexp.QuoteMeta(u.Addr) + `"$`)
	if !re.MatchString(line) {
		t.Errorf("default-format line does not match Envoy's:\n%s", line)
	}
	jl := strings.Split(string(js), "\n")[0]
	if jl != `{"cluster":"u","code":200,"flags":"-","route":"main"}` {
		t.Errorf("json line: %s", jl)
	}
}

// TestAccessLogCELFilter: the CEL extension filter logs only the requests
// its expression holds for (Envoy's docs examples: response.code >= 400,
// a header and a url_path test); an expression that errors logs nothing.
func TestAccessLogCELFilter(t *testing.T) {
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
		}
	}))
	logPath := filepath.Join(t.TempDir(), "access.log")
	cel := func(name, expr string) string {
		return `{name: ` + name + `, filter: {extension_filter: {name: cel, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter, expression: "` + expr + `"}}},
		  typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "` + name + ` %REQ(:PATH)% %RESPONSE_CODE%\n"}}}`
	}
	p := start(t, cfg{
		hcm: "access_log: [" + cel("errors", "response.code >= 400") + ", " +
			cel("tagged", "request.headers['x-log'] == 'true' || request.url_path.contains('v1beta3')") + ", " +
			cel("broken", "request.headers['absent'] == 'x'") + "]",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	c := testutil.Client()
	testutil.Get(t, c, p.URL("http", "/ok"))
	testutil.Get(t, c, p.URL("http", "/fail"))
	testutil.Get(t, c, p.URL("http", "/ok"), "x-log", "true")
	testutil.Get(t, c, p.URL("http", "/api/v1beta3/x"))
	var lines []string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(lines) >= 3
	}, "access log lines missing")
	time.Sleep(100 * time.Millisecond) // let any wrongly logged line land
	b, _ := os.ReadFile(logPath)
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := map[string]bool{"errors /fail 503": true, "tagged /ok 200": true, "tagged /api/v1beta3/x 200": true}
	if len(got) != len(want) {
		t.Fatalf("logged %q, want %v", got, want)
	}
	for _, l := range got {
		if !want[l] {
			t.Errorf("unexpected log line %q", l)
		}
	}
}

// TestAccessLogRuntimeFilters: status_code_filter's runtime_key and
// runtime_filter read the runtime (here its static layer), as Envoy's.
func TestAccessLogRuntimeFilters(t *testing.T) {
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
		}
	}))
	logPath := filepath.Join(t.TempDir(), "access.log")
	logger := func(name, filter string) string {
		return `{name: ` + name + `, filter: ` + filter + `, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "` + name + ` %REQ(:PATH)%\n"}}}`
	}
	p := start(t, cfg{
		hcm: "access_log: [" +
			logger("status", "{status_code_filter: {comparison: {op: GE, value: {default_value: 200, runtime_key: log.min_status}}}}") + ", " +
			logger("sampled", "{runtime_filter: {runtime_key: log.sampled, percent_sampled: {numerator: 0}}}") + ", " +
			logger("never", "{runtime_filter: {runtime_key: log.unset}}") + "]",
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
		extra:    "layered_runtime: {layers: [{name: static, static_layer: {log.min_status: 500, log.sampled: 100}}]}\n",
	})
	c := testutil.Client()
	testutil.Get(t, c, p.URL("http", "/ok"))
	testutil.Get(t, c, p.URL("http", "/fail"))
	want := map[string]bool{"status /fail": true, "sampled /ok": true, "sampled /fail": true}
	var got []string
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		got = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(got) >= len(want)
	}, "access log lines missing")
	for _, l := range got {
		if !want[l] {
			t.Errorf("unexpected log line %q (all: %q)", l, got)
		}
	}
}

// TestAccessLogTraceableFilter: traceable_filter logs the requests the
// connection manager decided to trace: with random_sampling 0 only one
// the client asks to trace (x-client-trace-id, client_sampling 100% by
// default).
func TestAccessLogTraceableFilter(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := start(t, cfg{
		hcm: `access_log: [{name: traced, filter: {traceable_filter: {}}, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)%\n"}}}]
tracing: {random_sampling: {value: 0}, provider: {name: envoy.tracers.zipkin, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig, collector_cluster: zipkin, collector_endpoint: /api/v2/spans, collector_endpoint_version: HTTP_JSON}}}`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + ", " + staticCluster("zipkin", "", "127.0.0.1:1") + "]",
	})
	c := testutil.Client()
	testutil.Get(t, c, p.URL("http", "/plain"))
	testutil.Get(t, c, p.URL("http", "/forced"), "x-client-trace-id", "abc")
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/forced")
	}, "the client-requested trace was not logged")
	if b, _ := os.ReadFile(logPath); strings.TrimSpace(string(b)) != "/forced" {
		t.Errorf("access log = %q, want only /forced", b)
	}
}
