// server.* statistics Envoy computes from the running server.

package features_test

import (
	"fmt"
	"math"
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
