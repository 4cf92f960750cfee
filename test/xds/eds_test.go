package xds

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestEDSUpdateRejectedWhole: an EDS update whose ClusterLoadAssignments
// are all valid but one (an endpoint whose address is a name, which an EDS
// cluster cannot use) is NACKed with nothing applied: the clusters of the
// valid assignments keep their hosts, the EDS config dump keeps the
// accepted assignments, and the NACK names the bad one. Before the fix the
// assignments were validated while they were applied, so those applied
// before the bad one stayed applied, and every one of them was recorded as
// the last accepted although the update was NACKed — so the corrected
// update that follows was taken as unchanged for them and never applied.
func TestEDSUpdateRejectedWhole(t *testing.T) {
	backends := upstreams(t, 2)
	names := []string{"c0", "c1", "c2", "c3", "c4", "c5", "zbad"}
	clusters := []*clusterv3.Cluster{staticCluster("backend", backends[0])}
	for _, n := range names {
		clusters = append(clusters, edsClusterADS(n))
	}
	assign := func(addr string, bad bool) []*endpointv3.ClusterLoadAssignment {
		var out []*endpointv3.ClusterLoadAssignment
		for _, n := range names {
			la := endpointsNamed(n, []string{addr})
			if bad && n == "zbad" {
				la.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = sockAddr("backend.invalid", 80)
			}
			out = append(out, la)
		}
		return out
	}
	r := startWarmRig(t, names, clusters, assign(backends[0], false)...)
	for _, n := range names {
		testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/" + n + "/")); return b == "b0" }, "cluster %s never served", n)
	}

	// Every valid assignment moves to b1, and zbad's is invalid.
	r.set(clusters, assign(backends[1], true)...)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(r.cp.nackMessages()) > 0 }, "the EDS update was not NACKed")
	msg := r.cp.nackMessages()[0]
	if !strings.Contains(msg, "cluster_load_assignment zbad") || !strings.Contains(msg, `"backend.invalid" is not an IP address`) {
		t.Errorf("the NACK does not name the bad assignment: %q", msg)
	}
	for _, n := range names {
		if hosts := clusterHosts(t, r.p.Admin, n); len(hosts) != 1 || hosts[0] != backends[0] {
			t.Errorf("after the NACKed EDS update cluster %s has hosts %v, want [%s] (unchanged)", n, hosts, backends[0])
		}
		if c, b, _ := getQuiet(r.url("/" + n + "/")); c != 200 || b != "b0" {
			t.Errorf("after the NACKed EDS update cluster %s serves %d %q, want b0", n, c, b)
		}
	}
	_, _, dump := testutil.Get(t, testutil.Client(), "http://"+r.p.Admin+"/config_dump?include_eds")
	if !strings.Contains(dump, portOf(backends[0])) || strings.Contains(dump, portOf(backends[1])) || strings.Contains(dump, "backend.invalid") {
		t.Errorf("the EDS config dump shows assignments of the NACKed update:\n%s", dump)
	}

	// The fixed update applies whole.
	r.set(clusters, assign(backends[1], false)...)
	for _, n := range names {
		testutil.Eventually(t, 10*time.Second, func() bool { _, b, _ := getQuiet(r.url("/" + n + "/")); return b == "b1" }, "cluster %s did not take the fixed update", n)
	}
}

// portOf is the port of a host:port, as it appears in a config dump.
func portOf(addr string) string {
	return `"port_value": ` + addr[strings.LastIndex(addr, ":")+1:]
}
