// legate controller --contour-config-name: a ContourConfiguration read
// from a real API server sets the controller's flags and settings, as
// --config-path does, with flags given on the command line winning.

package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/legateproxy/legate/internal/controller"
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
