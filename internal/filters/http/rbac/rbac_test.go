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

// TestRBACCondition: a policy's CEL condition (the parsed AST of Envoy's
// rbac-condition docs example, a global startsWith call, and an equality
// on a request header) must hold for the policy to match; an expression
// that errors (a header that is absent) does not match.
func TestRBACCondition(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	h, port := up.Host()
	p := testutil.StartProxy(t, `
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
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}]}
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  deny-v1:
                    permissions: [{any: true}]
                    principals: [{any: true}]
                    condition:
                      call_expr:
                        function: startsWith
                        args:
                        - select_expr: {operand: {ident_expr: {name: request}}, field: path}
                        - const_expr: {string_value: /v1/}
                  deny-evil-tenant:
                    permissions: [{any: true}]
                    principals: [{any: true}]
                    condition:
                      call_expr:
                        function: _==_
                        args:
                        - select_expr: {operand: {select_expr: {operand: {ident_expr: {name: request}}, field: headers}}, field: x-tenant}
                        - const_expr: {string_value: evil}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`, map[string]string{"Host": h, "Port": port})
	for _, c := range []struct {
		path, tenant string
		want         int
	}{
		{"/v1/items", "", 403},
		{"/v2/items", "evil", 403},
		{"/v2/items", "acme", 200},
		{"/v2/items", "", 200},
	} {
		var hdr []string
		if c.tenant != "" {
			hdr = []string{"x-tenant", c.tenant}
		}
		if code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", c.path), hdr...); code != c.want {
			t.Errorf("%s (tenant %q) = %d %q, want %d", c.path, c.tenant, code, body, c.want)
		}
	}
	if n := p.Stat(t, "http.ingress.rbac.denied"); n != 2 {
		t.Errorf("rbac.denied = %d, want 2", n)
	}
}

// TestRBACSameNameAllowAndDeny: Istio's shape, a DENY and an ALLOW RBAC
// filter that share the name envoy.filters.http.rbac; Envoy accepts
// duplicate filter names and runs both.
func TestRBACSameNameAllowAndDeny(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	h, port := up.Host()
	rbac := func(action, principal string) string {
		return `          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules: {action: ` + action + `, policies: {p: {permissions: [{any: true}], principals: [` + principal + `]}}}
`
	}
	p := testutil.StartProxy(t, `
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
          route_config: {virtual_hosts: [{name: all, domains: ["*"], routes: [{match: {prefix: "/"}, route: {cluster: backend}}]}]}
          http_filters:
`+rbac("DENY", "{header: {name: x-bad, present_match: true}}")+rbac("ALLOW", "{header: {name: x-role, string_match: {exact: ok}}}")+`          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`, map[string]string{"Host": h, "Port": port})
	for _, c := range []struct {
		hdr  []string
		want int
	}{
		{[]string{"x-role", "ok"}, 200},
		{[]string{"x-role", "ok", "x-bad", "1"}, 403},
		{nil, 403},
	} {
		if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/"), c.hdr...); code != c.want {
			t.Errorf("%v = %d, want %d", c.hdr, code, c.want)
		}
	}
}
