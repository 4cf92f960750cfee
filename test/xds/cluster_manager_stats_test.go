package xds

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestClusterManagerStats: Envoy's cluster_manager.* counters and gauges
// follow CDS: a cluster warming is counted as warming, not active; once
// warm it is added and active; a new version of it is a modification; its
// removal is counted and it leaves the active gauge.
func TestClusterManagerStats(t *testing.T) {
	backends := upstreams(t, 2)
	g := startGate(t, "x")
	backend := staticCluster("backend", backends[0])
	r := startWarmRig(t, []string{"x"}, []*clusterv3.Cluster{backend})
	stat := func(n string) int64 { return r.p.Stat(t, "cluster_manager."+n) }
	wait := func(what string, ok func() bool) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, ok, "%s (active %d, warming %d, added %d, modified %d, removed %d)", what,
			stat("active_clusters"), stat("warming_clusters"), stat("cluster_added"), stat("cluster_modified"), stat("cluster_removed"))
	}
	active, added := stat("active_clusters"), stat("cluster_added")
	if active < 1 || added < 1 {
		t.Fatalf("with the backend cluster: active_clusters %d, cluster_added %d", active, added)
	}

	r.push([]*clusterv3.Cluster{backend, gatedCluster("x", g)})
	wait("x warming", func() bool { return stat("warming_clusters") == 1 && stat("active_clusters") == active })
	g.open("x")
	wait("x warm", func() bool {
		return stat("warming_clusters") == 0 && stat("active_clusters") == active+1 && stat("cluster_added") == added+1
	})

	r.push([]*clusterv3.Cluster{backend, staticCluster("x", backends[1])})
	wait("x modified", func() bool { return stat("cluster_modified") == 1 && stat("active_clusters") == active+1 })

	r.push([]*clusterv3.Cluster{backend})
	wait("x removed", func() bool { return stat("cluster_removed") == 1 && stat("active_clusters") == active })
}
