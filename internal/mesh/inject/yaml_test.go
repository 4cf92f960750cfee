package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/legateproxy/legate/internal/mesh"
)

const service = `# a comment stays
apiVersion: v1
kind: Service
metadata: {name: web}   # so does this
spec:
  ports: [{port: 80}]
`

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: nginx}]
`

const hostNetPod = `apiVersion: v1
kind: Pod
metadata: {name: node-agent}
spec:
  hostNetwork: true
  containers: [{name: a, image: x}]
`

const cronJob = `apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: busybox}]
`

const list = `apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata: {name: db}
  spec:
    serviceName: db
    selector: {matchLabels: {app: db}}
    template:
      metadata: {labels: {app: db}}
      spec: {containers: [{name: db, image: postgres}]}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: c}
`

func splitDocs(s string) []string { return strings.Split(s, "---\n") }

func TestYAML(t *testing.T) {
	in := service + "---\n" + deployment + "---\n# only a comment\n---\n" + hostNetPod + "---\n" + cronJob + "---\n" + list
	var out bytes.Buffer
	if err := YAML(strings.NewReader(in), &out, testConfig, nil); err != nil {
		t.Fatal(err)
	}
	docs := splitDocs(out.String())
	if len(docs) != 5 {
		t.Fatalf("%d documents:\n%s", len(docs), out.String())
	}
	// Kinds without pods, and skipped pods, pass byte for byte.
	if docs[0] != service || docs[2] != hostNetPod {
		t.Errorf("passthrough changed:\n%s\n%s", docs[0], docs[2])
	}

	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &d); err != nil {
		t.Fatal(err)
	}
	// The template gets exactly what the webhook gives the same pod.
	pod := &corev1.Pod{ObjectMeta: d.Spec.Template.ObjectMeta, Spec: d.Spec.Template.Spec}
	var orig appsv1.Deployment
	yaml.Unmarshal([]byte(deployment), &orig)
	want := &corev1.Pod{ObjectMeta: orig.Spec.Template.ObjectMeta, Spec: orig.Spec.Template.Spec}
	want.Name, want.Namespace = "web", "shop"
	ops, _, err := Patch(want, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	want = applyToPod(t, want, ops)
	want.Name, want.Namespace = "", ""
	if !reflect.DeepEqual(pod, want) {
		a, _ := json.Marshal(pod)
		b, _ := json.Marshal(want)
		t.Errorf("deployment template\n got %s\nwant %s", a, b)
	}
	if d.Spec.Template.Labels[mesh.CanonicalNameLabel] != "web" {
		t.Errorf("labels %v", d.Spec.Template.Labels)
	}

	var cj batchv1.CronJob
	if err := yaml.UnmarshalStrict([]byte(docs[3]), &cj); err != nil {
		t.Fatal(err)
	}
	ps := cj.Spec.JobTemplate.Spec.Template.Spec
	if len(ps.Containers) != 2 || ps.Containers[1].Name != mesh.ProxyContainer || ps.InitContainers[0].Name != mesh.InitContainer {
		t.Errorf("cronjob pod spec %+v", ps)
	}
	if cj.Spec.JobTemplate.Spec.Template.Labels[mesh.CanonicalNameLabel] != "nightly" {
		t.Errorf("cronjob labels %v", cj.Spec.JobTemplate.Spec.Template.Labels)
	}

	var l struct {
		Items []map[string]any `json:"items"`
	}
	yaml.Unmarshal([]byte(docs[4]), &l)
	raw, _ := json.Marshal(l.Items[0])
	var ss appsv1.StatefulSet
	json.Unmarshal(raw, &ss)
	if len(ss.Spec.Template.Spec.Containers) != 2 {
		t.Errorf("list item not injected: %s", raw)
	}
	if !reflect.DeepEqual(l.Items[1], map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "c"}}) {
		t.Errorf("list ConfigMap changed: %v", l.Items[1])
	}

	// Injecting the output again changes nothing.
	var again bytes.Buffer
	if err := YAML(strings.NewReader(out.String()), &again, testConfig, nil); err != nil {
		t.Fatal(err)
	}
	if again.String() != out.String() {
		t.Errorf("second pass changed the output:\n%s", again.String())
	}
}

func TestYAMLErrors(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"not yaml", "a: [", "document 1"},
		{"deployment without template", "kind: Deployment\nmetadata: {name: d}\nspec: {}\n", "no spec.template"},
		{"bad annotation", "---\nkind: Pod\nmetadata:\n  name: p\n  annotations: {traffic.sidecar.istio.io/includeInboundPorts: http}\nspec: {containers: [{name: a}]}\n",
			"document 1: Pod p: metadata.annotations[traffic.sidecar.istio.io/includeInboundPorts]"},
		{"bad pod", "kind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n", "pod template"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := YAML(strings.NewReader(tt.in), &bytes.Buffer{}, testConfig, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
