// TLS client validation on a virtual host.

package xdsgen

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestClientValidation: a TLS virtual host with clientValidation (CA,
// forwardClientCertificate) renders an SDS certificate, a required and
// verified client certificate, and x-forwarded-client-cert settings.
func TestClientValidation(t *testing.T) {
	ca := testutil.NewCA(t, "features-ca")
	leaf := ca.Issue(t, "a.example.com", "a.example.com")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	out, m := render(t, fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: ca, namespace: default}
data: {ca.crt: %s}
---
`, b64(leaf.CertPEM), b64(leaf.KeyPEM), b64(ca.CertPEM))+proxy(`
  virtualhost: {fqdn: a.example.com, tls: {secretName: tls, clientValidation: {caSecret: ca, forwardClientCertificate: {subject: true, uri: true}}}}
  routes: [{services: [{name: s1, port: 80}]}]`))
	for _, w := range []string{`"forwardClientCertDetails":"SANITIZE_SET","setCurrentClientCertDetails":{"subject":true,"uri":true}`,
		`"requireClientCertificate":true`, `"tlsCertificateSdsSecretConfigs":[{"name":"default/tls/cert"`, `"serverNames":["a.example.com"]`} {
		if !strings.Contains(out, w) {
			t.Errorf("xDS lacks %s", w)
		}
	}
	for _, st := range m.Proxies {
		if st.Current() != "valid" {
			t.Errorf("status %s: %s", st.Current(), st.Description())
		}
	}
}
