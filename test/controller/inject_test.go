package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/inject"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestSidecarInjection runs the controller's injection webhook against
// a real kube-apiserver, which calls it over TLS at 127.0.0.1 through the
// MutatingWebhookConfiguration the injector writes: pods of labelled
// namespaces get the sidecar, opted-out pods and other namespaces do
// not, and a pod gets what `legate inject` writes for it.
func TestSidecarInjection(t *testing.T) {
	if !inNetns(t) {
		return
	}
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	whAPI := client.AdmissionregistrationV1().MutatingWebhookConfigurations()

	// The injector signs its certificate with the xDS CA.
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := inject.LoadCA(set.CA, set.CAKey)
	if err != nil {
		t.Fatal(err)
	}

	// deploy/base/40-injector.yaml is accepted by the API server, has the
	// webhooks the injector would create, and only gets its caBundle.
	var manifest admregv1.MutatingWebhookConfiguration
	data, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "deploy", "base", "40-injector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.Contains(doc, "kind: MutatingWebhookConfiguration") {
			if err := yaml.UnmarshalStrict([]byte(doc), &manifest); err != nil {
				t.Fatal(err)
			}
		}
	}
	svcRef := inject.WebhookConfig{Service: inject.ServiceRef{Namespace: "legate-system", Name: "legate-sidecar-injector", Port: 443}, FailurePolicy: admregv1.Fail, TimeoutSeconds: 10}
	built := svcRef.Build(nil)
	if manifest.Name != mesh.InjectorName || !reflect.DeepEqual(manifest.Webhooks, built.Webhooks) {
		a, _ := yaml.Marshal(manifest.Webhooks)
		b, _ := yaml.Marshal(built.Webhooks)
		t.Fatalf("deploy/base/40-injector.yaml webhooks differ from the injector's:\n%s\n--- injector:\n%s", a, b)
	}
	mustCreate(t, whAPI.Create, &manifest)
	if changed, err := svcRef.Reconcile(ctx, client, ca.PEM); err != nil || !changed {
		t.Fatalf("Reconcile on deploy/base/40-injector.yaml: %v %v", changed, err)
	}
	got, err := whAPI.Get(ctx, mesh.InjectorName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range got.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, ca.PEM) || w.ClientConfig.Service == nil || w.ClientConfig.Service.Name != "legate-sidecar-injector" {
			t.Fatalf("webhook %s after Reconcile: %+v", w.Name, w.ClientConfig)
		}
	}
	if err := whAPI.Delete(ctx, mesh.InjectorName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The injector as `legate controller --inject-address 127.0.0.1:0
	// --inject-webhook-url https://127.0.0.1:PORT/inject` runs it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sidecar := inject.Config{Image: "example.com/legate:test", XDSAddress: "legate-controller.legate-system.svc:8001", CAAddress: "legate-controller.legate-system.svc:15012"}
	reg := prometheus.NewRegistry()
	errs, err := inject.Start(ctx, inject.Options{
		Listener: l, Config: sidecar, CA: ca, Client: client, Log: testLogger(t), Registry: reg, Resync: 100 * time.Millisecond,
		Webhook: inject.WebhookConfig{URL: fmt.Sprintf("https://%s%s", l.Addr(), inject.Path)},
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := <-errs; err != nil {
			t.Errorf("injector: %v", err)
		}
	}()
	got, err = whAPI.Get(ctx, mesh.InjectorName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the injector did not create its configuration: %v", err)
	}
	if len(got.Webhooks) != 4 || !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca.PEM) {
		t.Fatalf("configuration %+v", got.Webhooks)
	}

	for name, lbl := range map[string]map[string]string{
		"meshed": {mesh.InjectLabel: "enabled"}, "istio-meshed": {mesh.IstioInjectLabel: "enabled"}, "plain": nil,
	} {
		mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbl}})
	}
	newPod := func(name string, ann, lbl map[string]string) *corev1.Pod {
		if lbl == nil {
			lbl = map[string]string{}
		}
		lbl["app"] = "web"
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann, Labels: lbl},
			// The ServiceAccount admission plugin (off in envtest) sets it
			// in a cluster.
			Spec: corev1.PodSpec{ServiceAccountName: "default",
				Containers: []corev1.Container{{Name: "app", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}}},
		}
	}
	create := func(ns string, p *corev1.Pod) *corev1.Pod {
		t.Helper()
		out, err := client.CoreV1().Pods(ns).Create(ctx, p.DeepCopy(), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
		}
		return out
	}
	injected := func(p *corev1.Pod) bool {
		_, ok := p.Annotations[mesh.StatusAnnotation]
		return ok && len(p.Spec.Containers) == 2 && p.Spec.Containers[1].Name == mesh.ProxyContainer &&
			len(p.Spec.InitContainers) == 1 && p.Spec.InitContainers[0].Name == mesh.InitContainer
	}

	web := create("meshed", newPod("web", nil, nil))
	if !injected(web) {
		t.Fatalf("pod in a labelled namespace not injected: %+v", web.Spec)
	}
	if web.Labels[mesh.TLSModeLabel] != mesh.TLSModeIstio || web.Labels[mesh.CanonicalNameLabel] != "web" {
		t.Errorf("labels %v", web.Labels)
	}
	for _, tt := range []struct {
		ns   string
		pod  *corev1.Pod
		want bool
	}{
		{"meshed", newPod("opt-out-annotation", map[string]string{mesh.IstioInjectAnnotation: "false"}, nil), false},
		{"meshed", newPod("opt-out-legate-annotation", map[string]string{mesh.InjectAnnotation: "false"}, nil), false},
		{"meshed", newPod("opt-out-label", nil, map[string]string{mesh.IstioInjectAnnotation: "false"}), false},
		{"istio-meshed", newPod("istio-label", nil, nil), true},
		{"plain", newPod("unlabelled-namespace", nil, nil), false},
		{"plain", newPod("pod-asks", nil, map[string]string{mesh.IstioInjectAnnotation: "true"}), true},
		{"plain", newPod("pod-asks-annotation-only", map[string]string{mesh.IstioInjectAnnotation: "true"}, nil), false},
	} {
		p := create(tt.ns, tt.pod)
		if injected(p) != tt.want {
			t.Errorf("%s/%s: injected=%v, want %v (%d containers)", tt.ns, p.Name, injected(p), tt.want, len(p.Spec.Containers))
		}
		if !tt.want && len(p.Spec.Containers) != 1 {
			t.Errorf("%s/%s: changed though not injected: %+v", tt.ns, p.Name, p.Spec.Containers)
		}
	}
	hostNet := newPod("host-net", nil, nil)
	hostNet.Spec.HostNetwork = true
	if p := create("meshed", hostNet); len(p.Spec.Containers) != 1 || len(p.Spec.InitContainers) != 0 {
		t.Errorf("hostNetwork pod injected")
	}
	// A bad annotation refuses the pod, naming it.
	_, err = client.CoreV1().Pods("meshed").Create(ctx, newPod("bad", map[string]string{mesh.ExcludeInboundPorts: "http"}, nil), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), mesh.ExcludeInboundPorts) {
		t.Errorf("pod with a bad annotation: %v", err)
	}

	// `legate inject` on the same pod gives what the webhook gave: its
	// output, created where no webhook applies, is the same pod.
	podYAML, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "web", "labels": map[string]string{"app": "web"}},
		"spec": newPod("web", nil, nil).Spec})
	var out bytes.Buffer
	if err := inject.YAML(bytes.NewReader(podYAML), &out, sidecar, nil); err != nil {
		t.Fatal(err)
	}
	var cli corev1.Pod
	if err := yaml.UnmarshalStrict(out.Bytes(), &cli); err != nil {
		t.Fatal(err)
	}
	if !injected(&cli) {
		t.Fatalf("legate inject did not inject:\n%s", out.String())
	}
	cli.Namespace = ""
	viaCLI := create("plain", &cli)
	for name, pair := range map[string][2]any{
		"initContainers": {web.Spec.InitContainers, viaCLI.Spec.InitContainers},
		"containers":     {web.Spec.Containers, viaCLI.Spec.Containers},
		"volumes":        {web.Spec.Volumes, viaCLI.Spec.Volumes},
		"annotations":    {web.Annotations, viaCLI.Annotations},
		"labels":         {web.Labels, viaCLI.Labels},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			a, _ := json.Marshal(pair[0])
			b, _ := json.Marshal(pair[1])
			t.Errorf("%s: webhook and legate inject differ\nwebhook: %s\n    cli: %s", name, a, b)
		}
	}

	// The injector restores a caBundle someone changed.
	cur, err := whAPI.Get(ctx, mesh.InjectorName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Webhooks[2].ClientConfig.CABundle = set.ProxyCert
	if _, err := whAPI.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		cur, err := whAPI.Get(ctx, mesh.InjectorName, metav1.GetOptions{})
		return err == nil && bytes.Equal(cur.Webhooks[2].ClientConfig.CABundle, ca.PEM)
	}, "the injector never restored the caBundle")

	// Counters on the controller's registry.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			counts[mf.GetName()] += m.GetCounter().GetValue()
		}
	}
	// web, istio-label, pod-asks; opt-out-annotation, opt-out-legate-annotation, host-net; bad.
	if counts["legate_sidecar_injection_success_total"] != 3 || counts["legate_sidecar_injection_skip_total"] != 3 || counts["legate_sidecar_injection_failure_total"] != 1 {
		t.Errorf("counters %v", counts)
	}
}
