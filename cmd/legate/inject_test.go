package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/inject"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

const injectInput = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {traffic.sidecar.istio.io/excludeOutboundIPRanges: "10.96.0.0/12", traffic.sidecar.istio.io/excludeOutboundPorts: "5432"}
    spec: {containers: [{name: app, image: nginx}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
`

// TestInjectCommand: `legate inject -f IN -o OUT` writes what the
// package writes, and - reads stdin.
func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.yaml"), filepath.Join(dir, "out.yaml")
	os.WriteFile(in, []byte(injectInput), 0o644)
	if code := run([]string{"inject", "-f", in, "-o", out, "--sidecar-image", "img:1", "--mesh-xds-address", "x:1", "--mesh-ca-address", "c:2"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got, _ := os.ReadFile(out)
	var want bytes.Buffer
	if err := inject.YAML(strings.NewReader(injectInput), &want, inject.Config{Image: "img:1", XDSAddress: "x:1", CAAddress: "c:2"}, nil); err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() || !strings.Contains(string(got), mesh.ProxyContainer) {
		t.Fatalf("output\n%s\nwant\n%s", got, want.String())
	}
	// -o may be the input.
	if code := run([]string{"inject", "-f", out, "-o", out}); code != 0 {
		t.Fatalf("re-inject: exit %d", code)
	}
	if again, _ := os.ReadFile(out); string(again) != string(got) {
		t.Fatalf("re-injecting changed it:\n%s", again)
	}
	for _, args := range [][]string{{"inject"}, {"inject", "-f", in, "extra"}} {
		if code := run(args); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code := run([]string{"inject", "-f", filepath.Join(dir, "missing.yaml")}); code != 1 {
		t.Errorf("missing file: exit %d", code)
	}
	if code := run([]string{"inject", "-f", in, "--mesh-xds-address", "noport"}); code != 1 {
		t.Errorf("bad address: exit %d", code)
	}
}

// TestInjectedArgsParse: the injected containers' arguments are accepted
// by `legate iptables` and `legate sidecar` as they are.
func TestInjectedArgsParse(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", Annotations: map[string]string{
			mesh.IncludeInboundPorts: "80,443", mesh.ExcludeInboundPorts: "9000", mesh.IncludeOutboundIPRanges: "10.0.0.0/8,fd00::/8",
			mesh.ExcludeOutboundIPRanges: "10.96.0.1/32", mesh.ExcludeOutboundPorts: "5432", mesh.HoldApplication: "true"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	}
	var s injectSidecarFlags
	s.register(flag.NewFlagSet("defaults", flag.ContinueOnError))
	ops, _, err := inject.Patch(pod, s.config())
	if err != nil {
		t.Fatal(err)
	}
	var initArgs, proxyArgs, hook []string
	for _, op := range ops {
		switch v := op.Value.(type) {
		case corev1.Container:
			if v.Name == mesh.ProxyContainer {
				proxyArgs, hook = v.Args, v.Lifecycle.PostStart.Exec.Command
			}
		case []any:
			if c, ok := v[0].(corev1.Container); ok && c.Name == mesh.InitContainer {
				initArgs = c.Args
			}
		}
	}
	if initArgs[0] != "iptables" || proxyArgs[0] != "sidecar" || hook[1] != "wait" {
		t.Fatalf("init %q proxy %q hook %q", initArgs, proxyArgs, hook)
	}
	ifs, iflags := newIptablesFlags(io.Discard)
	if err := ifs.Parse(initArgs[1:]); err != nil {
		t.Fatalf("legate iptables %q: %v", initArgs[1:], err)
	}
	if _, err := iflags.config(); err != nil {
		t.Fatalf("legate iptables %q: %v", initArgs[1:], err)
	}
	sfs, _ := newSidecarFlags()
	sfs.SetOutput(io.Discard)
	if err := sfs.Parse(proxyArgs[1:]); err != nil {
		t.Fatalf("legate sidecar %q: %v", proxyArgs[1:], err)
	}
	wfs, _ := newWaitFlags()
	if _, ok := commands["wait"]; !ok || wfs.Parse(hook[2:]) != nil {
		t.Fatalf("postStart %q", hook)
	}
}

// TestWait: `legate wait` returns once the URL answers 200, and fails
// when it never does.
func TestWait(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if code := run([]string{"wait", "--url", srv.URL, "--period", "10ms"}); code != 0 || n.Load() < 3 {
		t.Fatalf("exit %d after %d requests", code, n.Load())
	}
	// Long enough for one answer on a loaded machine (go test -race).
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	never := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer never.Close()
	if err := waitReady(ctx, never.URL, 10*time.Millisecond, time.Second); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("never ready: %v", err)
	}
}

// TestStartInjectorFlags: injection is off by default, and bad
// combinations are errors naming the flag.
func TestStartInjectorFlags(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		f    controllerFlags
		want string
	}{
		{"off", controllerFlags{}, ""},
		{"manifests", controllerFlags{manifests: "dir", inject: injectFlags{address: ":0", failurePolicy: "Fail", servicePort: 443}}, "--manifests"},
		{"policy", controllerFlags{inject: injectFlags{address: ":0", failurePolicy: "Maybe", servicePort: 443}}, "--inject-failure-policy"},
		{"port", controllerFlags{inject: injectFlags{address: ":0", failurePolicy: "Ignore", servicePort: 0}}, "--inject-service-port"},
		{"CA key", controllerFlags{xdsCA: "ca.crt", inject: injectFlags{address: ":0", failurePolicy: "Fail", servicePort: 443}}, "--ca-key-file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var files *xdsserver.TLSFiles
			if tt.name == "CA key" {
				files = &xdsserver.TLSFiles{CA: "ca.crt"}
			}
			err := tt.f.startInjector(ctx, log, nil, files)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// TestControllerInjects runs `legate controller --inject-address` against
// a real kube-apiserver, in a private network namespace: it writes the
// webhook configuration with its generated CA, the API server calls it,
// and the pod comes back with the sidecar the flags describe.
func TestControllerInjects(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	env, cfg := kubetest.StartAPIServer(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	injAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctl := exec.Command(legateBin, "controller", "--kubeconfig", kc,
		"--xds-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--http-address", httpAddr, "--ca-address", "",
		"--inject-address", injAddr, "--inject-webhook-url", "https://"+injAddr+"/inject",
		"--sidecar-image", "example.com/legate:e2e", "--mesh-xds-address", "xds.example:8001", "--mesh-ca-address", "ca.example:15012")
	ctl.Env = append(os.Environ(), "LEGATE_STATE_DIR="+t.TempDir())
	ctl.Stderr = os.Stderr
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctl.Process.Kill()
		ctl.Wait()
	})
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	testutil.Eventually(t, 60*time.Second, func() bool {
		_, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mesh.InjectorName, metav1.GetOptions{})
		return err == nil
	}, "legate controller never wrote %s", mesh.InjectorName)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Labels: map[string]string{mesh.IstioInjectLabel: "enabled"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := client.CoreV1().Pods("meshed").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.Containers) != 2 {
		t.Fatalf("not injected: %+v", pod.Spec.Containers)
	}
	px := pod.Spec.Containers[1]
	if px.Name != mesh.ProxyContainer || px.Image != "example.com/legate:e2e" ||
		strings.Join(px.Args, " ") != "sidecar --xds-address xds.example:8001 --ca-address ca.example:15012" {
		t.Fatalf("proxy container %s %s %q", px.Name, px.Image, px.Args)
	}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "legate_sidecar_injection_success_total 1") {
		t.Fatalf("metrics lack the injection counter:\n%s", body)
	}
}
