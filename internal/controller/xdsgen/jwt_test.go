// HTTPProxy jwtProviders and jwtVerificationPolicy → the jwt_authn filter
// of the virtual host's HTTPS filter chain, per-route requirements, the
// remote JWKS cluster, and Contour's status for bad providers.

package xdsgen

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/testutil"
)

func TestHTTPProxyJWT(t *testing.T) {
	leaf := testutil.NewCA(t, "jwt-ca").Issue(t, "a.example.com", "a.example.com")
	b64 := func(s []byte) string { return base64.StdEncoding.EncodeToString(s) }
	secrets := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: jwks, namespace: default}
type: Opaque
data: {jwks.json: %s, bad: %s}
---
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64([]byte(`{"keys":[]}`)), b64([]byte(`{"keys":{}}`)))
	const tlsVH = "  virtualhost:\n    fqdn: a.example.com\n    tls: {secretName: tls}\n"
	for _, tc := range []struct {
		name, spec string
		want       []string
		absent     []string
		status     string
		reason     string
		desc       string
	}{
		{"local and remote providers, default, opt-out and require", tlsVH + `    jwtProviders:
    - {name: local, default: true, issuer: https://issuer.example.com, audiences: [api], forwardJWT: true, localJWKS: {secretName: jwks, key: jwks.json}}
    - {name: remote, remoteJWKS: {uri: "https://jwks.example.com/keys.json", timeout: 3s, cacheDuration: 5m, dnsLookupFamily: v4}}
  routes:
  - conditions: [{prefix: /open}]
    jwtVerificationPolicy: {disabled: true}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /remote}]
    jwtVerificationPolicy: {require: remote}
    services: [{name: s1, port: 80}]
  - services: [{name: s1, port: 80}]`,
			[]string{
				`{"name":"envoy.filters.http.jwt_authn","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication","providers":{` +
					`"local":{"issuer":"https://issuer.example.com","audiences":["api"],"localJwks":{"inlineString":"{\"keys\":[]}"},"forward":true},` +
					`"remote":{"remoteJwks":{"httpUri":{"uri":"https://jwks.example.com/keys.json","cluster":"dnsname/https/jwks.example.com","timeout":"3s"},"cacheDuration":"300s"}}},` +
					`"requirementMap":{"local":{"providerName":"local"},"remote":{"providerName":"remote"}}}},{"name":"envoy.filters.http.router"`,
				`{"match":{"prefix":"/open"},"route":{"cluster":"default/s1/80/da39a3ee5e"}}`,
				`{"match":{"prefix":"/remote"},"route":{"cluster":"default/s1/80/da39a3ee5e"},"typedPerFilterConfig":{"envoy.filters.http.jwt_authn":{"@type":"type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig","requirementName":"remote"}}}`,
				`{"match":{"prefix":"/"},"route":{"cluster":"default/s1/80/da39a3ee5e"},"typedPerFilterConfig":{"envoy.filters.http.jwt_authn":{"@type":"type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig","requirementName":"local"}}}`,
				`"name":"dnsname/https/jwks.example.com","altStatName":"dnsname_jwks.example.com_443","type":"STRICT_DNS","connectTimeout":"2s","loadAssignment":{"clusterName":"dnsname/https/jwks.example.com","endpoints":[{"lbEndpoints":[{"endpoint":{"address":{"socketAddress":{"address":"jwks.example.com","portValue":443}}}}]}]},"dnsLookupFamily":"V4_ONLY","transportSocket":{"name":"envoy.transport_sockets.tls","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext","commonTlsContext":{},"sni":"jwks.example.com"}}`,
			},
			// The insecure listener's HCM and routes carry no JWT config (its
			// routes redirect to HTTPS).
			[]string{`"statPrefix":"ingress_http","rds":{"configSource":{"ads":{},"resourceApiVersion":"V3"},"routeConfigName":"ingress_http"},"httpFilters":[{"name":"envoy.filters.http.cors","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},{"name":"envoy.filters.http.local_ratelimit","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit","statPrefix":"http"}},{"name":"envoy.filters.http.lua","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}},{"name":"envoy.filters.http.rbac","typedConfig":{"@type":"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}},{"name":"envoy.filters.http.jwt_authn"`},
			"valid", "", ""},
		{"providers need TLS", `
  virtualhost: {fqdn: a.example.com, jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: jwks.json}}]}
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "JWTVerificationNotPermitted", "Spec.VirtualHost.JWTProviders can only be defined for root HTTPProxies that terminate TLS"},
		{"duplicate provider", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: jwks.json}}, {name: p, localJWKS: {secretName: jwks, key: jwks.json}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "DuplicateProviderName", "Spec.VirtualHost.JWTProviders is invalid: duplicate name p"},
		{"two defaults", tlsVH + `    jwtProviders: [{name: p, default: true, localJWKS: {secretName: jwks, key: jwks.json}}, {name: q, default: true, localJWKS: {secretName: jwks, key: jwks.json}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "MultipleDefaultProvidersSpecified", "at most one provider can be set as the default"},
		{"both JWKS sources", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: jwks.json}, remoteJWKS: {uri: "https://x.example.com/"}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "JWKSSourceConflict", `provider "p" is invalid: at most one of remoteJWKS or localJWKS may be set`},
		{"no JWKS source", tlsVH + `    jwtProviders: [{name: p}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "JWKSSourceMissing", `provider "p" is invalid: exactly one of remoteJWKS or localJWKS must be set`},
		{"local JWKS not a key set", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: bad}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "LocalJWKSInvalid", `Spec.VirtualHost.JWTProviders.LocalJWKS for provider "p" is invalid: JWKS "keys" must be an array`},
		{"local JWKS Secret missing", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: nope, key: jwks.json}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "LocalJWKSInvalid", `provider "p" is invalid: Secret not found`},
		{"remote JWKS scheme", tlsVH + `    jwtProviders: [{name: p, remoteJWKS: {uri: "ftp://x.example.com/"}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RemoteJWKSSchemeInvalid", `has invalid scheme "ftp", must be http or https`},
		{"remote JWKS validation over http", tlsVH + `    jwtProviders: [{name: p, remoteJWKS: {uri: "http://x.example.com/", validation: {caSecret: ca, subjectName: x.example.com}}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RemoteJWKSUpstreamValidationInvalid", "UpstreamValidation must not be specified when URI scheme is http."},
		{"remote JWKS timeout", tlsVH + `    jwtProviders: [{name: p, remoteJWKS: {uri: "https://x.example.com/", timeout: soon}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RemoteJWKSTimeoutInvalid", "Spec.VirtualHost.JWTProviders.RemoteJWKS.Timeout is invalid"},
		{"remote JWKS DNS family", tlsVH + `    jwtProviders: [{name: p, remoteJWKS: {uri: "https://x.example.com/", dnsLookupFamily: v5}}]
  routes: [{services: [{name: s1, port: 80}]}]`,
			nil, nil, "invalid", "RemoteJWKSDNSLookupFamilyInvalid", `has an invalid value "v5", must be auto, all, v4 or v6`},
		{"require and disabled", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: jwks.json}}]
  routes: [{services: [{name: s1, port: 80}], jwtVerificationPolicy: {require: p, disabled: true}}]`,
			nil, nil, "invalid", "InvalidJWTVerificationPolicy", "route's JWT verification policy cannot specify both require and disabled"},
		{"require an undefined provider", tlsVH + `    jwtProviders: [{name: p, localJWKS: {secretName: jwks, key: jwks.json}}]
  routes: [{services: [{name: s1, port: 80}], jwtVerificationPolicy: {require: q}}]`,
			nil, nil, "invalid", "JWTProviderNotDefined", `Route references an undefined JWT provider "q"`},
		{"require without providers", `
  virtualhost: {fqdn: a.example.com}
  routes: [{services: [{name: s1, port: 80}], jwtVerificationPolicy: {require: q}}]`,
			nil, nil, "invalid", "JWTProviderNotDefined", `Route references an undefined JWT provider "q"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, m := render(t, secrets+proxy(tc.spec))
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
			if tc.status != "valid" && strings.Contains(out, `"a.example.com"`) {
				t.Errorf("an invalid HTTPProxy must not be served:\n%s", out)
			}
		})
	}
}
