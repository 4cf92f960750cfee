package rbac_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

const rbacConfig = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{.Log}}
              log_format: {text_format: "%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_engine_result)%\n"}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/open"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.rbac: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute}
              - match: {prefix: "/admin"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.rbac:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
                    rbac:
                      rules:
                        action: ALLOW
                        policies:
                          ops-only:
                            permissions: [{any: true}]
                            principals: [{header: {name: x-role, string_match: {exact: ops}}}]
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          # The matcher of Envoy's RBAC example (examples/rbac), with shadow rules.
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              shadow_rules:
                action: DENY
                policies:
                  no-curl:
                    permissions: [{any: true}]
                    principals: [{header: {name: user-agent, string_match: {prefix: curl}}}]
              matcher:
                matcher_list:
                  matchers:
                  - predicate:
                      not_matcher:
                        single_predicate:
                          input:
                            name: envoy.matching.inputs.request_headers
                            typed_config:
                              "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput
                              header_name: referer
                          value_match:
                            safe_regex:
                              google_re2: {}
                              regex: https?://(www.)?envoyproxy.io/docs/envoy.*
                    on_match:
                      action:
                        name: action
                        typed_config:
                          "@type": type.googleapis.com/envoy.config.rbac.v3.Action
                          name: illegal-referer
                          action: DENY
                on_no_match:
                  action:
                    name: action
                    typed_config:
                      "@type": type.googleapis.com/envoy.config.rbac.v3.Action
                      name: all-pass
                      action: ALLOW
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`

func TestRBAC(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	h, port := up.Host()
	logPath := filepath.Join(t.TempDir(), "access.log")
	p := testutil.StartProxy(t, rbacConfig, map[string]string{"Host": h, "Port": port, "Log": logPath})
	const good = "https://www.envoyproxy.io/docs/envoy/latest/"
	cases := []struct {
		path, referer, role, agent string
		status                     int
		body                       string
	}{
		{"/", good, "", "", 200, ""},
		{"/", "https://evil.example/", "", "", 403, "RBAC: access denied"},
		{"/", "", "", "", 403, "RBAC: access denied"},
		{"/open", "", "", "", 200, ""},     // RBACPerRoute without rbac: off
		{"/admin", "", "ops", "", 200, ""}, // the route's own rules replace the filter's
		{"/admin", good, "dev", "", 403, "RBAC: access denied"},
		{"/", good, "", "curl/8", 200, ""}, // shadow rules deny, but only count
	}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", p.URL("http", c.path), nil)
		if c.referer != "" {
			req.Header.Set("Referer", c.referer)
		}
		if c.role != "" {
			req.Header.Set("x-role", c.role)
		}
		if c.agent != "" {
			req.Header.Set("User-Agent", c.agent)
		}
		resp, err := testutil.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 64)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		if resp.StatusCode != c.status || (c.body != "" && string(b[:n]) != c.body) {
			t.Errorf("%s referer=%q role=%q: %d %q, want %d %q", c.path, c.referer, c.role, resp.StatusCode, b[:n], c.status, c.body)
		}
	}
	for name, want := range map[string]int64{
		"http.ingress.rbac.allowed": 3, "http.ingress.rbac.denied": 3,
		"http.ingress.rbac.shadow_allowed": 3, "http.ingress.rbac.shadow_denied": 1,
	} {
		if got := p.Stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(logPath)
		s := string(b)
		return strings.Contains(s, "/ 403 rbac_access_denied_matched_policy[illegal-referer] allowed") &&
			strings.Contains(s, "/admin 403 rbac_access_denied_matched_policy[none] -") &&
			strings.Contains(s, "/ 200 via_upstream denied")
	}, "access log lacks the RBAC details and shadow metadata")
}
