package meshe2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
)

// The mesh's namespace, its pods and Services.
const (
	meshNS   = "shop"
	podAIP   = "192.0.2.10"
	podBIP   = "192.0.2.20"
	svcAIP   = "198.51.100.10"
	svcBIP   = "198.51.100.20"
	svcCIP   = "198.51.100.30"
	appPort  = 8080
	svcPort  = 80
	xdsPort  = 18001
	caPort   = mesh.CAPort
	outsider = 18080 // a server on the node, outside the mesh
)

// TestTwoPodMesh meshes two pods: app A calls Service B by its ClusterIP
// and by its host name; the request crosses A's sidecar (outbound) and
// B's (inbound) over mTLS, both access logs show it, and B's application
// sees A's SPIFFE identity. A destination outside the mesh is passed
// through (ALLOW_ANY) and, after the controller restarts in
// REGISTRY_ONLY and STRICT mode, refused, as is plaintext to B. An
// endpoint change is followed.
func TestTwoPodMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("starts kube-apiserver, network namespaces and processes")
	}
	if !testutil.InNetns(t) {
		return
	}
	if legateBin == "" {
		t.Fatal("LEGATE_MESH_BIN not set: TestMain builds legate")
	}
	env := startMesh(t)
	a, b, kc, ctx, sidecars := env.a, env.b, env.kc, env.ctx, env.sidecars

	// A calls B by ClusterIP and by host name, through both sidecars.
	wantFromA := "xfcc=" // checked below for A's identity
	idA := mesh.SPIFFEID("", meshNS, "a")
	for _, url := range []string{
		fmt.Sprintf("http://%s/", svcBIP),
		"http://b.shop.svc.cluster.local/",
		"http://b.shop/",
	} {
		eventually(t, 20*time.Second, "A → "+url, func() error {
			out, err := a.curl("--resolve", "b.shop.svc.cluster.local:80:"+svcBIP, "--resolve", "b.shop:80:"+svcBIP, url)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			if !strings.Contains(out, "app=b") || !strings.Contains(out, wantFromA) || !strings.Contains(out, "URI="+idA) {
				return fmt.Errorf("answer %q: want app=b and A's identity URI=%s", out, idA)
			}
			t.Logf("A → %s: %s", url, strings.TrimSpace(out))
			return nil
		})
	}
	// Both sidecars logged it.
	eventually(t, 5*time.Second, "access logs", func() error {
		for _, n := range []string{"a", "b"} {
			if !strings.Contains(sidecars[n].out.String(), `"GET / HTTP/1.1" 200`) {
				return fmt.Errorf("%s's sidecar logged no request", n)
			}
			t.Logf("%s's access log: %s", n, grep(sidecars[n].out.String(), `"GET / HTTP/1.1" 200`))
		}
		return nil
	})
	// The hop between the sidecars was mTLS: B's inbound TLS chain counted it.
	eventually(t, 5*time.Second, "B's inbound handshake", func() error {
		out, err := b.curl(fmt.Sprintf("http://127.0.0.1:%d/stats", mesh.AdminPort))
		if err != nil {
			return err
		}
		if !hasNonZeroStat(out, "ssl.handshake") {
			return fmt.Errorf("no TLS handshake on B's sidecar:\n%s", grep(out, "ssl"))
		}
		return nil
	})

	// A Service half in the mesh (a rollout): B's pod over mTLS, a server
	// on the node in plaintext, both through one cluster
	// (transport_socket_matches).
	must(t, create(ctx, kc, service("c", svcCIP)))
	must(t, create(ctx, kc, endpointSlice("c", b)))
	outside := endpointSlice("c", b)
	outside.Name = "c-outside"
	outside.Endpoints[0].Addresses = []string{nodeIP}
	outside.Endpoints[0].TargetRef = nil
	outsidePort := int32(outsider)
	outside.Ports[0].Port = &outsidePort
	must(t, create(ctx, kc, outside))
	eventually(t, 20*time.Second, "A → the half-meshed Service C reaches both endpoints", func() error {
		seen := map[string]bool{}
		for range 10 {
			out, err := a.curl(fmt.Sprintf("http://%s/", svcCIP))
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			switch {
			case strings.Contains(out, "app=b") && strings.Contains(out, "URI="+idA):
				seen["b over mTLS"] = true
			case strings.Contains(out, "outside"):
				seen["outside in plaintext"] = true
			default:
				return fmt.Errorf("answer %q", out)
			}
		}
		if len(seen) != 2 {
			return fmt.Errorf("reached only %v", seen)
		}
		return nil
	})

	// Outside the mesh: passed through (ALLOW_ANY, the default).
	if out, err := a.curl(fmt.Sprintf("http://%s:%d/", nodeIP, outsider)); err != nil || !strings.Contains(out, "outside") {
		t.Fatalf("ALLOW_ANY passthrough: %v %q", err, out)
	}
	// Plaintext from outside the mesh to B's pod is accepted (PERMISSIVE).
	if err := get200(fmt.Sprintf("http://%s:%d/", podBIP, appPort)); err != nil {
		t.Fatalf("PERMISSIVE plaintext to B: %v", err)
	}

	// An endpoint change is followed: B's endpoints gone → 503; back → 200.
	must(t, kc.DiscoveryV1().EndpointSlices(meshNS).Delete(ctx, "b", metav1.DeleteOptions{}))
	eventually(t, 20*time.Second, "B without endpoints", func() error {
		out, _ := a.curl("-o", "/dev/null", "-w", "%{http_code}", fmt.Sprintf("http://%s/", svcBIP))
		if out != "503" {
			return fmt.Errorf("status %q, want 503", out)
		}
		return nil
	})
	must(t, create(ctx, kc, endpointSlice("b", b)))
	eventually(t, 20*time.Second, "B back", func() error {
		out, err := a.curl(fmt.Sprintf("http://%s/", svcBIP))
		if err != nil || !strings.Contains(out, "app=b") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})

	// REGISTRY_ONLY and STRICT: the controller restarts with the same CA;
	// the sidecars reconnect and follow.
	env.ctl.stop()
	env.startController("--mesh-outbound-traffic-policy", "REGISTRY_ONLY", "--mesh-mtls", "STRICT")
	eventually(t, 30*time.Second, "REGISTRY_ONLY refuses outside destinations", func() error {
		if out, err := a.curl(fmt.Sprintf("http://%s:%d/", nodeIP, outsider)); err == nil && strings.Contains(out, "outside") {
			return fmt.Errorf("still passed through")
		}
		return nil
	})
	eventually(t, 30*time.Second, "STRICT refuses plaintext to B", func() error {
		if err := get200(fmt.Sprintf("http://%s:%d/", podBIP, appPort)); err == nil {
			return fmt.Errorf("plaintext still accepted")
		}
		return nil
	})
	// Mesh traffic still flows.
	if out, err := a.curl(fmt.Sprintf("http://%s/", svcBIP)); err != nil || !strings.Contains(out, "URI="+idA) {
		t.Fatalf("A → B in STRICT mode: %v %q", err, out)
	}
}

// openDir is a temporary folder the sidecars (UID 1337) can use: t.TempDir's
// parent is private to root.
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "legate-mesh")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func create(ctx context.Context, kc kubernetes.Interface, obj any) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = kc.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = kc.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Service:
		_, err = kc.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *discoveryv1.EndpointSlice:
		_, err = kc.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		err = fmt.Errorf("create %T: not handled", obj)
	}
	return err
}

// createPod writes a meshed pod (as the injector leaves it) with its IP
// in status: there is no kubelet here.
func createPod(ctx context.Context, kc kubernetes.Interface, p *pod) error {
	po := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: meshNS,
			Labels:      map[string]string{"app": p.name, "security.istio.io/tlsMode": "istio"},
			Annotations: map[string]string{mesh.StatusAnnotation: `{"containers":["legate-proxy"],"initContainers":["legate-init"]}`}},
		Spec: corev1.PodSpec{ServiceAccountName: p.name, Containers: []corev1.Container{
			{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}}},
			{Name: mesh.ProxyContainer, Image: "legate"},
		}},
	}
	out, err := kc.CoreV1().Pods(meshNS).Create(ctx, po, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	out.Status.Phase = corev1.PodRunning
	out.Status.PodIP = p.ip
	out.Status.PodIPs = []corev1.PodIP{{IP: p.ip}}
	_, err = kc.CoreV1().Pods(meshNS).UpdateStatus(ctx, out, metav1.UpdateOptions{})
	return err
}

func service(name, clusterIP string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshNS},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: svcPort, TargetPort: intstr.FromInt32(appPort), Protocol: corev1.ProtocolTCP}}},
	}
}

func endpointSlice(svc string, p *pod) *discoveryv1.EndpointSlice {
	port, name, proto := int32(appPort), "http", corev1.ProtocolTCP
	ready := true
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc, Namespace: meshNS, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{p.ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: meshNS, Name: p.name}}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

func get200(url string) error {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", url, resp.StatusCode)
	}
	return nil
}

// hasNonZeroStat reports whether a /stats line containing name has a
// value other than 0.
func hasNonZeroStat(stats, name string) bool {
	for _, l := range strings.Split(stats, "\n") {
		if strings.Contains(l, name) && !strings.HasSuffix(l, ": 0") {
			return true
		}
	}
	return false
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// meshEnv is a running two-pod mesh.
type meshEnv struct {
	ctx      context.Context
	kc       kubernetes.Interface
	a, b     *pod
	sidecars map[string]*proc
	apps     map[string]*proc
	ctl      *proc
	// startController (re)starts the controller with extra flags.
	startController func(extra ...string) *proc
}

// startMesh brings up kube-apiserver, the controller and two meshed pods
// (A and B, each with its Service), and waits for both sidecars to be
// ready. before, when given, runs once the applications are up and
// before iptables and the sidecars: the pods as they are without a mesh.
func startMesh(t *testing.T, before ...func(*meshEnv)) *meshEnv {
	t.Helper()
	cfg, kubeconfig := startAPIServer(t)
	kc := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()

	a := newPod(t, "a", meshNS, podAIP)
	b := newPod(t, "b", meshNS, podBIP)

	// The cluster: a labelled namespace, two service accounts, two pods
	// in the mesh with their addresses, two Services and their endpoints.
	must(t, create(ctx, kc, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: meshNS, Labels: map[string]string{mesh.InjectLabel: "enabled"}}}))
	for _, p := range []*pod{a, b} {
		must(t, create(ctx, kc, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: meshNS}}))
		must(t, createPod(ctx, kc, p))
		must(t, create(ctx, kc, service(p.name, map[string]string{"a": svcAIP, "b": svcBIP}[p.name])))
		must(t, create(ctx, kc, endpointSlice(p.name, p)))
	}

	// The controller, on the node's bridge address.
	state := t.TempDir()
	httpPort := testutil.FreePort(t)
	startController := func(extra ...string) *proc {
		args := append([]string{"controller", "--kubeconfig", kubeconfig,
			"--xds-address", fmt.Sprintf("%s:%d", nodeIP, xdsPort),
			"--ca-address", fmt.Sprintf("%s:%d", nodeIP, caPort),
			"--http-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
			"--state-dir", state}, extra...)
		pr := startProc(t, "controller", nil, legateBin, args...)
		eventually(t, 30*time.Second, "controller ready", func() error {
			return get200(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		})
		return pr
	}
	ctl := startController()
	env := &meshEnv{ctx: ctx, kc: kc, a: a, b: b, sidecars: map[string]*proc{}, apps: map[string]*proc{}, ctl: ctl, startController: startController}
	// The sidecars get the CA as a pod gets the ConfigMap the controller
	// writes: a copy they can read.
	var root string
	eventually(t, 10*time.Second, "controller CA written", func() error {
		pem, err := os.ReadFile(filepath.Join(state, "xds-certs", "ca.crt"))
		if err != nil {
			return err
		}
		root = filepath.Join(openDir(t), mesh.RootCertKey)
		return os.WriteFile(root, pem, 0o644)
	})

	// A server outside the mesh, on the node.
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", nodeIP, outsider))
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "outside") }))
	t.Cleanup(func() { ln.Close() })

	// Each pod: the application; then iptables (the init container) and
	// the sidecar.
	for _, p := range []*pod{a, b} {
		env.apps[p.name] = p.start(t, 0, []string{"LEGATE_MESH_APP=0.0.0.0:" + fmt.Sprint(appPort), "LEGATE_MESH_APP_NAME=" + p.name}, os.Args[0])
	}
	for _, p := range []*pod{a, b} {
		eventually(t, 10*time.Second, p.name+"'s application up", func() error {
			return get200(fmt.Sprintf("http://%s:%d/", p.ip, appPort))
		})
	}
	for _, f := range before {
		f(env)
	}
	for _, p := range []*pod{a, b} {
		p.exec(t, legateBin, "iptables")
		dir := openDir(t)
		token := filepath.Join(dir, "token")
		tr, err := kc.CoreV1().ServiceAccounts(meshNS).CreateToken(ctx, p.name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{mesh.TokenAudience}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token for %s: %v", p.name, err)
		}
		if err := os.WriteFile(token, []byte(tr.Status.Token), 0o644); err != nil {
			t.Fatal(err)
		}
		vars := []string{"POD_NAME=" + p.name, "POD_NAMESPACE=" + meshNS, "INSTANCE_IP=" + p.ip, "SERVICE_ACCOUNT=" + p.name}
		env.sidecars[p.name] = p.start(t, mesh.ProxyUID, vars, legateBin, "sidecar",
			"--xds-address", fmt.Sprintf("%s:%d", nodeIP, xdsPort),
			"--ca-address", fmt.Sprintf("%s:%d", nodeIP, caPort),
			"--root-cert", root, "--token", token,
			"--sds-socket", filepath.Join(dir, "sds.sock"),
			"--state-dir", filepath.Join(dir, "state"))
	}
	for _, p := range []*pod{a, b} {
		eventually(t, 30*time.Second, p.name+"'s sidecar ready", func() error {
			return get200(fmt.Sprintf("http://%s:%d/healthz/ready", p.ip, mesh.ReadinessPort))
		})
	}

	return env
}
