// ORIGINAL_DST clusters.

package features_test

import (
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// An ORIGINAL_DST cluster routes each request to the destination it names
// (use_http_header), creating hosts as they come.
func TestOriginalDstClusterByHeader(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	b := testutil.StartUpstream(t, testutil.EchoHandler("b"))
	p := start(t, cfg{
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: passthrough}}`),
		clusters: `[{name: passthrough, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s, original_dst_lb_config: {use_http_header: true}}]`,
	})
	for _, c := range []struct{ addr, want string }{{a.Addr, "upstream=a"}, {b.Addr, "upstream=b"}, {a.Addr, "upstream=a"}} {
		code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x-envoy-original-dst-host", c.addr)
		if code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("to %s: %d %q", c.addr, code, body)
		}
	}
	// No destination: no host (503 UH, as Envoy).
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x-envoy-original-dst-host", "not-an-address"); code != 503 {
		t.Errorf("bad destination: %d, want 503", code)
	}
}

func TestOriginalDstConfigErrors(t *testing.T) {
	for _, c := range []struct{ clusters, want string }{
		{`[{name: p, type: ORIGINAL_DST, lb_policy: ROUND_ROBIN}]`, "Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'"},
		{`[{name: p, type: STATIC, lb_policy: CLUSTER_PROVIDED}]`, "CLUSTER_PROVIDED is only for clusters that choose their hosts themselves"},
	} {
		_, err := testutil.TryStartProxy(t, cfg{vhosts: vhost(`{match: {prefix: /}, route: {cluster: p}}`), clusters: c.clusters}.String(), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.clusters, err, c.want)
		}
	}
}
