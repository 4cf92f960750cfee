package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// MemoryCgroup is a real memory cgroup the test created: a child of the
// test process's own memory cgroup, removed when the test ends.
type MemoryCgroup struct {
	// Dir is the cgroup's directory.
	Dir string
	// V2 is true on the unified hierarchy (memory.current / memory.max),
	// false on the v1 memory hierarchy (memory.usage_in_bytes /
	// memory.limit_in_bytes).
	V2 bool
	// Mount is where the hierarchy is mounted (a namespaced child
	// remounts it there, so that its root is Dir).
	Mount string
}

// NewMemoryCgroup creates a child memory cgroup (named after the test and
// the process, so parallel runs do not meet) of the test process's own:
// on cgroup v2 when the process's cgroup has the memory controller
// (enabling it in cgroup.subtree_control if needed; where the cgroup's own
// processes forbid that, a sibling), else on the v1 memory hierarchy. The cgroup is removed in t.Cleanup once its processes have
// exited (register the cleanup that ends them after this call). Where
// cgroups cannot be created (not root, no memory controller) the test is
// skipped with the reason, unless LEGATE_REQUIRE_NETNS=1 (CI), where it
// fails.
func NewMemoryCgroup(t *testing.T) *MemoryCgroup {
	t.Helper()
	unavailable := func(format string, args ...any) *MemoryCgroup {
		t.Helper()
		why := fmt.Sprintf(format, args...)
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatalf("a memory cgroup is required: %s", why)
		}
		t.Skipf("needs a memory cgroup: %s", why)
		return nil
	}
	if os.Getuid() != 0 {
		return unavailable("creating cgroups needs root (uid %d)", os.Getuid())
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return unavailable("%v", err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return unavailable("%v", err)
	}
	var p1, p2 string
	var has1, has2 bool
	for _, line := range strings.Split(string(own), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			p2, has2 = f[2], true
		} else if slices.Contains(strings.Split(f[1], ","), "memory") {
			p1, has1 = f[2], true
		}
	}
	// The mounts: "id parent dev root point opts... - type source superopts".
	var m1, m2, r1, r2 string
	for _, line := range strings.Split(string(mounts), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup2" && m2 == "":
			m2, r2 = f[4], f[3]
		case g[0] == "cgroup" && m1 == "" && slices.Contains(strings.Split(g[2], ","), "memory"):
			m1, r1 = f[4], f[3]
		}
	}
	under := func(mount, root, p string) (string, bool) {
		rel, err := filepath.Rel(root, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			return "", false
		}
		return filepath.Join(mount, rel), true
	}
	name := fmt.Sprintf("legate-%s-%d", strings.NewReplacer("/", "-", " ", "-").Replace(t.Name()), os.Getpid())
	cg := &MemoryCgroup{}
	if parent, ok := under(m2, r2, p2); has2 && m2 != "" && ok {
		if ctl, _ := os.ReadFile(filepath.Join(parent, "cgroup.controllers")); slices.Contains(strings.Fields(string(ctl)), "memory") {
			sub, _ := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
			if !slices.Contains(strings.Fields(string(sub)), "memory") {
				if err := os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
					// The no-internal-process rule: a non-root cgroup with
					// processes cannot give controllers to children. Its
					// parent has memory in subtree_control (the process's
					// cgroup has the controller): the cgroup is a sibling.
					if filepath.Clean(parent) == filepath.Clean(m2) {
						return unavailable("cgroup v2: enabling memory in %s/cgroup.subtree_control (the top of the visible hierarchy): %v", parent, err)
					}
					t.Logf("cgroup v2: enabling memory in %s/cgroup.subtree_control: %v; the test's cgroup is a sibling of the process's", parent, err)
					parent = filepath.Dir(parent)
				}
			}
			cg.Dir, cg.V2, cg.Mount = filepath.Join(parent, name), true, m2
		}
	}
	if cg.Dir == "" {
		parent, ok := under(m1, r1, p1)
		if !has1 || m1 == "" || !ok {
			return unavailable("no memory controller: neither the cgroup v2 cgroup %q nor a v1 memory hierarchy has it", p2)
		}
		cg.Dir, cg.Mount = filepath.Join(parent, name), m1
	}
	if err := os.Mkdir(cg.Dir, 0o755); err != nil {
		return unavailable("creating %s: %v", cg.Dir, err)
	}
	t.Cleanup(func() {
		// rmdir fails while processes are in the cgroup: the cleanups
		// registered later (which end them) ran first; wait for the exits.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := os.Remove(cg.Dir)
			if err == nil || os.IsNotExist(err) {
				return
			}
			if time.Now().After(deadline) {
				procs, _ := os.ReadFile(filepath.Join(cg.Dir, "cgroup.procs"))
				t.Errorf("removing cgroup %s: %v (processes: %q)", cg.Dir, err, procs)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return cg
}

func (c *MemoryCgroup) file(usage bool) string {
	switch {
	case c.V2 && usage:
		return "memory.current"
	case c.V2:
		return "memory.max"
	case usage:
		return "memory.usage_in_bytes"
	}
	return "memory.limit_in_bytes"
}

// Usage is the cgroup's memory use in bytes, page cache included.
func (c *MemoryCgroup) Usage(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, c.file(true)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", c.file(true), err)
	}
	return n
}

// SetLimit writes the cgroup's memory limit (memory.max or
// memory.limit_in_bytes); 0 removes it.
func (c *MemoryCgroup) SetLimit(t testing.TB, bytes int64) {
	t.Helper()
	v := strconv.FormatInt(bytes, 10)
	if bytes == 0 {
		v = "max"
		if !c.V2 {
			v = "-1"
		}
	}
	if err := os.WriteFile(filepath.Join(c.Dir, c.file(false)), []byte(v), 0); err != nil {
		t.Fatalf("setting the cgroup's memory limit to %s: %v", v, err)
	}
}

// Command is name with args run inside the cgroup: a shell moves itself
// there and execs it, so that everything the command allocates is charged
// to the cgroup. With namespaced, the command also gets its own cgroup and
// mount namespaces (`unshare --cgroup --mount`, after the move, so that
// the cgroup is the namespace's root) with the hierarchy mounted anew on
// Mount in place of the host's: the command sees the cgroup as its hierarchy's root, as a
// container does. Namespaced needs unshare (util-linux); the caller
// checks with exec.LookPath.
func (c *MemoryCgroup) Command(namespaced bool, name string, args ...string) *exec.Cmd {
	script := `echo $$ > "$CG/cgroup.procs" && exec "$@"`
	argv := append([]string{name}, args...)
	if namespaced {
		typ := "-t cgroup -o memory"
		if c.V2 {
			typ = "-t cgroup2"
		}
		// The kernel refuses a hierarchy mounted again on its own mount
		// point (EBUSY): the host's mount goes first (in the new mount
		// namespace only).
		inner := `umount -l "$MNT" && mount ` + typ + ` cgroup "$MNT" && exec "$@"`
		argv = append([]string{"unshare", "--cgroup", "--mount", "sh", "-c", inner, "sh"}, argv...)
	}
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, argv...)...)
	cmd.Env = append(os.Environ(), "CG="+c.Dir, "MNT="+c.Mount)
	return cmd
}
