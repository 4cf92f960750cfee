// Package deploy tests what it takes to run Legate in Kubernetes: the
// Dockerfile (BuildKit's parser and linter), the generated quickstart, the
// examples and the Helm chart (applied with kubectl --dry-run=server to a
// real kube-apiserver; its values rendered and checked field by field, and
// wrong values refused by values.schema.json), and the controller's RBAC
// (impersonating its ServiceAccount).
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/server"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

func TestDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(testutil.RepoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s", w.Short)
	}
	var lint []string
	stages, _, err := instructions.Parse(res.AST, linter.New(&linter.Config{ExperimentalAll: true, Warn: func(rule, desc, url, msg string, _ []parser.Range) {
		lint = append(lint, rule+": "+msg)
	}}))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lint {
		t.Errorf("BuildKit lint: %s", l)
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(stages))
	}
	final := stages[len(stages)-1]
	var user, entry string
	static := false
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			entry = strings.Join(c.CmdLine, " ")
			if c.PrependShell {
				t.Errorf("ENTRYPOINT must be the exec form")
			}
		}
	}
	for _, c := range stages[0].Commands {
		if r, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(r.CmdLine, " "), "CGO_ENABLED=0") {
			static = true
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}
	if entry != "legate" {
		t.Errorf("ENTRYPOINT = %q, want [\"legate\"]", entry)
	}
	if !static {
		t.Error("the binary is not built with CGO_ENABLED=0 (static)")
	}
	if !strings.Contains(final.BaseName, "distroless") {
		t.Errorf("final base %q: want a minimal (distroless) image", final.BaseName)
	}
}

// TestGeneratedFilesFresh checks deploy/quickstart.yaml and the chart's
// CRDs match what scripts/gen-quickstart.sh writes.
func TestGeneratedFilesFresh(t *testing.T) {
	root := testutil.RepoRoot(t)
	out := t.TempDir()
	if b, err := exec.Command(filepath.Join(root, "scripts", "gen-quickstart.sh"), out).CombinedOutput(); err != nil {
		t.Fatalf("gen-quickstart.sh: %v\n%s", err, b)
	}
	files := []string{"deploy/quickstart.yaml"}
	crds, _ := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	for _, c := range crds {
		files = append(files, filepath.Join("charts/legate/crds", filepath.Base(c)))
	}
	for _, f := range files {
		want, _ := os.ReadFile(filepath.Join(out, f))
		got, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run make generate (or scripts/gen-quickstart.sh)", f)
		}
	}
}

func kubectl(t *testing.T, env *envtest.Environment, args ...string) (string, error) {
	t.Helper()
	stdout, stderr, err := env.ControlPlane.KubeCtl().Run(args...)
	o, _ := io.ReadAll(stdout)
	e, _ := io.ReadAll(stderr)
	if err != nil {
		return string(o) + string(e), err
	}
	return string(o), nil
}

func helm(t *testing.T) string {
	t.Helper()
	h := filepath.Join(os.Getenv("LEGATE_CACHE"), "bin", "helm")
	if os.Getenv("LEGATE_CACHE") == "" {
		home, _ := os.UserHomeDir()
		h = filepath.Join(home, ".cache", "legate", "bin", "helm")
	}
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("helm not found at %s: run scripts/deps.sh (make deps)", h)
	}
	return h
}

// envoyConfigs returns the envoy.yaml of every ConfigMap in a manifest.
func envoyConfigs(t *testing.T, data []byte) []string {
	var out []string
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var cm corev1.ConfigMap
		if err := d.Decode(&cm); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		if cm.Kind == "ConfigMap" && cm.Data["envoy.yaml"] != "" {
			out = append(out, cm.Data["envoy.yaml"])
		}
	}
}

// dropKind removes the documents of a kind from a multi-document YAML
// stream, and counts them.
func dropKind(t *testing.T, data []byte, kind string) ([]byte, int) {
	t.Helper()
	var out bytes.Buffer
	n := 0
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out.Bytes(), n
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta metav1.TypeMeta
		if err := utilyaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind == kind {
			n++
			continue
		}
		out.WriteString("---\n")
		out.Write(doc)
	}
}

// TestManifests applies every manifest we ship — the quickstart, the
// examples, the Helm chart rendered for each mode — with
// kubectl apply --dry-run=server against a real kube-apiserver (schema,
// RBAC objects and CRDs all checked by the server), loads every envoy.yaml
// they carry with Legate's own config loader, and runs the controller with
// the quickstart's RBAC, impersonating its ServiceAccount.
func TestManifests(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	root := testutil.RepoRoot(t)
	h := helm(t)
	if out, err := exec.Command(h, "lint", "--strict", filepath.Join(root, "charts", "legate")).CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	env, cfg := kubetest.StartAPIServer(t)
	for _, ns := range []string{"legate-system", "legate"} {
		if out, err := kubectl(t, env, "create", "namespace", ns); err != nil {
			t.Fatalf("create namespace: %v\n%s", err, out)
		}
	}

	files := []string{filepath.Join(root, "deploy", "quickstart.yaml")}
	examples, _ := filepath.Glob(filepath.Join(root, "examples", "kubernetes", "*", "*.yaml"))
	for _, e := range examples {
		if !strings.HasSuffix(e, "-patch.yaml") {
			files = append(files, e)
		}
	}
	renders := t.TempDir()
	values := map[string]string{"default": ""}
	ci, _ := filepath.Glob(filepath.Join(root, "charts", "legate", "ci", "*-values.yaml"))
	for _, c := range ci {
		values[strings.TrimSuffix(filepath.Base(c), "-values.yaml")] = c
	}
	if len(values) < 4 {
		t.Fatalf("charts/legate/ci: %d values files, want the proxy-deployment, standalone, hostnetwork and operability ones", len(ci))
	}
	for name, v := range values {
		args := []string{"template", "legate", filepath.Join(root, "charts", "legate"), "-n", "legate", "--include-crds"}
		if v != "" {
			args = append(args, "-f", v)
		}
		out, err := exec.Command(h, args...).Output()
		if err != nil {
			t.Fatalf("helm template (%s): %v", name, err)
		}
		// The test API server has no prometheus-operator CRDs: the
		// ServiceMonitors (rendered only with metrics.serviceMonitor.enabled,
		// checked field by field in TestChartValues) are left out here.
		out, sms := dropKind(t, out, "ServiceMonitor")
		if (name == "operability") != (sms == 2) {
			t.Errorf("helm template (%s): %d ServiceMonitors", name, sms)
		}
		p := filepath.Join(renders, "helm-"+name+".yaml")
		os.WriteFile(p, out, 0o644)
		files = append(files, p)
	}
	for _, f := range files {
		if out, err := kubectl(t, env, "apply", "--dry-run=server", "-f", f); err != nil {
			t.Errorf("kubectl apply --dry-run=server -f %s: %v\n%s", f, err, out)
		} else {
			t.Logf("%s: %d objects accepted by the API server", filepath.Base(f), strings.Count(out, "(server dry run)"))
		}
		data, _ := os.ReadFile(f)
		for _, y := range envoyConfigs(t, data) {
			if _, err := server.Load(server.Options{ConfigYAML: y, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), LogLevel: new(slog.LevelVar)}); err != nil {
				t.Errorf("%s: envoy.yaml does not load in legate: %v", filepath.Base(f), err)
			}
		}
	}

	// The sidecar patch applies to an existing Deployment.
	if out, err := kubectl(t, env, "create", "deployment", "app", "--image=docker.io/hashicorp/http-echo:1.0", "-n", "default"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := kubectl(t, env, "patch", "deployment", "app", "-n", "default", "--dry-run=server", "-o", "yaml",
		"--patch-file", filepath.Join(root, "examples", "kubernetes", "sidecar", "sidecar-patch.yaml")); err != nil || !strings.Contains(out, "name: legate") {
		t.Errorf("kubectl patch with sidecar-patch.yaml: %v\n%s", err, out)
	}

	// RBAC: apply the quickstart's for real, then act as the controller.
	for _, f := range []string{"00-namespace.yaml", "10-rbac.yaml"} {
		if out, err := kubectl(t, env, "apply", "-f", filepath.Join(root, "deploy", "base", f)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	if out, err := kubectl(t, env, "apply", "-f", filepath.Join(root, "examples", "kubernetes", "httpproxy", "httpproxy.yaml")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sa := rest.CopyConfig(cfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:legate-system:legate-controller"}
	client := kubernetes.NewForConfigOrDie(sa)
	dyn := dynamic.NewForConfigOrDie(sa)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := source.NewStore()
	if err := (&source.Kube{Client: client, Dynamic: dyn, Log: log}).Run(ctx, st); err != nil {
		t.Fatalf("controller informers with the quickstart RBAC: %v", err)
	}
	objs, _ := st.Take()
	m := model.Build(objs, model.Options{})
	n, err := (&status.Writer{Client: client, Dynamic: dyn, Log: log, Address: "203.0.113.9"}).Write(ctx, m, objs)
	if err != nil || n == 0 {
		t.Errorf("status writes with the quickstart RBAC: %d written, %v", n, err)
	}
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "legate-system", "legate-controller", client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: "test"})
	if err != nil {
		t.Fatal(err)
	}
	lead := make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: time.Second,
		Callbacks: leaderelection.LeaderCallbacks{OnStartedLeading: func(context.Context) { close(lead) }, OnStoppedLeading: func() {}}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(ctx)
	go le.Run(lctx)
	select {
	case <-lead:
	case <-time.After(20 * time.Second):
		t.Error("leader election with the quickstart RBAC never acquired the Lease")
	}
	lcancel()
	// The certgen Job's ServiceAccount writes the xDS mTLS Secrets the
	// controller and proxies mount; a second run keeps them.
	cg := rest.CopyConfig(cfg)
	cg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:legate-system:legate-certgen"}
	cgClient := kubernetes.NewForConfigOrDie(cg)
	set, err := certgen.Generate(certgen.Options{Namespace: "legate-system"})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := certgen.WriteSecrets(ctx, cgClient, "legate-system", set, false); err != nil || !strings.Contains(msg, "wrote") {
		t.Fatalf("certgen with the quickstart RBAC: %q %v", msg, err)
	}
	again, _ := certgen.Generate(certgen.Options{Namespace: "legate-system"})
	if msg, err := certgen.WriteSecrets(ctx, cgClient, "legate-system", again, false); err != nil || !strings.Contains(msg, "kept") {
		t.Errorf("a second certgen run should keep the Secrets: %q %v", msg, err)
	}
	if sec, err := client.CoreV1().Secrets("legate-system").Get(ctx, certgen.CASecret, metav1.GetOptions{}); err != nil || string(sec.Data[corev1.TLSCertKey]) != string(set.CA) || len(sec.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Errorf("CA Secret %s: %v", certgen.CASecret, err)
	}
	for _, name := range []string{certgen.ControllerSecret, certgen.ProxySecret} {
		sec, err := client.CoreV1().Secrets("legate-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("Secret %s: %v", name, err)
			continue
		}
		if sec.Type != corev1.SecretTypeTLS || len(sec.Data["ca.crt"]) == 0 || string(sec.Data["ca.crt"]) != string(set.CA) {
			t.Errorf("Secret %s: type %s, ca.crt from the first run: %v", name, sec.Type, string(sec.Data["ca.crt"]) == string(set.CA))
		}
	}
	if _, err := cgClient.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("certgen may list Secrets in other namespaces (err %v)", err)
	}
	// Least privilege: nothing beyond what the controller needs.
	if _, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("controller may not list pods (the mesh's sidecar configuration needs them): %v", err)
	}
	if _, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller may create pods (err %v): RBAC is wider than needed", err)
	}
	if err := client.CoreV1().Services("default").Delete(ctx, "s1", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("controller may delete services (err %v): RBAC is wider than needed", err)
	}
}

// TestCRDsFresh regenerates the CRDs from api/ with controller-gen and
// compares them with deploy/crds.
func TestCRDsFresh(t *testing.T) {
	root := testutil.RepoRoot(t)
	gen, err := exec.LookPath("controller-gen")
	if err != nil {
		home, _ := os.UserHomeDir()
		gen = filepath.Join(home, ".cache", "legate", "bin", "controller-gen")
		if _, err := os.Stat(gen); err != nil {
			t.Fatalf("controller-gen not found: run scripts/deps.sh (make deps)")
		}
	}
	out := t.TempDir()
	cmd := exec.Command(gen, "crd:crdVersions=v1", "paths=./api/...", "output:crd:dir="+out)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("controller-gen wrote no CRDs")
	}
	for _, f := range files {
		want, _ := os.ReadFile(f)
		got, err := os.ReadFile(filepath.Join(root, "deploy", "crds", filepath.Base(f)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("deploy/crds/%s is stale: run make generate", filepath.Base(f))
		}
	}
}
