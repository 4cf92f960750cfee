package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestManifestControllerArgs parses the controller arguments that
// deploy/base and the Helm chart give with the real flag set: a flag
// renamed or removed would make the Deployment crash-loop.
func TestManifestControllerArgs(t *testing.T) {
	root := testutil.RepoRoot(t)
	docs := map[string][]byte{}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "base", "20-controller.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs["deploy/base"] = b
	home, _ := os.UserHomeDir()
	if h := filepath.Join(home, ".cache", "legate", "bin", "helm"); fileExists(h) {
		out, err := exec.Command(h, "template", "rel", filepath.Join(root, "charts", "legate"), "-n", "mesh-system").Output()
		if err != nil {
			t.Fatalf("helm template: %v", err)
		}
		docs["chart"] = out
	}
	for name, doc := range docs {
		found := false
		d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(doc), 4096)
		for {
			var dep appsv1.Deployment
			if err := d.Decode(&dep); err != nil {
				break
			}
			if dep.Kind != "Deployment" || dep.Spec.Template.Spec.Containers == nil {
				continue
			}
			args := dep.Spec.Template.Spec.Containers[0].Args
			if len(args) == 0 || args[0] != "controller" {
				continue
			}
			found = true
			fs, f := newControllerFlags()
			if err := fs.Parse(args[1:]); err != nil {
				t.Errorf("%s: controller args %q: %v", name, args, err)
				continue
			}
			if err := f.mesh.apply(&controller.Options{}, f); err != nil {
				t.Errorf("%s: mesh flags: %v", name, err)
			}
			if f.inject.address == "" || f.ca.address == "" {
				t.Errorf("%s: the mesh's CA and injector are not enabled: %q", name, args)
			}
		}
		if !found {
			t.Errorf("%s: no controller Deployment", name)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
