package controller

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestSidecarKubePods: the Kubernetes source watches Pods and Namespaces
// (a real API server): a pod and its status (its IP) reach the store,
// trimmed, and the sidecar built from it has its inbound port; a label
// change reaches the store too.
func TestSidecarKubePods(t *testing.T) {
	if !inNetns(t) {
		return
	}
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{mesh.InjectLabel: "enabled"}}})
	pod := mustCreate(t, client.CoreV1().Pods("shop").Create, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{mesh.StatusAnnotation: "{}"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", Containers: []corev1.Container{{Name: "app", Image: "app",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	})
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = "192.0.2.11"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "192.0.2.11"}}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := client.CoreV1().Pods("shop").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st := source.NewStore()
	if err := (&source.Kube{Client: client, Dynamic: dynamic.NewForConfigOrDie(cfg), Log: testLogger(t)}).Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "shop", Name: "web-1"}
	var objs *source.Objects
	testutil.Eventually(t, 20*time.Second, func() bool {
		objs, _ = st.Take()
		p := objs.Pods[key]
		return p != nil && p.Status.PodIP == "192.0.2.11" && objs.Namespaces[types.NamespacedName{Name: "shop"}] != nil
	}, "the pod with its IP, and its namespace, never reached the store")
	p := objs.Pods[key]
	if len(p.ManagedFields) != 0 || len(p.Status.Conditions) != 0 || p.Spec.Containers[0].Image != "" {
		t.Errorf("pod not trimmed: managedFields %d, conditions %d, image %q", len(p.ManagedFields), len(p.Status.Conditions), p.Spec.Containers[0].Image)
	}
	r := xdsgen.Sidecar(objs, mesh.NodeID{IP: netip.MustParseAddr("192.0.2.11"), Pod: "web-1", Namespace: "shop"}, xdsgen.SidecarOptions{})
	found := false
	for _, c := range r.Clusters {
		found = found || c.Name == "inbound|8080||"
	}
	if !found {
		t.Errorf("sidecar from the watched pod has no inbound|8080|| cluster: %v", r.Notes)
	}
	// A label change reaches the store.
	pod, err := client.CoreV1().Pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Labels["version"] = "v2"
	if _, err := client.CoreV1().Pods("shop").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		objs, _ = st.Take()
		return objs.Pods[key] != nil && objs.Pods[key].Labels["version"] == "v2"
	}, "the label change never reached the store")
}
