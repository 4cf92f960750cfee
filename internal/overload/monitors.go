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
	"slices"
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

// unlimited is where a cgroup memory limit means "none": v2 writes "max",
// v1 shows PAGE_COUNTER_MAX pages (9223372036854771712 with 4 KiB pages),
// and no machine has 4 EiB.
const unlimited = 1 << 62

// sysRoot prefixes the mount points read from mountinfo (tests point it at
// a fixture).
var sysRoot = "/"

// cgroupMount is one cgroup hierarchy from /proc/self/mountinfo: where it
// is mounted and which cgroup is the mount's root.
type cgroupMount struct{ point, root string }

// cgroupMounts returns the mount of the cgroup2 hierarchy and of the v1
// hierarchy carrying controller (ok false when absent or mountinfo is
// unreadable).
func cgroupMounts(controller string) (v2, v1 cgroupMount, v2ok, v1ok bool) {
	data, err := os.ReadFile(filepath.Join(procRoot, "self/mountinfo"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		// "36 25 0:31 /root /mount/point rw,... shared:1 - cgroup cgroup rw,memory":
		// optional fields end at "-", then the type and the super options.
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || len(g) < 1 {
			continue
		}
		m := cgroupMount{point: filepath.Join(sysRoot, unescapeMount(f[4])), root: unescapeMount(f[3])}
		// The first mount of each hierarchy wins, as runc finds them, but
		// a later mount on the same point hides the earlier one (a
		// container's own mount over the host's).
		switch g[0] {
		case "cgroup2":
			if !v2ok || v2.point == m.point {
				v2, v2ok = m, true
			}
		case "cgroup":
			if len(g) >= 3 && (!v1ok || v1.point == m.point) && slices.Contains(strings.Split(g[2], ","), controller) {
				v1, v1ok = m, true
			}
		}
	}
	return
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// inMount is the directory of cgroup path p (from /proc/self/cgroup)
// under mount m: the mount's root is stripped, as in a container the
// hierarchy is mounted from the container's own cgroup. A path outside
// the mount's root (a cgroup namespace entered after the mount, shown as
// "/.."), or one that does not exist, is the mount point itself: the
// container's root cgroup, which Envoy reads.
func inMount(m cgroupMount, p string) string {
	rel, err := filepath.Rel(m.root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return m.point
	}
	d := filepath.Join(m.point, rel)
	if _, err := os.Stat(d); err != nil {
		return m.point
	}
	return d
}

// memoryCgroup locates the process's memory cgroup and the top of what is
// visible of its hierarchy: on cgroup v2 when the memory controller is
// enabled for the process's cgroup (listed in its cgroup.controllers),
// else on the v1 hierarchy carrying memory. Without mountinfo (or no
// cgroup mount in it) it falls back to Envoy's fixed paths under
// /sys/fs/cgroup.
func memoryCgroup() (dir, top string, v2 bool) {
	var p1, p2 string
	var has2 bool
	data, _ := os.ReadFile(filepath.Join(procRoot, "self/cgroup"))
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			p2, has2 = f[2], true
		} else if slices.Contains(strings.Split(f[1], ","), "memory") {
			p1 = f[2]
		}
	}
	m2, m1, ok2, ok1 := cgroupMounts("memory")
	if ok2 && has2 {
		d := inMount(m2, p2)
		if b, err := os.ReadFile(filepath.Join(d, "cgroup.controllers")); err == nil && slices.Contains(strings.Fields(string(b)), "memory") {
			return d, m2.point, true
		}
	}
	if ok1 {
		return inMount(m1, p1), m1.point, false
	}
	if !ok2 {
		// No mountinfo: the layout Envoy assumes.
		d, v2 := ownCgroup("memory")
		if v2 {
			return d, cgroupRoot, true
		}
		return d, d, false
	}
	return filepath.Join(cgroupRoot, "memory"), filepath.Join(cgroupRoot, "memory"), false
}

// cgroupMemoryMonitor: memory in use against the cgroup's limit, capped by
// max_memory_bytes when set (Envoy: min of the two). Usage is
// memory.current (v2) or memory.usage_in_bytes (v1), page cache included,
// as Envoy reads them. The process's cgroup is its own (as Envoy in a
// container, where the mount's root is the container's cgroup); the limits
// of the ancestors visible under the mount count too, each against its own
// usage — the kernel reclaims and OOM-kills at whichever limit is reached
// first — and the pressure is the highest. No limit anywhere and no
// max_memory_bytes is a pressure of 0, as Envoy.
func cgroupMemoryMonitor(_ *Manager, name string, cfg proto.Message, path string, st *stats.Store) (*monitor, error) {
	c := cfg.(*cgroupmemoryv3.CgroupMemoryConfig)
	maxBytes := c.GetMaxMemoryBytes()
	// The process's cgroup does not change: found once.
	dir, top, v2 := memoryCgroup()
	usageFile, limitFile := "memory.usage_in_bytes", "memory.limit_in_bytes"
	if v2 {
		usageFile, limitFile = "memory.current", "memory.max"
	}
	return newMonitor(name, st, func() (float64, error) {
		pressure := 0.0
		for d, own := dir, true; ; d, own = filepath.Dir(d), false {
			used, err := readUint(filepath.Join(d, usageFile))
			if err != nil {
				if own {
					return 0, fmt.Errorf("cgroup memory usage: %w", err)
				}
				break // the v2 root has no memory.current
			}
			limit, err := readUint(filepath.Join(d, limitFile))
			if err != nil {
				return 0, fmt.Errorf("cgroup memory limit: %w", err)
			}
			if own && maxBytes > 0 && maxBytes < limit {
				limit = maxBytes
			}
			if limit > 0 && limit < unlimited {
				pressure = max(pressure, float64(used)/float64(limit))
			}
			if d == top || len(d) <= len(top) {
				break
			}
			if !v2 {
				// v1 with use_hierarchy 0 (kernels before 5.16 allowed it):
				// the parent neither counts nor limits its children.
				if b, err := os.ReadFile(filepath.Join(filepath.Dir(d), "memory.use_hierarchy")); err == nil && strings.TrimSpace(string(b)) == "0" {
					break
				}
			}
		}
		return pressure, nil
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
