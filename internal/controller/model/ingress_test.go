package model

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestIngressContourAnnotations: the Ingress annotations Contour reads
// besides the routing ones — the class annotations (which win over
// spec.ingressClassName, also on HTTPProxies), tls-cert-namespace (with
// delegation) and the TLS protocol versions.
func TestIngressContourAnnotations(t *testing.T) {
	leaf := testutil.NewCA(t, "ing-ca").Issue(t, "t.example.com", "t.example.com")
	b64 := func(s []byte) string { return base64.StdEncoding.EncodeToString(s) }
	secret := func(ns string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: tls, namespace: %s}\ntype: kubernetes.io/tls\ndata: {tls.crt: %s, tls.key: %s}\n---\n", ns, b64(leaf.CertPEM), b64(leaf.KeyPEM))
	}
	ingress := func(name, host, annotations, class string) string {
		return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: %s, namespace: default, annotations: {%s}}
spec:
  %s
  tls: [{hosts: [%s], secretName: tls}]
  rules:
  - host: %s
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: s1, port: {number: 80}}}}]}
---
`, name, annotations, class, host, host)
	}
	objects := secret("certs") + `apiVersion: projectcontour.io/v1
kind: TLSCertificateDelegation
metadata: {name: d, namespace: certs}
spec: {delegations: [{secretName: tls, targetNamespaces: [default]}]}
---
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
` + ingress("delegated", "t.example.com", `projectcontour.io/tls-cert-namespace: certs, projectcontour.io/tls-minimum-protocol-version: "1.3"`, "") +
		ingress("inverted", "inv.example.com", `projectcontour.io/tls-cert-namespace: certs, projectcontour.io/tls-minimum-protocol-version: "1.3", projectcontour.io/tls-maximum-protocol-version: "1.2"`, "") +
		ingress("undelegated", "u.example.com", `projectcontour.io/tls-cert-namespace: elsewhere`, "") +
		ingress("other-class", "o.example.com", `projectcontour.io/ingress.class: nginx`, "ingressClassName: contour") +
		ingress("annotated-class", "c.example.com", `projectcontour.io/ingress.class: contour, projectcontour.io/tls-cert-namespace: certs`, "ingressClassName: nginx") +
		`apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: p, namespace: default, annotations: {kubernetes.io/ingress.class: nginx}}
spec:
  ingressClassName: contour
  virtualhost: {fqdn: p.example.com}
  routes: [{services: [{name: s1, port: 80}]}]
`
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "objs.yaml"), []byte(objects), 0o644)
	objs, err := source.LoadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := Build(objs, Options{})
	if vh := m.Secure["t.example.com"]; vh == nil || vh.Secret == nil || vh.MinVersion != "1.3" || vh.MaxVersion != "1.3" {
		t.Errorf("t.example.com: secure vhost %+v, want the delegated secret of certs with TLS 1.3 only", vh)
	}
	if vh := m.Secure["inv.example.com"]; vh != nil {
		t.Errorf("inv.example.com: a minimum above the maximum must serve no TLS, got %+v", vh)
	}
	if vh := m.Secure["u.example.com"]; vh != nil {
		t.Errorf("u.example.com: a secret of a namespace without delegation must not be served")
	}
	if _, ok := m.Insecure["o.example.com"]; ok {
		t.Error("o.example.com: the class annotation (nginx) wins over spec.ingressClassName")
	}
	if vh := m.Secure["c.example.com"]; vh == nil {
		t.Error("c.example.com: the class annotation (contour) wins over spec.ingressClassName nginx")
	}
	if _, ok := m.Insecure["p.example.com"]; ok {
		t.Error("p.example.com: an HTTPProxy's class annotation wins over its spec")
	}
	var problems []string
	for k, st := range m.Ingresses {
		for _, p := range st.Problems {
			problems = append(problems, k.Name+": "+p)
		}
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"inverted: projectcontour.io/tls-minimum-protocol-version 1.3 is above", `undelegated: spec.tls secret "tls": Secret "elsewhere/tls" is not configured for certificate delegation`} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems lack %q:\n%s", want, joined)
		}
	}
}
