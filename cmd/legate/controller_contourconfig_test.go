// legate controller --contour-config-name: a ContourConfiguration read
// from a real API server sets the controller's flags and settings, as
// --config-path does, with flags given on the command line winning.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

func TestControllerContourConfigName(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	env, cfg := kubetest.StartAPIServer(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "projectcontour"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(cfg)
	for _, doc := range []string{`
apiVersion: projectcontour.io/v1alpha1
kind: ContourConfiguration
metadata: {name: contour}
spec:
  ingress: {classNames: [internal], statusAddress: 192.0.2.1}
  httpproxy: {disablePermitInsecure: true, rootNamespaces: [projectcontour, apps], fallbackCertificate: {namespace: projectcontour, name: fallback}}
  envoy:
    http: {address: 127.0.0.1, port: 18080, accessLog: /tmp/http.log}
    https: {address: 127.0.0.1, port: 18443}
    listener: {useProxyProtocol: true}
    logging: {accessLogFormat: json}
    timeouts: {requestTimeout: 30s}
`, `
apiVersion: projectcontour.io/v1alpha1
kind: ContourConfiguration
metadata: {name: unsupported}
spec: {envoy: {listener: {socketOptions: {tos: 64}}}}
`} {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		if _, err := dyn.Resource(contourv1alpha1.ContourConfigurationGVR).Namespace("projectcontour").Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("CONTOUR_NAMESPACE", "projectcontour") // Contour's variable
	t.Setenv("POD_NAMESPACE", "elsewhere")
	load := func(args ...string) (*controllerFlags, controller.Options, error) {
		fs, f := newControllerFlags()
		var opt controller.Options
		if err := fs.Parse(append([]string{"--kubeconfig", kc}, args...)); err != nil {
			t.Fatal(err)
		}
		if err := f.loadConfigFile(fs); err != nil {
			return f, opt, err
		}
		if err := f.loadContourConfiguration(ctx, fs, nil); err != nil {
			return f, opt, err
		}
		return f, opt, f.contourSettings(&opt)
	}

	t.Run("fields set the flags and settings", func(t *testing.T) {
		f, opt, err := load("--contour-config-name", "contour")
		if err != nil {
			t.Fatal(err)
		}
		if f.httpPort != 18080 || f.httpsPort != 18443 || f.envoyHTTPAddress != "127.0.0.1" || f.httpAccessLog != "/tmp/http.log" || f.httpsAccessLog != "/dev/stdout" ||
			!f.useProxyProtocol || f.ingressClass != "internal" || f.statusAddress != "192.0.2.1" || f.rootNamespaces != "projectcontour,apps" || f.fallbackCert != "projectcontour/fallback" {
			t.Errorf("flags %+v", f)
		}
		if !opt.Model.Config.DisablePermitInsecure || opt.XDS.AccessLog.Format != "json" || opt.XDS.Timeouts.Request == nil || opt.XDS.Timeouts.Request.Seconds() != 30 ||
			!opt.XDS.UseProxyProto || opt.XDS.AccessLog.HTTPPath != "/tmp/http.log" {
			t.Errorf("model %+v xds %+v", opt.Model.Config, opt.XDS)
		}
	})
	t.Run("flags given win", func(t *testing.T) {
		f, _, err := load("--contour-config-name", "contour", "--http-port", "9080", "--ingress-class", "other")
		if err != nil {
			t.Fatal(err)
		}
		if f.httpPort != 9080 || f.ingressClass != "other" || f.httpsPort != 18443 {
			t.Errorf("http-port %d ingress-class %q https-port %d", f.httpPort, f.ingressClass, f.httpsPort)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"unsupported field", []string{"--contour-config-name", "unsupported"}, "ContourConfiguration projectcontour/unsupported: spec.envoy.listener.socketOptions: not implemented by Legate"},
		{"missing object", []string{"--contour-config-name", "nope"}, `contourconfigurations.projectcontour.io "nope" not found`},
		{"with --config-path", []string{"--contour-config-name", "contour", "--config-path", "/dev/null"}, "--config-path and --contour-config-name are exclusive"},
		{"with --manifests", []string{"--contour-config-name", "contour", "--manifests", t.TempDir()}, "with --manifests, use --config-path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := load(tc.args...); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
	t.Run("exit status", func(t *testing.T) {
		if code := runController([]string{"--kubeconfig", kc, "--contour-config-name", "unsupported"}); code != 2 {
			t.Errorf("legate controller with an unsupported ContourConfiguration exited %d, want 2", code)
		}
	})
}

// TestControllerContourConfigurationE2E runs `legate controller
// --contour-config-name` against a real API server and a `legate proxy`
// it feeds: the ContourConfiguration alone sets the xDS address
// (plaintext), the controller's metrics address, the proxy's HTTP
// listener address and port, its access log file and json format, and
// the object's status says Valid.
func TestControllerContourConfigurationE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	env, cfg := kubetest.StartAPIServer(t)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	client := kubernetes.NewForConfigOrDie(cfg)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ctl"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	xdsPort, httpPort, listenPort := freePort(t), freePort(t), freePort(t)
	accessLog := filepath.Join(t.TempDir(), "access.log")
	dyn := dynamic.NewForConfigOrDie(cfg)
	for _, doc := range []struct{ gvr, doc string }{{"cc", fmt.Sprintf(`
apiVersion: projectcontour.io/v1alpha1
kind: ContourConfiguration
metadata: {name: contour, namespace: ctl}
spec:
  xdsServer: {address: 127.0.0.1, port: %d, tls: {insecure: true}}
  metrics: {address: 127.0.0.1, port: %d}
  envoy:
    http: {address: 127.0.0.1, port: %d, accessLog: %s}
    logging: {accessLogFormat: json, accessLogJSONFields: [method, path, response_code]}
`, xdsPort, httpPort, listenPort, accessLog)}, {"hp", `
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: demo, namespace: ctl}
spec:
  virtualhost: {fqdn: demo.example.com}
  routes: [{conditions: [{prefix: /}], directResponsePolicy: {statusCode: 200, body: served}}]
`}} {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc.doc), &u.Object); err != nil {
			t.Fatal(err)
		}
		gvr := contourv1alpha1.ContourConfigurationGVR
		if doc.gvr == "hp" {
			gvr = contourv1.HTTPProxyGVR
		}
		if _, err := dyn.Resource(gvr).Namespace("ctl").Create(ctx, &u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ctl := exec.Command(legateBin, "controller", "--kubeconfig", kc, "--contour-config-name", "contour", "--ca-address", "")
	ctl.Env = append(os.Environ(), "POD_NAMESPACE=ctl", "CONTOUR_NAMESPACE=", "LEGATE_STATE_DIR="+t.TempDir())
	ctl.Stderr = os.Stderr
	if err := ctl.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ctl.Process.Signal(syscall.SIGTERM); ctl.Wait() }()
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "the controller never served /readyz on spec.metrics' address")
	u, err := dyn.Resource(contourv1alpha1.ContourConfigurationGVR).Namespace("ctl").Get(ctx, "contour", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); len(conds) != 1 || conds[0].(map[string]any)["status"] != "True" {
		t.Errorf("status conditions %v, want Valid True", conds)
	}

	boot := filepath.Join(t.TempDir(), "envoy.yaml")
	if out, err := exec.Command(legateBin, "bootstrap", "--insecure", "--xds-address", fmt.Sprintf("127.0.0.1:%d", xdsPort),
		"--admin-address", "127.0.0.1:0", "--node-id", "cc-e2e", boot).CombinedOutput(); err != nil {
		t.Fatalf("legate bootstrap: %v\n%s", err, out)
	}
	px := exec.Command(legateBin, "proxy", "-c", boot, "--drain-time-s", "1")
	px.Stderr = os.Stderr
	if err := px.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { px.Process.Signal(syscall.SIGTERM); px.Wait() }()
	testutil.Eventually(t, 20*time.Second, func() bool {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/hello", listenPort), nil)
		req.Host = "demo.example.com"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "no request through the proxy on spec.envoy.http's port")
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, _ = os.ReadFile(accessLog); len(b) > 0 {
			break
		}
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(strings.Split(strings.TrimSpace(string(b)), "\n")[0]), &e); err != nil || e["path"] != "/hello" || e["method"] != "GET" || e["response_code"] != float64(200) || len(e) != 3 {
		t.Errorf("access log %s (%v), want one JSON object with method, path and response_code", b, err)
	}
}
