package nodeagent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A container's process starts as a re-execution of the binary that runs
// the agent (a test binary): this package's init sees execEnv, joins the
// pod's network namespace, sets up the container's mounts in the private
// mount namespace it was started in, and execs the container's executable.
// The spec arrives on fd 3; a failure before the exec is written to fd 4
// (closed on exec, so the agent reads EOF with nothing when the exec
// succeeded).
const execEnv = "LEGATE_KUBEENV_EXEC"

// execSpec is what the container init needs to start one container.
type execSpec struct {
	NetNS    string      // the pod sandbox's network namespace (/proc/PID/ns/net)
	Hostname string      // the pod's host name (a private UTS namespace)
	Shadow   string      // an empty directory for mount-point scaffolding
	Mounts   []mountSpec // parents before children
	Dir      string      // working directory
	Path     string      // executable
	Argv     []string
	Env      []string
}

// mountSpec is one bind mount of a volume (or a path in it) at a path of
// the container.
type mountSpec struct {
	Source   string
	Target   string
	ReadOnly bool
}

func init() {
	if os.Getenv(execEnv) != "1" {
		return
	}
	containerInit()
}

func containerInit() {
	runtime.LockOSThread() // namespaces are per thread: exec from this one
	errPipe := os.NewFile(4, "kubeenv-errors")
	syscall.CloseOnExec(4)
	fail := func(err error) {
		fmt.Fprint(errPipe, err.Error())
		os.Exit(127)
	}
	specFile := os.NewFile(3, "kubeenv-spec")
	var spec execSpec
	if err := json.NewDecoder(specFile).Decode(&spec); err != nil {
		fail(fmt.Errorf("read the container spec from the agent: %w", err))
	}
	specFile.Close()
	// The executable is opened before the mounts, which may cover it
	// (a volume at /root hides a binary under /root), and exec'd through
	// its descriptor.
	exe, err := openExecutable(spec.Path)
	if err != nil {
		fail(err)
	}
	if err := enterContainer(&spec); err != nil {
		fail(err)
	}
	err = unix.Exec(exe, spec.Argv, spec.Env)
	fail(fmt.Errorf("exec %s: %w", spec.Path, err))
}

// openExecutable opens path and returns the /proc/self/fd name to exec it
// by. The descriptor closes on exec, except for a script, whose
// interpreter opens it again.
func openExecutable(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open the executable %s: %w", path, err)
	}
	head := make([]byte, 2)
	if n, _ := unix.Pread(fd, head, 0); n == 2 && string(head) == "#!" {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return "", err
		}
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), nil
}

// enterContainer joins the pod's network namespace and builds the
// container's mounts and working directory.
func enterContainer(spec *execSpec) error {
	fd, err := unix.Open(spec.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the pod's network namespace %s: %w", spec.NetNS, err)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join the pod's network namespace: %w", err)
	}
	unix.Close(fd)
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set the host name %q: %w", spec.Hostname, err)
		}
	}
	for i, m := range spec.Mounts {
		if err := mountAt(m, filepath.Join(spec.Shadow, strconv.Itoa(i))); err != nil {
			return fmt.Errorf("mount %s at %s: %w", m.Source, m.Target, err)
		}
	}
	if err := os.Chdir(spec.Dir); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	return nil
}

// mountAt bind-mounts m.Source at m.Target. A target that does not exist
// on the host is made in this mount namespace only: its deepest existing
// parent is covered by a tmpfs holding bind mounts of everything that
// parent held (for "/", the tmpfs becomes the root), and the missing path
// is made in that tmpfs.
func mountAt(m mountSpec, shadow string) error {
	src, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	target, err := makeTarget(filepath.Clean(m.Target), src.IsDir(), shadow)
	if err != nil {
		return err
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mount: %w", err)
	}
	if m.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount read-only: %w", err)
		}
	}
	return nil
}

// makeTarget returns the real path of target, making it (a directory, or
// an empty file when dir is false) when it does not exist.
func makeTarget(target string, dir bool, shadow string) (string, error) {
	if !filepath.IsAbs(target) {
		return "", fmt.Errorf("mount path %q is not absolute", target)
	}
	parts := strings.Split(strings.TrimPrefix(target, "/"), "/")
	if target == "/" {
		parts = nil
	}
	k := len(parts)
	for ; k > 0; k-- {
		if _, err := os.Stat("/" + filepath.Join(parts[:k]...)); err == nil {
			break
		}
	}
	base, err := filepath.EvalSymlinks("/" + filepath.Join(parts[:k]...))
	if err != nil {
		return "", err
	}
	missing := parts[k:]
	if len(missing) == 0 {
		fi, err := os.Stat(base)
		if err != nil {
			return "", err
		}
		if fi.IsDir() != dir {
			return "", fmt.Errorf("%s exists and is not a %s", base, map[bool]string{true: "directory", false: "file"}[dir])
		}
		return base, nil
	}
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", base)
	}
	if err := coverDir(base, shadow); err != nil {
		return "", fmt.Errorf("make %s: %w", target, err)
	}
	p := base
	for i, name := range missing {
		p = filepath.Join(p, name)
		if i == len(missing)-1 && !dir {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return "", err
			}
			f.Close()
		} else if err := os.Mkdir(p, 0o755); err != nil {
			return "", err
		}
	}
	return p, nil
}

// coverDir covers dir with a tmpfs that holds what dir held (bind mounts
// of its entries, copies of its symbolic links), so that new entries can
// be made in it without touching the host.
func coverDir(dir, shadow string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(shadow, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", shadow, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		src, dst := filepath.Join(dir, e.Name()), filepath.Join(shadow, e.Name())
		info, err := os.Lstat(src)
		if err != nil {
			continue // gone meanwhile
		}
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			to, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(to, dst); err != nil {
				return err
			}
			continue
		case info.IsDir():
			if err := os.Mkdir(dst, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	if err := os.Chmod(shadow, fi.Mode().Perm()); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		os.Lchown(shadow, int(st.Uid), int(st.Gid))
	}
	if dir != "/" {
		if err := unix.Mount(shadow, dir, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move the tmpfs over %s: %w", dir, err)
		}
		return nil
	}
	// A new top-level directory: the tmpfs becomes the root (moved over
	// "/", then entered with chroot, as a container runtime pivots).
	if err := unix.Chdir(shadow); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move the tmpfs over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot into the covered root: %w", err)
	}
	return unix.Chdir("/")
}
