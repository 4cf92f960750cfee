package controller

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/testutil/kubetest"
)

// syncBuffer collects log lines written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startKube runs source.Kube against cfg as legate controller does and
// returns Run's result and the log; it fails the test if Run has not
// returned within a minute (the informers' own sync wait is two minutes,
// so a missing CRD reported only by that wait never passes).
func startKube(t *testing.T, cfg *rest.Config) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	k := &source.Kube{Client: kubernetes.NewForConfigOrDie(cfg), Dynamic: dynamic.NewForConfigOrDie(cfg), Log: log}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, source.NewStore()) }()
	select {
	case err := <-done:
		t.Logf("Run: %v\nlog:\n%s", err, logs.String())
		return logs.String(), err
	case <-time.After(time.Minute):
		t.Fatalf("Run did not return within a minute (waiting for caches that cannot sync?); log:\n%s", logs.String())
		return "", nil
	}
}

// TestKubernetesCRDs: against a real kube-apiserver, a missing required
// CRD (HTTPProxy) stops the controller at once with an error naming it
// and the kubectl command that installs it, as Contour exits when its
// CRDs are missing; a missing optional one (ExtensionService) is a
// warning of the same shape; refused permissions say RBAC.
func TestKubernetesCRDs(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Kubernetes test binaries")
	}
	env, cfg := kubetest.StartAPIServerWithCRDs(t, "projectcontour.io_tlscertificatedelegations.yaml")
	root := testutil.RepoRoot(t)

	t.Run("required CRD missing", func(t *testing.T) {
		_, err := startKube(t, cfg)
		var missing *source.MissingCRDError
		if !errors.As(err, &missing) {
			t.Fatalf("Run = %v, want a MissingCRDError", err)
		}
		msg := err.Error()
		for _, want := range []string{"httpproxies.projectcontour.io", "kubectl apply -f deploy/crds/projectcontour.io_httpproxies.yaml"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
		}
		if strings.Contains(msg, "tlscertificatedelegations") || strings.Contains(msg, "extensionservices") || strings.Contains(msg, "RBAC") {
			t.Errorf("error %q names an installed or optional CRD, or RBAC", msg)
		}
		// The command works from Legate's repository.
		if _, err := os.Stat(filepath.Join(root, "deploy/crds/projectcontour.io_httpproxies.yaml")); err != nil {
			t.Errorf("the suggested file does not exist: %v", err)
		}
	})

	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{Paths: []string{filepath.Join(root, "deploy/crds/projectcontour.io_httpproxies.yaml")}}); err != nil {
		t.Fatal(err)
	}
	t.Run("optional CRD missing", func(t *testing.T) {
		logs, err := startKube(t, cfg)
		if err != nil {
			t.Fatalf("Run = %v, want the controller to start without ExtensionServices", err)
		}
		var warn string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "extensionservices.projectcontour.io") {
				warn = l
			}
		}
		if !strings.Contains(warn, "kubectl apply -f deploy/crds/projectcontour.io_extensionservices.yaml") {
			t.Errorf("no warning naming extensionservices.projectcontour.io with its kubectl command; log:\n%s", logs)
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		// A user with no role: discovery is allowed (system:discovery),
		// listing is not.
		u, err := env.AddUser(envtest.User{Name: "legate-no-rbac"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = startKube(t, u.Config())
		var rbac *source.RBACError
		if !errors.As(err, &rbac) || !strings.Contains(err.Error(), "RBAC") || !strings.Contains(err.Error(), "list services") ||
			!strings.Contains(err.Error(), "list httpproxies.projectcontour.io") {
			t.Errorf("Run = %v, want an RBAC error naming the resources it may not list", err)
		}
	})
}
