package header_to_metadata_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/legateproxy/legate/internal/filters/all"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestHeaderToMetadata: request and response headers become dynamic
// metadata (seen by the access log), a removed header does not reach the
// upstream, a missing one sets its default, a NUMBER that does not parse
// is not added.
func TestHeaderToMetadata(t *testing.T) {
	var seen http.Header
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("x-served-by", "pod-7")
		w.Write([]byte("ok"))
	}))
	h, port := u.Host()
	logPath := filepath.Join(t.TempDir(), "a.log")
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: main
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s,
            log_format: {text_format: "%%DYNAMIC_METADATA(envoy.lb:version)%% %%DYNAMIC_METADATA(envoy.filters.http.header_to_metadata:tier)%% %%DYNAMIC_METADATA(envoy.lb:pod)%% %%DYNAMIC_METADATA(envoy.lb:weight)%%\n"}}}]
          http_filters:
          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              request_rules:
              - header: x-version
                on_header_present: {metadata_namespace: envoy.lb, key: version, type: STRING}
                remove: true
              - header: x-tier
                on_header_missing: {key: tier, value: standard, type: STRING}
              - header: x-weight
                on_header_present: {metadata_namespace: envoy.lb, key: weight, type: NUMBER}
              response_rules:
              - header: x-served-by
                on_header_present: {metadata_namespace: envoy.lb, key: pod, type: STRING}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - {name: backend, type: STATIC, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, logPath, h, port), nil)
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("main", "/"), "x-version", "v2", "x-weight", "heavy"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if seen.Get("x-version") != "" {
		t.Errorf("remove: true, but the upstream saw x-version %q", seen.Get("x-version"))
	}
	p.Srv.Shutdown(t.Context())
	b, _ := os.ReadFile(logPath)
	if got := strings.TrimSpace(string(b)); got != `v2 standard pod-7 -` {
		t.Errorf("access log %q, want metadata v2, standard, pod-7 and no weight", got)
	}
}
