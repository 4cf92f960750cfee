package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// TestDiscoverFlags checks legate discover's flags as resolve reads them:
// Gimbal's required flags, the backend name from the mounted Secret, and
// Gimbal's port-only metrics flag.
func TestDiscoverFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	os.WriteFile(cfg, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	secretDir := t.TempDir()
	os.WriteFile(filepath.Join(secretDir, "config"), []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	os.WriteFile(filepath.Join(secretDir, backendNameFile), []byte("nodek8s\n"), 0o600)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, c := range []struct {
		name    string
		args    []string
		backend string
		metrics string
		err     string
	}{
		{name: "gimbal's flags", args: []string{"--backend-name=nodek8s", "--discover-kubecfg-file=" + cfg}, backend: "nodek8s", metrics: "127.0.0.1:8090"},
		{name: "no remote kubeconfig", args: []string{"--backend-name=nodek8s"}, err: "--discover-kubecfg-file is required"},
		{name: "no backend name", args: []string{"--discover-kubecfg-file=" + cfg}, err: "--backend-name is required"},
		{name: "backend name from the Secret", args: []string{"--discover-kubecfg-file=" + filepath.Join(secretDir, "config")}, backend: "nodek8s", metrics: "127.0.0.1:8090"},
		{name: "flag wins over the Secret", args: []string{"--backend-name=east", "--discover-kubecfg-file=" + filepath.Join(secretDir, "config")}, backend: "east", metrics: "127.0.0.1:8090"},
		{name: "bad backend name", args: []string{"--backend-name=Node_K8s", "--discover-kubecfg-file=" + cfg}, err: "not a DNS label"},
		{name: "gimbal's metrics port", args: []string{"--backend-name=b", "--discover-kubecfg-file=" + cfg, "--prometheus-listen-address=8080"}, backend: "b", metrics: ":8080"},
		{name: "metrics address", args: []string{"--backend-name=b", "--discover-kubecfg-file=" + cfg, "--metrics-address=0.0.0.0:9100"}, backend: "b", metrics: "0.0.0.0:9100"},
		{name: "bad metrics address", args: []string{"--backend-name=b", "--discover-kubecfg-file=" + cfg, "--metrics-address=9100"}, err: "--metrics-address"},
		{name: "no workers", args: []string{"--backend-name=b", "--discover-kubecfg-file=" + cfg, "--num-threads=0"}, err: "--num-threads"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs, f := newDiscoverFlags()
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			err := f.resolve(log)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.backend != c.backend || f.metricsAddress != c.metrics {
				t.Errorf("backend %q metrics %q, want %q %q", f.backend, f.metricsAddress, c.backend, c.metrics)
			}
		})
	}
	// The binary refuses a bad backend name before connecting anywhere.
	out, err := exec.Command(legateBin, "discover", "--backend-name=-x", "--discover-kubecfg-file="+cfg).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "backend name") {
		t.Errorf("legate discover with a bad backend name: %v\n%s", err, out)
	}
}

// TestDiscoverManifestArgs parses the arguments deploy/discover gives
// legate discover with the real flag set (the Secret's backend name
// substituted as the kubelet does).
func TestDiscoverManifestArgs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "deploy", "discover", "discover.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var dep appsv1.Deployment
		if err := d.Decode(&dep); err != nil {
			break
		}
		if dep.Kind != "Deployment" {
			continue
		}
		c := dep.Spec.Template.Spec.Containers[0]
		if len(c.Args) == 0 || c.Args[0] != "discover" {
			t.Fatalf("args %q", c.Args)
		}
		found = true
		args := strings.Join(c.Args[1:], "\x00")
		args = strings.ReplaceAll(args, "$(BACKEND_NAME)", "nodek8s")
		fs, f := newDiscoverFlags()
		if err := fs.Parse(strings.Split(args, "\x00")); err != nil {
			t.Fatalf("args %q: %v", c.Args, err)
		}
		if f.remoteKubeconfig != "/etc/remote-discover-kubecfg/config" || f.backend != "nodek8s" || f.metricsAddress != "0.0.0.0:8090" {
			t.Errorf("flags from the manifest: %+v", f)
		}
		if len(c.Env) != 1 || c.Env[0].ValueFrom.SecretKeyRef.Name != "remote-discover-kubecfg" || c.Env[0].ValueFrom.SecretKeyRef.Key != backendNameFile {
			t.Errorf("BACKEND_NAME does not come from the Secret's backend-name: %+v", c.Env)
		}
	}
	if !found {
		t.Error("no Deployment in deploy/discover/discover.yaml")
	}
}

// TestDiscoverCommand runs the legate binary's discover between two real
// API servers, as the Deployment does: the backend name from the file
// beside the remote kubeconfig (the Secret mounted whole), the remote
// Service mirrored, /readyz and Gimbal's metrics served, and a clean
// exit on SIGTERM.
func TestDiscoverCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	renv, rcfg := kubetest.StartAPIServer(t)
	lenv, lcfg := kubetest.StartAPIServer(t)
	secret, dir := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(secret, "config"), renv.KubeConfig, 0o600)
	os.WriteFile(filepath.Join(secret, backendNameFile), []byte("nodek8s"), 0o600)
	localKC := filepath.Join(dir, "kubeconfig")
	os.WriteFile(localKC, lenv.KubeConfig, 0o600)
	remote, local := kubernetes.NewForConfigOrDie(rcfg), kubernetes.NewForConfigOrDie(lcfg)
	ctx := context.Background()
	for _, c := range []kubernetes.Interface{remote, local} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := remote.CoreV1().Services("team1").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nginx"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logs := &testutil.LogBuffer{}
	cmd := exec.Command(legateBin, "discover", "--discover-kubecfg-file", filepath.Join(secret, "config"), "--kubeconfig", localKC,
		"--metrics-address", metrics)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		if t.Failed() {
			t.Logf("legate discover:\n%s", logs.String())
		}
	})
	testutil.Eventually(t, 30*time.Second, func() bool {
		s, err := local.CoreV1().Services("team1").Get(ctx, "nodek8s-nginx", metav1.GetOptions{})
		return err == nil && s.Labels["gimbal.projectcontour.io/backend"] == "nodek8s"
	}, "legate discover never mirrored team1/nginx")
	if code, _ := httpGet(t, "http://"+metrics+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, body := httpGet(t, "http://"+metrics+"/metrics")
		return strings.Contains(body, `gimbal_discoverer_replicated_services_total{backendname="nodek8s",backendtype="kubernetes",namespace="team1"} 1`) &&
			strings.Contains(body, `gimbal_discoverer_info{backendname="nodek8s",backendtype="kubernetes",version="`)
	}, "the metrics never counted the mirrored Service")
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("legate discover exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Error("legate discover did not exit after SIGTERM")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := testutil.Client().Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
