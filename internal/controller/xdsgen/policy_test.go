// HTTPProxy corsPolicy, ipAllowPolicy/ipDenyPolicy and cookieRewritePolicies
// → the cors, rbac and lua filters' per-filter configs, and Contour's status
// for bad policies.

package xdsgen

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/testutil"
)

func TestHTTPProxyCORSAndIPFilter(t *testing.T) {
	leaf := testutil.NewCA(t, "policy-ca").Issue(t, "a.example.com", "a.example.com")
	tlsData := strings.NewReplacer("CERT", base64.StdEncoding.EncodeToString(leaf.CertPEM), "KEY", base64.StdEncoding.EncodeToString(leaf.KeyPEM))
	const (
		corsFilter = `{"name":"envoy.filters.http.cors","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}}`
		rbacFilter = `{"name":"envoy.filters.http.rbac","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}`
		luaFilter  = `{"name":"envoy.filters.http.lua","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}`
		lrlFilter  = `{"name":"envoy.filters.http.local_ratelimit","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","statPrefix":"http"}}`
	)
	for _, tc := range []struct {
		name, spec string
		want       []string // JSON fragments that must appear
		absent     []string // JSON fragments that must not
		status     string
		reason     string // reason of the first error
		desc       string // substring of the description
	}{
		{"filters in every HTTP connection manager, in Contour's order", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{corsFilter + "," + lrlFilter + "," + luaFilter + "," + rbacFilter + `,{"name":"envoy.filters.http.router"`}, []string{`"typedPerFilterConfig"`}, "valid", "", ""},
		{"local rate limit on the virtual host and a route", `
  virtualhost:
    fqdn: a.example.com
    rateLimitPolicy: {local: {requests: 10, unit: minute, burst: 5}}
  routes:
  - conditions: [{prefix: /slow}]
    rateLimitPolicy: {local: {requests: 1, unit: second, responseStatusCode: 503, responseHeadersToAdd: [{name: x-limited, value: "yes"}]}}
    services: [{name: s1, port: 80}]
  - services: [{name: s1, port: 80}]`,
			[]string{`"envoy.filters.http.local_ratelimit":{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","statPrefix":"vhost.a.example.com","status":{"code":"ServiceUnavailable"},"tokenBucket":{"maxTokens":1,"tokensPerFill":1,"fillInterval":"1s"},"filterEnabled":{"defaultValue":{"numerator":100},"runtimeKey":"local_rate_limit_enabled"},"filterEnforced":{"defaultValue":{"numerator":100},"runtimeKey":"local_rate_limit_enforced"},"responseHeadersToAdd":[{"header":{"key":"x-limited","value":"yes"},"appendAction":"OVERWRITE_IF_EXISTS_OR_ADD"}]}`,
				`"typedPerFilterConfig":{"envoy.filters.http.local_ratelimit":{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","statPrefix":"vhost.a.example.com","tokenBucket":{"maxTokens":15,"tokensPerFill":10,"fillInterval":"60s"}`},
			nil, "valid", "", ""},
		{"local rate limit without requests", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {local: {requests: 0, unit: second}}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RateLimitPolicyNotValid", "Spec.VirtualHost.RateLimitPolicy is invalid: local.requests must be greater than 0"},
		{"local rate limit with a 3xx status", `
  virtualhost: {fqdn: a.example.com}
  routes: [{rateLimitPolicy: {local: {requests: 1, unit: hour, responseStatusCode: 302}}, services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RateLimitPolicyNotValid", "route.rateLimitPolicy is invalid: local.responseStatusCode must be either unset or between 400 and 599"},
		{"CORS: exact, wildcard and regex origins, every field", `
  virtualhost:
    fqdn: a.example.com
    corsPolicy:
      allowCredentials: true
      allowOrigin: ["*", "https://Www.Example.com", "https://.*\\.example\\.org", "example.net"]
      allowMethods: [GET, POST, OPTIONS]
      allowHeaders: [authorization, cache-control]
      exposeHeaders: [Content-Length, Content-Range]
      maxAge: 10m
      allowPrivateNetwork: true
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{`"typedPerFilterConfig":{"envoy.filters.http.cors":{"@type":"type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",` +
				`"allowOriginStringMatch":[{"exact":"*","ignoreCase":true},{"exact":"https://Www.Example.com","ignoreCase":true},{"safeRegex":{"regex":"https://.*\\.example\\.org"}},{"safeRegex":{"regex":"example.net"}}],` +
				`"allowMethods":"GET,POST,OPTIONS","allowHeaders":"authorization,cache-control","exposeHeaders":"Content-Length,Content-Range","maxAge":"600","allowCredentials":true,"allowPrivateNetworkAccess":true}}`},
			nil, "valid", "", ""},
		{"CORS: maxAge 0 disables caching, credentials off stays explicit", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: ["*"], allowMethods: [GET], maxAge: "0s"}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{`"allowMethods":"GET","maxAge":"0","allowCredentials":false,"allowPrivateNetworkAccess":false`}, nil, "valid", "", ""},
		{"CORS on a TLS vhost: both listeners", `
  virtualhost: {fqdn: a.example.com, tls: {secretName: tls}, corsPolicy: {allowOrigin: ["*"], allowMethods: [GET]}}
  routes: [{services: [{name: s1, port: 80}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: CERT, tls.key: KEY}`,
			[]string{`"name":"https/a.example.com","virtualHosts":[{"name":"a.example.com","domains":["a.example.com","a.example.com:*"],"routes"`, `"name":"ingress_http","virtualHosts":[{"name":"a.example.com"`}, nil, "valid", "", ""},
		{"CORS: no origin", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: [], allowMethods: [GET]}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "PolicyDidNotParse", "Spec.VirtualHost.CORSPolicy: invalid allowed origin configuration with length 0"},
		{"CORS: no methods", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: ["*"], allowMethods: []}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "PolicyDidNotParse", "Spec.VirtualHost.CORSPolicy: invalid allowed methods configuration with length 0"},
		{"CORS: origin neither exact nor regex", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: ["**"], allowMethods: [GET]}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "PolicyDidNotParse", `Spec.VirtualHost.CORSPolicy: invalid allowed origin "**": allowed origin is invalid exact match and invalid regex match`},
		{"CORS: bad maxAge", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: ["*"], allowMethods: [GET], maxAge: soon}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "PolicyDidNotParse", `Spec.VirtualHost.CORSPolicy: unable to parse timeout string "soon"`},
		{"CORS: negative maxAge", `
  virtualhost: {fqdn: a.example.com, corsPolicy: {allowOrigin: ["*"], allowMethods: [GET], maxAge: -1s}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "PolicyDidNotParse", `Spec.VirtualHost.CORSPolicy: invalid max age value "-1s"`},
		{"IP allow on the vhost: Peer and Remote, bare addresses", `
  virtualhost:
    fqdn: a.example.com
    ipAllowPolicy: [{source: Peer, cidr: 192.0.2.0/24}, {source: Remote, cidr: 198.51.100.7}, {source: Peer, cidr: "2001:db8::1"}, {source: Peer, cidr: 203.0.113.9/24}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{`"typedPerFilterConfig":{"envoy.filters.http.rbac":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute","rbac":{"rules":{"policies":{"ip-rules":{"permissions":[{"any":true}],"principals":[` +
				`{"directRemoteIp":{"addressPrefix":"192.0.2.0","prefixLen":24}},{"remoteIp":{"addressPrefix":"198.51.100.7","prefixLen":32}},{"directRemoteIp":{"addressPrefix":"2001:db8::1","prefixLen":128}},{"directRemoteIp":{"addressPrefix":"203.0.113.0","prefixLen":24}}]}}}}}}`},
			nil, "valid", "", ""},
		{"IP deny on a route replaces the vhost's; only forwarding routes carry it", `
  virtualhost: {fqdn: a.example.com, ipAllowPolicy: [{source: Peer, cidr: 127.0.0.0/8}]}
  routes:
  - conditions: [{prefix: /deny}]
    ipDenyPolicy: [{source: Remote, cidr: 192.0.2.0/24}]
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /direct}]
    ipDenyPolicy: [{source: Remote, cidr: 192.0.2.0/24}]
    directResponsePolicy: {statusCode: 204}`,
			[]string{`"match":{"prefix":"/deny"},"route":{"cluster":"default/s1/80/da39a3ee5e"},"typedPerFilterConfig":{"envoy.filters.http.rbac":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute","rbac":{"rules":{"action":"DENY","policies":{"ip-rules":{"permissions":[{"any":true}],"principals":[{"remoteIp":{"addressPrefix":"192.0.2.0","prefixLen":24}}]}}}}}}`,
				`{"match":{"prefix":"/direct"},"directResponse":{"status":204}}`},
			nil, "valid", "", ""},
		{"IP allow and deny on the vhost", `
  virtualhost: {fqdn: a.example.com, ipAllowPolicy: [{source: Peer, cidr: 127.0.0.1}], ipDenyPolicy: [{source: Peer, cidr: 127.0.0.2}]}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "IncompatibleIPAddressFilters", "Spec.VirtualHost.IPAllowFilterPolicy and Spec.VirtualHost.IPDepnyFilterPolicy cannot both be defined."},
		{"IP allow and deny on a route", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], ipAllowPolicy: [{source: Peer, cidr: 127.0.0.1}], ipDenyPolicy: [{source: Peer, cidr: 127.0.0.2}]}]`,
			nil, nil, "invalid", "IncompatibleIPAddressFilters", "cannot specify both `ipAllowPolicy` and `ipDenyPolicy`"},
		{"bad CIDR on the vhost", `
  virtualhost: {fqdn: a.example.com, ipDenyPolicy: [{source: Peer, cidr: 127.0.0.1/33}]}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "InvalidCIDR", "127.0.0.1/33 failed to parse: invalid CIDR address: 127.0.0.1/33, Spec.VirtualHost.IPAllowFilterPolicy or Spec.VirtualHost.IPDenyFilterPolicy is invalid"},
		{"bad CIDR on a route", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], ipAllowPolicy: [{source: Peer, cidr: 127.0.0.1}, {source: Remote, cidr: not-an-ip}]}]`,
			nil, nil, "invalid", "InvalidCIDR", "not-an-ip failed to parse: invalid CIDR address: not-an-ip/32"},
		{"bad source", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], ipAllowPolicy: [{source: Proxy, cidr: 127.0.0.1}]}]`,
			nil, nil, "invalid", "InvalidSource", `127.0.0.1: source "Proxy" is not valid (use Peer or Remote)`},
		{"cookie rewrites: route and service rules merged per weighted cluster", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - cookieRewritePolicies: [{name: sess, pathRewrite: {value: /app}, sameSite: Lax}, {name: "q\"x", secure: true}]
    services:
    - {name: s1, port: 80, cookieRewritePolicies: [{name: sess, domainRewrite: {value: app.example.com}, sameSite: Strict}]}
    - {name: s2, port: 80}`,
			[]string{`{"name":"default/s1/80/da39a3ee5e","weight":1,"typedPerFilterConfig":{"envoy.filters.http.lua":{"@type":"type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute","sourceCode":{"inlineString":"-- cookieRewritePolicies, generated by legate controller.\nlocal rules = {\n  [\"q\\\"x\"] = {path = nil, domain = nil, samesite = nil, secure = true},\n  [\"sess\"] = {path = \"/app\", domain = \"app.example.com\", samesite = \"Strict\", secure = nil},\n}\n`,
				`{"name":"default/s2/80/eb59d51db0","weight":1,"typedPerFilterConfig":{"envoy.filters.http.lua":{"@type":"type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute","sourceCode":{"inlineString":"-- cookieRewritePolicies, generated by legate controller.\nlocal rules = {\n  [\"q\\\"x\"] = {path = nil, domain = nil, samesite = nil, secure = true},\n  [\"sess\"] = {path = \"/app\", domain = nil, samesite = \"Lax\", secure = nil},\n}\n`},
			nil, "valid", "", ""},
		{"cookie rewrite: duplicate cookie", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], cookieRewritePolicies: [{name: a, secure: true}, {name: a, secure: false}]}]`,
			nil, nil, "invalid", "CookieRewritePoliciesInvalid", `duplicate cookie rewrite rule for cookie "a" on route cookie rewrite rules`},
		{"cookie rewrite: nothing rewritten", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80, cookieRewritePolicies: [{name: a}]}]}]`,
			nil, nil, "invalid", "CookieRewritePoliciesInvalid", `no attributes rewritten for cookie "a" on service cookie rewrite rules`},
		{"cookie rewrite: attribute injection", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], cookieRewritePolicies: [{name: a, domainRewrite: {value: "x; Secure"}}]}]`,
			nil, nil, "invalid", "CookieRewritePoliciesInvalid", `cookie "a": domainRewrite.value "x; Secure" must be non-empty, without ';', '=' or control characters`},
		{"cookie rewrite: bad sameSite", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], cookieRewritePolicies: [{name: a, sameSite: Loose}]}]`,
			nil, nil, "invalid", "CookieRewritePoliciesInvalid", `cookie "a": sameSite "Loose" is not Strict, Lax or None`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, proxy(tlsData.Replace(tc.spec)))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("xDS lacks %s\n--- got:\n%s", w, out)
				}
			}
			for _, w := range tc.absent {
				if strings.Contains(out, w) {
					t.Errorf("xDS has %s\n--- got:\n%s", w, out)
				}
			}
			var st *model.ProxyStatus
			for _, s := range m.Proxies {
				st = s
			}
			if st == nil {
				t.Fatal("no status")
			}
			if st.Current() != tc.status || !strings.Contains(st.Description(), tc.desc) {
				t.Errorf("status = %s %q, want %s containing %q", st.Current(), st.Description(), tc.status, tc.desc)
			}
			if tc.reason != "" && (len(st.Errors) == 0 || st.Errors[0].Reason != tc.reason) {
				t.Errorf("errors = %+v, want reason %s first", st.Errors, tc.reason)
			}
			if tc.status != "valid" && strings.Contains(out, "a.example.com") {
				t.Errorf("an invalid HTTPProxy must not be served:\n%s", out)
			}
		})
	}
}
