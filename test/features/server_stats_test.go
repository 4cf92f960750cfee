// server.* statistics Envoy computes from the running server.

package features_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// server.days_until_first_cert_expiring: the largest uint32 without any
// certificate (as Envoy's context manager), else the whole days left on
// the first one to expire: a leaf of 10 days and 1 hour gives 10.
func TestDaysUntilFirstCertExpiring(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	plain := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", "", up.Addr) + "]"})
	testutil.Eventually(t, 5*time.Second, func() bool {
		return plain.Stat(t, "server.days_until_first_cert_expiring") == math.MaxUint32
	}, "without certificates: %d, want %d", plain.Stat(t, "server.days_until_first_cert_expiring"), int64(math.MaxUint32))

	ca := testutil.NewCA(t, "ca")
	leaf := ca.IssueFor(t, 10*24*time.Hour+time.Hour, "proxy", "proxy.internal")
	tlsCluster := fmt.Sprintf(`transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext,
	  common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}]}}}`, pemInline(leaf.CertPEM), pemInline(leaf.KeyPEM))
	withTLS := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", tlsCluster, up.Addr) + "]"})
	testutil.Eventually(t, 5*time.Second, func() bool {
		return withTLS.Stat(t, "server.days_until_first_cert_expiring") == 10
	}, "with a certificate expiring in 10 days: want 10")
}

// TestServerStats: Envoy's other server.* statistics — server.version from
// stats_server_version_override, server.total_connections counting open
// downstream connections, server.initialization_time_ms recorded once
// live, the hot-restart ones at 0 — and cluster_manager.cluster_updated
// counting host-set updates.
func TestServerStats(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	p := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", "", up.Addr) + "]",
		extra: "stats_server_version_override: 4242\n"})
	if v := p.Stat(t, "server.version"); v != 4242 {
		t.Errorf("server.version = %d, want the override 4242", v)
	}
	for _, name := range []string{"server.parent_connections", "server.hot_restart_epoch", "server.dropped_stat_flushes",
		"server.debug_assertion_failures", "server.envoy_bug_failures", "server.seconds_until_first_ocsp_response_expiring",
		"cluster_manager.update_merge_cancelled", "cluster_manager.update_out_of_merge_window"} {
		if v := p.Stat(t, name); v != 0 {
			t.Errorf("%s = %d, want 0", name, v)
		}
	}
	// The watchdog's counters exist (their values depend on the machine's load).
	for _, name := range []string{"main_thread.watchdog_miss", "workers.watchdog_mega_miss", "server.main_thread.watchdog_miss", "server.worker_0.watchdog_mega_miss"} {
		if v := p.Stat(t, name); v < 0 {
			t.Errorf("no %s", name)
		}
	}
	if v := p.Stat(t, "cluster_manager.cluster_updated"); v < 1 {
		t.Errorf("cluster_manager.cluster_updated = %d, want at least the static cluster's first hosts", v)
	}
	_, _, all := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/stats")
	if !strings.Contains(all, "server.initialization_time_ms:") {
		t.Errorf("/stats lacks server.initialization_time_ms:\n%s", all)
	}
	// Two kept-alive connections (the client's and the admin's are apart:
	// only the listener's count).
	c1, c2 := testutil.Client(), testutil.Client()
	testutil.Get(t, c1, p.URL("http", "/"))
	testutil.Get(t, c2, p.URL("http", "/"))
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "server.total_connections") == 2 },
		"server.total_connections = %d, want 2", p.Stat(t, "server.total_connections"))
	c1.CloseIdleConnections()
	c2.CloseIdleConnections()
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "server.total_connections") == 0 },
		"server.total_connections = %d after the clients closed, want 0", p.Stat(t, "server.total_connections"))
}
