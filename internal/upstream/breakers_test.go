package upstream

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// TestPerHostThresholds: per_host_thresholds set max_connections per host
// and priority; the limits Envoy does not apply per host are refused by
// path instead of being ignored.
func TestPerHostThresholds(t *testing.T) {
	for _, tc := range []struct {
		name, cb string
		err      string
		want     uint32
	}{
		{name: "default priority", cb: "per_host_thresholds: [{max_connections: 3, track_remaining: true}]", want: 3},
		{name: "HIGH priority: pools are shared by priorities", cb: "per_host_thresholds: [{max_connections: 3}, {priority: HIGH, max_connections: 7}]", err: "per_host_thresholds[1].priority"},
		{name: "none", cb: "thresholds: [{max_connections: 3}]"},
		{name: "max_requests per host", cb: "per_host_thresholds: [{max_requests: 5}]", err: "cluster.circuit_breakers.per_host_thresholds[0].max_requests"},
		{name: "retry budget per host", cb: "per_host_thresholds: [{retry_budget: {}}]", err: "Envoy applies only max_connections per host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := `name: c
type: STATIC
connect_timeout: 1s
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
circuit_breakers: {` + tc.cb + `}`
			c, err := compileYAML(t, y)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.maxConnectionsPerHost != tc.want {
				t.Errorf("per host max_connections = %d, want %d", c.maxConnectionsPerHost, tc.want)
			}
		})
	}
}

// compileYAML compiles the cluster of YAML y (which must decode).
func compileYAML(t *testing.T, y string) (*Cluster, error) {
	t.Helper()
	pc := &clusterv3.Cluster{}
	if _, err := config.Decode([]byte(y), pc, "cluster"); err != nil {
		t.Fatal(err)
	}
	return Compile(pc, "cluster", Deps{Stats: stats.NewStore()})
}
