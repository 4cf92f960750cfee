// legate config upgrade.

package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestConfigUpgradePrintsValidV3(t *testing.T) {
	seed := filepath.Join(testutil.SharedDir(t), "conformance", "seed-configs", "seed001__envoy-v2-nginx-comparison.yaml")
	out, err := exec.Command(legateBin, "config", "upgrade", seed).Output()
	if err != nil {
		t.Fatalf("config upgrade: %v", err)
	}
	s := string(out)
	for _, want := range []string{"typed_config:", "'@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "load_assignment:"} {
		if !strings.Contains(s, want) {
			t.Errorf("upgraded config lacks %q:\n%s", want, s)
		}
	}
	if regexp.MustCompile(`(?m)^\s+(hosts|config):`).MatchString(s) {
		t.Errorf("upgraded config still has v2 fields:\n%s", s)
	}
	// The printed config validates without any upgrade warning.
	p := writeFile(t, s)
	cmd := exec.Command(legateBin, "validate", p)
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Run(); err != nil || strings.Contains(se.String(), "warning") {
		t.Fatalf("upgraded config: %v\n%s", err, se.String())
	}
}
