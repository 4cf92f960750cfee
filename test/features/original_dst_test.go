// ORIGINAL_DST clusters.

package features_test

import (
	"strings"
	"testing"
	"time"

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

// upstream_port_override replaces the destination's port, http_header_name
// names the header, and cleanup_interval removes the hosts no request
// used since the last cleanup.
func TestOriginalDstClusterPortOverrideAndCleanup(t *testing.T) {
	a := testutil.StartUpstream(t, testutil.EchoHandler("a"))
	host, port := a.Host()
	p := start(t, cfg{
		vhosts: vhost(`{match: {prefix: /}, route: {cluster: passthrough}}`),
		clusters: `[{name: passthrough, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s, cleanup_interval: 0.2s, ` +
			`original_dst_lb_config: {use_http_header: true, http_header_name: x-dst, upstream_port_override: ` + port + `}}]`,
	})
	code, _, body := testutil.Get(t, testutil.Client(), p.URL("http", "/"), "x-dst", host+":1", "connection", "close")
	if code != 200 || !strings.Contains(body, "upstream=a") {
		t.Fatalf("to %s:1 with the port overridden to %s: %d %q", host, port, code, body)
	}
	if got := p.Stat(t, "cluster.passthrough.membership_change"); got < 1 {
		t.Errorf("membership_change = %d after the first host", got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		return p.Stat(t, "cluster.passthrough.membership_total") == 0 && p.Stat(t, "cluster.passthrough.membership_change") >= 2
	}, "the idle host is not cleaned up (membership_total %d)", p.Stat(t, "cluster.passthrough.membership_total"))
}

// Without use_http_header, an ORIGINAL_DST cluster goes only to an
// original destination the original_dst listener filter restored: a
// connection that came to the listener directly has none, and the
// request gets 503 (no host, as Envoy) instead of being sent back to the
// proxy's own listener.
func TestOriginalDstClusterNeedsRestoredDestination(t *testing.T) {
	p := start(t, cfg{
		vhosts:   vhost(`{match: {prefix: /}, route: {cluster: passthrough}}`),
		clusters: `[{name: passthrough, type: ORIGINAL_DST, lb_policy: CLUSTER_PROVIDED, connect_timeout: 1s}]`,
	})
	if code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/")); code != 503 {
		t.Errorf("no original destination: %d, want 503", code)
	}
	if got := p.Stat(t, "http.ingress.downstream_rq_total"); got != 1 {
		t.Errorf("http.ingress.downstream_rq_total = %d, want 1 (the request looped back)", got)
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
