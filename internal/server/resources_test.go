package server_test

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/server"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestValidateResourceFile: a resource file goes through the decoder of
// its type (internal/xds/resource) and the compile that type gets at run
// time, for each of the five types the proxy consumes; a failure names the
// resource, the path in it and the file's line, and every failing
// resource is reported.
func TestValidateResourceFile(t *testing.T) {
	leaf := testutil.NewCA(t, "ca").Issue(t, "example.com", "example.com")
	cert, key := strconv.Quote(string(leaf.CertPEM)), strconv.Quote(string(leaf.KeyPEM))
	const (
		clusterURL  = `"@type": type.googleapis.com/envoy.config.cluster.v3.Cluster`
		listenerURL = `"@type": type.googleapis.com/envoy.config.listener.v3.Listener`
		routeURL    = `"@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration`
		endpointURL = `"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`
		secretURL   = `"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret`
		hcmURL      = `"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
		routerURL   = `"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router`
	)
	for _, tc := range []struct {
		name     string
		yaml     string
		wantErr  []string // substrings of the error; none: the file is valid
		wantWarn string
	}{
		{name: "cluster", yaml: `
resources:
- ` + clusterURL + `
  name: backend
  type: STATIC
  load_assignment:
    cluster_name: backend
    endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]
`},
		{name: "runtime (RTDS)", yaml: `
resources:
- "@type": type.googleapis.com/envoy.service.runtime.v3.Runtime
  name: rtds_0
  layer: {routing: {flag: 10}, other: "x"}
`},
		{name: "runtime with a list value (Envoy's ProtoLayer refuses it)", yaml: `
resources:
- "@type": type.googleapis.com/envoy.service.runtime.v3.Runtime
  name: rtds_0
  layer: {routing: {flag: [1, 2]}}
`, wantErr: []string{"runtime rtds_0", "Invalid runtime entry value for routing.flag"}},
		{name: "EDS cluster (its source is not resolved)", yaml: `
resources:
- ` + clusterURL + `
  name: backend
  type: EDS
  eds_cluster_config: {eds_config: {path_config_source: {path: /nonexistent/eds.yaml}}}
`},
		{name: "listener with RDS (another file's route configuration)", yaml: `
resources:
- ` + listenerURL + `
  name: l
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        ` + hcmURL + `
        stat_prefix: l
        rds: {route_config_name: r, config_source: {ads: {}}}
        http_filters: [{name: envoy.filters.http.router, typed_config: {` + routerURL + `}}]
`},
		{name: "route configuration (its clusters are another file's)", yaml: `
resources:
- ` + routeURL + `
  name: r
  validate_clusters: true
  virtual_hosts: [{name: vh, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: elsewhere}}]}]
`},
		{name: "endpoints", yaml: `
resources:
- ` + endpointURL + `
  cluster_name: backend
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}}]}]
`},
		{name: "secret", yaml: `
resources:
- ` + secretURL + `
  name: server_cert
  tls_certificate: {certificate_chain: {inline_string: ` + cert + `}, private_key: {inline_string: ` + key + `}}
`},
		{name: "Resource-wrapped entry", yaml: `
resources:
- "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
  name: backend
  version: "1"
  resource:
    ` + clusterURL + `
    name: backend
    type: STATIC
    load_assignment: {cluster_name: backend}
`},
		{name: "v2 type URL upgraded", yaml: `
resources:
- "@type": type.googleapis.com/envoy.api.v2.Cluster
  name: backend
  type: STATIC
  hosts: [{socket_address: {address: 127.0.0.1, port_value: 8080}}]
`, wantWarn: "v2 type type.googleapis.com/envoy.api.v2.Cluster upgraded to type.googleapis.com/envoy.config.cluster.v3.Cluster"},

		{name: "invalid cluster", yaml: `
resources:
- ` + clusterURL + `
  name: backend
  connect_timeout: -1s
`, wantErr: []string{"cluster backend.connect_timeout (line 4): "}},
		{name: "invalid listener", yaml: `
resources:
- ` + listenerURL + `
  name: l
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        ` + hcmURL + `
        stat_prefix: l
        route_config: {}
        http_filters:
        - name: envoy.filters.http.wasm
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm}
        - name: envoy.filters.http.router
          typed_config: {` + routerURL + `}
`, wantErr: []string{"listener l.filter_chains[0].filters[0].typed_config.http_filters[0].typed_config (line 14): ", "not implemented by legate"}},
		{name: "invalid route configuration", yaml: `
resources:
- ` + routeURL + `
  name: r
  virtual_hosts:
  - name: vh
    domains: ["*"]
    routes: [{match: {safe_regex: {regex: "("}}, route: {cluster: c}}]
`, wantErr: []string{"route_configuration r.virtual_hosts[0].routes[0].match.safe_regex", "(line 7)"}},
		{name: "invalid endpoints", yaml: `
resources:
- ` + endpointURL + `
  cluster_name: backend
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80, protocol: UDP}}}}]}]
`, wantErr: []string{"resources[0] (line 2): cluster_load_assignment backend.endpoints[0].lb_endpoints[0]", "only TCP"}},
		{name: "invalid secret", yaml: `
resources:
- ` + secretURL + `
  name: server_cert
  tls_certificate: {certificate_chain: {inline_string: "not a certificate"}, private_key: {inline_string: ` + key + `}}
`, wantErr: []string{"secret server_cert.tls_certificate"}},
		{name: "every failure is reported", yaml: `
resources:
- ` + clusterURL + `
  name: a
  connect_timeout: -1s
- ` + clusterURL + `
  name: b
  connect_timeout: -2s
`, wantErr: []string{"cluster a.connect_timeout (line 4)", "cluster b.connect_timeout (line 7)"}},
		{name: "a resource without a name", yaml: `
resources:
- ` + clusterURL + `
  type: STATIC
`, wantErr: []string{"resources[0] (line 2): cluster resource has no name"}},
		{name: "a wrapper's name names the resource", yaml: `
resources:
- "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
  name: wrapped
  resource:
    ` + clusterURL + `
    name: backend
    connect_timeout: -1s
`, wantErr: []string{"cluster wrapped.connect_timeout (line 7)"}},
		{name: "one type per file", yaml: `
resources:
- ` + clusterURL + `
  name: backend
- ` + listenerURL + `
  name: l
`, wantErr: []string{"resources[1] (line 4): ", "envoy.config.listener.v3.Listener"}},
		{name: "a type the proxy does not consume", yaml: `
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration
  name: s
`, wantErr: []string{"resources[0] (line 2): legate does not consume type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"}},
		{name: "no resources", yaml: "\nresources: []\n", wantErr: []string{"no resources"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "resources.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml[1:]), 0o644); err != nil {
				t.Fatal(err)
			}
			if !server.IsResourceFile(p) {
				t.Fatal("not a resource file")
			}
			warns, err := server.ValidateResourceFile(p, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("error: %v", err)
			}
			if len(tc.wantErr) > 0 && err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q, want it to contain %q", err, want)
				}
			}
			found := tc.wantWarn == ""
			for _, w := range warns {
				found = found || strings.Contains(w.String(), tc.wantWarn)
			}
			if !found {
				t.Errorf("warnings %v, want %q", warns, tc.wantWarn)
			}
		})
	}
}
