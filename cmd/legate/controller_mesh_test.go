package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestControllerMeshFlags: a bad sidecar option stops legate controller
// with an error naming the flag and its values.
func TestControllerMeshFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mesh-mtls", "DISABLE"}, "--mesh-mtls \"DISABLE\": use PERMISSIVE or STRICT"},
		{[]string{"--mesh-outbound-traffic-policy", "allow_any"}, "--mesh-outbound-traffic-policy \"allow_any\": use ALLOW_ANY or REGISTRY_ONLY"},
		{[]string{"--mesh-trust-domain", "spiffe://x"}, "--mesh-trust-domain"},
	} {
		out, err := exec.Command(legateBin, append([]string{"controller", "--manifests", t.TempDir(), "--insecure",
			"--xds-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"}, tc.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("legate controller %v: %v, %q; want an error with %q", tc.args, err, out, tc.want)
		}
	}
}
