// Path normalization: normalize_path, merge_slashes, escaped slashes.

package features_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestPathNormalization(t *testing.T) {
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	p := start(t, cfg{
		hcm:      "normalize_path: true\nmerge_slashes: true\npath_with_escaped_slashes_action: REJECT_REQUEST",
		vhosts:   vhost("{match: {prefix: /public/}, route: {cluster: u}}"),
		clusters: "[" + staticCluster("u", "", u.Addr) + "]",
	})
	cases := []struct {
		path   string
		status int
		seen   string
	}{
		{"/public/a/../b", 200, "path=/public/b"},
		{"/public//x///y", 200, "path=/public/x/y"},
		{"/public/%61bc", 200, "path=/public/abc"},
		{"/public/../admin", 404, ""},
		{"/public/a%2Fb", 400, ""},
		{"/../../etc/passwd", 400, ""},
	}
	for _, tc := range cases {
		out := rawExchange(t, p.Addr("http"), "GET "+tc.path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, fmt.Sprintf("HTTP/1.1 %d", tc.status)) || !strings.Contains(out, tc.seen) {
			t.Errorf("%s: got %q", tc.path, firstLine(out))
		}
	}
}
