// Global rate limiting: Contour's rateLimitService → the
// envoy.filters.http.ratelimit filter of every HTTP connection manager;
// HTTPProxy rateLimitPolicy.global (and the default policy) →
// VirtualHost.rate_limits, RouteAction.rate_limits and RateLimitPerRoute;
// Contour's status for bad policies.

package xdsgen

import (
	"strings"
	"testing"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/controller/model"
	"k8s.io/apimachinery/pkg/types"
)

func TestGlobalRateLimit(t *testing.T) {
	objs := extObjects(t) + extService("rls", `  services: [{name: authz, port: 9000}]
  protocol: h2c
  timeoutPolicy: {response: 100ms}`) + extService("rls-tls", `  services: [{name: authz, port: 9000}]
  validation: {caSecret: auth-ca, subjectName: rls.auth.svc}`)
	rls := func(mod func(*model.RateLimitServiceConfig)) *model.RateLimitServiceConfig {
		c := &model.RateLimitServiceConfig{ExtensionService: types.NamespacedName{Namespace: "auth", Name: "rls"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	const (
		rbac   = `{"name":"envoy.filters.http.rbac","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}`
		router = `{"name":"envoy.filters.http.router"`
		// Contour's filter: domain, failure_mode_deny, the
		// ExtensionService's response timeout, v3 gRPC with Contour's
		// :authority and no gRPC timeout.
		filter = `{"name":"envoy.filters.http.ratelimit","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit","domain":"contour","timeout":"0.100s","failureModeDeny":true,` +
			`"rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"extension/auth/rls","authority":"extension.auth.rls"}},"transportApiVersion":"V3"}}}`
		ignore = `"typedPerFilterConfig":{"envoy.filters.http.ratelimit":{"@type":"type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute","vhRateLimits":"IGNORE"}}`
	)
	def := &contourv1.GlobalRateLimitPolicy{Descriptors: []contourv1.RateLimitDescriptor{{Entries: []contourv1.RateLimitDescriptorEntry{
		{GenericKey: &contourv1.GenericKeyDescriptor{Key: "default", Value: "all"}}}}}}
	for _, tc := range []struct {
		name, spec string
		rls        *model.RateLimitServiceConfig
		want       []string // JSON fragments that must appear
		absent     []string // JSON fragments that must not
		status     string
		reason     string // reason of the first error, or of the first warning when valid
		desc       string // substring of the description (or of that warning)
	}{
		{"filter before the router; virtual host, route and disabled route", `
  virtualhost:
    fqdn: a.example.com
    rateLimitPolicy:
      global:
        descriptors:
        - entries: [{genericKey: {value: vhost}}]
        - entries: [{remoteAddress: {}}, {genericKey: {key: tier, value: gold}}]
  routes:
  - conditions: [{prefix: /user}]
    rateLimitPolicy: {global: {descriptors: [{entries: [{requestHeader: {headerName: x-user, descriptorKey: user}}]}]}}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /free}]
    rateLimitPolicy: {global: {disabled: true}}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /go}]
    requestRedirectPolicy: {hostname: b.example.com}
  - services: [{name: s1, port: 80}]`, rls(nil),
			[]string{
				rbac + "," + filter + "," + router,
				`{"match":{"prefix":"/user"},"route":{"cluster":"default/s1/80/da39a3ee5e","rateLimits":[{"actions":[{"requestHeaders":{"headerName":"x-user","descriptorKey":"user"}}]}]}}`,
				`{"match":{"prefix":"/free"},"route":{"cluster":"default/s1/80/da39a3ee5e"},` + ignore + `}`,
				`{"match":{"prefix":"/go"},"redirect":{"hostRedirect":"b.example.com","responseCode":"FOUND"}}`,
				`{"match":{"prefix":"/"},"route":{"cluster":"default/s1/80/da39a3ee5e"}}],"rateLimits":[{"actions":[{"genericKey":{"descriptorValue":"vhost"}}]},{"actions":[{"remoteAddress":{}},{"genericKey":{"descriptorValue":"gold","descriptorKey":"tier"}}]}]}`,
			}, nil, "valid", "", ""},
		{"header value match: expectMatch true by default, conditions as routes'", `
  virtualhost:
    fqdn: a.example.com
    rateLimitPolicy:
      global:
        descriptors:
        - entries:
          - requestHeaderValueMatch: {value: beta, headers: [{name: x-beta, exact: "on", ignoreCase: true}, {name: x-internal, notpresent: true}]}
          - requestHeaderValueMatch: {value: not-api, expectMatch: false, headers: [{name: x-api, regex: "v[0-9]+"}]}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			[]string{`"rateLimits":[{"actions":[{"headerValueMatch":{"descriptorValue":"beta","expectMatch":true,"headers":[{"name":"x-beta","stringMatch":{"exact":"on","ignoreCase":true}},{"name":"x-internal","presentMatch":true,"invertMatch":true}]}},` +
				`{"headerValueMatch":{"descriptorValue":"not-api","expectMatch":false,"headers":[{"name":"x-api","stringMatch":{"safeRegex":{"regex":"v[0-9]+"}}}]}}]}]`},
			nil, "valid", "", ""},
		{"TLS virtual host: the HTTPS chain has it after ext_authz; headers, failOpen, gRPC code, SNI authority", `
  virtualhost:
    fqdn: a.example.com
    tls: {secretName: tls}
    authorization: {extensionRef: {name: rls, namespace: auth}}
    rateLimitPolicy: {global: {descriptors: [{entries: [{remoteAddress: {}}]}]}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			rls(func(c *model.RateLimitServiceConfig) {
				c.ExtensionService.Name, c.Domain, c.FailOpen, c.EnableXRateLimitHeaders, c.EnableResourceExhaustedCode = "rls-tls", "mine", true, true, true
			}),
			[]string{
				`"name":"envoy.filters.http.ext_authz"`,
				`}},{"name":"envoy.filters.http.ratelimit","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit","domain":"mine","rateLimitedAsResourceExhausted":true,` +
					`"rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"extension/auth/rls-tls","authority":"rls.auth.svc"}},"transportApiVersion":"V3"},"enableXRatelimitHeaders":"DRAFT_VERSION_03"}},` + router,
				`"name":"https/a.example.com","virtualHosts":[{"name":"a.example.com","domains":["a.example.com","a.example.com:*"],"routes":[{"match":{"prefix":"/"},"route":{"cluster":"default/s1/80/da39a3ee5e"}`,
				`"rateLimits":[{"actions":[{"remoteAddress":{}}]}]`,
			},
			[]string{`"failureModeDeny"`}, "valid", "", ""},
		{"default policy for a virtual host without its own", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(func(c *model.RateLimitServiceConfig) { c.DefaultPolicy = def }),
			[]string{`"rateLimits":[{"actions":[{"genericKey":{"descriptorValue":"all","descriptorKey":"default"}}]}]`}, nil, "valid", "", ""},
		{"a virtual host's own policy replaces the default", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: [{remoteAddress: {}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(func(c *model.RateLimitServiceConfig) { c.DefaultPolicy = def }),
			[]string{`"rateLimits":[{"actions":[{"remoteAddress":{}}]}]`}, []string{`"descriptorValue":"all"`}, "valid", "", ""},
		{"global.disabled on the virtual host opts out of the default", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {disabled: true}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(func(c *model.RateLimitServiceConfig) { c.DefaultPolicy = def }),
			[]string{filter}, []string{`"rateLimits"`}, "valid", "", ""},
		{"local and global together", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {local: {requests: 5, unit: second}, global: {descriptors: [{entries: [{remoteAddress: {}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			[]string{`"tokenBucket":{"maxTokens":5,"tokensPerFill":5,"fillInterval":"1s"}`, `"rateLimits":[{"actions":[{"remoteAddress":{}}]}]`}, nil, "valid", "", ""},
		{"no rate limit service: rate_limits as Contour, no filter, a warning", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: [{remoteAddress: {}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, nil,
			[]string{`"rateLimits":[{"actions":[{"remoteAddress":{}}]}]`}, []string{`envoy.filters.http.ratelimit"`},
			"valid", "IgnoredField", "Spec.VirtualHost.RateLimitPolicy.Global is ignored: no global rate limit service is configured"},
		{"missing ExtensionService: the filter stays (fails closed), a warning", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - rateLimitPolicy: {global: {descriptors: [{entries: [{remoteAddress: {}}]}]}}
    services: [{name: s1, port: 80}]`, rls(func(c *model.RateLimitServiceConfig) { c.ExtensionService.Name = "nope" }),
			[]string{`"domain":"contour","failureModeDeny":true,"rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"extension/auth/nope","authority":"extension.auth.nope"}}`},
			nil, "valid", "RateLimitServiceNotFound", `route rateLimitPolicy.global: the rate limit service's ExtensionService "auth/nope" is missing or invalid, so requests it limits are answered 500`},
		{"virtual host entry with two fields", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: [{remoteAddress: {}, genericKey: {value: x}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "Spec.VirtualHost.RateLimitPolicy is invalid: rate limit descriptor entry must have exactly one field set"},
		{"route entry with no field", `
  virtualhost: {fqdn: a.example.com}
  routes: [{rateLimitPolicy: {global: {descriptors: [{entries: [{}]}]}}, services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "route.rateLimitPolicy is invalid: rate limit descriptor entry must have exactly one field set"},
		{"descriptor without entries", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: []}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "rate limit descriptor 0 must have at least one entry"},
		{"generic key without value", `
  virtualhost: {fqdn: a.example.com}
  routes: [{rateLimitPolicy: {global: {descriptors: [{entries: [{genericKey: {key: k}}]}]}}, services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "genericKey must have a value"},
		{"request header without descriptor key", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: [{requestHeader: {headerName: x-a}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "requestHeader must have a headerName and a descriptorKey"},
		{"header value match with a bad condition", `
  virtualhost: {fqdn: a.example.com, rateLimitPolicy: {global: {descriptors: [{entries: [{requestHeaderValueMatch: {value: v, headers: [{name: x-a, exact: a, contains: b}]}}]}]}}}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(nil),
			nil, nil, "invalid", "RateLimitPolicyNotValid", `requestHeaderValueMatch: header "x-a": exactly one of present`},
		{"invalid default policy", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}]}]`, rls(func(c *model.RateLimitServiceConfig) {
			c.DefaultPolicy = &contourv1.GlobalRateLimitPolicy{Descriptors: []contourv1.RateLimitDescriptor{{Entries: []contourv1.RateLimitDescriptorEntry{{}}}}}
		}),
			nil, nil, "invalid", "RateLimitPolicyNotValid", "Default Global RateLimit Policy is invalid: rate limit descriptor entry must have exactly one field set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := renderWith(t, objs+proxy(tc.spec), model.Options{Config: model.ConfigDefaults{RateLimitService: tc.rls}})
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
			st := m.Proxies[types.NamespacedName{Namespace: "default", Name: "p"}]
			if st == nil {
				t.Fatal("no status")
			}
			if st.Current() != tc.status {
				t.Fatalf("status = %s %q, want %s", st.Current(), st.Description(), tc.status)
			}
			switch {
			case tc.status != "valid":
				if len(st.Errors) == 0 || st.Errors[0].Reason != tc.reason || !strings.Contains(st.Errors[0].Message, tc.desc) ||
					(!strings.HasPrefix(st.Errors[0].Message, "route.") && st.Errors[0].Type != model.ErrVirtualHost) {
					t.Errorf("errors = %+v, want %s containing %q", st.Errors, tc.reason, tc.desc)
				}
				if strings.Contains(out, `"a.example.com"`) {
					t.Errorf("an invalid HTTPProxy must not be served:\n%s", out)
				}
			case tc.reason != "":
				if len(st.Warnings) != 1 || st.Warnings[0].Reason != tc.reason || !strings.Contains(st.Warnings[0].Message, tc.desc) {
					t.Errorf("warnings = %+v, want one %s containing %q", st.Warnings, tc.reason, tc.desc)
				}
			case len(st.Warnings) > 0:
				t.Errorf("warnings = %+v, want none", st.Warnings)
			}
		})
	}
}
