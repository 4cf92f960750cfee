// Command-line tests: TestMain builds the binary once; each subcommand's
// tests are in <subcommand>_test.go.

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

var legateBin string

// TestMain builds the legate binary once for the command-line tests.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "legate-bin")
	if err != nil {
		panic(err)
	}
	legateBin = filepath.Join(dir, "legate")
	out, err := exec.Command("go", "build", "-race", "-o", legateBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build legate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func freePort(t *testing.T) int { return testutil.FreePort(t) }

// Every subcommand answers -h and --help with its usage and exit code 0,
// without doing its work (validate used to read a file named --help and
// quickstart to start the demo); --version prints the version.
func TestHelpOnEverySubcommand(t *testing.T) {
	for name := range commands {
		for _, h := range []string{"-h", "--help"} {
			out, err := exec.Command(legateBin, name, h).CombinedOutput()
			if err != nil {
				t.Errorf("legate %s %s: %v\n%s", name, h, err, out)
				continue
			}
			if !strings.Contains(strings.ToLower(string(out)), "usage") {
				t.Errorf("legate %s %s printed no usage:\n%s", name, h, out)
			}
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}, {"proxy", "--version"}} {
		out, err := exec.Command(legateBin, args...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "legate ") {
			t.Errorf("legate %v: %v %q", args, err, out)
		}
	}
}
