package cors_test

import (
	"net/http"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// The routes of Envoy's CORS example (examples/cors/backend), plus a route
// with every header option and one using the deprecated vhost cors field.
const corsConfig = `
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
          route_config:
            virtual_hosts:
            - name: www
              domains: ["www"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{safe_regex: {regex: '\*'}}]
                  allow_methods: "GET"
                  filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}, runtime_key: cors.www.enabled}
                  shadow_enabled: {default_value: {numerator: 0, denominator: HUNDRED}, runtime_key: cors.www.shadow_enabled}
              routes:
              - match: {prefix: "/cors/disabled"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    filter_enabled: {default_value: {numerator: 0, denominator: HUNDRED}}
              - match: {prefix: "/cors/restricted"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_origin_string_match: [{safe_regex: {regex: '.*\.envoyproxy\.io'}}]
                    allow_methods: "GET"
              - match: {prefix: "/cors/full"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.cors:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                    allow_origin_string_match: [{exact: "https://app.example"}]
                    allow_methods: "*"
                    allow_headers: "*"
                    expose_headers: "x-upstream"
                    max_age: "600"
                    allow_credentials: true
                    allow_private_network_access: true
                    forward_not_matching_preflights: false
              - match: {prefix: "/"}
                route: {cluster: backend}
            - name: legacy
              domains: ["legacy"]
              cors: {allow_origin_string_match: [{prefix: "https://"}], allow_methods: "GET, PUT", max_age: "60"}
              routes:
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.cors
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`

func TestCORS(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("backend"))
	h, port := up.Host()
	p := testutil.StartProxy(t, corsConfig, map[string]string{"Host": h, "Port": port})
	c := testutil.Client()
	type want struct {
		status   int
		upstream bool              // reached the backend
		headers  map[string]string // "" means absent
	}
	preflight := func(origin, method string, extra ...string) []string {
		return append([]string{"Origin", origin, "Access-Control-Request-Method", method}, extra...)
	}
	cases := []struct {
		name, host, method, path string
		hdr                      []string
		want                     want
	}{
		{"preflight, any origin (regex \\* matches \"*\")", "www", "OPTIONS", "/cors/open", preflight("https://a.example", "GET"),
			want{200, false, map[string]string{"access-control-allow-origin": "https://a.example", "access-control-allow-methods": "GET", "access-control-allow-credentials": ""}}},
		{"simple request gets allow-origin", "www", "GET", "/cors/open", []string{"Origin", "https://a.example"},
			want{200, true, map[string]string{"access-control-allow-origin": "https://a.example"}}},
		{"no origin: not CORS", "www", "GET", "/", nil,
			want{200, true, map[string]string{"access-control-allow-origin": ""}}},
		{"disabled route: preflight goes upstream", "www", "OPTIONS", "/cors/disabled", preflight("https://a.example", "GET"),
			want{200, true, map[string]string{"access-control-allow-origin": ""}}},
		{"restricted: allowed origin", "www", "GET", "/cors/restricted", []string{"Origin", "https://www.envoyproxy.io"},
			want{200, true, map[string]string{"access-control-allow-origin": "https://www.envoyproxy.io"}}},
		{"restricted: other origin gets no header", "www", "GET", "/cors/restricted", []string{"Origin", "https://evil.example"},
			want{200, true, map[string]string{"access-control-allow-origin": ""}}},
		{"restricted: unmatched preflight is forwarded (default)", "www", "OPTIONS", "/cors/restricted", preflight("https://evil.example", "GET"),
			want{200, true, map[string]string{"access-control-allow-origin": ""}}},
		{"full: wildcards echo the request", "www", "OPTIONS", "/cors/full", preflight("https://app.example", "DELETE",
			"Access-Control-Request-Headers", "x-a, x-b", "Access-Control-Request-Private-Network", "true"),
			want{200, false, map[string]string{"access-control-allow-origin": "https://app.example", "access-control-allow-methods": "DELETE",
				"access-control-allow-headers": "x-a, x-b", "access-control-max-age": "600", "access-control-allow-credentials": "true",
				"access-control-allow-private-network": "true",
				// Envoy's preflight answer passes through the filter's own
				// encode side, which exposes headers as for any response.
				"access-control-expose-headers": "x-upstream"}}},
		{"full: simple request exposes headers", "www", "GET", "/cors/full", []string{"Origin", "https://app.example"},
			want{200, true, map[string]string{"access-control-allow-origin": "https://app.example", "access-control-expose-headers": "x-upstream",
				"access-control-allow-credentials": "true"}}},
		{"full: unmatched preflight answered locally without allow-origin", "www", "OPTIONS", "/cors/full", preflight("https://evil.example", "GET"),
			want{200, false, map[string]string{"access-control-allow-origin": "", "access-control-allow-methods": "GET", "access-control-expose-headers": ""}}},
		{"deprecated vhost cors field", "legacy", "OPTIONS", "/", preflight("https://x.example", "PUT"),
			want{200, false, map[string]string{"access-control-allow-origin": "https://x.example", "access-control-allow-methods": "GET, PUT", "access-control-max-age": "60"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.Hits()
			req, _ := http.NewRequest(tc.method, p.URL("http", tc.path), nil)
			req.Host = tc.host
			for i := 0; i+1 < len(tc.hdr); i += 2 {
				req.Header.Set(tc.hdr[i], tc.hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want.status)
			}
			if got := up.Hits() > before; got != tc.want.upstream {
				t.Errorf("reached upstream: %v, want %v", got, tc.want.upstream)
			}
			for k, v := range tc.want.headers {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}
	valid, invalid := p.Stat(t, "http.ingress.cors.origin_valid"), p.Stat(t, "http.ingress.cors.origin_invalid")
	if valid != 6 || invalid != 3 {
		t.Errorf("cors stats: origin_valid %d origin_invalid %d, want 6 and 3", valid, invalid)
	}
}
