package meshe2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestMeshCost is a benchmark, not a test (`make bench-mesh` sets
// LEGATE_MESH_BENCH=1; otherwise it is skipped): the cost the two
// sidecars add per request, A → sidecar → sidecar → B over mTLS, against
// A calling B's pod directly before the mesh was applied, and the memory
// of one sidecar with 100 Services in the mesh. It writes
// bench/results/mesh.md.
func TestMeshCost(t *testing.T) {
	if os.Getenv("LEGATE_MESH_BENCH") != "1" {
		t.Skip("a benchmark: run with make bench-mesh (LEGATE_MESH_BENCH=1)")
	}
	if _, err := exec.LookPath("h2load"); err != nil {
		t.Skip("needs h2load (nghttp2-client)")
	}
	if !testutil.InNetns(t) {
		return
	}
	const n, c = 20000, 8
	var direct load
	env := startMesh(t, func(e *meshEnv) {
		direct = e.a.h2load(t, n, c, fmt.Sprintf("http://%s:%d/", podBIP, appPort), e.apps["b"])
	})
	rssIdle := rssOf(t, env.sidecars["a"])
	// Warm up the path, then measure.
	env.a.h2load(t, 2000, c, fmt.Sprintf("http://%s/", svcBIP), env.apps["b"])
	before := cpuOf(t, env.sidecars["a"]) + cpuOf(t, env.sidecars["b"])
	meshed := env.a.h2load(t, n, c, fmt.Sprintf("http://%s/", svcBIP), env.apps["b"])
	sidecarCPU := cpuOf(t, env.sidecars["a"]) + cpuOf(t, env.sidecars["b"]) - before
	rssOne := rssOf(t, env.sidecars["a"])

	// 100 Services in the mesh (each with B's pod as endpoint): A's
	// sidecar gets their listeners, routes and clusters.
	for i := range 100 {
		name := fmt.Sprintf("svc-%03d", i)
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: meshNS},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("198.51.100.%d", 100+i), Selector: map[string]string{"app": "b"},
				Ports: []corev1.ServicePort{{Name: "http", Port: svcPort, TargetPort: intstr.FromInt32(appPort)}}}}
		must(t, create(env.ctx, env.kc, svc))
		es := endpointSlice(name, env.b)
		es.Labels[discoveryv1.LabelServiceName] = name
		must(t, create(env.ctx, env.kc, es))
	}
	for _, ip := range []string{"198.51.100.100", "198.51.100.150", "198.51.100.199"} {
		eventually(t, 60*time.Second, "A's sidecar routes to the Service at "+ip, func() error {
			out, err := env.a.curl("http://" + ip + "/")
			if err != nil || !strings.Contains(out, "app=b") {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
	}
	time.Sleep(2 * time.Second)
	rss100 := rssOf(t, env.sidecars["a"])

	perReq := func(l load) float64 { return 1e6 / l.rps }
	addedLatency := perReq(meshed) - perReq(direct)
	md := fmt.Sprintf(`# Sidecar mesh cost (test/meshe2e TestMeshCost)

%s, `+"`make bench-mesh`"+`. h2load --h1, %d requests, %d connections, from pod A's network namespace; every process on this machine's 2 cores, unpinned.

| path | requests/s | mean time per request at c=%d (µs) | sidecar CPU-µs per request (A's + B's) |
|---|---:|---:|---:|
| A → B's pod directly (no iptables, no sidecars) | %.0f | %.1f | — |
| A → B's Service through both sidecars (iptables, outbound HTTP route, EDS, mTLS, inbound chain, XFCC, both access logs) | %.0f | %.1f | %.1f |

The sidecars add %.1f µs of wall time per request at c=%d (the difference of the 1/throughput figures) and %.1f CPU-µs per request across the two sidecars.

| memory | RSS |
|---|---:|
| A's sidecar, 2 Services in the mesh, ready, before any request | %.1f MiB |
| A's sidecar, 2 Services in the mesh, after the load | %.1f MiB |
| A's sidecar, 102 Services in the mesh | %.1f MiB |
`, time.Now().UTC().Format("2006-01-02 15:04 UTC"), n, c, c,
		direct.rps, perReq(direct), meshed.rps, perReq(meshed), sidecarCPU/float64(n),
		addedLatency, c, sidecarCPU/float64(n), rssIdle/1024, rssOne/1024, rss100/1024)
	t.Log("\n" + md)
	if err := os.WriteFile(filepath.Join(testutil.RepoRoot(t), "bench", "results", "mesh.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
}

// load is what h2load measured.
type load struct{ rps float64 }

// h2load runs h2load (HTTP/1.1) from the pod and requires every request
// to succeed; app is the upstream application (to show it was reached).
func (p *pod) h2load(t *testing.T, n, c int, url string, app *proc) load {
	t.Helper()
	out := p.exec(t, "h2load", "--h1", "-n", fmt.Sprint(n), "-c", fmt.Sprint(c), "-t", "1", url)
	m := regexp.MustCompile(`finished in [\d.]+m?s, ([\d.]+) req/s`).FindStringSubmatch(out)
	ok := regexp.MustCompile(`(\d+) succeeded`).FindStringSubmatch(out)
	if m == nil || ok == nil || ok[1] != fmt.Sprint(n) {
		t.Fatalf("h2load %s:\n%s", url, out)
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	return load{rps: rps}
}

// cpuOf is a process's user+system CPU time so far, in µs.
func cpuOf(t *testing.T, pr *proc) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pr.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) * 1e6 / 100 // USER_HZ is 100 on Linux
}

// rssOf is a process's resident set, in KiB.
func rssOf(t *testing.T, pr *proc) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pr.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS for %d", pr.cmd.Process.Pid)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
