// ExtensionService → the extension/<namespace>/<name> cluster and its
// load assignment; HTTPProxy spec.virtualhost.authorization and route
// authPolicy → the ext_authz filter of the virtual host's HTTPS filter
// chain and ExtAuthzPerRoute; Contour's status for bad ones.

package xdsgen

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/testutil"
)

// extObjects are the Services, EndpointSlices and Secrets the
// ExtensionServices of the tests use.
func extObjects(t *testing.T) string {
	ca := testutil.NewCA(t, "ext-ca")
	leaf := ca.Issue(t, "a.example.com", "a.example.com")
	b64 := func(s []byte) string { return base64.StdEncoding.EncodeToString(s) }
	return fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: auth-ca, namespace: auth}
type: Opaque
data: {ca.crt: %s}
---
apiVersion: v1
kind: Service
metadata: {name: authz, namespace: auth}
spec: {ports: [{name: grpc, port: 9000, targetPort: 9443}]}
---
apiVersion: v1
kind: Service
metadata: {name: authz-canary, namespace: auth}
spec: {ports: [{name: grpc, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: auth}
spec: {type: ExternalName, externalName: authz.example.net, ports: [{name: grpc, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: authz-1, namespace: auth, labels: {kubernetes.io/service-name: authz}}
addressType: IPv4
ports: [{name: grpc, port: 9443}]
endpoints:
- {addresses: [10.1.0.2], conditions: {ready: true}, zone: z2}
- {addresses: [10.1.0.1], conditions: {ready: true}, zone: z1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: authz-canary-1, namespace: auth, labels: {kubernetes.io/service-name: authz-canary}}
addressType: IPv4
ports: [{name: grpc, port: 9000}]
endpoints:
- {addresses: [10.1.1.1], conditions: {ready: true}}
---
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64(ca.CertPEM))
}

func extService(name, spec string) string {
	return "apiVersion: projectcontour.io/v1alpha1\nkind: ExtensionService\nmetadata: {name: " + name + ", namespace: auth, generation: 3}\nspec:\n" + spec + "\n---\n"
}

func TestExtensionService(t *testing.T) {
	objs := extObjects(t)
	for _, tc := range []struct {
		name, spec string
		want       []string
		absent     []string
		// reason of the first error ("" for valid), warning reason.
		reason, warning, desc string
	}{
		{"h2 with validation, weights, policies", `  services: [{name: authz, port: 9000, weight: 90}, {name: authz-canary, port: 9000, weight: 10}]
  validation: {caSecret: auth-ca, subjectName: authz.auth.svc}
  protocolVersion: v3
  loadBalancerPolicy: {strategy: WeightedLeastRequest}
  timeoutPolicy: {response: 3s, idleConnection: 1m}
  circuitBreakerPolicy: {maxConnections: 10, maxRequests: 20}`,
			[]string{
				`"name":"extension/auth/x","altStatName":"extension_auth_x","type":"EDS","edsClusterConfig":{"edsConfig":{"ads":{},"resourceApiVersion":"V3"},"serviceName":"extension/auth/x"},"connectTimeout":"2s","lbPolicy":"LEAST_REQUEST","circuitBreakers":{"thresholds":[{"maxConnections":10,"maxRequests":20,"trackRemaining":true}],"perHostThresholds":[{"trackRemaining":true}]}`,
				`"transportSocket":{"name":"envoy.transport_sockets.tls","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","commonTlsContext":{"validationContext":{"trustedCa":{"inlineBytes":`,
				`"matchTypedSubjectAltNames":[{"sanType":"DNS","matcher":{"exact":"authz.auth.svc"}}]}`,
				`"alpnProtocols":["h2"]},"sni":"authz.auth.svc"}}`,
				`"commonLbConfig":{"localityWeightedLbConfig":{}}`,
				`"commonHttpProtocolOptions":{"idleTimeout":"60s"},"explicitHttpConfig":{"http2ProtocolOptions":{}}`,
				// One locality per Service, weighted; every zone's endpoints.
				`{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","clusterName":"extension/auth/x","endpoints":[` +
					`{"locality":{"subZone":"authz"},"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.1.0.1","portValue":9443}}},"loadBalancingWeight":1},{"endpoint":{"address":{"socketAddress":{"address":"10.1.0.2","portValue":9443}}},"loadBalancingWeight":1}],"loadBalancingWeight":90},` +
					`{"locality":{"subZone":"authz-canary"},"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"10.1.1.1","portValue":9000}}},"loadBalancingWeight":1}],"loadBalancingWeight":10}]}`,
			},
			nil, "", "", ""},
		{"h2c, no weights: even", `  services: [{name: authz, port: 9000}, {name: authz-canary, port: 9000}]
  protocol: h2c`,
			[]string{`"loadBalancingWeight":1},{"locality":{"subZone":"authz-canary"}`, `"connectTimeout":"2s","typedExtensionProtocolOptions"`},
			[]string{`"transportSocket"`},
			"", "", ""},
		{"h2 without validation: TLS, unverified", `  services: [{name: authz, port: 9000}]`,
			[]string{`"transportSocket":{"name":"envoy.transport_sockets.tls","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","commonTlsContext":{"alpnProtocols":["h2"]}}}`},
			nil, "", "", ""},
		{"cookie balancing and idle timeout ignored", `  services: [{name: authz, port: 9000}]
  loadBalancerPolicy: {strategy: Cookie}
  timeoutPolicy: {idle: 5s}`,
			[]string{`"name":"extension/auth/x"`}, nil, "", "IgnoredField", ""},
		{"unknown Service", `  services: [{name: nope, port: 9000}]`, nil, []string{`extension/auth/x`},
			"ServiceUnresolvedReference", "", `unresolved service "auth/nope": service "auth/nope" not found`},
		{"unknown port", `  services: [{name: authz, port: 9999}]`, nil, []string{`extension/auth/x`},
			"ServiceUnresolvedReference", "", `port "9999" on service "auth/authz" not matched`},
		{"ExternalName", `  services: [{name: external, port: 9000}]`, nil, []string{`extension/auth/x`},
			"UnsupportedServiceType", "", `Service "auth/external" is of unsupported type "ExternalName".`},
		{"protocol", `  services: [{name: authz, port: 9000}]
  protocol: tls`, nil, nil, "UnsupportedProtocol", "", `spec.protocol "tls" is not supported`},
		{"protocol version", `  services: [{name: authz, port: 9000}]
  protocolVersion: v2`, nil, nil, "UnsupportedProtocolVersion", "", `spec.protocolVersion "v2" is not supported`},
		{"validation over h2c", `  services: [{name: authz, port: 9000}]
  protocol: h2c
  validation: {caSecret: auth-ca, subjectName: authz.auth.svc}`, nil, nil, "InconsistentProtocol", "", `upstream TLS validation not supported for "h2c" protocol`},
		{"validation CA missing", `  services: [{name: authz, port: 9000}]
  validation: {caSecret: nope, subjectName: authz.auth.svc}`, nil, nil, "TLSUpstreamValidation", "", `invalid CA Secret "auth/nope": Secret not found`},
		{"validation CA of another namespace", `  services: [{name: authz, port: 9000}]
  validation: {caSecret: default/ca, subjectName: authz.auth.svc}`, nil, nil, "CACertificateNotDelegated", "", `Secret "default/ca" is not configured for certificate delegation`},
		{"validation without subject", `  services: [{name: authz, port: 9000}]
  validation: {caSecret: auth-ca}`, nil, nil, "TLSUpstreamValidation", "", "missing subject alternative name"},
		{"timeout", `  services: [{name: authz, port: 9000}]
  timeoutPolicy: {response: soon}`, nil, nil, "TimeoutPolicyNotValid", "", "spec.timeoutPolicy failed to parse: error parsing response timeout"},
		{"per-host circuit breaker", `  services: [{name: authz, port: 9000}]
  circuitBreakerPolicy: {perHostMaxConnections: 1}`, []string{`"circuitBreakers":{"thresholds":[{"trackRemaining":true}],"perHostThresholds":[{"maxConnections":1,"trackRemaining":true}]}`}, nil, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, objs+extService("x", tc.spec))
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
			st := m.Extensions[types.NamespacedName{Namespace: "auth", Name: "x"}]
			if st == nil || st.Generation != 3 {
				t.Fatalf("status = %+v, want one of generation 3", st)
			}
			switch {
			case tc.reason == "" && !st.Valid():
				t.Errorf("errors = %+v, want valid", st.Errors)
			case tc.reason != "" && (st.Valid() || st.Errors[0].Reason != tc.reason || !strings.Contains(st.Errors[0].Message, tc.desc)):
				t.Errorf("errors = %+v, want %s first, containing %q", st.Errors, tc.reason, tc.desc)
			case tc.reason != "" && strings.Contains(out, `"extension/auth/x"`):
				t.Errorf("an invalid ExtensionService must not be served:\n%s", out)
			}
			if tc.warning != "" && (len(st.Warnings) == 0 || st.Warnings[0].Reason != tc.warning) {
				t.Errorf("warnings = %+v, want %s", st.Warnings, tc.warning)
			}
		})
	}
}

func TestHTTPProxyAuthorization(t *testing.T) {
	objs := extObjects(t) + extService("authz", `  services: [{name: authz, port: 9000}]
  validation: {caSecret: auth-ca, subjectName: authz.auth.svc}
  timeoutPolicy: {response: 750ms}`) + extService("plain", `  services: [{name: authz, port: 9000}]
  protocol: h2c`) + extService("broken", `  services: [{name: nope, port: 9000}]`)
	const tlsVH = "  virtualhost:\n    fqdn: a.example.com\n    tls: {secretName: tls}\n"
	filter := func(body string) string {
		return `{"name":"envoy.filters.http.ext_authz","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",` + body + `}},{"name":"envoy.filters.http.router"`
	}
	perRoute := func(body string) string {
		return `"typedPerFilterConfig":{"envoy.filters.http.ext_authz":{"@type":"type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",` + body + `}}`
	}
	for _, tc := range []struct {
		name, spec string
		want       []string
		absent     []string
		status     string
		reason     string
		desc       string
	}{
		{"server, contexts, disabled route", tlsVH + `    authorization:
      extensionRef: {name: authz, namespace: auth}
      failOpen: true
      withRequestBody: {allowPartialMessage: true, packAsBytes: true}
      authPolicy: {context: {realm: main, scope: vhost}}
  routes:
  - conditions: [{prefix: /public}]
    authPolicy: {disabled: true}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /ctx}]
    authPolicy: {context: {scope: route, extra: "1"}}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /gone}]
    directResponsePolicy: {statusCode: 410}
  - services: [{name: s1, port: 80}]`,
			[]string{
				// The validated subject name is the :authority; the
				// ExtensionService's response timeout the default.
				filter(`"grpcService":{"envoyGrpc":{"clusterName":"extension/auth/authz","authority":"authz.auth.svc"},"timeout":"0.750s"},"transportApiVersion":"V3","failureModeAllow":true,` +
					`"withRequestBody":{"maxRequestBytes":1024,"allowPartialMessage":true,"packAsBytes":true},"clearRouteCache":true,"statusOnError":{"code":"Forbidden"},"includePeerCertificate":true`),
				// jwt_authn (none here) then ext_authz before the router, as Contour.
				`{"name":"envoy.filters.http.rbac","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}},{"name":"envoy.filters.http.ext_authz"`,
				`{"match":{"prefix":"/public"},"route":{"cluster":"default/s1/80/da39a3ee5e"},` + perRoute(`"disabled":true`),
				`{"match":{"prefix":"/ctx"},"route":{"cluster":"default/s1/80/da39a3ee5e"},` + perRoute(`"checkSettings":{"contextExtensions":{"extra":"1","realm":"main","scope":"route"}}`),
				`{"match":{"prefix":"/gone"},"directResponse":{"status":410},` + perRoute(`"checkSettings":{"contextExtensions":{"realm":"main","scope":"vhost"}}`),
				`{"match":{"prefix":"/"},"route":{"cluster":"default/s1/80/da39a3ee5e"},` + perRoute(`"checkSettings":{"contextExtensions":{"realm":"main","scope":"vhost"}}`),
			},
			// Plain HTTP only redirects: no filter, no per-route config.
			[]string{`"statPrefix":"ingress_http","rds":{"configSource":{"ads":{},"resourceApiVersion":"V3"},"routeConfigName":"ingress_http"},"httpFilters":[{"name":"envoy.filters.http.cors","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},{"name":"envoy.filters.http.local_ratelimit","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","statPrefix":"http"}},{"name":"envoy.filters.http.lua","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}},{"name":"envoy.filters.http.rbac","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}},{"name":"envoy.filters.http.ext_authz"`,
				`"redirect":{"httpsRedirect":true,"responseCode":"MOVED_PERMANENTLY"},"typedPerFilterConfig"`},
			"valid", "", ""},
		{"disabled on the virtual host, enabled on a route; own timeout", tlsVH + `    authorization:
      extensionRef: {name: plain, namespace: auth}
      responseTimeout: infinity
      authPolicy: {disabled: true}
  routes:
  - conditions: [{prefix: /private}]
    authPolicy: {disabled: false}
    services: [{name: s1, port: 80}]
  - services: [{name: s1, port: 80}]`,
			[]string{
				filter(`"grpcService":{"envoyGrpc":{"clusterName":"extension/auth/plain","authority":"extension.auth.plain"},"timeout":"0s"},"transportApiVersion":"V3","clearRouteCache":true,"statusOnError":{"code":"Forbidden"},"includePeerCertificate":true`),
				`{"match":{"prefix":"/"},"route":{"cluster":"default/s1/80/da39a3ee5e"},` + perRoute(`"disabled":true`),
				`{"match":{"prefix":"/private"},"route":{"cluster":"default/s1/80/da39a3ee5e"}}`,
			},
			nil, "valid", "", ""},
		{"no response timeout anywhere: the filter's default", tlsVH + `    authorization: {extensionRef: {name: plain, namespace: auth}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			[]string{`"envoyGrpc":{"clusterName":"extension/auth/plain","authority":"extension.auth.plain"}},"transportApiVersion":"V3","clearRouteCache"`},
			nil, "valid", "", ""},
		{"authorization needs TLS", `  virtualhost:
    fqdn: a.example.com
    authorization: {extensionRef: {name: authz, namespace: auth}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "AuthNotPermitted", "Spec.VirtualHost.Authorization.ExtensionServiceRef can only be defined for root HTTPProxies that terminate TLS"},
		{"ExtensionService not found (namespace defaults to the HTTPProxy's)", tlsVH + `    authorization: {extensionRef: {name: authz}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "ExtensionServiceNotFound", `Spec.Virtualhost.Authorization.ServiceRef extension service "default/authz" not found`},
		{"invalid ExtensionService is not found", tlsVH + `    authorization: {extensionRef: {name: broken, namespace: auth}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "ExtensionServiceNotFound", `extension service "auth/broken" not found`},
		{"resource version", tlsVH + `    authorization: {extensionRef: {apiVersion: projectcontour.io/v1, name: authz, namespace: auth}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "AuthBadResourceVersion", `specifies an unsupported resource version "projectcontour.io/v1"`},
		{"response timeout", tlsVH + `    authorization: {extensionRef: {name: authz, namespace: auth}, responseTimeout: soon}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "AuthResponseTimeoutInvalid", "Spec.Virtualhost.Authorization.ResponseTimeout is invalid"},
		{"fallback certificate", `  virtualhost:
    fqdn: a.example.com
    tls: {secretName: tls, enableFallbackCertificate: true}
    authorization: {extensionRef: {name: authz, namespace: auth}}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "TLSIncompatibleFeatures", "Spec.Virtualhost.TLS fallback & client authorization are incompatible"},
		{"HTTP authorization servers", tlsVH + `    authorization: {extensionRef: {name: authz, namespace: auth}, serviceType: http}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "NotImplemented", "HTTP authorization servers are not implemented"},
		{"route authPolicy without a server warns", tlsVH + `  routes: [{services: [{name: s1, port: 80}], authPolicy: {disabled: true}}]`,
			nil, []string{ExtAuthzFilter}, "valid", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, objs+proxy(tc.spec))
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
			if st.Current() != tc.status || !strings.Contains(st.Description(), tc.desc) {
				t.Errorf("status = %s %q, want %s containing %q", st.Current(), st.Description(), tc.status, tc.desc)
			}
			if tc.reason != "" && (len(st.Errors) == 0 || st.Errors[0].Reason != tc.reason) {
				t.Errorf("errors = %+v, want reason %s first", st.Errors, tc.reason)
			}
			if tc.status != "valid" && strings.Contains(out, `"a.example.com"`) {
				t.Errorf("an invalid HTTPProxy must not be served:\n%s", out)
			}
			if strings.HasPrefix(tc.name, "route authPolicy") && (len(st.Warnings) == 0 || st.Warnings[0].Reason != "IgnoredField") {
				t.Errorf("warnings = %+v, want IgnoredField for the route's authPolicy", st.Warnings)
			}
		})
	}
}
