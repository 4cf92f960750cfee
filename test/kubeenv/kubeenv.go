// Package kubeenv runs a small but real Kubernetes cluster for tests, in
// the test's own network namespace: etcd and kube-apiserver (through
// controller-runtime's envtest, with ServiceAccount admission and
// service-account signing keys), kube-controller-manager built from the
// same Kubernetes release (Deployments, ReplicaSets, EndpointSlices,
// namespace deletion, garbage collection, ServiceAccounts and their
// tokens), and a node agent of our own (package nodeagent) that schedules
// Pods onto its one Node and runs them as local processes, each Pod in
// its own network namespace with a TEST-NET-3 address that the test's
// network namespace routes to. Container images map to local executables:
// by default the Gateway API conformance suite's echo-basic and a CoreDNS
// (scripts/deps.d/conformance.sh builds both).
//
// A test using it runs in a private network namespace:
//
//	func TestX(t *testing.T) {
//		if !kubeenv.InNetns(t) {
//			return
//		}
//		env := kubeenv.Start(t, kubeenv.Options{CRDPaths: []string{kubeenv.GatewayAPICRDs(t, "standard")}})
//		// env.Client, env.Config, env.Kubeconfig ...
//	}
//
// See test/README.md for the parts, the address ranges and timings.
package kubeenv

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
	"github.com/legateproxy/legate/test/kubeenv/nodeagent"
)

// Address ranges and names of the environment (all TEST-NET, inside the
// test's network namespace; TEST-NET-1, 192.0.2.0/24, is left to tests).
const (
	// DefaultPodCIDR is the node's pod range: the node (its bridge in the
	// test's namespace) is 203.0.113.1, pods get the other addresses.
	DefaultPodCIDR = "203.0.113.0/24"
	// DefaultServiceCIDR is the API server's ClusterIP range. Nothing
	// routes ClusterIPs (there is no kube-proxy): clients use endpoints.
	DefaultServiceCIDR = "198.51.100.0/24"
	// DefaultNodeName names the one Node.
	DefaultNodeName = "kubeenv-node"
)

// DefaultControllers are the kube-controller-manager controllers run by
// default: workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets,
// Jobs), EndpointSlices (and Endpoints), namespace deletion, garbage
// collection, ServiceAccounts and their tokens, kube-root-ca.crt, and the
// pod garbage collector. Node lifecycle is left out (one node, which the
// agent keeps alive through its Lease if it is added), so are node IPAM,
// volumes and certificates.
var DefaultControllers = []string{
	"deployment-controller",
	"replicaset-controller",
	"statefulset-controller",
	"daemonset-controller",
	"job-controller",
	"cronjob-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"endpoints-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"clusterrole-aggregation-controller",
	"pod-garbage-collector-controller",
	"disruption-controller",
	"ttl-after-finished-controller",
	"resourcequota-controller",
}

// Options configure Start; the zero value is a cluster without CRDs that
// runs the default images.
type Options struct {
	// CRDPaths are CRD files or folders to install before Start returns
	// (e.g. GatewayAPICRDs(t, "experimental")).
	CRDPaths []string
	// Images maps container images to executables (see nodeagent.Config);
	// nil means DefaultImages(ConformanceAssets(t)).
	Images map[string]nodeagent.Image
	// PodCIDR, ServiceCIDR and NodeName default to DefaultPodCIDR,
	// DefaultServiceCIDR and DefaultNodeName.
	PodCIDR, ServiceCIDR, NodeName string
	// Controllers is kube-controller-manager's --controllers; nil means
	// DefaultControllers.
	Controllers []string
	// APIServerFlags set kube-apiserver flags (name without "--" → value),
	// over envtest's and this package's.
	APIServerFlags map[string]string
	// ControllerManagerArgs are more kube-controller-manager arguments.
	ControllerManagerArgs []string
}

// Env is a running environment; it stops when the test ends.
type Env struct {
	// Config and Kubeconfig (a file) authenticate as a member of
	// system:masters.
	Config     *rest.Config
	Kubeconfig string
	Client     kubernetes.Interface
	// NodeName is the one Node; NodeIP its address (the first of PodCIDR),
	// which the pods reach the test's network namespace at.
	NodeName    string
	NodeIP      string
	PodCIDR     string
	ServiceCIDR string
	// Environment is the envtest environment (etcd and kube-apiserver).
	Environment *envtest.Environment
	// Agent is the node agent.
	Agent *nodeagent.Agent
}

// InNetns runs the calling test in a private network namespace as root
// (testutil.InNetns): it returns true in the re-executed test process,
// where the test goes on, and false in the parent, which returns. Without
// root the test is skipped (it fails where LEGATE_REQUIRE_NETNS=1).
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatal("kubeenv needs root (network links, mount namespaces)")
		}
		t.Skip("kubeenv needs root (network links, mount namespaces)")
	}
	if testing.Short() {
		t.Skip("kubeenv starts a Kubernetes cluster: not in -short")
	}
	return testutil.InNetns(t)
}

// ConformanceAssets returns the folder scripts/deps.d/conformance.sh
// builds into ($CONFORMANCE_ASSETS, or $LEGATE_CACHE/conformance-v1.6.3
// with LEGATE_CACHE defaulting to ~/.cache/legate): echo-basic, coredns,
// base/manifests.yaml (the suite's base manifests) and crds/standard,
// crds/experimental (the Gateway API v1.6.3 CRDs).
func ConformanceAssets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CONFORMANCE_ASSETS")
	if dir == "" {
		cache := os.Getenv("LEGATE_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "legate")
		}
		dir = filepath.Join(cache, "conformance-v1.6.3")
	}
	for _, f := range []string{"echo-basic", "coredns", "base/manifests.yaml", "crds/standard"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("%s not found in %s: run scripts/deps.sh (make deps) to build the Gateway API conformance assets", f, dir)
		}
	}
	return dir
}

// GatewayAPICRDs returns the folder of the Gateway API v1.6.3 CRDs of a
// channel ("standard" or "experimental").
func GatewayAPICRDs(t testing.TB, channel string) string {
	t.Helper()
	if channel != "standard" && channel != "experimental" {
		t.Fatalf("Gateway API CRD channel %q: want standard or experimental", channel)
	}
	return filepath.Join(ConformanceAssets(t), "crds", channel)
}

// DefaultImages maps the images of the Gateway API conformance suite to
// the executables in assets (ConformanceAssets): echo-basic for
// registry.k8s.io/gateway-api/echo-basic and
// gcr.io/k8s-staging-gateway-api/echo-basic, coredns for
// registry.k8s.io/coredns/coredns, any tag.
func DefaultImages(assets string) map[string]nodeagent.Image {
	echo := nodeagent.Image{Path: filepath.Join(assets, "echo-basic"), Entrypoint: []string{"/echo-basic"}}
	dns := nodeagent.Image{Path: filepath.Join(assets, "coredns"), Entrypoint: []string{"/coredns"}}
	return map[string]nodeagent.Image{
		"registry.k8s.io/gateway-api/echo-basic":    echo,
		"gcr.io/k8s-staging-gateway-api/echo-basic": echo,
		"registry.k8s.io/coredns/coredns":           dns,
	}
}

// Start brings the environment up and stops it (every process it started,
// by PID) when the test ends. It must run inside InNetns. It returns once
// the Node is Ready and kube-controller-manager has created the default
// ServiceAccount and kube-root-ca.crt of namespace default.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	began := time.Now()
	if err := nodeagent.CheckHost(); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	if opts.PodCIDR == "" {
		opts.PodCIDR = DefaultPodCIDR
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = DefaultServiceCIDR
	}
	if opts.NodeName == "" {
		opts.NodeName = DefaultNodeName
	}
	if opts.Controllers == nil {
		opts.Controllers = DefaultControllers
	}
	if opts.Images == nil {
		opts.Images = DefaultImages(ConformanceAssets(t))
	}
	podCIDR, err := netip.ParsePrefix(opts.PodCIDR)
	if err != nil {
		t.Fatalf("kubeenv: PodCIDR: %v", err)
	}
	bin := kubetest.KubeAssets(t)
	kcmBin := filepath.Join(bin, "kube-controller-manager")
	if _, err := os.Stat(kcmBin); err != nil {
		t.Fatalf("kube-controller-manager not found in %s: run scripts/deps.sh (make deps) to build the Kubernetes test binaries", bin)
	}
	dir := t.TempDir()

	// etcd and kube-apiserver.
	te := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     opts.CRDPaths,
		ErrorIfCRDPathMissing: true,
	}
	api := te.ControlPlane.GetAPIServer()
	args := api.Configure()
	// No default route inside the test's network namespace: advertise loopback.
	args.Set("advertise-address", "127.0.0.1")
	args.Set("service-cluster-ip-range", opts.ServiceCIDR)
	// pods/log goes to the agent's kubelet API at the Node's InternalIP
	// (its Hostname address does not resolve).
	args.Set("kubelet-preferred-address-types", "InternalIP")
	// envtest turns ServiceAccount admission off because nothing creates
	// the default ServiceAccounts; kube-controller-manager does here.
	args.Disable("disable-admission-plugins")
	for k, v := range opts.APIServerFlags {
		args.Set(k, v)
	}
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("kubeenv: start etcd and kube-apiserver: %v", err)
	}
	t.Cleanup(func() { te.Stop() })
	user, err := te.AddUser(envtest.User{Name: "kubeenv-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		t.Fatalf("kubeenv: admin user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatalf("kubeenv: admin kubeconfig: %v", err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, cfg.CAData, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = user.Config()
	cfg.QPS, cfg.Burst = 100, 200
	client := kubernetes.NewForConfigOrDie(cfg)

	// kube-controller-manager.
	kcmLog, err := os.Create(filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		t.Fatal(err)
	}
	kcmArgs := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false",
		"--controllers=" + strings.Join(opts.Controllers, ","),
		"--service-account-private-key-file=" + filepath.Join(api.CertDir, "sa-signer.key"),
		"--root-ca-file=" + caFile,
		"--use-service-account-credentials=false",
		"--secure-port=0",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--cluster-name=kubeenv",
	}, opts.ControllerManagerArgs...)
	kcm := exec.Command(kcmBin, kcmArgs...)
	kcm.Stdout, kcm.Stderr = kcmLog, kcmLog
	kcm.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := kcm.Start(); err != nil {
		t.Fatalf("kubeenv: start kube-controller-manager: %v", err)
	}
	kcmDone := make(chan struct{})
	go func() { kcm.Wait(); kcmLog.Close(); close(kcmDone) }()
	t.Cleanup(func() {
		kcm.Process.Signal(syscall.SIGTERM)
		select {
		case <-kcmDone:
		case <-time.After(10 * time.Second):
			kcm.Process.Kill()
			<-kcmDone
		}
	})

	// The node agent.
	agentLog := &testutil.LogBuffer{}
	agent, err := nodeagent.New(nodeagent.Config{
		Client:   client,
		NodeName: opts.NodeName,
		PodCIDR:  podCIDR,
		Images:   opts.Images,
		StateDir: filepath.Join(dir, "agent"),
		Logger:   slog.New(slog.NewTextHandler(agentLog, nil)),
	})
	if err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := agent.Start(ctx); err != nil {
		t.Fatalf("kubeenv: %v", err)
	}
	t.Cleanup(agent.Stop)
	env := &Env{
		Config: cfg, Kubeconfig: kubeconfig, Client: client,
		NodeName: opts.NodeName, NodeIP: agent.NodeIP().String(),
		PodCIDR: opts.PodCIDR, ServiceCIDR: opts.ServiceCIDR,
		Environment: te, Agent: agent,
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.dump(t, filepath.Join(dir, "kube-controller-manager.log"), agentLog.String())
		}
	})

	// kube-controller-manager is working once namespace default has its
	// ServiceAccount and CA ConfigMap.
	for {
		_, err1 := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		_, err2 := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err1 == nil && err2 == nil {
			break
		}
		select {
		case <-kcmDone:
			t.Fatalf("kubeenv: kube-controller-manager exited (%v):\n%s", kcm.ProcessState, tail(filepath.Join(dir, "kube-controller-manager.log"), 40))
		case <-ctx.Done():
			t.Fatalf("kubeenv: kube-controller-manager did not create the default ServiceAccount and kube-root-ca.crt in a minute (%v, %v):\n%s", err1, err2, tail(filepath.Join(dir, "kube-controller-manager.log"), 40))
		case <-time.After(100 * time.Millisecond):
		}
		if err1 != nil && !apierrors.IsNotFound(err1) {
			t.Logf("kubeenv: %v", err1)
		}
	}
	t.Logf("kubeenv: etcd, kube-apiserver, kube-controller-manager and the node agent (%s at %s) up in %v", env.NodeName, env.NodeIP, time.Since(began).Round(time.Millisecond))
	return env
}

// ContainerLog returns the output of a container (every run of it).
func (e *Env) ContainerLog(namespace, pod, container string) string {
	s, err := e.Agent.ContainerLog(namespace, pod, container)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return s
}

// dump logs the tails of the environment's logs for a failed test.
func (e *Env) dump(t testing.TB, kcmLog, agentLog string) {
	t.Logf("kubeenv: kube-controller-manager log (tail):\n%s", tail(kcmLog, 30))
	t.Logf("kubeenv: node agent log (tail):\n%s", lastLines(agentLog, 60))
	logs := e.Agent.ContainerLogs()
	names := make([]string, 0, len(logs))
	for n := range logs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t.Logf("kubeenv: container %s (tail):\n%s", n, lastLines(logs[n], 10))
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
