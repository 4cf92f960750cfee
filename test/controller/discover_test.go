package controller

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/discover"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestDiscover runs legate discover's discoverer between two real API
// servers, with the RBAC of deploy/discover in both (its clients
// impersonate those ServiceAccounts): a Service and EndpointSlice of the
// remote cluster become a mirrored Service and EndpointSlice in the
// local one, which an HTTPProxy there routes to through a real Legate
// proxy to an echo server; the remote endpoint change is followed, and
// deleting the remote Service removes the mirror and the route. On the
// way: the remote default/kubernetes and kube-system are not mirrored, a
// stale mirror of the backend is deleted at start-up while another
// backend's object and a user's object of a mirror's name are left
// alone, a namespace missing locally is waited for, a mirror deleted by
// hand comes back, and Gimbal's metrics count it all.
func TestDiscover(t *testing.T) {
	if !inNetns(t) {
		return
	}
	renv, rcfg := kubetest.StartAPIServer(t)
	lenv, lcfg := kubetest.StartAPIServer(t)
	root := testutil.RepoRoot(t)
	// The RBAC of deploy/discover: remote-rbac.yaml in the remote
	// cluster, discover.yaml (its Deployment included) in the local one.
	for _, c := range []struct {
		env  *envtest.Environment
		file string
	}{{renv, "remote-rbac.yaml"}, {lenv, "discover.yaml"}} {
		if out, err := applyFile(c.env, filepath.Join(root, "deploy", "discover", c.file)); err != nil {
			t.Fatalf("kubectl apply -f deploy/discover/%s: %v\n%s", c.file, err, out)
		}
	}
	remote := kubernetes.NewForConfigOrDie(rcfg)
	local := kubernetes.NewForConfigOrDie(lcfg)
	dyn := dynamic.NewForConfigOrDie(lcfg)
	as := func(cfg *rest.Config, sa string) kubernetes.Interface {
		c := rest.CopyConfig(cfg)
		c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:gimbal-discovery:" + sa}
		return kubernetes.NewForConfigOrDie(c)
	}
	ctx := context.Background()

	startEchoAt(t, backendA, "a")
	startEchoAt(t, backendB, "b")

	const backend = "nodek8s"
	yes := true
	slice := func(ns, svc, name, ip string) *discoveryv1.EndpointSlice {
		port, pn := int32(8080), "http"
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &pn, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}},
		}
	}
	service := func(ns, name string, labels map[string]string) *corev1.Service {
		return &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}
	}

	// The remote cluster: team1/nginx with its endpoints on a, a Service
	// whose mirror's name a local user already took, one in kube-system
	// and one in a namespace the local cluster lacks.
	for _, ns := range []string{"team1", "team2"} {
		mustCreate(t, remote.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	mustCreate(t, remote.CoreV1().Services("team1").Create, service("team1", "nginx", map[string]string{"run": "nginx"}))
	mustCreate(t, remote.DiscoveryV1().EndpointSlices("team1").Create, slice("team1", "nginx", "nginx-abcde", backendA))
	mustCreate(t, remote.CoreV1().Services("team1").Create, service("team1", "taken", nil))
	mustCreate(t, remote.CoreV1().Services("kube-system").Create, service("kube-system", "kube-dns", nil))
	mustCreate(t, remote.CoreV1().Services("team2").Create, service("team2", "web", nil))
	mustCreate(t, remote.DiscoveryV1().EndpointSlices("team2").Create, slice("team2", "web", "web-1", backendB))

	// The local cluster: team1 only, with a stale mirror of this backend
	// (its remote Service went away while no discoverer ran), another
	// backend's mirror and a user's Service named as a mirror would be.
	mustCreate(t, local.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team1"}})
	mustCreate(t, local.CoreV1().Services("team1").Create, service("team1", "nodek8s-gone",
		map[string]string{discover.LabelBackend: backend, discover.LabelService: "gone"}))
	mustCreate(t, local.CoreV1().Services("team1").Create, service("team1", "other-gone",
		map[string]string{discover.LabelBackend: "other", discover.LabelService: "gone"}))
	mustCreate(t, local.CoreV1().Services("team1").Create, service("team1", "nodek8s-taken", map[string]string{"owner": "me"}))

	reg := prometheus.NewRegistry()
	d := &discover.Discoverer{Remote: as(rcfg, "legate-discover-reader"), Local: as(lcfg, "legate-discover"), Backend: backend,
		Log: testLogger(t), Metrics: discover.NewMetrics(reg, backend, "test"), Resync: time.Minute, Endpoints: true}
	dctx, dcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()
	t.Cleanup(func() {
		dcancel()
		if err := <-done; err != nil {
			t.Errorf("discoverer: %v", err)
		}
	})
	testutil.Eventually(t, 30*time.Second, d.Synced, "the discoverer never synced")

	// The mirror: a headless Service with Gimbal's labels, its
	// EndpointSlice for Legate's controller, and Gimbal's Endpoints.
	var mirror *corev1.Service
	testutil.Eventually(t, 15*time.Second, func() bool {
		var err error
		mirror, err = local.CoreV1().Services("team1").Get(ctx, "nodek8s-nginx", metav1.GetOptions{})
		return err == nil
	}, "team1/nginx was never mirrored")
	if mirror.Spec.ClusterIP != corev1.ClusterIPNone || mirror.Labels[discover.LabelBackend] != backend ||
		mirror.Labels[discover.LabelService] != "nginx" || mirror.Labels["run"] != "nginx" || len(mirror.Spec.Ports) != 1 || mirror.Spec.Ports[0].Name != "http" {
		t.Errorf("mirrored Service = %+v", mirror)
	}
	var ms *discoveryv1.EndpointSlice
	testutil.Eventually(t, 15*time.Second, func() bool {
		var err error
		ms, err = local.DiscoveryV1().EndpointSlices("team1").Get(ctx, "nodek8s-nginx-abcde", metav1.GetOptions{})
		return err == nil
	}, "the EndpointSlice of team1/nginx was never mirrored")
	if ms.Labels[discoveryv1.LabelServiceName] != "nodek8s-nginx" || ms.Labels[discoveryv1.LabelManagedBy] != discover.ManagedBy ||
		len(ms.OwnerReferences) != 1 || ms.OwnerReferences[0].UID != mirror.UID {
		t.Errorf("mirrored EndpointSlice = %+v", ms.ObjectMeta)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		ep, err := local.CoreV1().Endpoints("team1").Get(ctx, "nodek8s-nginx", metav1.GetOptions{})
		return err == nil && ep.Labels["endpointslice.kubernetes.io/skip-mirror"] == "true" &&
			len(ep.Subsets) == 1 && len(ep.Subsets[0].Addresses) == 1 && ep.Subsets[0].Addresses[0].IP == backendA && ep.Subsets[0].Ports[0].Port == 8080
	}, "the Endpoints of team1/nginx were never written")

	// Start-up garbage collection: only this backend's stale mirror goes.
	testutil.Eventually(t, 15*time.Second, func() bool {
		_, err := local.CoreV1().Services("team1").Get(ctx, "nodek8s-gone", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, "the stale mirror team1/nodek8s-gone was not deleted")
	if _, err := local.CoreV1().Services("team1").Get(ctx, "other-gone", metav1.GetOptions{}); err != nil {
		t.Errorf("another backend's Service was touched: %v", err)
	}
	if s, err := local.CoreV1().Services("team1").Get(ctx, "nodek8s-taken", metav1.GetOptions{}); err != nil || s.Labels["owner"] != "me" || s.Labels[discover.LabelBackend] != "" {
		t.Errorf("a user's Service named as a mirror was changed: %+v %v", s, err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return metric(reg, "gimbal_service_error_total", map[string]string{"name": "nodek8s-taken", "errortype": "conflict"}) >= 1
	}, "the conflict with team1/nodek8s-taken was not counted")
	// Ignored: the remote API server's own Service and kube-system.
	for _, k := range [][2]string{{"default", "nodek8s-kubernetes"}, {"kube-system", "nodek8s-kube-dns"}} {
		if _, err := local.CoreV1().Services(k[0]).Get(ctx, k[1], metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("%s/%s should not be mirrored: %v", k[0], k[1], err)
		}
	}

	// Traffic: an HTTPProxy of the local cluster to the mirror reaches
	// the remote endpoint through a Legate proxy.
	st := source.NewStore()
	kctx, kcancel := context.WithCancel(ctx)
	defer kcancel()
	if err := (&source.Kube{Client: local, Dynamic: dyn, Log: testLogger(t)}).Run(kctx, st); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{})
	startProxy(t, x)
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)
	if err := applyYAML(t, dyn, "team1", `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: nginx}
spec:
  virtualhost: {fqdn: nginx.example.com}
  routes:
  - services: [{name: nodek8s-nginx, port: 80}]
`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		code, body, _ := get(t, base+"/", "nginx.example.com")
		return code == 200 && strings.Contains(body, "upstream=a")
	}, "the HTTPProxy never reached the remote endpoint a through the mirror")

	// The remote endpoint moves to b: the mirror and the route follow.
	rs, err := remote.DiscoveryV1().EndpointSlices("team1").Get(ctx, "nginx-abcde", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rs.Endpoints[0].Addresses = []string{backendB}
	if _, err := remote.DiscoveryV1().EndpointSlices("team1").Update(ctx, rs, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		code, body, _ := get(t, base+"/", "nginx.example.com")
		return code == 200 && strings.Contains(body, "upstream=b")
	}, "the remote endpoint change was never followed")

	// A mirror deleted by hand is written again.
	if err := local.DiscoveryV1().EndpointSlices("team1").Delete(ctx, "nodek8s-nginx-abcde", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		s, err := local.DiscoveryV1().EndpointSlices("team1").Get(ctx, "nodek8s-nginx-abcde", metav1.GetOptions{})
		return err == nil && len(s.Endpoints) == 1 && s.Endpoints[0].Addresses[0] == backendB
	}, "the EndpointSlice deleted by hand never came back")

	// team2 is missing locally: counted as invalid until it is created.
	testutil.Eventually(t, 10*time.Second, func() bool {
		return metric(reg, "gimbal_discoverer_invalid_services_total", map[string]string{"namespace": "team2"}) == 1
	}, "team2/web was not counted as invalid")
	mustCreate(t, local.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team2"}})
	testutil.Eventually(t, 15*time.Second, func() bool {
		_, err := local.DiscoveryV1().EndpointSlices("team2").Get(ctx, "nodek8s-web-1", metav1.GetOptions{})
		return err == nil && metric(reg, "gimbal_discoverer_invalid_services_total", map[string]string{"namespace": "team2"}) == 0
	}, "team2/web was not mirrored once its namespace existed")

	// Gimbal's metrics.
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gimbal_discoverer_upstream_services_total", map[string]string{"namespace": "team1", "backendname": backend, "backendtype": "kubernetes"}, 2},
		{"gimbal_discoverer_replicated_services_total", map[string]string{"namespace": "team1"}, 1},
		{"gimbal_discoverer_replicated_services_total", map[string]string{"namespace": "team2"}, 1},
		{"gimbal_discoverer_upstream_endpoints_total", map[string]string{"namespace": "team1", "servicename": "nginx"}, 1},
		{"gimbal_discoverer_replicated_endpoints_total", map[string]string{"namespace": "team1", "servicename": "nginx"}, 1},
		{"gimbal_discoverer_info", map[string]string{"backendname": backend, "version": "test"}, 1},
	} {
		if got := metric(reg, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if ts := metric(reg, "gimbal_service_event_timestamp", map[string]string{"namespace": "team1", "name": "nodek8s-nginx"}); ts < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("gimbal_service_event_timestamp = %v", ts)
	}
	if ts := metric(reg, "legate_discover_last_sync_timestamp_seconds", map[string]string{"backendname": backend}); ts < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Errorf("legate_discover_last_sync_timestamp_seconds = %v", ts)
	}

	// The remote Service is deleted: its mirrors go, and so does the route.
	if err := remote.CoreV1().Services("team1").Delete(ctx, "nginx", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		_, e1 := local.CoreV1().Services("team1").Get(ctx, "nodek8s-nginx", metav1.GetOptions{})
		_, e2 := local.DiscoveryV1().EndpointSlices("team1").Get(ctx, "nodek8s-nginx-abcde", metav1.GetOptions{})
		_, e3 := local.CoreV1().Endpoints("team1").Get(ctx, "nodek8s-nginx", metav1.GetOptions{})
		return apierrors.IsNotFound(e1) && apierrors.IsNotFound(e2) && apierrors.IsNotFound(e3)
	}, "the mirrors of the deleted remote Service were not deleted")
	testutil.Eventually(t, 15*time.Second, func() bool {
		code, _, _ := get(t, base+"/", "nginx.example.com")
		return code == 404 || code == 503
	}, "the route to the deleted remote Service still answers")
	if got := metric(reg, "gimbal_discoverer_replicated_services_total", map[string]string{"namespace": "team1"}); got != 0 {
		t.Errorf("replicated services in team1 after the deletion = %v", got)
	}
	if _, err := local.CoreV1().Services("team1").Get(ctx, "other-gone", metav1.GetOptions{}); err != nil {
		t.Errorf("another backend's Service was touched: %v", err)
	}
}

// applyFile runs kubectl apply -f file against env's API server.
func applyFile(env *envtest.Environment, file string) (string, error) {
	stdout, stderr, err := env.ControlPlane.KubeCtl().Run("apply", "-f", file)
	o, _ := io.ReadAll(stdout)
	e, _ := io.ReadAll(stderr)
	return string(o) + string(e), err
}

// metric is the value of the series of name whose labels include want
// (summed over the matching series), 0 when there is none.
func metric(reg *prometheus.Registry, name string, want map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, want) {
				sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
