package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// envoyFlags are the flags of Envoy's command line (source/server/
// options_impl.cc) besides those proxyFlags handles itself: hot restart,
// file flushing, threads, core dumps and the like. Each is honoured, or
// accepted where it has no effect without hot restart (which Legate does
// not implement: every start is Envoy's epoch 0 with no parent), or
// refused with an error naming it. None is silently ignored.
type envoyFlags struct {
	baseID, restartEpoch, parentShutdownTimeS uint
	useDynamicBaseID, disableHotRestart       bool
	baseIDPath, adminAddressPath              string
	fileFlushIntervalMsec, fileFlushMinSizeKB uint
	localAddressIPVersion                     string
	cpusetThreads                             bool
	socketPath, socketMode                    string
	enableMutexTracing, enableCoreDump        bool
	hotRestartVersion                         bool
	skipHotRestartOnNoParent                  bool
	skipHotRestartParentStats                 bool
	enableFineGrainLogging                    bool
	logStacktraceSingleEntry                  bool
	statsTags                                 multiFlag
}

// multiFlag is a repeatable string flag (--stats-tag a:b --stats-tag c:d).
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// Legate's access-log files (internal/accesslog) are flushed every second
// and when 64 KiB are buffered.
const (
	accessLogFlushMsec   = 1000
	accessLogFlushSizeKB = 64
)

func (e *envoyFlags) define(fs *flag.FlagSet) {
	fs.UintVar(&e.baseID, "base-id", 0, "hot restart base ID: accepted, no effect (Legate has no hot restart, so no shared memory or domain socket to keep apart)")
	fs.BoolVar(&e.useDynamicBaseID, "use-dynamic-base-id", false, "accepted, no effect (no hot restart)")
	fs.StringVar(&e.baseIDPath, "base-id-path", "", "write the base ID (--base-id) to this file, as Envoy (not with --disable-hot-restart)")
	fs.UintVar(&e.restartEpoch, "restart-epoch", 0, "hot restart epoch: only 0 (a cold start); hot restart is not implemented")
	fs.BoolVar(&e.disableHotRestart, "disable-hot-restart", false, "accepted: Legate has no hot restart")
	fs.UintVar(&e.parentShutdownTimeS, "parent-shutdown-time-s", 900, "hot restart parent shutdown time: accepted, no effect (no hot restart, so no parent)")
	fs.BoolVar(&e.hotRestartVersion, "hot-restart-version", false, "print the hot restart compatibility version (\"disabled\") and exit")
	fs.BoolVar(&e.skipHotRestartOnNoParent, "skip-hot-restart-on-no-parent", false, "accepted, no effect (epoch 0 has no parent)")
	fs.BoolVar(&e.skipHotRestartParentStats, "skip-hot-restart-parent-stats", false, "accepted, no effect (no parent to take stats from)")
	fs.StringVar(&e.socketPath, "socket-path", "@envoy_domain_socket", "hot restart socket: accepted, no effect (no hot restart)")
	fs.StringVar(&e.socketMode, "socket-mode", "600", "hot restart socket permissions (octal): checked as Envoy, no effect")
	fs.StringVar(&e.adminAddressPath, "admin-address-path", "", "write the admin address (host:port) to this file once it listens")
	fs.UintVar(&e.fileFlushIntervalMsec, "file-flush-interval-msec", 10000, fmt.Sprintf("access-log flush interval: Legate flushes every %d ms, so any interval of at least that is met; a shorter one is an error", accessLogFlushMsec))
	fs.UintVar(&e.fileFlushMinSizeKB, "file-flush-min-size-kb", accessLogFlushSizeKB, fmt.Sprintf("access-log buffer size before a flush: only %d (Legate's fixed buffer)", accessLogFlushSizeKB))
	fs.StringVar(&e.localAddressIPVersion, "local-address-ip-version", "v4", "v4 or v6: only v4, Envoy's default (Legate derives no local address of its own)")
	fs.BoolVar(&e.cpusetThreads, "cpuset-threads", false, "without --concurrency, size GOMAXPROCS from the CPUs of the process's cpuset, as Envoy sizes its workers")
	fs.BoolVar(&e.enableMutexTracing, "enable-mutex-tracing", false, "record mutex contention (Go's mutex profile: /debug/pprof/mutex with --enable-pprof)")
	fs.BoolVar(&e.enableCoreDump, "enable-core-dump", false, "make the process dumpable, raise RLIMIT_CORE to its hard limit and dump core on a fatal error")
	fs.BoolVar(&e.enableFineGrainLogging, "enable-fine-grain-logging", false, "not implemented: Legate's loggers are Envoy's components (--component-log-level)")
	fs.BoolVar(&e.logStacktraceSingleEntry, "log-stacktrace-single-entry", false, "not implemented: Go's runtime writes crash traces itself")
	fs.Var(&e.statsTags, "stats-tag", "tag:value on every stat: checked as Envoy, then refused (not implemented)")
}

// notImplemented is the error for an Envoy flag Legate takes but cannot
// honour.
func notImplemented(flag, why string) error {
	return fmt.Errorf("the Envoy flag --%s is not implemented by Legate: %s", flag, why)
}

// check validates the Envoy flags as Envoy does and refuses the ones that
// need what Legate lacks. fs tells which were given.
func (e *envoyFlags) check(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if e.restartEpoch > 0 {
		if e.useDynamicBaseID {
			return fmt.Errorf("error: cannot use --restart-epoch=%d with --use-dynamic-base-id", e.restartEpoch)
		}
		return notImplemented("restart-epoch", fmt.Sprintf("epoch %d is a hot restart, and hot restart is not implemented (only epoch 0, a cold start)", e.restartEpoch))
	}
	switch e.localAddressIPVersion {
	case "v4":
	case "v6":
		return notImplemented("local-address-ip-version", "v6: Legate derives no local address (Envoy's node address, which v6 makes an IPv6 one); only v4, the default, is accepted")
	default:
		return fmt.Errorf("error: unknown IP address version '%s'", e.localAddressIPVersion)
	}
	if !strings.HasPrefix(e.socketPath, "@") {
		if _, err := strconv.ParseUint(e.socketMode, 8, 32); err != nil {
			return fmt.Errorf("error: invalid socket-mode '%s'", e.socketMode)
		}
	}
	if set["file-flush-interval-msec"] && e.fileFlushIntervalMsec < accessLogFlushMsec {
		return notImplemented("file-flush-interval-msec", fmt.Sprintf("%d ms: access logs are flushed every %d ms and when %d KiB are buffered; an interval of %d ms or more is met", e.fileFlushIntervalMsec, accessLogFlushMsec, accessLogFlushSizeKB, accessLogFlushMsec))
	}
	if e.fileFlushMinSizeKB != accessLogFlushSizeKB {
		return notImplemented("file-flush-min-size-kb", fmt.Sprintf("%d: access-log buffers are flushed at %d KiB (and every %d ms); only %d is accepted", e.fileFlushMinSizeKB, accessLogFlushSizeKB, accessLogFlushMsec, accessLogFlushSizeKB))
	}
	if e.enableFineGrainLogging {
		return notImplemented("enable-fine-grain-logging", "Legate's loggers are Envoy's components, not source files; use --component-log-level and /logging?<component>=<level>")
	}
	if e.logStacktraceSingleEntry {
		return notImplemented("log-stacktrace-single-entry", "a fatal error's stack trace is written by Go's runtime to stderr, one line per frame, not through the application log")
	}
	for _, t := range e.statsTags {
		if err := checkStatsTag(t); err != nil {
			return err
		}
	}
	if len(e.statsTags) > 0 {
		return notImplemented("stats-tag", "fixed tags on every stat are not wired to the command line yet; set them with stats_config.stats_tags fixed_value in the bootstrap")
	}
	return nil
}

// checkStatsTag checks one --stats-tag as Envoy: name:value, the name
// alphanumeric (or _), the value without a dot.
func checkStatsTag(t string) error {
	name, value, ok := strings.Cut(t, ":")
	if !ok {
		return fmt.Errorf("error: misformatted stats-tag '%s'", t)
	}
	for _, c := range name {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("error: misformatted stats-tag '%s' contains invalid char in '%s'", t, name)
		}
	}
	if name == "" {
		return fmt.Errorf("error: misformatted stats-tag '%s' contains invalid char in '%s'", t, name)
	}
	if strings.Contains(value, ".") {
		return fmt.Errorf("error: misformatted stats-tag '%s' contains invalid char in '%s'", t, value)
	}
	return nil
}

// apply does what the flags ask of the process, before the server loads;
// mode is --mode.
func (e *envoyFlags) apply(fs *flag.FlagSet, mode string, log *slog.Logger) error {
	if e.cpusetThreads {
		if flagGiven(fs, "concurrency") {
			log.Warn("Both --concurrency and --cpuset-threads options are set; not applying --cpuset-threads.")
		} else if n := cpusetCPUs(); n > 0 {
			runtime.GOMAXPROCS(n)
		}
	}
	if e.enableMutexTracing {
		runtime.SetMutexProfileFraction(1)
	}
	if e.enableCoreDump {
		if err := enableCoreDumps(); err != nil {
			return fmt.Errorf("--enable-core-dump: %w", err)
		}
	}
	if e.baseIDPath != "" && !e.disableHotRestart && mode != "validate" {
		// Envoy writes the base ID it uses, unless hot restart is off (or
		// it only validates).
		if err := os.WriteFile(e.baseIDPath, []byte(strconv.FormatUint(uint64(e.baseID), 10)), 0o644); err != nil {
			// Envoy logs this at critical and carries on.
			log.Error("cannot open base id output file " + e.baseIDPath + " for writing.")
		}
	}
	return nil
}

// cpusetCPUs is the number of CPUs the process may run on (its affinity
// mask, which a cpuset sets), as Envoy's getCpuCount; 0 if unknown.
func cpusetCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return 0
	}
	return set.Count()
}

// enableCoreDumps makes a crash leave a core file: the process is made
// dumpable (as Envoy's --enable-core-dump, for a binary with file
// capabilities), RLIMIT_CORE's soft limit is raised to the hard one, and
// Go's runtime aborts with a core on a fatal error (GOTRACEBACK=crash).
func enableCoreDumps() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil {
		return fmt.Errorf("getrlimit(RLIMIT_CORE): %w", err)
	}
	if lim.Cur != lim.Max {
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &lim); err != nil {
			return fmt.Errorf("setrlimit(RLIMIT_CORE): %w", err)
		}
	}
	debug.SetTraceback("crash")
	return nil
}

// writeAdminAddress writes the admin address to --admin-address-path once
// the admin listens, as Envoy (nothing without an admin address).
func (e *envoyFlags) writeAdminAddress(addr string) error {
	if e.adminAddressPath == "" || addr == "" {
		return nil
	}
	if err := os.WriteFile(e.adminAddressPath, []byte(addr), 0o644); err != nil {
		return fmt.Errorf("--admin-address-path: %w", err)
	}
	return nil
}

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(fl *flag.Flag) { given = given || fl.Name == name })
	return given
}
