// Generic secrets (static_resources.secrets[].generic_secret): accepted,
// held, and redacted in /config_dump.

package features_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestGenericSecretRedacted: a bootstrap with a generic secret loads, and
// /config_dump shows the secret as "[redacted]", never its bytes, as
// Envoy redacts fields marked sensitive.
func TestGenericSecretRedacted(t *testing.T) {
	up := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	const value = "s3cr3t-hmac-value-7f3a"
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", up.Addr) + "]",
		extra:    "  secrets: [{name: hmac, generic_secret: {secret: {inline_string: " + value + "}}}]\n",
	})
	c := testutil.Client()
	if code, _, _ := testutil.Get(t, c, p.URL("http", "/")); code != 200 {
		t.Fatalf("proxy with a generic secret: status %d", code)
	}
	_, _, dump := testutil.Get(t, c, "http://"+p.Admin+"/config_dump")
	if strings.Contains(dump, value) {
		t.Fatalf("/config_dump shows the generic secret's value")
	}
	if !strings.Contains(dump, "[redacted]") || !strings.Contains(dump, "hmac") {
		t.Fatalf("/config_dump should list secret hmac as [redacted]:\n%s", dump)
	}
}

// TestGenericSecretErrors: a generic secret without a value, or with the
// secrets map Legate does not read, is refused naming the field.
func TestGenericSecretErrors(t *testing.T) {
	for _, tc := range []struct{ secret, want string }{
		{"{name: g, generic_secret: {}}", "generic_secret.secret"},
		{"{name: g, generic_secret: {secrets: {a: {inline_string: x}}}}", "generic_secret.secrets"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{vhosts: vhost("{match: {prefix: /}, direct_response: {status: 200}}"), clusters: "[]",
			extra: "  secrets: [" + tc.secret + "]\n"}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one naming %s", tc.secret, err, tc.want)
		}
	}
}
