package controller

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestServiceCircuitBreakerAnnotations: Contour's circuit-breaker
// annotations on a Service reach Legate's proxy and hold there:
// projectcontour.io/per-host-max-connections 1 makes a second request
// wait for the first one's connection (pending, never a second
// connection), and projectcontour.io/max-pending-requests 1 turns a
// third away with 503 and x-envoy-overloaded.
func TestServiceCircuitBreakerAnnotations(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	up := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("ok"))
	}))
	dir := t.TempDir()
	writeFile(t, dir, "objs.yaml", `---
apiVersion: v1
kind: Service
metadata:
  name: svc-cb
  namespace: default
  annotations: {projectcontour.io/per-host-max-connections: "1", projectcontour.io/max-pending-requests: "1"}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
`+slice("svc-cb", up.Addr)+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: cb, namespace: default}
spec:
  virtualhost: {fqdn: cb.example.com}
  routes:
  - services: [{name: svc-cb, port: 80}]
`)
	x, p, base := startManifests(t, dir)
	c := fromClient("127.0.0.1")
	testutil.Eventually(t, 10*time.Second, func() bool {
		code, _, _ := do(t, c, "GET", base+"/fast", "cb.example.com")
		return code == 200
	}, "proxy never routed cb.example.com")
	if n := x.xds.NACKs(); len(n) > 0 {
		t.Fatalf("NACKs: %v", n)
	}
	// The probe's connection may be idle in the pool: the slow request
	// takes it (or makes the only one).
	get := func(path string) chan int {
		ch := make(chan int, 1)
		go func() {
			code, _, _ := do(t, fromClient("127.0.0.1"), "GET", base+path, "cb.example.com")
			ch <- code
		}()
		return ch
	}
	const cl = "cluster.default_svc-cb_80."
	slow := get("/slow")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, cl+"upstream_rq_active") == 1 }, "slow request never started")
	pending := get("/fast")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, cl+"upstream_rq_pending_active") == 1 }, "the second request never waited for the host's one connection")
	code, h, _ := do(t, c, "GET", base+"/fast", "cb.example.com")
	if code != 503 || h.Get("x-envoy-overloaded") != "true" {
		t.Errorf("third request = %d (x-envoy-overloaded %q), want 503 over max-pending-requests 1", code, h.Get("x-envoy-overloaded"))
	}
	once.Do(func() { close(release) })
	for _, ch := range []chan int{slow, pending} {
		if code := <-ch; code != 200 {
			t.Errorf("held request = %d, want 200", code)
		}
	}
	if n := p.Stat(t, cl+"upstream_cx_total"); n != 1 {
		t.Errorf("upstream_cx_total = %d, want 1 (per-host-max-connections 1)", n)
	}
}
