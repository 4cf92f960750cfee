// Which Kubernetes Secrets reach the proxies.

package xdsgen

import (
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestOnlyReferencedSecrets: a Secret reaches the proxies (SDS) only when
// a valid virtual host's TLS or client validation names it; others in the
// same namespace — and any a wildcard SDS request could ask for — are not
// in the resources at all.
func TestOnlyReferencedSecrets(t *testing.T) {
	ca := testutil.NewCA(t, "secrets-ca")
	leaf := ca.Issue(t, "a.example.com", "a.example.com")
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	secret := func(name string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
			name, b64(leaf.CertPEM), b64(leaf.KeyPEM))
	}
	_, m := render(t, secret("used")+secret("unused")+proxy(`
  virtualhost: {fqdn: a.example.com, tls: {secretName: used}}
  routes: [{services: [{name: s1, port: 80}]}]`))
	r := Build(m, Options{})
	var names []string
	for _, s := range r.Secrets {
		names = append(names, s.Name)
	}
	if len(names) != 1 || names[0] != "default/used/cert" && names[0] != "default/used" {
		t.Fatalf("secrets sent to the proxies: %v, want only the referenced default/used", names)
	}
}
