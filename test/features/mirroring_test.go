// Request mirroring: request_mirror_policies.

package features_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestRequestMirror(t *testing.T) {
	main := testutil.StartUpstream(t, testutil.EchoHandler("main"))
	var mu sync.Mutex
	var shadowHosts []string
	shadow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		shadowHosts = append(shadowHosts, r.Host+" "+string(b))
		mu.Unlock()
		w.WriteHeader(500) // a mirror's response is ignored
	}))
	p := start(t, cfg{
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: main, request_mirror_policies: [{cluster: shadow}]}}"),
		clusters: "[" + staticCluster("main", "", main.Addr) + ", " + staticCluster("shadow", "", shadow.Addr) + "]",
	})
	resp, err := http.Post(p.URL("http", "/m"), "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("mirrored request: %d", resp.StatusCode)
	}
	testutil.Eventually(t, 3*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(shadowHosts) == 1
	}, "the mirror cluster did not get a copy")
	mu.Lock()
	if !strings.HasPrefix(shadowHosts[0], "127.0.0.1-shadow:") || !strings.HasSuffix(shadowHosts[0], " payload") {
		t.Errorf("shadow request: %q (want host suffixed -shadow and the body)", shadowHosts[0])
	}
	mu.Unlock()
}
