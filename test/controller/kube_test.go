package controller

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// Backends of the Kubernetes tests listen on TEST-NET-1 addresses: the API
// server refuses loopback addresses in EndpointSlices.
const (
	backendA = "192.0.2.11"
	backendB = "192.0.2.12"
)

// inNetns re-runs the calling test in a private network namespace with
// lo up and the TEST-NET addresses on it, and reports whether the caller
// is that child (true: go on) or the parent (false: done).
func inNetns(t *testing.T) bool {
	if os.Getenv("LEGATE_IN_NETNS") == "1" {
		return true
	}
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries and a network namespace")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for unshare -n")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	script := fmt.Sprintf("set -e; ip link set lo up; ip addr add %s/32 dev lo; ip addr add %s/32 dev lo; exec \"$0\" \"$@\"", backendA, backendB)
	cmd := exec.Command("unshare", "-n", "sh", "-c", script, os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "LEGATE_IN_NETNS=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("test in network namespace failed: %v", err)
	}
	if skips := testutil.SkipLines(string(out)); len(skips) > 0 && os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
		t.Fatalf("skipped in its network namespace, where CI requires it to run:\n%s", strings.Join(skips, "\n"))
	}
	return false
}

func mustCreate[T any](t *testing.T, f func(context.Context, T, metav1.CreateOptions) (T, error), obj T) T {
	t.Helper()
	out, err := f(context.Background(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
	return out
}

// startEchoAt serves testutil.EchoHandler(name) on ip:8080 until the test
// ends (ip: a TEST-NET address of the test's network namespace).
func startEchoAt(t *testing.T, ip, name string) {
	t.Helper()
	l, err := net.Listen("tcp", ip+":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: testutil.EchoHandler(name)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// applyYAML creates the HTTPProxies and TLSCertificateDelegations of doc.
// nsOf maps a manifest's namespace to the namespace used (and created).
func applyYAML(t *testing.T, dyn dynamic.Interface, ns, doc string) error {
	return applyYAMLMapped(t, dyn, func(string) string { return ns }, doc)
}

func applyYAMLMapped(t *testing.T, dyn dynamic.Interface, nsOf func(string) string, doc string) error {
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(doc), 4096)
	for {
		var u unstructured.Unstructured
		if err := d.Decode(&u.Object); err != nil {
			if err.Error() == "EOF" {
				return nil
			}
			return err
		}
		if len(u.Object) == 0 {
			continue
		}
		gvr := contourv1.HTTPProxyGVR
		if u.GetKind() == "TLSCertificateDelegation" {
			gvr = contourv1.TLSCertificateDelegationGVR
		} else if u.GetKind() != "HTTPProxy" {
			continue
		}
		ns := nsOf(u.GetNamespace())
		u.SetNamespace(ns)
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(context.Background(), &u, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("%s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
}

func proxyStatus(t *testing.T, dyn dynamic.Interface, ns, name string) contourv1.HTTPProxyStatus {
	u, err := dyn.Resource(contourv1.HTTPProxyGVR).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := source.FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*contourv1.HTTPProxy).Status
}

// TestKubernetes runs the controller against a real kube-apiserver: it
// watches Services, EndpointSlices, Secrets, Ingresses and HTTPProxies,
// writes status as Contour does, and a Legate proxy follows it to
// backends on TEST-NET addresses, through HTTPProxy and endpoint changes.
// The CRDs accept every Contour example manifest of the conformance set.
func TestKubernetes(t *testing.T) {
	if !inNetns(t) {
		return
	}
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx := context.Background()

	// Every Contour example applies against our CRDs (server-side schema).
	shared := testutil.SharedDir(t)
	files, _ := filepath.Glob(filepath.Join(shared, "conformance", "httpproxy-examples", "*.yaml"))
	seeds, _ := filepath.Glob(filepath.Join(shared, "conformance", "seed-configs", "seed004__*.yaml"))
	files = append(files, seeds...)
	if len(files) < 20 {
		t.Fatalf("only %d Contour manifests found", len(files))
	}
	created := map[string]bool{}
	for i, f := range files {
		data, _ := os.ReadFile(f)
		// Each file gets its own copy of the namespaces it names.
		nsOf := func(orig string) string {
			if orig == "" {
				orig = "default"
			}
			ns := fmt.Sprintf("c%d-%s", i, orig)
			if !created[ns] {
				created[ns] = true
				mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			}
			return ns
		}
		if err := applyYAMLMapped(t, dyn, nsOf, string(data)); err != nil {
			t.Errorf("%s does not apply against Legate's CRDs: %v", filepath.Base(f), err)
		}
	}

	// Backends on TEST-NET addresses inside this network namespace.
	startEchoAt(t, backendA, "a")
	startEchoAt(t, backendB, "b")

	ns := "app"
	mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	for _, n := range []string{"svc-a", "svc-b"} {
		mustCreate(t, client.CoreV1().Services(ns).Create, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: n},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}}},
		})
	}
	ready := true
	epSlice := func(svc string, ips ...string) *discoveryv1.EndpointSlice {
		var eps []discoveryv1.Endpoint
		for _, ip := range ips {
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		name, port := "http", int32(8080)
		return &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
			Endpoints:   eps,
		}
	}
	mustCreate(t, client.DiscoveryV1().EndpointSlices(ns).Create, epSlice("svc-a", backendA))
	mustCreate(t, client.DiscoveryV1().EndpointSlices(ns).Create, epSlice("svc-b", backendB))
	if err := applyYAML(t, dyn, ns, `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: root}
spec:
  virtualhost: {fqdn: app.example.com}
  includes:
  - name: child
    conditions: [{prefix: /child}]
  routes:
  - services: [{name: svc-a, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: child}
spec:
  routes:
  - services: [{name: svc-b, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: orphan}
spec:
  routes:
  - services: [{name: svc-b, port: 80}]
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: broken}
spec:
  virtualhost: {fqdn: broken.example.com}
  routes:
  - services: [{name: missing, port: 80}]
`); err != nil {
		t.Fatal(err)
	}
	pt := networkingv1.PathTypePrefix
	mustCreate(t, client.NetworkingV1().Ingresses(ns).Create, &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "ing"},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: "ing.example.com", IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pt,
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "svc-b", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}},
	})

	st := source.NewStore()
	kctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := (&source.Kube{Client: client, Dynamic: dyn, Log: testLogger(t)}).Run(kctx, st); err != nil {
		t.Fatal(err)
	}
	x := startCP(t, st, cpOptions{status: &status.Writer{Client: client, Dynamic: dyn, Log: testLogger(t), Address: "203.0.113.7"}})
	startProxy(t, x)
	base := fmt.Sprintf("http://127.0.0.1:%d", x.httpPort)

	// Status, as Contour writes it.
	testutil.Eventually(t, 15*time.Second, func() bool {
		return proxyStatus(t, dyn, ns, "root").CurrentStatus == "valid" && proxyStatus(t, dyn, ns, "orphan").CurrentStatus == "orphaned" &&
			proxyStatus(t, dyn, ns, "child").CurrentStatus != "" && proxyStatus(t, dyn, ns, "broken").CurrentStatus != ""
	}, "statuses never written")
	if s := proxyStatus(t, dyn, ns, "root"); len(s.LoadBalancer.Ingress) != 1 || s.LoadBalancer.Ingress[0].IP != "203.0.113.7" || s.Description != "Valid HTTPProxy" {
		t.Errorf("root status = %+v", s)
	}
	if s := proxyStatus(t, dyn, ns, "child"); s.CurrentStatus != "valid" {
		t.Errorf("included child status = %+v", s)
	}
	b := proxyStatus(t, dyn, ns, "broken")
	if b.CurrentStatus != "invalid" || !strings.Contains(b.Description, `service "app/missing" not found`) ||
		len(b.Conditions) != 1 || b.Conditions[0].Status != metav1.ConditionFalse || len(b.Conditions[0].Errors) != 1 || b.Conditions[0].Errors[0].Reason != "ServiceUnresolvedReference" {
		t.Errorf("broken status = %+v", b)
	}
	// Every Contour example got a status; invalid ones say why, with a reason.
	testutil.Eventually(t, 15*time.Second, func() bool {
		list, err := dyn.Resource(contourv1.HTTPProxyGVR).Namespace("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		for i := range list.Items {
			if obj, _ := source.FromUnstructured(&list.Items[i]); obj.(*contourv1.HTTPProxy).Status.CurrentStatus == "" {
				return false
			}
		}
		return true
	}, "some HTTPProxies never got a status")
	list, _ := dyn.Resource(contourv1.HTTPProxyGVR).Namespace("").List(ctx, metav1.ListOptions{})
	counts := map[string]int{}
	for i := range list.Items {
		obj, _ := source.FromUnstructured(&list.Items[i])
		p := obj.(*contourv1.HTTPProxy)
		counts[p.Status.CurrentStatus]++
		if p.Status.CurrentStatus == "invalid" && (len(p.Status.Conditions) == 0 || len(p.Status.Conditions[0].Errors) == 0 || p.Status.Conditions[0].Errors[0].Reason == "") {
			t.Errorf("%s/%s invalid without a reason: %+v", p.Namespace, p.Name, p.Status)
		}
		t.Logf("%s/%s: %s — %s", p.Namespace, p.Name, p.Status.CurrentStatus, p.Status.Description)
	}
	t.Logf("HTTPProxy statuses: %v", counts)

	testutil.Eventually(t, 10*time.Second, func() bool {
		ing, _ := client.NetworkingV1().Ingresses(ns).Get(ctx, "ing", metav1.GetOptions{})
		return len(ing.Status.LoadBalancer.Ingress) == 1 && ing.Status.LoadBalancer.Ingress[0].IP == "203.0.113.7"
	}, "Ingress status never written")

	// Traffic: root → a, include /child → b, Ingress → b.
	for _, c := range []struct{ host, path, want string }{
		{"app.example.com", "/", "upstream=a"}, {"app.example.com", "/child/x", "upstream=b"}, {"ing.example.com", "/", "upstream=b"},
	} {
		testutil.Eventually(t, 10*time.Second, func() bool {
			code, body, _ := get(t, base+c.path, c.host)
			return code == 200 && strings.Contains(body, c.want)
		}, "%s%s never reached %s", c.host, c.path, c.want)
	}
	// Endpoint change: svc-a now points at b.
	sl, err := client.DiscoveryV1().EndpointSlices(ns).Get(ctx, "svc-a-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[0].Addresses = []string{backendB}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, body, _ := get(t, base+"/", "app.example.com")
		return strings.Contains(body, "upstream=b")
	}, "EndpointSlice change never followed")
	// Fix the broken proxy by creating its Service: status turns valid.
	mustCreate(t, client.CoreV1().Services(ns).Create, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "missing"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}}},
	})
	testutil.Eventually(t, 10*time.Second, func() bool { return proxyStatus(t, dyn, ns, "broken").CurrentStatus == "valid" }, "status never turned valid")
}

// TestLeaderElection runs two controller replicas on one Lease: both serve
// xDS, only the leader writes status (each would write its own address),
// and when the leader stops the other takes over.
func TestLeaderElection(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	_, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx := context.Background()
	for _, ns := range []string{"legate-system", "app"} {
		mustCreate(t, client.CoreV1().Namespaces().Create, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	if err := applyYAML(t, dyn, "app", "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\nmetadata: {name: p}\nspec: {virtualhost: {fqdn: p.example.com}, routes: [{conditions: [{prefix: /}], directResponsePolicy: {statusCode: 200}}]}\n"); err != nil {
		t.Fatal(err)
	}
	type replica struct {
		cancel context.CancelFunc
		le     *leaderelection.LeaderElector
		x      *cp
	}
	start := func(id, addr string) *replica {
		rctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel) // before the API server stops: its watches end first
		lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "legate-system", "legate-controller", client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{Lock: lock, LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
			ReleaseOnCancel: true, Callbacks: leaderelection.LeaderCallbacks{OnStartedLeading: func(context.Context) {}, OnStoppedLeading: func() {}}})
		if err != nil {
			t.Fatal(err)
		}
		st := source.NewStore()
		if err := (&source.Kube{Client: client, Dynamic: dyn, Log: testLogger(t)}).Run(rctx, st); err != nil {
			t.Fatal(err)
		}
		r := &replica{cancel: cancel, le: le}
		r.x = startCP(t, st, cpOptions{status: &status.Writer{Client: client, Dynamic: dyn, Log: testLogger(t), Address: addr}, isLeader: le.IsLeader})
		go le.Run(rctx)
		// A new leader writes at once (as legate controller does).
		go func() {
			for rctx.Err() == nil && !le.IsLeader() {
				time.Sleep(100 * time.Millisecond)
			}
			st.Touch()
		}()
		return r
	}
	a := start("a", "203.0.113.1")
	testutil.Eventually(t, 10*time.Second, a.le.IsLeader, "replica a never became leader")
	b := start("b", "203.0.113.2")
	lbIP := func() string {
		s := proxyStatus(t, dyn, "app", "p")
		if len(s.LoadBalancer.Ingress) == 0 {
			return ""
		}
		return s.LoadBalancer.Ingress[0].IP
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return lbIP() == "203.0.113.1" }, "the leader never wrote status")
	b.x.store.Touch() // the follower rebuilds; it must not write
	time.Sleep(time.Second)
	if ip := lbIP(); ip != "203.0.113.1" || b.le.IsLeader() {
		t.Fatalf("status written by the follower (%s) or two leaders", ip)
	}
	if !b.x.c.Ready() {
		t.Error("the follower does not serve xDS")
	}
	a.cancel() // the leader stops and releases the Lease
	testutil.Eventually(t, 15*time.Second, func() bool { return b.le.IsLeader() && lbIP() == "203.0.113.2" }, "the follower never took over")
}
