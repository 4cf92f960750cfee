// legate sidecar (and the controller's workload CA).

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// --bootstrap-only writes a bootstrap that `legate validate` accepts, and
// bad identities are refused with the flag to fix.
func TestSidecarBootstrapOnly(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	// The certificate files the agent would write (validate reads them).
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(state, 0o700)
	os.WriteFile(filepath.Join(state, "root-cert.pem"), set.CA, 0o644)
	os.WriteFile(filepath.Join(state, "cert-chain.pem"), set.ProxyCert, 0o644)
	os.WriteFile(filepath.Join(state, "key.pem"), set.ProxyKey, 0o600)
	out := filepath.Join(dir, "bootstrap.yaml")
	ok := []string{"sidecar", "--pod-name", "web-1", "--pod-namespace", "shop", "--instance-ip", "10.1.2.3", "--service-account", "web",
		"--state-dir", state, "--bootstrap-only", out}
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		code   int
		stderr string
	}{
		{"flags", ok, nil, 0, ""},
		{"env", []string{"sidecar", "--state-dir", state, "--bootstrap-only", out}, []string{"POD_NAME=web-1", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.2.3", "SERVICE_ACCOUNT=web"}, 0, ""},
		{"no service account", []string{"sidecar", "--pod-name", "a", "--pod-namespace", "b", "--instance-ip", "10.0.0.1", "--bootstrap-only", out}, nil, 1, "--service-account is required (or set $SERVICE_ACCOUNT"},
		{"bad IP", []string{"sidecar", "--pod-name", "a", "--pod-namespace", "b", "--instance-ip", "x", "--service-account", "c", "--bootstrap-only", out}, nil, 1, `--instance-ip "x"`},
		{"admin not on loopback", append(append([]string{}, ok...), "--admin-address", "0.0.0.0:15000"), nil, 1, "must be a loopback IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(legateBin, tc.args...)
			cmd.Env = append(cleanEnv(), tc.env...)
			se, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tc.code || !strings.Contains(string(se), tc.stderr) {
				t.Fatalf("exit %d (want %d): %s", code, tc.code, se)
			}
			if tc.code != 0 {
				return
			}
			v, err := exec.Command(legateBin, "validate", out).CombinedOutput()
			if err != nil {
				b, _ := os.ReadFile(out)
				t.Fatalf("legate validate: %v\n%s\n%s", err, v, b)
			}
			b, _ := os.ReadFile(out)
			if !strings.Contains(string(b), "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local") {
				t.Errorf("node id missing:\n%s", b)
			}
		})
	}
}

// cleanEnv is the environment without the downward-API variables.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		switch strings.SplitN(e, "=", 2)[0] {
		case "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT":
			continue
		}
		env = append(env, e)
	}
	return env
}

// TestSidecarWithController runs `legate controller` against a real
// kube-apiserver and `legate sidecar` against it: the controller
// publishes its root certificate into the meshed namespace, the sidecar
// gets a workload certificate with its ServiceAccount token, connects
// ADS over mTLS with it, and reports ready on the readiness port.
func TestSidecarWithController(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	env, cfg := kubetest.StartAPIServer(t)
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	user, err := env.AddUser(envtest.User{Name: "legate-controller", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop",
		Labels: map[string]string{mesh.InjectLabel: "enabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ServiceAccounts("shop").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	xds, httpPort, caPort := freePort(t), freePort(t), freePort(t)
	ctlLogs := startLogged(t, legateBin, "controller", "--kubeconfig", kubeconfig, "--state-dir", filepath.Join(dir, "controller"),
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", xds), "--http-address", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--ca-address", fmt.Sprintf("127.0.0.1:%d", caPort))

	// What the injector mounts: the root certificate ConfigMap and a
	// projected token with the CA's audience.
	var root string
	testutil.Eventually(t, 60*time.Second, func() bool {
		cm, err := client.CoreV1().ConfigMaps("shop").Get(ctx, mesh.RootCertConfigMap, metav1.GetOptions{})
		if err == nil {
			root = cm.Data[mesh.RootCertKey]
		}
		return root != ""
	}, "the controller did not publish %s into the meshed namespace; logs:\n%s", mesh.RootCertConfigMap, ctlLogs)
	exp := int64(3600)
	tr, err := client.CoreV1().ServiceAccounts("shop").CreateToken(ctx, "web", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{mesh.TokenAudience}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rootFile, tokenFile := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "token")
	os.WriteFile(rootFile, []byte(root), 0o644)
	os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600)

	state := filepath.Join(dir, "sidecar")
	scLogs := startLogged(t, legateBin, "sidecar", "--pod-name", "web-1", "--pod-namespace", "shop", "--instance-ip", "127.0.0.1",
		"--service-account", "web", "--xds-address", fmt.Sprintf("127.0.0.1:%d", xds), "--ca-address", fmt.Sprintf("127.0.0.1:%d", caPort),
		"--root-cert", rootFile, "--token", tokenFile, "--sds-socket", filepath.Join(dir, "sds", "socket"), "--state-dir", state)
	testutil.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", mesh.ReadinessPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "the sidecar never became ready; sidecar logs:\n%s\ncontroller logs:\n%s", scLogs, ctlLogs)

	// ADS is up over mTLS with the workload certificate (readiness alone
	// would also pass once the initial fetch times out).
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=control_plane.connected_state", mesh.AdminPort))
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(b), "control_plane.connected_state: 1")
	}, "the sidecar's ADS stream is not connected; sidecar logs:\n%s\ncontroller logs:\n%s", scLogs, ctlLogs)

	// Its certificate names its identity and chains to the root.
	pair, err := tls.LoadX509KeyPair(filepath.Join(state, "cert-chain.pem"), filepath.Join(state, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("workload certificate names %v", leaf.URIs)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(root))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	// Prometheus stats through the stats port; the CA counted the issue.
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats/prometheus", mesh.StatsPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "envoy_") {
		t.Errorf("/stats/prometheus: %d\n%.300s", resp.StatusCode, body)
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mesh.AgentPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `legate_sidecar_certificate_requests_total{result="success"} 1`) {
		t.Errorf("agent metrics:\n%s", grepLines(string(body), "legate_"))
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `legate_ca_requests_total{result="success"}`) {
		t.Errorf("controller metrics lack legate_ca_requests_total:\n%s", grepLines(string(body), "legate_ca"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// startLogged starts a process, stopped (by its pid) when the test ends.
func startLogged(t *testing.T, bin string, args ...string) *testutil.LogBuffer {
	t.Helper()
	logs := &testutil.LogBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s %s:\n%s", filepath.Base(bin), args[0], logs.String())
		}
	})
	return logs
}
