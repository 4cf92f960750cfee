package source

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		{"pods and namespaces", `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {legate-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, labels: {app: web}}
spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
`, func(t *testing.T, o *Objects) {
			if ns := o.Namespaces[types.NamespacedName{Name: "shop"}]; ns == nil || ns.Namespace != "" {
				t.Errorf("Namespace not loaded by name alone: %+v", o.Namespaces)
			}
			if p := o.Pods[types.NamespacedName{Namespace: "default", Name: "web-1"}]; p == nil || p.Status.PodIP != "10.0.0.1" {
				t.Errorf("Pod not loaded: %+v", o.Pods)
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

// TestStorePods: a Pod change is an endpoints change (it does not touch
// the gateway model), and an update that only changes the resource
// version changes nothing.
func TestStorePods(t *testing.T) {
	st := NewStore()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "x", ResourceVersion: "1"}}
	st.Upsert(p)
	if _, k := st.Take(); k != KindEndpoints {
		t.Fatalf("pod added: kind %v, want endpoints", k)
	}
	q := p.DeepCopy()
	q.ResourceVersion = "2"
	st.Upsert(q)
	if _, k := st.Take(); k != KindNone {
		t.Errorf("resource-version-only update: kind %v, want none", k)
	}
	q = q.DeepCopy()
	q.Labels = map[string]string{"app": "web"}
	st.Upsert(q)
	if o, k := st.Take(); k != KindEndpoints || o.Pods[types.NamespacedName{Namespace: "x", Name: "a"}].Labels["app"] != "web" {
		t.Errorf("label change: kind %v", k)
	}
	st.Upsert(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}})
	// A Namespace's labels select Gateway API routes: a config change.
	if o, k := st.Take(); k != KindConfig || o.Namespaces[types.NamespacedName{Name: "x"}] == nil {
		t.Errorf("namespace: kind %v, want config", k)
	}
}

// TestLoadManifestsReport: every object a load does not use is reported
// once, with its kind, name, file, position and reason.
func TestLoadManifestsReport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []Drop // File relative to the folder; Message not compared
		err   bool
	}{
		{"nothing dropped", map[string]string{"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"}, nil, false},
		{"unknown kinds", map[string]string{"a.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: x}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
`}, []Drop{
			{File: "a.yaml", Document: 1, Kind: "Deployment", Namespace: "x", Name: "d", Reason: DropUnknownKind},
			{File: "a.yaml", Document: 2, Kind: "Widget", Name: "w", Reason: DropUnknownKind},
			{File: "a.yaml", Document: 3, Kind: "ConfigMap", Namespace: "default", Name: "c", Reason: DropUnknownKind},
		}, false},
		{"unused Secret", map[string]string{"a.yaml": "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: Opaque\nstringData: {password: x}\n"},
			[]Drop{{File: "a.yaml", Document: 1, Kind: "Secret", Namespace: "default", Name: "s", Reason: DropUnusedSecret}}, false},
		{"no name", map[string]string{"a.yaml": "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata: {generateName: p-}\nspec: {}\n"},
			[]Drop{{File: "a.yaml", Document: 1, Kind: "HTTPProxy", Reason: DropNoName}}, false},
		{"duplicates: the later one wins", map[string]string{
			"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
			"b.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: other}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\nspec: {ports: [{port: 81}]}\n",
		}, []Drop{{File: "a.yaml", Document: 1, Kind: "Service", Namespace: "default", Name: "s", Reason: DropDuplicate}}, false},
		{"YAML that does not parse", map[string]string{"a.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: ok}\n---\nkind: Service\nmetadata: {name: [x\n"},
			[]Drop{{File: "a.yaml", Document: 2, Reason: DropParseError}}, true},
		{"schema error", map[string]string{"a.yaml": "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata: {name: p, namespace: shop}\nspec: {virtualhost: {fqdn: 3}}\n"},
			[]Drop{{File: "a.yaml", Document: 1, Kind: "HTTPProxy", Namespace: "shop", Name: "p", Reason: DropParseError}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, c := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			o, drops, err := LoadManifestsReport(dir)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			var got []Drop
			for _, d := range drops {
				if d.Message == "" {
					t.Errorf("drop %+v without a message", d)
				}
				d.File, _ = filepath.Rel(dir, d.File)
				d.Message = ""
				got = append(got, d)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("drops = %+v\nwant %+v", got, tc.want)
			}
			if tc.name == "duplicates: the later one wins" {
				if s := o.Services[types.NamespacedName{Namespace: "default", Name: "s"}]; s == nil || s.Spec.Ports[0].Port != 81 {
					t.Errorf("Service default/s = %+v, want the later one (port 81)", s)
				}
			}
		})
	}
}
