// Access logs through the proxy.

package features_test

import (
	"os"
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
