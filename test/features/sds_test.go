// SDS: secrets from files.

package features_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestSDSFromFiles serves a certificate named by SDS, from an SDS file
// whose secret points at certificate files, as a Kubernetes Secret mount
// would be wired; a rotation of the files is served on the next handshake.
func TestSDSFromFiles(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	dir := t.TempDir()
	crt, key := ca.Issue(t, "v1", "sds.example.com").WriteFiles(t, dir, "tls")
	sdsFile := filepath.Join(dir, "sds.yaml")
	os.WriteFile(sdsFile, []byte(fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: server_cert
  tls_certificate:
    certificate_chain: {filename: %s}
    private_key: {filename: %s}
`, crt, key)), 0o644)
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters: [%s]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: server_cert
              sds_config: {path_config_source: {path: %s}, resource_api_version: V3}
`, fmt.Sprintf(hcmPrefix, "s", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}"), sdsFile)
	p := testutil.StartProxy(t, y, nil)
	cn := func() string {
		c, err := tls.Dial("tcp", p.Addr("https"), &tls.Config{ServerName: "sds.example.com", RootCAs: ca.Pool})
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := cn(); got != "v1" {
		t.Fatalf("SDS certificate: %s", got)
	}
	ca.Issue(t, "v2", "sds.example.com").WriteFiles(t, dir, "tls")
	testutil.Eventually(t, 5*time.Second, func() bool { return cn() == "v2" }, "SDS certificate files not reloaded")
	// /certs shows the certificate with its validity.
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/certs")
	var certs struct {
		Certificates []struct {
			CertChain []struct {
				Path                string `json:"path"`
				DaysUntilExpiration string `json:"days_until_expiration"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(body), &certs); err != nil || !strings.Contains(body, "server_cert") {
		t.Fatalf("/certs: %v\n%s", err, body)
	}
}
