// legate validate and legate proxy --mode validate (and legate version).

package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestValidateExitCodes(t *testing.T) {
	good := writeFile(t, `static_resources: {clusters: [{name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}]}`)
	bad := writeFile(t, `static_resources: {clusters: [{name: a, type: STATIC, outlier_detectionn: {}}]}`)
	withCors := writeFile(t, `static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: s, route_config: {}, http_filters: [{name: envoy.filters.http.cors, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]}]}]}`)
	// xDS resource files: any of the five types, decoded and compiled as
	// the proxy takes them from a file.
	routes := writeFile(t, `resources: [{"@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration, name: r, virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: elsewhere}}]}]}]`)
	badEndpoints := writeFile(t, `resources: [{"@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment, cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80, protocol: UDP}}}}]}]}]`)
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"proxy", "--mode", "validate", "-c", good}, 0, "configuration '" + good + "' OK", ""},
		{[]string{"proxy", "--mode", "validate", "-c", bad}, 1, "", `static_resources.clusters[0].outlier_detectionn (line 1): unknown field "outlier_detectionn"`},
		{[]string{"validate", good, bad}, 1, good + ": OK", bad + ": error:"},
		{[]string{"version"}, 0, "legate ", ""},
		{[]string{"validate", routes}, 0, routes + ": OK", ""},
		{[]string{"validate", badEndpoints}, 1, "", badEndpoints + ": error: resources[0] (line 1): cluster_load_assignment c.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.protocol: only TCP is supported"},
		// As Envoy's --disable-extensions: <category>/<name>, comma-separated.
		{[]string{"proxy", "--mode", "validate", "--disable-extensions", "envoy.filters.http/envoy.filters.http.cors", "-c", withCors}, 1, "", "this extension is disabled (--disable-extensions)"},
		{[]string{"proxy", "--mode", "validate", "-c", withCors}, 0, "OK", ""},
	}
	for _, tc := range cases {
		cmd := exec.Command(legateBin, tc.args...)
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(so.String(), tc.stdout) || !strings.Contains(se.String(), tc.stderr) {
			t.Errorf("legate %v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, so.String(), se.String())
		}
	}
}
