// The overload manager's cgroup_memory monitor on a real memory cgroup.

package features_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// cgroupProxyEnv names the bootstrap file of TestOverloadCgroupHelper, set
// only in the re-executed test binary that runs the proxy in the cgroup.
const cgroupProxyEnv = "LEGATE_TEST_CGROUP_PROXY"

// cgroupProxyMarker starts the helper's line with its listener and admin
// addresses.
const cgroupProxyMarker = "LEGATE-CGROUP-PROXY"

// TestOverloadCgroupHelper is not a test: in the test binary re-executed
// inside the test's memory cgroup (TestOverloadCgroupMemory) it runs the
// proxy from the bootstrap named by LEGATE_TEST_CGROUP_PROXY, prints its
// addresses and serves until its stdin closes. Re-executing the test
// binary spares building cmd/legate.
func TestOverloadCgroupHelper(t *testing.T) {
	path := os.Getenv(cgroupProxyEnv)
	if path == "" {
		t.Skip("the proxy process of TestOverloadCgroupMemory")
	}
	y, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := testutil.StartProxy(t, string(y), nil)
	fmt.Printf("%s %s %s\n", cgroupProxyMarker, p.Addr("http"), p.Admin)
	io.Copy(io.Discard, os.Stdin)
}

// TestOverloadCgroupMemory: envoy.resource_monitors.cgroup_memory on a real
// memory cgroup, a child of the test's own, holding a real proxy process —
// with the cgroup's limit set just above what the proxy uses, the pressure
// (usage / limit) passes stop_accepting_requests's threshold (0.3): requests get
// 503 "envoy overloaded", reduce_timeouts scales; with the limit raised
// from outside, the proxy serves again. The test's own cgroup has no limit,
// so a monitor reading any other cgroup than the proxy's sees no pressure
// and the test fails. The proxy runs both in the cgroup as it is (the
// monitor finds its own cgroup under the host's mount of the hierarchy)
// and, as in a container, in its own cgroup and mount namespaces with the
// hierarchy mounted anew, its root being the cgroup (where Envoy reads
// /sys/fs/cgroup/memory or /sys/fs/cgroup).
func TestOverloadCgroupMemory(t *testing.T) {
	if os.Getenv(cgroupProxyEnv) != "" {
		t.Skip("in the helper process")
	}
	testutil.NewMemoryCgroup(t) // skips here where cgroups cannot be made
	for _, ns := range []bool{false, true} {
		name := map[bool]string{false: "own cgroup", true: "cgroup namespace"}[ns]
		t.Run(name, func(t *testing.T) {
			if ns {
				if _, err := exec.LookPath("unshare"); err != nil {
					if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
						t.Fatal("unshare (util-linux) is required")
					}
					t.Skip("needs unshare (util-linux)")
				}
			}
			testCgroupMemory(t, ns)
		})
	}
}

func testCgroupMemory(t *testing.T, namespaced bool) {
	cg := testutil.NewMemoryCgroup(t)
	t.Logf("cgroup %s (v2 %v)", cg.Dir, cg.V2)
	bootstrap := cfg{
		vhosts: vhost("{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: served}}}"),
		extra: `overload_manager:
  refresh_interval: 0.05s
  resource_monitors:
  - name: envoy.resource_monitors.cgroup_memory
    typed_config: {"@type": type.googleapis.com/envoy.extensions.resource_monitors.cgroup_memory.v3.CgroupMemoryConfig}
  actions:
  - name: envoy.overload_actions.stop_accepting_requests
    triggers: [{name: envoy.resource_monitors.cgroup_memory, threshold: {value: 0.3}}]
  - name: envoy.overload_actions.reduce_timeouts
    triggers: [{name: envoy.resource_monitors.cgroup_memory, scaled: {scaling_threshold: 0.2, saturation_threshold: 0.99}}]
    typed_config: {"@type": type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig,
      timer_scale_factors: [{timer: HTTP_DOWNSTREAM_CONNECTION_IDLE, min_timeout: 1s}]}
`,
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(bootstrap.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := cg.Command(namespaced, os.Args[0], "-test.run=^TestOverloadCgroupHelper$", "-test.count=1")
	cmd.Env = append(cmd.Env, cgroupProxyEnv+"="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	stderr := &testutil.LogBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var out testutil.LogBuffer
	addrs := make(chan []string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == cgroupProxyMarker {
				addrs <- f[1:]
			} else {
				fmt.Fprintln(&out, sc.Text())
			}
		}
		cmd.Wait()
	}()
	// After NewMemoryCgroup's: runs first, so the cgroup is empty when
	// it is removed.
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("proxy process output:\n%s%s", out.String(), stderr.String())
		}
	})
	var proxyAddr, admin string
	select {
	case a := <-addrs:
		proxyAddr, admin = a[0], a[1]
	case <-done:
		t.Fatalf("the proxy process exited at start:\n%s%s", out.String(), stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatal("the proxy process did not start in 20 s")
	}
	c := testutil.Client()
	stat := func(name string) int64 {
		t.Helper()
		select {
		case <-done:
			// memory.limit_in_bytes reached: the kernel's OOM killer.
			t.Fatalf("the proxy process exited (killed at the cgroup's memory limit?): %v", cmd.ProcessState)
		default:
		}
		_, _, body := testutil.Get(t, c, "http://"+admin+"/stats?filter="+name+"$")
		for _, line := range strings.Split(body, "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && k == name {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				return n
			}
		}
		return -1
	}
	const (
		pressure = "overload.envoy.resource_monitors.cgroup_memory.pressure"
		active   = "overload.envoy.overload_actions.stop_accepting_requests.active"
		scale    = "overload.envoy.overload_actions.reduce_timeouts.scale_percent"
		failed   = "overload.envoy.resource_monitors.cgroup_memory.failed_updates"
	)
	// No limit yet: no pressure, requests served.
	if code, _, body := testutil.Get(t, c, "http://"+proxyAddr+"/"); code != 200 || body != "served" {
		t.Fatalf("without a limit: %d %q, want 200 served", code, body)
	}
	if p := stat(pressure); p >= 30 {
		t.Fatalf("%s = %d without a limit on the test's cgroup: an ancestor's limit is nearly reached", pressure, p)
	}
	// waitStat polls the admin API gently: each poll allocates in the
	// proxy, which runs close to its limit.
	waitStat := func(name string, want int64, msg string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); stat(name) != want; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never %d: %s (pressure %d%%, failed updates %d, cgroup usage %d)", name, want, msg, stat(pressure), stat(failed), cg.Usage(t))
			}
		}
	}
	// A limit twice what the proxy uses: a pressure near 0.5, over the
	// 0.3 threshold and clear of the limit (the proxy's heap grows as it
	// serves; at the limit the kernel kills it).
	used := cg.Usage(t)
	if used == 0 {
		t.Fatalf("the cgroup %s charges nothing: the proxy is not in it", cg.Dir)
	}
	limit := 2 * used
	cg.SetLimit(t, limit)
	t.Logf("usage %d bytes, limit %d", used, limit)
	waitStat(active, 1, "the monitor does not read the proxy's cgroup")
	if code, _, body := testutil.Get(t, c, "http://"+proxyAddr+"/"); code != 503 || body != "envoy overloaded" {
		t.Errorf("over the limit: %d %q, want 503 envoy overloaded", code, body)
	}
	// The pressure is the cgroup's, as read from outside (it moves a
	// little between the two readings).
	want := 100 * cg.Usage(t) / limit
	if p := stat(pressure); p < 30 || p > 100 || p < want-15 || p > want+15 {
		t.Errorf("%s = %d, want about %d (the cgroup's usage over its limit)", pressure, p, want)
	}
	if s := stat(scale); s <= 0 {
		t.Errorf("%s = %d, want reduce_timeouts scaling", scale, s)
	}
	if n := stat("http.ingress.downstream_rq_overload_close"); n < 1 {
		t.Errorf("http.ingress.downstream_rq_overload_close = %d, want ≥ 1", n)
	}
	// The limit raised from outside: the pressure falls, requests pass.
	cg.SetLimit(t, 1<<30)
	waitStat(active, 0, "still overloaded under a 1 GiB limit")
	if code, _, body := testutil.Get(t, c, "http://"+proxyAddr+"/"); code != 200 || body != "served" {
		t.Errorf("after raising the limit: %d %q, want 200 served", code, body)
	}
	if p := stat(pressure); p >= 30 {
		t.Errorf("%s = %d under a 1 GiB limit", pressure, p)
	}
	if n := stat(failed); n != 0 {
		t.Errorf("%s = %d, want 0", failed, n)
	}
}
