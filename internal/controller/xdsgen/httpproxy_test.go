// HTTPProxy fields → xDS: one table case per field or strategy.

package xdsgen

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/model"
)

// TestHTTPProxyFeatures applies one HTTPProxy per capability and checks
// the xDS served (as JSON fragments) and the status.
func TestHTTPProxyFeatures(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string // JSON fragments that must appear
		status     string   // currentStatus of default/p
		desc       string   // substring of the description
	}{
		{"prefix and header conditions", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{prefix: /api}, {header: {name: x-os, contains: ios}}]
    services: [{name: s1, port: 80}]`,
			[]string{`"domains":["a.example.com","a.example.com:*"]`, `"prefix":"/api"`, `"name":"x-os","stringMatch":{"contains":"ios"}`, `"cluster":"default/s1/80/da39a3ee5e"`}, "valid", "Valid HTTPProxy"},
		{"exact, regex and query parameter", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{exact: /exact}]
    services: [{name: s1, port: 80}]
  - conditions: [{regex: '/r/[0-9]+'}, {queryParameter: {name: os, exact: other, ignoreCase: true}}]
    services: [{name: s1, port: 80}]`,
			[]string{`"path":"/exact"`, `"safeRegex":{"regex":"/r/[0-9]+"}`, `"queryParameters":[{"name":"os","stringMatch":{"exact":"other","ignoreCase":true}}]`}, "valid", ""},
		{"notpresent and notexact headers", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{header: {name: x-a, notpresent: true}}, {header: {name: x-b, notexact: v}}]
    services: [{name: s1, port: 80}]`,
			[]string{`{"name":"x-a","presentMatch":true,"invertMatch":true}`, `{"name":"x-b","stringMatch":{"exact":"v"},"invertMatch":true}`}, "valid", ""},
		{"weights, mirror and h2c by annotation", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - services: [{name: s1, port: 80, weight: 90}, {name: s2, port: 80, weight: 10}, {name: s1, port: 80, mirror: true}]`,
			[]string{`"weightedClusters":{"clusters":[{"name":"default/s1/80/da39a3ee5e","weight":90},{"name":"default/s2/80/`, `"requestMirrorPolicies":[{"cluster":"default/s1/80/da39a3ee5e"}]`, `"http2ProtocolOptions":{}`}, "valid", ""},
		{"headers policies and host rewrite", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - services: [{name: s1, port: 80, responseHeadersPolicy: {set: [{name: X-Svc, value: s1}]}}]
    requestHeadersPolicy: {set: [{name: X-Foo, value: "100%"}, {name: Host, value: internal.example.com}], remove: [X-Baz]}`,
			[]string{`"requestHeadersToAdd":[{"header":{"key":"X-Foo","value":"100%%"},"appendAction":"OVERWRITE_IF_EXISTS_OR_ADD"}]`, `"requestHeadersToRemove":["X-Baz"]`, `"hostRewriteLiteral":"internal.example.com"`, `"responseHeadersToAdd":[{"header":{"key":"X-Svc","value":"s1"}`}, "valid", ""},
		{"timeouts, retries, websockets", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - timeoutPolicy: {response: 1s, idle: infinity, idleConnection: 60s}
    retryPolicy: {count: 3, perTryTimeout: 150ms, retryOn: [5xx, gateway-error], retriableStatusCodes: [503]}
    enableWebsockets: true
    services: [{name: s1, port: 80}]`,
			[]string{`"timeout":"1s"`, `"idleTimeout":"0s"`, `"retryOn":"5xx,gateway-error","numRetries":3,"perTryTimeout":"0.150s","retriableStatusCodes":[503]`, `"upgradeConfigs":[{"upgradeType":"websocket","enabled":true}]`, `"commonHttpProtocolOptions":{"idleTimeout":"60s"}`}, "valid", ""},
		{"path rewrite", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{prefix: /old}]
    pathRewritePolicy: {replacePrefix: [{replacement: /new}]}
    services: [{name: s1, port: 80}]`,
			[]string{`"prefixRewrite":"/new"`}, "valid", ""},
		{"redirect and direct response", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{prefix: /r}]
    requestRedirectPolicy: {scheme: https, hostname: www.example.com, port: 8443, statusCode: 301, path: /x}
  - conditions: [{prefix: /d}]
    directResponsePolicy: {statusCode: 418, body: teapot}`,
			[]string{`"redirect":{"schemeRedirect":"https","hostRedirect":"www.example.com","portRedirect":8443,"pathRedirect":"/x"}`, `"directResponse":{"status":418,"body":{"inlineString":"teapot"}}`}, "valid", ""},
		{"load balancer strategies", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{prefix: /c}]
    loadBalancerPolicy: {strategy: Cookie}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /h}]
    loadBalancerPolicy: {strategy: RequestHash, requestHashPolicies: [{headerHashOptions: {headerName: X-Id}, terminal: true}, {hashSourceIP: true}]}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /l}]
    loadBalancerPolicy: {strategy: WeightedLeastRequest}
    services: [{name: s1, port: 80}]`,
			[]string{`"cookie":{"name":"X-Contour-Session-Affinity","ttl":"0s","path":"/"}`, `{"header":{"headerName":"X-Id"},"terminal":true}`, `"connectionProperties":{"sourceIp":true}`, `"lbPolicy":"RING_HASH"`, `"lbPolicy":"LEAST_REQUEST"`}, "valid", ""},
		{"health check", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - healthCheckPolicy: {path: /healthz, intervalSeconds: 7, expectedStatuses: [{start: 200, end: 400}]}
    services: [{name: s1, port: 80}]`,
			[]string{`"healthChecks":[{"timeout":"2s","interval":"7s","unhealthyThreshold":3,"healthyThreshold":2,"httpHealthCheck":{"host":"contour-envoy-healthcheck","path":"/healthz","expectedStatuses":[{"start":"200","end":"400"}]}}]`}, "valid", ""},
		{"endpoints: ready only, sorted, one locality per zone with weight", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{`"clusterName":"default/s1/http","endpoints":[{"locality":{"zone":"z1"},"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.0.0.1","portValue":8080}}},"loadBalancingWeight":1},{"endpoint":{"address":{"socketAddress":{"address":"10.0.0.2","portValue":8080}}},"loadBalancingWeight":1}],"loadBalancingWeight":1}]`}, "valid", ""},
		{"slow start", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - services: [{name: s1, port: 80, slowStartPolicy: {window: 10s, aggression: "1.5", minWeightPercent: 5}}]`,
			[]string{`"roundRobinLbConfig":{"slowStartConfig":{"slowStartWindow":"10s","aggression":{"defaultValue":1.5`, `"minWeightPercent":{"value":5}`}, "valid", ""},
		{"slow start needs round robin or least request", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - loadBalancerPolicy: {strategy: Random}
    services: [{name: s1, port: 80, slowStartPolicy: {window: 10s}}]`,
			nil, "invalid", "slow start is only supported with RoundRobin or WeightedLeastRequest"},
		{"missing service", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: nope, port: 80}]}]`,
			nil, "invalid", `Spec.Routes unresolved service reference: service "default/nope" not found`},
		{"missing port", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 81}]}]`,
			nil, "invalid", `port "81" on service "default/s1" not matched`},
		{"two prefixes", `
  virtualhost: {fqdn: a.example.com}
  routes: [{conditions: [{prefix: /a}, {prefix: /b}], services: [{name: s1, port: 80}]}]`,
			nil, "invalid", "more than one path condition"},
		{"internal redirects, safe cross scheme and no repeated route", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], internalRedirectPolicy: {maxInternalRedirects: 2, redirectResponseCodes: [301, 307], allowCrossSchemeRedirect: SafeOnly, denyRepeatedRouteRedirect: true}}]`,
			[]string{`"internalRedirectPolicy":{"maxInternalRedirects":2,"redirectResponseCodes":[301,307],"predicates":[{"name":"envoy.internal_redirect_predicates.safe_cross_scheme","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.internal_redirect.safe_cross_scheme.v3.SafeCrossSchemeConfig"}},{"name":"envoy.internal_redirect_predicates.previous_routes","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.internal_redirect.previous_routes.v3.PreviousRoutesConfig"}}],"allowCrossSchemeRedirect":true}`}, "valid", ""},
		{"internal redirects with Contour's defaults", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], internalRedirectPolicy: {}}]`,
			[]string{`"internalRedirectPolicy":{}`}, "valid", ""},
		{"internal redirects: a code that cannot be followed", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], internalRedirectPolicy: {redirectResponseCodes: [304]}}]`,
			nil, "invalid", "route.internalRedirectPolicy: redirectResponseCodes: 304 is not a redirect code"},
		{"internal redirects: an unknown cross-scheme mode", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], internalRedirectPolicy: {allowCrossSchemeRedirect: Sometimes}}]`,
			nil, "invalid", `allowCrossSchemeRedirect "Sometimes": must be Always, Never or SafeOnly`},
		{"TLS secret missing", `
  virtualhost: {fqdn: a.example.com, tls: {secretName: nope}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, "invalid", `Spec.VirtualHost.TLS Secret "nope" is invalid: Secret not found`},
		{"tcpproxy without TLS", `
  virtualhost: {fqdn: a.example.com}
  tcpproxy: {services: [{name: s1, port: 80}]}`,
			nil, "invalid", "Spec.TCPProxy requires that either Spec.TLS.Passthrough or Spec.TLS.SecretName be set"},
		{"TLS passthrough", `
  virtualhost: {fqdn: a.example.com, tls: {passthrough: true}}
  tcpproxy: {services: [{name: s1, port: 80}]}`,
			[]string{`"filterChainMatch":{"serverNames":["a.example.com"]}`, `"@type":"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy","statPrefix":"tcp/a.example.com","cluster":"default/s1/80/da39a3ee5e"`, `envoy.filters.listener.tls_inspector`}, "valid", ""},
		{"nothing defined", `
  virtualhost: {fqdn: a.example.com}`,
			nil, "invalid", "HTTPProxy.Spec must have at least one Route, Include, or a TCPProxy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, proxy(tc.spec))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("xDS lacks %s\n--- got:\n%s", w, out)
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
			if tc.status != "valid" && strings.Contains(out, "a.example.com") {
				t.Errorf("an invalid HTTPProxy must not be served:\n%s", out)
			}
		})
	}
}

// healthPortObjects is a Service that serves on one port and answers
// health checks on another, with its EndpointSlice.
const healthPortObjects = `
apiVersion: v1
kind: Service
metadata: {name: hp, namespace: default}
spec: {ports: [{name: http, port: 80, targetPort: 8080}, {name: health, port: 8081, targetPort: 9090}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hp-x, namespace: default, labels: {kubernetes.io/service-name: hp}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: health, port: 9090}]
endpoints:
- {addresses: [10.0.1.1], conditions: {ready: true}}
---
`

// TestHealthPort: a service's healthPort (a port of the same Service)
// makes a cluster of its own whose endpoints carry the health port's
// target as health_check_config.port_value, for routes and TCP proxies,
// as Contour's endpoint translator; an unknown health port is an
// unresolved service reference.
func TestHealthPort(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string
		status     string
		desc       string
	}{
		{"route", `
  virtualhost: {fqdn: a.example.com}
  routes:
  - healthCheckPolicy: {path: /healthz}
    services: [{name: hp, port: 80, healthPort: 8081}, {name: hp, port: 80}]`,
			[]string{`"clusterName":"default/hp/http/health/health","endpoints":[{"locality":{},"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.0.1.1","portValue":8080}},"healthCheckConfig":{"portValue":9090}}`,
				`"serviceName":"default/hp/http/health/health"`, `"clusterName":"default/hp/http","endpoints":[{"locality":{},"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.0.1.1","portValue":8080}}},"loadBalancingWeight":1}]`},
			"valid", ""},
		{"the serving port itself", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: hp, port: 80, healthPort: 80}]}]`,
			[]string{`"serviceName":"default/hp/http"`}, "valid", ""},
		{"TCP proxy", `
  virtualhost: {fqdn: a.example.com, tls: {passthrough: true}}
  tcpproxy:
    healthCheckPolicy: {}
    services: [{name: hp, port: 80, healthPort: 8081}]`,
			[]string{`"healthCheckConfig":{"portValue":9090}`, `"serviceName":"default/hp/http/health/health"`}, "valid", ""},
		{"unknown health port", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: hp, port: 80, healthPort: 9999}]}]`,
			nil, "invalid", `Spec.Routes unresolved service reference: healthPort: port "9999" on service "default/hp" not matched`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, healthPortObjects+proxy(tc.spec))
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("xDS lacks %s\n--- got:\n%s", w, out)
				}
			}
			st := m.Proxies[types.NamespacedName{Namespace: "default", Name: "p"}]
			if st == nil {
				t.Fatal("no status")
			}
			if st.Current() != tc.status || !strings.Contains(st.Description(), tc.desc) {
				t.Errorf("status = %s %q, want %s containing %q", st.Current(), st.Description(), tc.status, tc.desc)
			}
		})
	}
}

// TestServiceCircuitBreakers: Contour's circuit-breaker annotations on a
// Service become its clusters' thresholds (with track_remaining) and
// per-host max_connections, as Contour's applyCircuitBreakers; a Service
// without them, or with values that do not parse, gets none.
func TestServiceCircuitBreakers(t *testing.T) {
	out, _ := render(t, `apiVersion: v1
kind: Service
metadata:
  name: cb
  namespace: default
  annotations: {projectcontour.io/max-connections: "9", projectcontour.io/max-pending-requests: "8", projectcontour.io/max-requests: "7", projectcontour.io/max-retries: "6", projectcontour.io/per-host-max-connections: "2"}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: junk, namespace: default, annotations: {projectcontour.io/max-connections: "many", projectcontour.io/max-requests: "-1"}}
spec: {ports: [{name: http, port: 80}]}
---
`+proxy(`
  virtualhost: {fqdn: a.example.com}
  routes:
  - conditions: [{prefix: /cb}]
    services: [{name: cb, port: 80}]
  - conditions: [{prefix: /junk}]
    services: [{name: junk, port: 80}]
  - services: [{name: s1, port: 80}]`))
	if want := `"circuitBreakers":{"thresholds":[{"maxConnections":9,"maxPendingRequests":8,"maxRequests":7,"maxRetries":6,"trackRemaining":true}],"perHostThresholds":[{"maxConnections":2,"trackRemaining":true}]}`; !strings.Contains(out, want) {
		t.Errorf("xDS lacks %s\n%s", want, out)
	}
	if n := strings.Count(out, `"circuitBreakers"`); n != 1 {
		t.Errorf("%d clusters with circuit breakers, want 1 (only the annotated Service's)\n%s", n, out)
	}
}
