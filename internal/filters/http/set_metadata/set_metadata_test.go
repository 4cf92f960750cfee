package set_metadata_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/legateproxy/legate/internal/filters/all"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestSetMetadata: fixed values reach dynamic metadata (the access log
// reads them); a second entry without allow_overwrite leaves the existing
// namespace alone, one with it merges.
func TestSetMetadata(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "a.log")
	p := testutil.StartProxy(t, `
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
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: {{.}},
            log_format: {text_format: "%DYNAMIC_METADATA(acme:tier)% %DYNAMIC_METADATA(acme:zone)% %DYNAMIC_METADATA(legacy:x)%\n"}}}]
          http_filters:
          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata_namespace: legacy
              value: {x: old-form}
              metadata:
              - {metadata_namespace: acme, value: {tier: gold}}
              - {metadata_namespace: acme, value: {tier: silver}}
              - {metadata_namespace: acme, allow_overwrite: true, value: {zone: z1}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]
`, logPath)
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("main", "/")); code != 200 {
		t.Fatalf("status %d", code)
	}
	p.Srv.Shutdown(t.Context())
	b, _ := os.ReadFile(logPath)
	if got := strings.TrimSpace(string(b)); got != "gold z1 old-form" {
		t.Errorf("access log %q, want gold z1 old-form", got)
	}
}
