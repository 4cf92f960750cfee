// Authorization in the model: what routes inherit from their root's
// authorization (through includes too), and the ExtensionService cluster.

package model

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

const extauthObjects = `apiVersion: v1
kind: Service
metadata: {name: s1, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: authz, namespace: default}
spec: {ports: [{name: grpc, port: 9000}]}
---
apiVersion: projectcontour.io/v1alpha1
kind: ExtensionService
metadata: {name: authz, namespace: default}
spec:
  services: [{name: authz, port: 9000}]
  protocol: h2c
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: child, namespace: team}
spec:
  routes:
  - conditions: [{prefix: /open}]
    authPolicy: {disabled: true}
    services: [{name: s1, port: 80}]
  - conditions: [{prefix: /ctx}]
    authPolicy: {context: {team: a}}
    services: [{name: s1, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: team}
spec: {ports: [{name: http, port: 80}]}
---
`

func TestRouteAuthorization(t *testing.T) {
	leaf := testutil.NewCA(t, "model-ca").Issue(t, "a.example.com", "a.example.com")
	b64 := func(s []byte) string { return base64.StdEncoding.EncodeToString(s) }
	secret := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n",
		b64(leaf.CertPEM), b64(leaf.KeyPEM))
	for _, tc := range []struct {
		name, authz string
		// want is "path: disabled context" per route of the secure vhost.
		want map[string]string
	}{
		{"enabled with a context, through an include", `{extensionRef: {name: authz}, authPolicy: {context: {realm: r}}}`, map[string]string{
			"/team/open": "true map[realm:r]",
			"/team/ctx":  "false map[realm:r team:a]",
			"/":          "false map[realm:r]",
		}},
		// As Contour, a route's authPolicy sets disabled whatever else it
		// says: one with only a context enables authorization.
		{"disabled on the virtual host", `{extensionRef: {name: authz}, authPolicy: {disabled: true}}`, map[string]string{
			"/team/open": "true map[]",
			"/team/ctx":  "false map[team:a]",
			"/":          "true map[]",
		}},
		{"no server: routes inherit nothing", `{authPolicy: {disabled: true}}`, map[string]string{
			"/team/open": "false map[]",
			"/team/ctx":  "false map[]",
			"/":          "false map[]",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root := fmt.Sprintf(`apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: root, namespace: default}
spec:
  virtualhost:
    fqdn: a.example.com
    tls: {secretName: tls}
    authorization: %s
  includes: [{name: child, namespace: team, conditions: [{prefix: /team}]}]
  routes: [{services: [{name: s1, port: 80}]}]
`, tc.authz)
			if err := os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(secret+extauthObjects+root), 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := source.LoadManifests(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := Build(objs, Options{})
			if st := m.Proxies[types.NamespacedName{Namespace: "default", Name: "root"}]; st.Current() != StatusValid {
				t.Fatalf("root = %s %q", st.Current(), st.Description())
			}
			vh := m.Secure["a.example.com"]
			if vh == nil {
				t.Fatal("no secure virtual host")
			}
			if (vh.Authorization != nil) != (tc.name != "no server: routes inherit nothing") {
				t.Errorf("authorization = %+v", vh.Authorization)
			}
			got := map[string]string{}
			for _, r := range vh.Routes {
				got[r.Path.Value] = fmt.Sprintf("%v %v", r.AuthDisabled, r.AuthContext)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("routes = %v\nwant %v", got, tc.want)
			}
			if a := vh.Authorization; a != nil && (a.Cluster.Name != "extension/default/authz" || a.Cluster.Protocol != "h2c" || len(a.Cluster.Extension) != 1) {
				t.Errorf("cluster = %+v", a.Cluster)
			}
		})
	}
}
