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
	oldC, oldP := cgroupRoot, procRoot
	cgroupRoot, procRoot = filepath.Join(dir, "cgroup"), filepath.Join(dir, "proc")
	t.Cleanup(func() { cgroupRoot, procRoot = oldC, oldP })
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
	// No limit anywhere: a failed update, not a pressure of 0.
	os.WriteFile(filepath.Join(cgroupRoot, "pod/legate/memory.max"), []byte("max\n"), 0o644)
	m, _ = cgroupMemoryMonitor(nil, "mem", &cgroupmemoryv3.CgroupMemoryConfig{}, "p", st)
	if _, err := m.read(); err == nil {
		t.Error("unlimited cgroup without max_memory_bytes gave a pressure")
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
