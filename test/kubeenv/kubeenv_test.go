package kubeenv_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/test/kubeenv"
	"github.com/legateproxy/legate/test/kubeenv/nodeagent"
)

const echoImage = "registry.k8s.io/gateway-api/echo-basic:v1.5.1"

var ctx = context.Background()

// eventually retries f until it returns nil or d has passed.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newNamespace(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// echoEnv is how the conformance suite's Deployments give echo-basic its
// pod and namespace names.
func echoEnv() []corev1.EnvVar {
	return []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
	}
}

// echoReply is the part of echo-basic's JSON answer the tests read.
type echoReply struct {
	Path      string `json:"path"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func getEcho(addr, path string) (echoReply, error) {
	var r echoReply
	resp, err := httpClient.Get("http://" + addr + path)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return r, fmt.Errorf("GET %s%s: %s: %s", addr, path, resp.Status, b)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("GET %s%s: %w: %s", addr, path, err, b)
	}
	return r, nil
}

func runningPods(c kubernetes.Interface, ns, selector string) ([]corev1.Pod, error) {
	list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readyEndpoints returns the ready addresses of a Service's EndpointSlices.
func readyEndpoints(c kubernetes.Interface, ns, svc string) ([]string, error) {
	slices, err := c.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				out = append(out, e.Addresses...)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// TestKubeenv runs the environment's parts together: a Deployment of
// echo-basic becomes a ReplicaSet and Pods (kube-controller-manager), the
// agent runs the Pods at TEST-NET-3 addresses reachable from the test,
// the EndpointSlice controller publishes them, scaling and namespace
// deletion go through; then the agent's behaviours one by one.
func TestKubeenv(t *testing.T) {
	if !kubeenv.InNetns(t) {
		return
	}
	images := kubeenv.DefaultImages(kubeenv.ConformanceAssets(t))
	images["example.test/sh"] = nodeagent.Image{Path: "/bin/sh", Entrypoint: []string{"sh"}}
	env := kubeenv.Start(t, kubeenv.Options{Images: images})
	c := env.Client

	t.Run("Node", func(t *testing.T) {
		n, err := c.CoreV1().Nodes().Get(ctx, env.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			ready = ready || cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue
		}
		if !ready || len(n.Spec.Taints) != 0 || n.Status.Addresses[0].Address != env.NodeIP || n.Spec.PodCIDR != kubeenv.DefaultPodCIDR {
			t.Fatalf("node: ready %v taints %v addresses %v podCIDR %s", ready, n.Spec.Taints, n.Status.Addresses, n.Spec.PodCIDR)
		}
		l, err := c.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, env.NodeName, metav1.GetOptions{})
		if err != nil || l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) > 15*time.Second {
			t.Fatalf("node lease: %v %+v", err, l)
		}
	})
	t.Run("Deployment", func(t *testing.T) {
		const ns = "deploy"
		newNamespace(t, c, ns)
		labels := map[string]string{"app": "echo"}
		replicas := int32(2)
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{
						Name: "echo", Image: echoImage, Env: echoEnv(),
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 3000}},
					}}},
				},
			},
		}
		began := time.Now()
		if _, err := c.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromString("http")}}},
		}
		if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "Deployment available with 2 replicas", func() error {
			d, err := c.AppsV1().Deployments(ns).Get(ctx, "echo", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if d.Status.AvailableReplicas != 2 || d.Status.ReadyReplicas != 2 {
				return fmt.Errorf("status %+v", d.Status)
			}
			return nil
		})
		t.Logf("Deployment of 2 available in %v", time.Since(began).Round(time.Millisecond))
		rss, err := c.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(rss.Items) != 1 || rss.Items[0].OwnerReferences[0].Name != "echo" {
			t.Fatalf("want one ReplicaSet owned by the Deployment: %v %+v", err, rss)
		}
		pods, err := runningPods(c, ns, "app=echo")
		if err != nil || len(pods) != 2 {
			t.Fatalf("want 2 pods: %v %d", err, len(pods))
		}
		var ips []string
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || !podReady(&p) || p.Spec.NodeName != env.NodeName || p.Status.HostIP != env.NodeIP {
				t.Fatalf("pod %s: phase %s ready %v node %s hostIP %s", p.Name, p.Status.Phase, podReady(&p), p.Spec.NodeName, p.Status.HostIP)
			}
			cs := p.Status.ContainerStatuses
			if len(cs) != 1 || !cs[0].Ready || cs[0].State.Running == nil || cs[0].Started == nil || !*cs[0].Started {
				t.Fatalf("pod %s container status %+v", p.Name, cs)
			}
			ip := net.ParseIP(p.Status.PodIP)
			if ip == nil || !strings.HasPrefix(p.Status.PodIP, "203.0.113.") || len(p.Status.PodIPs) != 1 {
				t.Fatalf("pod %s IP %q %v", p.Name, p.Status.PodIP, p.Status.PodIPs)
			}
			ips = append(ips, p.Status.PodIP)
			r, err := getEcho(net.JoinHostPort(p.Status.PodIP, "3000"), "/hello")
			if err != nil {
				t.Fatal(err)
			}
			if r.Pod != p.Name || r.Namespace != ns || r.Path != "/hello" {
				t.Fatalf("pod %s at %s answered %+v", p.Name, p.Status.PodIP, r)
			}
		}
		sort.Strings(ips)
		if ips[0] == ips[1] {
			t.Fatalf("two pods at one address %s", ips[0])
		}
		eventually(t, 30*time.Second, "EndpointSlice with both pods ready", func() error {
			eps, err := readyEndpoints(c, ns, "echo")
			if err != nil {
				return err
			}
			if !slices.Equal(eps, ips) {
				return fmt.Errorf("ready endpoints %v, pods %v", eps, ips)
			}
			return nil
		})

		// Scale to 1: a pod and its endpoint go, its process too.
		scale, err := c.AppsV1().Deployments(ns).GetScale(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scale.Spec.Replicas = 1
		if _, err := c.AppsV1().Deployments(ns).UpdateScale(ctx, "echo", scale, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		var kept corev1.Pod
		var goneIP string
		eventually(t, 60*time.Second, "one pod left after scaling to 1", func() error {
			list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
			if err != nil {
				return err
			}
			if len(list.Items) != 1 {
				return fmt.Errorf("%d pods", len(list.Items))
			}
			kept = list.Items[0]
			return nil
		})
		for _, ip := range ips {
			if ip != kept.Status.PodIP {
				goneIP = ip
			}
		}
		eventually(t, 30*time.Second, "EndpointSlice with the one pod left", func() error {
			eps, err := readyEndpoints(c, ns, "echo")
			if err != nil {
				return err
			}
			if !slices.Equal(eps, []string{kept.Status.PodIP}) {
				return fmt.Errorf("ready endpoints %v, want [%s]", eps, kept.Status.PodIP)
			}
			return nil
		})
		if _, err := getEcho(net.JoinHostPort(goneIP, "3000"), "/"); err == nil {
			t.Fatalf("the removed pod's address %s still answers", goneIP)
		}
		if r, err := getEcho(net.JoinHostPort(kept.Status.PodIP, "3000"), "/"); err != nil || r.Pod != kept.Name {
			t.Fatalf("the pod left: %+v %v", r, err)
		}

		// Deleting the namespace completes: the namespace controller
		// deletes the Deployment, ReplicaSet, Pods (finalized by the
		// agent), Service and EndpointSlices.
		began = time.Now()
		if err := c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 90*time.Second, "namespace deleted", func() error {
			n, err := c.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("namespace %s: %+v", n.Status.Phase, n.Status.Conditions)
		})
		t.Logf("namespace deleted in %v", time.Since(began).Round(time.Millisecond))
		if _, err := getEcho(net.JoinHostPort(kept.Status.PodIP, "3000"), "/"); err == nil {
			t.Fatalf("pod %s at %s still answers after its namespace was deleted", kept.Name, kept.Status.PodIP)
		}
	})
	t.Run("Restarts", func(t *testing.T) { testRestarts(t, env) })
	t.Run("Probes", func(t *testing.T) { testProbes(t, env) })
	t.Run("Refusals", func(t *testing.T) { testRefusals(t, env) })
	t.Run("VolumesAndEnv", func(t *testing.T) { testVolumesAndEnv(t, env) })
	t.Run("InitAndSharedNetwork", func(t *testing.T) { testInitAndSharedNetwork(t, env) })
}
