package server

import (
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/legateproxy/legate/internal/extension"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/extensions.md")

// TestExtensionsDoc checks that docs/extensions.md is what the registry
// (every extension the server links) renders; `make docs` rewrites it.
func TestExtensionsDoc(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	target := filepath.Join(filepath.Dir(file), "..", "..", "docs", "extensions.md")
	doc := extension.Markdown()
	if *updateDocs {
		if err := os.WriteFile(target, doc, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	cur, err := os.ReadFile(target)
	if err != nil || string(cur) != string(doc) {
		t.Fatalf("docs/extensions.md is stale: run `make docs` and commit the result")
	}
}
