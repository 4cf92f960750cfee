// Package kubetest starts a real kube-apiserver and etcd for tests.
package kubetest

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/legateproxy/legate/internal/testutil"
)

// KubeAssets returns the folder with kube-apiserver, etcd and kubectl
// (KUBEBUILDER_ASSETS, or the cache scripts/deps.d/kube.sh builds into).
func KubeAssets(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "legate", "kube-bin-v1.36.3")
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s not found in %s: run scripts/deps.sh (make deps) to build the Kubernetes test binaries", b, dir)
		}
	}
	return dir
}

// StartAPIServer runs a real kube-apiserver and etcd (controller-runtime's
// envtest) with Legate's CRDs installed, until the test ends.
func StartAPIServer(t testing.TB) (*envtest.Environment, *rest.Config) {
	t.Helper()
	return StartAPIServerWithCRDs(t, "")
}

// StartAPIServerWithCRDs is StartAPIServer with only the given CRD files
// of deploy/crds installed (e.g. "projectcontour.io_httpproxies.yaml"),
// or all of them for "": a cluster that lacks a CRD.
func StartAPIServerWithCRDs(t testing.TB, files ...string) (*envtest.Environment, *rest.Config) {
	t.Helper()
	dir := filepath.Join(testutil.RepoRoot(t), "deploy", "crds")
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(dir, f))
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: KubeAssets(t),
		CRDDirectoryPaths:     paths,
		ErrorIfCRDPathMissing: true,
	}
	// No default route inside a test's network namespace: advertise loopback.
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() { env.Stop() })
	return env, cfg
}
