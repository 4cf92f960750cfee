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
// the first one to expire (the test CA's leaves last 24 hours: 0).
func TestDaysUntilFirstCertExpiring(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	plain := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", "", up.Addr) + "]"})
	testutil.Eventually(t, 5*time.Second, func() bool {
		return plain.Stat(t, "server.days_until_first_cert_expiring") == math.MaxUint32
	}, "without certificates: %d, want %d", plain.Stat(t, "server.days_until_first_cert_expiring"), int64(math.MaxUint32))

	ca := testutil.NewCA(t, "ca")
	leaf := ca.Issue(t, "proxy", "proxy.internal")
	tlsCluster := fmt.Sprintf(`transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext,
	  common_tls_context: {tls_certificates: [{certificate_chain: %s, private_key: %s}]}}}`, pemInline(leaf.CertPEM), pemInline(leaf.KeyPEM))
	withTLS := start(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: a}}`), clusters: "[" + staticCluster("a", tlsCluster, up.Addr) + "]"})
	testutil.Eventually(t, 5*time.Second, func() bool {
		return withTLS.Stat(t, "server.days_until_first_cert_expiring") == 0
	}, "with a certificate expiring within a day: %d, want 0", withTLS.Stat(t, "server.days_until_first_cert_expiring"))
}
