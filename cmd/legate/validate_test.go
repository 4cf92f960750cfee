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
