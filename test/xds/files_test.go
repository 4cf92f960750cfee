package xds

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestDynamicConfigFromFiles runs Envoy's dynamic-config-fs example: LDS and
// CDS from files, reloaded when a new version is moved into place.
func TestDynamicConfigFromFiles(t *testing.T) {
	shared := filepath.Join(testutil.SharedDir(t), "conformance", "envoy-examples")
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(shared, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dir := t.TempDir()
	u1 := testutil.StartUpstream(t, testutil.EchoHandler("one"))
	u2 := testutil.StartUpstream(t, testutil.EchoHandler("two"))
	listen := freeAddr(t)
	_, lport, _ := net.SplitHostPort(listen)

	// The example's files, pointed at loopback: the listener port and the
	// cluster's backend ("service:8080" in the docker-compose setup).
	lds := strings.Replace(read("examples__dynamic-config-fs__configs__lds.yaml"), "port_value: 10000", "port_value: "+lport, 1)
	lds = strings.Replace(lds, "address: 0.0.0.0", "address: 127.0.0.1", 1)
	cdsTmpl := read("examples__dynamic-config-fs__configs__cds.yaml")
	cds := func(addr string) string {
		h, p, _ := net.SplitHostPort(addr)
		out := regexp.MustCompile(`address: \S+\n(\s+)port_value: \d+`).ReplaceAllString(cdsTmpl, "address: "+h+"\n${1}port_value: "+p)
		return out
	}
	// Atomic replacement, as the example (and Kubernetes ConfigMap mounts) do.
	write := func(name, content string) {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("lds.yaml", lds)
	write("cds.yaml", cds(u1.Addr))
	boot := read("examples__dynamic-config-fs__envoy.yaml")
	boot = strings.ReplaceAll(boot, "/var/lib/envoy/lds.yaml", filepath.Join(dir, "lds.yaml"))
	boot = strings.ReplaceAll(boot, "/var/lib/envoy/cds.yaml", filepath.Join(dir, "cds.yaml"))
	boot = regexp.MustCompile(`port_value: \d+`).ReplaceAllString(boot, "port_value: 0")
	p := testutil.StartProxy(t, boot, nil)
	url := "http://" + listen + "/"
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, body, _ := getQuiet(url)
		return c == 200 && strings.Contains(body, "upstream=one")
	}, "the file-configured listener does not reach the first backend")

	// Move in a new CDS file pointing at the second backend, under load.
	ld := startLoad(url, 2)
	write("cds.yaml", cds(u2.Addr))
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, body, _ := getQuiet(url)
		return strings.Contains(body, "upstream=two")
	}, "the moved-in CDS file was not applied")
	// A broken file is rejected; the last good config keeps serving.
	write("cds.yaml", "resources: [{\"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster, name: ''}]")
	testutil.Eventually(t, 5*time.Second, func() bool { return p.Stat(t, "cluster_manager.cds.update_rejected") >= 1 }, "broken file not rejected")
	time.Sleep(200 * time.Millisecond)
	ld.finish()
	if c, body, _ := getQuiet(url); c != 200 || !strings.Contains(body, "upstream=two") {
		t.Fatalf("after a rejected file: %d %s", c, body)
	}
	if f := ld.failed.Load(); f != 0 {
		t.Errorf("%d requests failed while the config files changed: %v", f, ld.errs)
	}
}
