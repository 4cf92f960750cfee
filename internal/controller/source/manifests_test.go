package source

import (
	"os"
	"path/filepath"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestLoadManifests(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		check     func(t *testing.T, o *Objects)
		wantErr   bool
	}{
		{"v1beta1 Ingress is upgraded", `
apiVersion: networking.k8s.io/v1beta1
kind: Ingress
metadata: {name: basic}
spec:
  backend: {serviceName: def, servicePort: http}
  rules:
  - host: foo.bar.com
    http:
      paths:
      - backend: {serviceName: s1, servicePort: 80}
`, func(t *testing.T, o *Objects) {
			ing := o.Ingresses[types.NamespacedName{Namespace: "default", Name: "basic"}]
			if ing == nil {
				t.Fatal("Ingress not loaded")
			}
			p := ing.Spec.Rules[0].HTTP.Paths[0]
			if p.Backend.Service.Name != "s1" || p.Backend.Service.Port.Number != 80 || *p.PathType != networkingv1.PathTypeImplementationSpecific {
				t.Errorf("path = %+v", p)
			}
			if d := ing.Spec.DefaultBackend; d == nil || d.Service.Name != "def" || d.Service.Port.Name != "http" {
				t.Errorf("default backend = %+v", d)
			}
		}, false},
		{"lists and other kinds", `
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, namespace: x}
  spec: {ports: [{port: 80}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: p}
spec: {virtualhost: {fqdn: a.b}}
`, func(t *testing.T, o *Objects) {
			if o.Services[types.NamespacedName{Namespace: "x", Name: "a"}] == nil || o.HTTPProxies[types.NamespacedName{Namespace: "default", Name: "p"}] == nil {
				t.Errorf("objects = %+v", o)
			}
		}, false},
		{"schema error", "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata: {name: p}\nspec: {virtualhost: {fqdn: 3}}\n", nil, true},
		{"broken YAML", "apiVersion: v1\nkind: Service\nmetadata: {name: [x\n", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(tc.doc), 0o644)
			o, err := LoadManifests(dir)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}
