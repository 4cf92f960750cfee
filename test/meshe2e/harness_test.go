// Package meshe2e tests Legate's sidecar mesh end to end: pods as network
// namespaces on a bridge, each with its application, `legate iptables`
// and `legate sidecar`, fed by `legate controller` watching a real
// kube-apiserver.
package meshe2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// Addresses: the "node" (the test's own network namespace) on the
// bridge, and Service ClusterIPs, all TEST-NET.
const (
	nodeIP         = "192.0.2.1"
	serviceIPRange = "198.51.100.0/24"
)

// legateBin is the legate binary TestMain builds for the pods' processes.
var legateBin string

func TestMain(m *testing.M) {
	// The re-executed application helper (see appMain) runs no tests.
	if addr := os.Getenv("LEGATE_MESH_APP"); addr != "" {
		appMain(addr, os.Getenv("LEGATE_MESH_APP_NAME"))
		return
	}
	dir, err := os.MkdirTemp("", "legate-mesh-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if os.Getenv("LEGATE_TEST_NETNS") != "1" && !testingShort() {
			// Built once in the parent; the re-executed child finds it
			// through the environment.
			legateBin = filepath.Join(dir, "legate")
			cmd := exec.Command("go", "build", "-o", legateBin, "./cmd/legate")
			cmd.Dir = repoRoot()
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build legate: %v\n%s", err, out)
				return 1
			}
			os.Setenv("LEGATE_MESH_BIN", legateBin)
			// The pods' proxies run as UID 1337: the binary must be
			// reachable by them.
			os.Chmod(dir, 0o755)
		} else {
			legateBin = os.Getenv("LEGATE_MESH_BIN")
		}
		return m.Run()
	}()
	os.Exit(code)
}

func testingShort() bool {
	for _, a := range os.Args {
		if a == "-test.short" || a == "-test.short=true" {
			return true
		}
	}
	return false
}

func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	return dir
}

// appMain is a pod's application: HTTP on addr answering with its name,
// the Host it was asked for and the x-forwarded-client-cert it got.
func appMain(addr, name string) {
	err := http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app=%s host=%s xfcc=%s\n", name, r.Host, r.Header.Get("X-Forwarded-Client-Cert"))
	}))
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// startAPIServer runs kube-apiserver and etcd with ClusterIPs from
// TEST-NET-2, and returns a kubeconfig file for the controller binary.
func startAPIServer(t *testing.T) (*rest.Config, string) {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: kubetest.KubeAssets(t),
		CRDDirectoryPaths:     []string{filepath.Join(testutil.RepoRoot(t), "deploy", "crds")},
		ErrorIfCRDPathMissing: true,
	}
	api := env.ControlPlane.GetAPIServer()
	api.Configure().Set("advertise-address", "127.0.0.1")
	api.Configure().Set("service-cluster-ip-range", serviceIPRange)
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	user, err := env.AddUser(envtest.User{Name: "legate-controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// pod is a network namespace on the node's bridge with a TEST-NET address.
type pod struct {
	name, ns string // Kubernetes name and namespace
	netns    string // network namespace name
	ip       string
}

var bridgeOnce sync.Once

// run runs a command and fails the test with its output on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// bridge puts the node's end of the pods' links on br0 at nodeIP.
func bridge(t *testing.T) {
	bridgeOnce.Do(func() {
		run(t, "ip", "link", "add", "br0", "type", "bridge")
		run(t, "ip", "addr", "add", nodeIP+"/24", "dev", "br0")
		run(t, "ip", "link", "set", "br0", "up")
	})
}

// newPod creates a network namespace joined to the bridge by a veth pair,
// with lo up, ip on eth0 and a default route through the node.
func newPod(t *testing.T, name, ns, ip string) *pod {
	t.Helper()
	bridge(t)
	p := &pod{name: name, ns: ns, ip: ip, netns: fmt.Sprintf("lgm%d-%s", os.Getpid(), name)}
	run(t, "ip", "netns", "add", p.netns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.netns).Run() })
	host := "v" + name
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.netns)
	run(t, "ip", "link", "set", host, "master", "br0", "up")
	p.exec(t, "ip", "link", "set", "lo", "up")
	p.exec(t, "ip", "addr", "add", ip+"/24", "dev", "eth0")
	p.exec(t, "ip", "link", "set", "eth0", "up")
	p.exec(t, "ip", "route", "add", "default", "via", nodeIP)
	return p
}

// exec runs a command in the pod's network namespace.
func (p *pod) exec(t *testing.T, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", p.netns, name}, args...)...)
}

// proc is a process the test started, with its output kept.
type proc struct {
	cmd *exec.Cmd
	out *testutil.LogBuffer
}

// start runs a long-lived process in the pod's namespace (as uid when
// uid > 0), stopped when the test ends.
func (p *pod) start(t *testing.T, uid int, env []string, name string, args ...string) *proc {
	t.Helper()
	argv := []string{"netns", "exec", p.netns}
	if uid > 0 {
		argv = append(argv, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups")
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	return startProc(t, p.name+" "+filepath.Base(name), env, "ip", argv...)
}

func startProc(t *testing.T, label string, env []string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	buf := &testutil.LogBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	pr := &proc{cmd: cmd, out: buf}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", label, buf.String())
		}
	})
	return pr
}

// stop ends the process and waits for it.
func (pr *proc) stop() {
	pr.cmd.Process.Kill()
	pr.cmd.Wait()
}

// eventually retries f until it returns nil or the time is up.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// curl runs curl in the pod (as root: intercepted as an application is).
func (p *pod) curl(args ...string) (string, error) {
	argv := append([]string{"netns", "exec", p.netns, "curl", "-sS", "--max-time", "5"}, args...)
	out, err := exec.Command("ip", argv...).CombinedOutput()
	return string(out), err
}
