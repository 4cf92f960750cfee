package overload

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	cgroupmemoryv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/cgroup_memory/v3"
	cpuutilizationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/cpu_utilization/v3"

	"github.com/legateproxy/legate/internal/stats"
)

// fixture points the monitors at a fake /proc and cgroup tree.
func fixture(t *testing.T, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldC, oldP, oldS := cgroupRoot, procRoot, sysRoot
	cgroupRoot, procRoot, sysRoot = filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc"), dir
	t.Cleanup(func() { cgroupRoot, procRoot, sysRoot = oldC, oldP, oldS })
}

func TestCgroupMemoryMonitor(t *testing.T) {
	fixture(t, map[string]string{
		"proc/self/cgroup":                     "0::/pod/legate\n",
		"cgroup/pod/legate/cgroup.controllers": "cpu memory\n",
		"cgroup/pod/legate/memory.current":     "300\n",
		"cgroup/pod/legate/memory.max":         "1000\n",
	})
	st := stats.NewStore()
	m, _ := cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{}, "p", st)
	if p, err := m.read(); err != nil || math.Abs(p-0.3) > 1e-9 {
		t.Errorf("v2 pressure %v %v, want 0.3", p, err)
	}
	// max_memory_bytes below the cgroup's limit is the limit.
	m, _ = cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{MaxMemoryBytes: 600}, "p", st)
	if p, _ := m.read(); math.Abs(p-0.5) > 1e-9 {
		t.Errorf("capped pressure %v, want 0.5", p)
	}
	// No limit anywhere: a pressure of 0, as Envoy.
	os.WriteFile(filepath.Join(cgroupRoot, "pod/legate/memory.max"), []byte("max\n"), 0o644)
	m, _ = cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{}, "p", st)
	if p, err := m.read(); err != nil || p != 0 {
		t.Errorf("unlimited cgroup without max_memory_bytes: %v %v, want 0", p, err)
	}
}

// mountinfo lines of the layouts below.
const (
	miV2       = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
	miHybridV1 = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n" +
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
	miDockerV1 = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n"
)

// The memory cgroup is found from /proc/self/cgroup and mountinfo: v2 when
// the memory controller is enabled for the process's cgroup, else v1; the
// process's own cgroup relative to the mount's root (a container's root
// cgroup when the hierarchy is mounted from it or in a cgroup namespace);
// ancestors' limits count against their own usage.
func TestCgroupMemoryLocation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		max   uint64
		want  float64
	}{
		{"v2 own cgroup", map[string]string{
			"proc/self/mountinfo": miV2, "proc/self/cgroup": "0::/pod/legate\n",
			"sys/fs/cgroup/pod/legate/cgroup.controllers": "cpu memory\n",
			"sys/fs/cgroup/pod/legate/memory.current":     "300\n", "sys/fs/cgroup/pod/legate/memory.max": "1000\n",
			"sys/fs/cgroup/pod/memory.current": "400\n", "sys/fs/cgroup/pod/memory.max": "max\n",
		}, 0, 0.3},
		{"v2 max_memory_bytes below the limit", map[string]string{
			"proc/self/mountinfo": miV2, "proc/self/cgroup": "0::/pod/legate\n",
			"sys/fs/cgroup/pod/legate/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/pod/legate/memory.current":     "300\n", "sys/fs/cgroup/pod/legate/memory.max": "max\n",
		}, 600, 0.5},
		{"v2 an ancestor's limit", map[string]string{
			"proc/self/mountinfo": miV2, "proc/self/cgroup": "0::/pod/legate\n",
			"sys/fs/cgroup/pod/legate/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/pod/legate/memory.current":     "300\n", "sys/fs/cgroup/pod/legate/memory.max": "max\n",
			"sys/fs/cgroup/pod/memory.current": "900\n", "sys/fs/cgroup/pod/memory.max": "1000\n",
		}, 0, 0.9},
		{"v2 cgroup namespace", map[string]string{
			"proc/self/mountinfo": miV2, "proc/self/cgroup": "0::/\n",
			"sys/fs/cgroup/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/memory.current":     "200\n", "sys/fs/cgroup/memory.max": "1000\n",
		}, 0, 0.2},
		{"v2 without the memory controller: v1", map[string]string{
			"proc/self/mountinfo": miHybridV1, "proc/self/cgroup": "4:memory:/job\n0::/job\n",
			"sys/fs/cgroup/unified/job/cgroup.controllers": "\n",
			"sys/fs/cgroup/unified/job/memory.current":     "999\n", "sys/fs/cgroup/unified/job/memory.max": "1000\n",
			"sys/fs/cgroup/memory/job/memory.usage_in_bytes": "250\n", "sys/fs/cgroup/memory/job/memory.limit_in_bytes": "1000\n",
			"sys/fs/cgroup/memory/memory.usage_in_bytes": "5000\n", "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, 0.25},
		{"v1 an ancestor's limit", map[string]string{
			"proc/self/mountinfo": miHybridV1, "proc/self/cgroup": "4:memory:/a/b\n0::/\n",
			"sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": "100\n", "sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/memory/a/memory.usage_in_bytes": "700\n", "sys/fs/cgroup/memory/a/memory.limit_in_bytes": "1000\n",
			"sys/fs/cgroup/memory/memory.usage_in_bytes": "5000\n", "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, 0.7},
		{"v1 a parent without use_hierarchy", map[string]string{
			"proc/self/mountinfo": miHybridV1, "proc/self/cgroup": "4:memory:/a/b\n0::/\n",
			"sys/fs/cgroup/memory/a/b/memory.usage_in_bytes": "100\n", "sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "1000\n",
			"sys/fs/cgroup/memory/a/memory.usage_in_bytes": "700\n", "sys/fs/cgroup/memory/a/memory.limit_in_bytes": "800\n",
			"sys/fs/cgroup/memory/a/memory.use_hierarchy": "0\n",
		}, 0, 0.1},
		{"v1 container: the mount's root is the process's cgroup", map[string]string{
			"proc/self/mountinfo": miDockerV1, "proc/self/cgroup": "9:memory:/docker/abc\n",
			"sys/fs/cgroup/memory/memory.usage_in_bytes": "100\n", "sys/fs/cgroup/memory/memory.limit_in_bytes": "400\n",
		}, 0, 0.25},
		{"v1 unlimited", map[string]string{
			"proc/self/mountinfo": miHybridV1, "proc/self/cgroup": "4:memory:/\n",
			"sys/fs/cgroup/memory/memory.usage_in_bytes": "5000\n", "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture(t, tc.files)
			m, _ := cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{MaxMemoryBytes: tc.max}, "p", stats.NewStore())
			if p, err := m.read(); err != nil || math.Abs(p-tc.want) > 1e-9 {
				t.Errorf("pressure %v %v, want %v", p, err, tc.want)
			}
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", "/plain": "/plain", `/x\`: `/x\`, `/t\011`: "/t\t"} {
		if got := unescapeMount(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestCgroupV1MemoryMonitor(t *testing.T) {
	fixture(t, map[string]string{
		"proc/self/cgroup":                    "5:memory:/x\n",
		"cgroup/memory/memory.usage_in_bytes": "250",
		"cgroup/memory/memory.limit_in_bytes": "1000",
	})
	m, _ := cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{}, "p", stats.NewStore())
	if p, err := m.read(); err != nil || math.Abs(p-0.25) > 1e-9 {
		t.Errorf("v1 pressure %v %v, want 0.25", p, err)
	}
}

// The host CPU monitor: work/total deltas of /proc/stat, smoothed with
// Envoy's EWMA (alpha 0.05); the first reading is the baseline.
func TestHostCPUMonitor(t *testing.T) {
	fixture(t, map[string]string{"proc/stat": "cpu  100 0 100 800 0 0 0\ncpu0 1 2 3 4\n"})
	m, _ := cpuMonitor(nil, "cpu", &cpuutilizationv3.CpuUtilizationConfig{Mode: cpuutilizationv3.CpuUtilizationConfig_HOST}, "p", stats.NewStore())
	if p, err := m.read(); err != nil || p != 0 {
		t.Fatalf("baseline %v %v", p, err)
	}
	// +300 work, +100 idle: 75 % busy this interval.
	os.WriteFile(filepath.Join(procRoot, "stat"), []byte("cpu  250 0 250 900 0 0 0\n"), 0o644)
	if p, _ := m.read(); math.Abs(p-0.75*0.05) > 1e-9 {
		t.Errorf("smoothed %v, want %v", p, 0.75*0.05)
	}
	os.WriteFile(filepath.Join(procRoot, "stat"), []byte("garbage\n"), 0o644)
	if _, err := m.read(); err == nil {
		t.Error("malformed /proc/stat read")
	}
}

func TestCpusetCount(t *testing.T) {
	dir := t.TempDir()
	for in, want := range map[string]int{"0-3": 4, "0": 1, "0-1,4,6-7": 5} {
		p := filepath.Join(dir, "cpuset")
		os.WriteFile(p, []byte(in+"\n"), 0o644)
		if got := cpusetCount(p); got != want {
			t.Errorf("%q: %d, want %d", in, got, want)
		}
	}
}

// Scaled triggers and reduce_timeouts: the timer is the configured
// duration at scale 0, the minimum when saturated, linear between.
func TestScaledTimers(t *testing.T) {
	tr := trigger{scaled: true, scaling: 0.5, saturation: 0.9}
	for p, want := range map[float64]float64{0.2: 0, 0.5: 0, 0.7: 0.5, 0.9: 1, 1.5: 1} {
		if got := tr.value(p); math.Abs(got-want) > 1e-9 {
			t.Errorf("value(%v) = %v, want %v", p, got, want)
		}
	}
	m := &Manager{actions: map[string]*action{ReduceTimeouts: {name: ReduceTimeouts,
		timers: map[Timer]timerMin{ConnIdle: {d: time.Second, isD: true}, StreamIdle: {percent: 10}}}}, log: slog.Default()}
	a := m.actions[ReduceTimeouts]
	m.reduce = a
	a.value.Store(0)
	if got := m.Scale(ConnIdle, 11*time.Second); got != 11*time.Second {
		t.Errorf("unscaled: %v", got)
	}
	a.value.Store(5e5) // half way
	if got := m.Scale(ConnIdle, 11*time.Second); got != 6*time.Second {
		t.Errorf("half: %v, want 6s", got)
	}
	a.value.Store(1e6)
	if got := m.Scale(ConnIdle, 11*time.Second); got != time.Second {
		t.Errorf("saturated: %v, want the 1s minimum", got)
	}
	if got := m.Scale(StreamIdle, 100*time.Second); got != 10*time.Second {
		t.Errorf("min_scale 10%%: %v", got)
	}
	if got := m.Scale(ConnMax, time.Minute); got != time.Minute {
		t.Errorf("a timer without a scale factor changed: %v", got)
	}
	if got := (*Manager)(nil).Scale(ConnIdle, time.Minute); got != time.Minute {
		t.Errorf("nil manager: %v", got)
	}
}
