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

// TestHeaderToMetadataCookie: the documentation's cookie example (a rule
// with cookie: instead of header:): the named cookie's value becomes
// envoy.lb metadata, a request without it sets the default, and the
// Cookie header reaches the upstream unchanged.
func TestHeaderToMetadataCookie(t *testing.T) {
	var seen []string
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("cookie"))
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
          codec_type: AUTO
          stat_prefix: ingress_http
          access_log: [{name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: %s,
            log_format: {text_format: "%%DYNAMIC_METADATA(envoy.lb:version)%% %%DYNAMIC_METADATA(envoy.lb:default)%%\n"}}}]
          route_config:
            name: local_route
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: versioned-cluster}}]
          http_filters:
          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              request_rules:
              - cookie: cookie
                on_header_present:
                  metadata_namespace: envoy.lb
                  key: version
                  type: STRING
                on_header_missing:
                  metadata_namespace: envoy.lb
                  key: default
                  value: 'true'
                  type: STRING
                remove: false
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - {name: versioned-cluster, type: STATIC, load_assignment: {cluster_name: versioned-cluster, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, logPath, h, port), nil)
	c := testutil.Client()
	for _, hdr := range [][]string{
		{"cookie", "theme=dark; cookie=v2"},
		{"cookie", "theme=dark"},
		{"x-cookie", "v3"},
	} {
		if code, _, _ := testutil.Get(t, c, p.URL("main", "/"), hdr...); code != 200 {
			t.Fatalf("%v: status %d", hdr, code)
		}
	}
	if len(seen) != 3 || seen[0] != "theme=dark; cookie=v2" || seen[1] != "theme=dark" {
		t.Errorf("the upstream saw cookies %q, want them unchanged", seen)
	}
	p.Srv.Shutdown(t.Context())
	b, _ := os.ReadFile(logPath)
	if got := strings.TrimSpace(string(b)); got != "v2 -\n- true\n- true" {
		t.Errorf("access log %q, want v2 from the cookie, then the default twice", got)
	}
}

// TestHeaderToMetadataStats: with stat_prefix the filter counts, as
// Envoy, under http_filter_name.<stat_prefix>.: every rule processed per
// direction, metadata added, a missing header of an on_header_missing
// rule, a BASE64 value that does not decode and a value of 8 KiB or more;
// a BASE64 STRING is stored decoded (padding optional).
func TestHeaderToMetadataStats(t *testing.T) {
	u := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
            log_format: {text_format: "%%DYNAMIC_METADATA(envoy.lb:version)%% %%DYNAMIC_METADATA(envoy.lb:user)%% %%DYNAMIC_METADATA(envoy.lb:tier)%%\n"}}}]
          http_filters:
          - name: envoy.filters.http.header_to_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config
              stat_prefix: header_converter
              request_rules:
              - header: x-version
                on_header_present: {metadata_namespace: envoy.lb, key: version, type: STRING}
              - header: x-user
                on_header_present: {metadata_namespace: envoy.lb, key: user, type: STRING, encode: BASE64}
              - header: x-tier
                on_header_missing: {metadata_namespace: envoy.lb, key: tier, value: standard, type: STRING}
              response_rules:
              - header: x-absent
                on_header_present: {metadata_namespace: envoy.lb, key: absent, type: STRING}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}]
  clusters:
  - {name: backend, type: STATIC, load_assignment: {cluster_name: backend, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}}
`, logPath, h, port), nil)
	c := testutil.Client()
	for _, hdr := range [][]string{
		{"x-version", "v2", "x-user", "aGVsbG8"},                                   // 2 added + tier default
		{"x-version", strings.Repeat("a", 8192), "x-user", "!!", "x-tier", "gold"}, // too long, bad base64
	} {
		if code, _, _ := testutil.Get(t, c, p.URL("main", "/"), hdr...); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	want := map[string]int64{
		"http_filter_name.header_converter.request_rules_processed":   6,
		"http_filter_name.header_converter.request_metadata_added":    3,
		"http_filter_name.header_converter.request_header_not_found":  1,
		"http_filter_name.header_converter.response_rules_processed":  2,
		"http_filter_name.header_converter.response_metadata_added":   0,
		"http_filter_name.header_converter.response_header_not_found": 0,
		"http_filter_name.header_converter.base64_decode_failed":      1,
		"http_filter_name.header_converter.header_value_too_long":     1,
		"http_filter_name.header_converter.regex_substitution_failed": 0,
	}
	for name, v := range want {
		if got := p.Stat(t, name); got != v {
			t.Errorf("%s = %d, want %d", name, got, v)
		}
	}
	p.Srv.Shutdown(t.Context())
	b, _ := os.ReadFile(logPath)
	if got := strings.TrimSpace(string(b)); got != "v2 hello standard\n- - -" {
		t.Errorf("access log %q, want the decoded user and the default tier, then nothing", got)
	}
}
