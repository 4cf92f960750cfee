// The health check HTTP filter: envoy.filters.http.health_check.

package features_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestHealthCheckFilter: envoy.filters.http.health_check answers
// /healthz itself — 200 while healthy, 503 with
// x-envoy-immediate-health-check-fail after /healthcheck/fail — and lets
// other requests through.
func TestHealthCheckFilter(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("up"))
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := start(t, cfg{
		// not_health_check_filter: the health checks the filter answers
		// are not logged.
		hcm: `access_log: [{name: log, filter: {not_health_check_filter: {}}, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: ` + logPath + `, log_format: {text_format: "%REQ(:PATH)%\n"}}}]
http_filters: [{name: envoy.filters.http.health_check, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck, pass_through_mode: false, headers: [{name: ":path", string_match: {exact: /healthz}}], cluster_min_healthy_percentages: {up: {value: 100}}}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: up}}"),
		clusters: "[" + staticCluster("up", "", up.Addr) + "]",
	})
	c := testutil.Client()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/healthz")); code != 200 || up.Hits() != 0 {
		t.Errorf("/healthz = %d (upstream hits %d), want 200 answered locally", code, up.Hits())
	}
	if code, _, body := testutil.Get(t, c, p.URL("http", "/other")); code != 200 || !strings.Contains(body, "upstream=up") {
		t.Errorf("/other = %d %q, want the upstream", code, body)
	}
	resp, err := http.Post("http://"+p.Admin+"/healthcheck/fail", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	code, h, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/healthz"))
	if code != 503 || h.Get("x-envoy-immediate-health-check-fail") != "true" {
		t.Errorf("after /healthcheck/fail: %d %v, want 503 with x-envoy-immediate-health-check-fail", code, h)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		return strings.Contains(string(b), "/other")
	}, "/other was not logged")
	if b, _ := os.ReadFile(logPath); strings.TrimSpace(string(b)) != "/other" {
		t.Errorf("access log = %q, want only /other (not the health checks)", b)
	}
}
