package overload

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	cgroupmemoryv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/cgroup_memory/v3"
	cpuutilizationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/cpu_utilization/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	extension.Register(extension.Extension{Name: "envoy.resource_monitors.cgroup_memory", Category: extension.ResourceMonitor,
		Config: &cgroupmemoryv3.CgroupMemoryConfig{}, Factory: monitorFactory(cgroupMemoryMonitor),
		Notes: "cgroup v2 (memory.current / memory.max) or v1 (memory.usage_in_bytes / memory.limit_in_bytes) of the process's own cgroup"})
	extension.Register(extension.Extension{Name: "envoy.resource_monitors.cpu_utilization", Category: extension.ResourceMonitor,
		Config: &cpuutilizationv3.CpuUtilizationConfig{}, Factory: monitorFactory(cpuMonitor),
		Notes: "HOST from /proc/stat; CONTAINER from the cgroup's cpu.stat against cpu.max and cpuset.cpus.effective (v2) or cpuacct.usage against cpu.shares (v1); smoothed as Envoy (EWMA, alpha 0.05)"})
}

// cgroupRoot and procRoot are where cgroups and /proc are read (tests
// point them at fixtures).
var (
	cgroupRoot = "/sys/fs/cgroup"
	procRoot   = "/proc"
)

// ownCgroup returns the directory of the process's cgroup: the v2 entry
// ("0::/path") of /proc/self/cgroup under the unified mount, or for v1 the
// controller's mount (Envoy reads the container's root cgroup, which is
// the process's own in a container).
func ownCgroup(controller string) (dir string, v2 bool) {
	data, _ := os.ReadFile(filepath.Join(procRoot, "self/cgroup"))
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			d := filepath.Join(cgroupRoot, f[2])
			if _, err := os.Stat(filepath.Join(d, "cgroup.controllers")); err == nil {
				return d, true
			}
		}
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return cgroupRoot, true
	}
	return filepath.Join(cgroupRoot, controller), false
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return math.MaxUint64, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// cgroupMemoryMonitor: memory in use against the cgroup's limit, capped by
// max_memory_bytes when set.
func cgroupMemoryMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	c := cfg.(*cgroupmemoryv3.CgroupMemoryConfig)
	maxBytes := c.GetMaxMemoryBytes()
	// The process's cgroup does not change: found once.
	dir, v2 := ownCgroup("memory")
	usageFile, limitFile := "memory.usage_in_bytes", "memory.limit_in_bytes"
	if v2 {
		usageFile, limitFile = "memory.current", "memory.max"
	}
	return newMonitor(name, st, func() (float64, error) {
		used, err := readUint(filepath.Join(dir, usageFile))
		if err != nil {
			return 0, fmt.Errorf("cgroup memory usage: %w", err)
		}
		limit, err := readUint(filepath.Join(dir, limitFile))
		if err != nil {
			return 0, fmt.Errorf("cgroup memory limit: %w", err)
		}
		if maxBytes > 0 && maxBytes < limit {
			limit = maxBytes
		}
		if limit == 0 || limit == math.MaxUint64 {
			return 0, errors.New("no cgroup memory limit (memory.max is max) and no max_memory_bytes")
		}
		return float64(used) / float64(limit), nil
	}), nil
}

// dampening is Envoy's EWMA factor for CPU utilization: past readings
// weigh heavily, so a spike does not flip actions at once.
const dampening = 0.05

// cpuMonitor: CPU utilization of the host or of the container.
func cpuMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	c := cfg.(*cpuutilizationv3.CpuUtilizationConfig)
	var sample func() (work, total float64, err error)
	switch c.GetMode() {
	case cpuutilizationv3.CpuUtilizationConfig_HOST:
		sample = hostCPU
	case cpuutilizationv3.CpuUtilizationConfig_CONTAINER:
		sample = containerCPU
	default:
		return nil, config.Errorf(config.Join(path, "mode"), "unknown mode %v", c.GetMode())
	}
	var mu sync.Mutex
	var lastWork, lastTotal, util float64
	first := true
	return newMonitor(name, st, func() (float64, error) {
		work, total, err := sample()
		if err != nil {
			return 0, err
		}
		mu.Lock()
		defer mu.Unlock()
		if first || total <= lastTotal {
			// As Envoy: the first reading is the baseline.
			first, lastWork, lastTotal = false, work, total
			return util, nil
		}
		cur := (work - lastWork) / (total - lastTotal)
		lastWork, lastTotal = work, total
		util = cur*dampening + (1-dampening)*util
		return util, nil
	}), nil
}

// hostCPU reads the "cpu" line of /proc/stat: work is user+nice+system,
// total adds idle (Envoy's LinuxCpuStatsReader).
func hostCPU() (float64, float64, error) {
	f, err := os.Open(filepath.Join(procRoot, "stat"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, errors.New("/proc/stat is empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", sc.Text())
	}
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseUint(fields[i+1], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		t[i] = float64(v)
	}
	work := t[0] + t[1] + t[2]
	return work, work + t[3], nil
}

// containerCPU: cgroup v2 usage_usec over wall time × the cores the cgroup
// may use (cpu.max quota, at most cpuset.cpus.effective); v1 cpuacct.usage
// (ns) over wall time × cpu.shares/1024 cores.
func containerCPU() (float64, float64, error) {
	now := float64(time.Now().UnixNano())
	dir, v2 := ownCgroup("cpu")
	if v2 {
		stat, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return 0, 0, err
		}
		var usec float64 = -1
		for _, line := range bytes.Split(stat, []byte("\n")) {
			if f := strings.Fields(string(line)); len(f) == 2 && f[0] == "usage_usec" {
				v, err := strconv.ParseFloat(f[1], 64)
				if err != nil {
					return 0, 0, fmt.Errorf("cpu.stat: %w", err)
				}
				usec = v
			}
		}
		if usec < 0 {
			return 0, 0, errors.New("cpu.stat has no usage_usec")
		}
		cores := float64(cpusetCount(filepath.Join(dir, "cpuset.cpus.effective")))
		if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
			if f := strings.Fields(string(b)); len(f) == 2 && f[0] != "max" {
				q, _ := strconv.ParseFloat(f[0], 64)
				per, _ := strconv.ParseFloat(f[1], 64)
				if per > 0 && q/per < cores {
					cores = q / per
				}
			}
		}
		return usec * 1000, now * cores, nil
	}
	usage, err := readUint(filepath.Join(cgroupRoot, "cpuacct", "cpuacct.usage"))
	if err != nil {
		return 0, 0, err
	}
	shares, err := readUint(filepath.Join(cgroupRoot, "cpu", "cpu.shares"))
	if err != nil || shares == 0 {
		return 0, 0, fmt.Errorf("cpu.shares: %v", err)
	}
	return float64(usage), now * float64(shares) / 1024, nil
}

// cpusetCount counts the CPUs of a cpuset list ("0-3,6"); the machine's
// count when the file is missing.
func cpusetCount(path string) int {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return runtime.NumCPU()
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		if !isRange {
			if err1 == nil {
				n++
			}
			continue
		}
		z, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && z >= a {
			n += z - a + 1
		}
	}
	if n == 0 {
		return runtime.NumCPU()
	}
	return n
}
