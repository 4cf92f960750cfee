package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/legateproxy/legate/internal/admin"
	"github.com/legateproxy/legate/internal/applog"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/server"
	"github.com/legateproxy/legate/internal/xds/resource"
)

func init() {
	register("proxy", "run the proxy on an Envoy v3 bootstrap (same flags as envoy)", runProxy)
	registerPlain("validate", "check Envoy bootstrap files (and xDS resource files) as `legate proxy --mode validate` does", "FILE...", runValidate)
}

// proxyFlags are Envoy's command-line options.
type proxyFlags struct {
	configPath, configYAML, mode, logLevel, componentLogLevel, logPath, logFormat string
	disableExtensions                                                             string
	serviceNode, serviceCluster, serviceZone                                      string
	drainTime                                                                     int
	concurrency                                                                   int
	drainStrategy                                                                 string
	enablePprof, version                                                          bool
	allowUnknownStatic, rejectUnknownDynamic, ignoreUnknownDynamic                bool
	logEscaped                                                                    bool
	envoy                                                                         envoyFlags
}

func newProxyFlags(name string) (*flag.FlagSet, *proxyFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &proxyFlags{}
	for _, n := range []string{"c", "config-path"} {
		fs.StringVar(&f.configPath, n, "", "path to the Envoy bootstrap (YAML, JSON, .pb, .pb_text)")
	}
	fs.StringVar(&f.configYAML, "config-yaml", "", "YAML bootstrap merged over the file")
	fs.StringVar(&f.mode, "mode", "serve", "serve or validate")
	for _, n := range []string{"l", "log-level"} {
		fs.StringVar(&f.logLevel, n, "info", "trace, debug, info, warning, error, critical, off")
	}
	fs.StringVar(&f.componentLogLevel, "component-log-level", "", "comma-separated list of component log levels, as Envoy: upstream:debug,config:trace (components: Envoy's logger names, listed by the admin /logging)")
	fs.StringVar(&f.logPath, "log-path", "", "write logs to this file instead of stderr")
	fs.StringVar(&f.logFormat, "log-format", "", "layout of log lines with Envoy's format flags (default \""+applog.DefaultFormat+"\")")
	fs.BoolVar(&f.logEscaped, "log-format-escaped", false, "escape C-style escape sequences in log messages (one record, one line)")
	fs.StringVar(&f.serviceNode, "service-node", "", "node id (overrides node.id)")
	fs.StringVar(&f.serviceCluster, "service-cluster", "", "node cluster (overrides node.cluster)")
	fs.StringVar(&f.serviceZone, "service-zone", "", "node zone (overrides node.locality.zone)")
	fs.IntVar(&f.drainTime, "drain-time-s", 600, "seconds to drain connections on shutdown and listener changes")
	fs.StringVar(&f.drainStrategy, "drain-strategy", "gradual", "gradual or immediate")
	fs.IntVar(&f.concurrency, "concurrency", 0, "worker threads, as Envoy: sets GOMAXPROCS (0 runs one worker; without the flag, Go's default: the CPUs the process may use)")
	fs.StringVar(&f.disableExtensions, "disable-extensions", "", "comma-separated extensions to disable, as Envoy: <category>/<name> or <name> (configs that use them fail as not implemented)")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.BoolVar(&f.enablePprof, "enable-pprof", false, "serve Go's /debug/pprof/ profiles on the admin address (off by default: Envoy has no such endpoint)")
	f.envoy.define(fs)
	for _, n := range []string{"allow-unknown-static-fields", "allow-unknown-fields"} { // the second is Envoy's deprecated alias
		fs.BoolVar(&f.allowUnknownStatic, n, false, "unknown fields in the bootstrap are warnings (server.static_unknown_fields), not errors")
	}
	fs.BoolVar(&f.rejectUnknownDynamic, "reject-unknown-dynamic-fields", false, "refuse (NACK) xDS resources with unknown fields; by default they are accepted with a warning (server.dynamic_unknown_fields)")
	fs.BoolVar(&f.ignoreUnknownDynamic, "ignore-unknown-dynamic-fields", false, "accept xDS resources with unknown fields without a warning")
	return fs, f
}

// newLogger is a log/slog text logger (the controller's, Contour-like).
func newLogger(level string, w io.Writer) (*slog.Logger, *slog.LevelVar, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})
	return slog.New(h), lv, nil
}

func parseLevel(level string) (*slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	l, ok := admin.ParseLevel(level)
	if !ok {
		return nil, fmt.Errorf("unknown log level %q (trace, debug, info, warning, error, critical, off)", level)
	}
	lv.Set(l)
	return lv, nil
}

// newProxyLogger is the proxy's logger: Envoy's log line layout
// (--log-format, default applog.DefaultFormat), through a Swap so that the
// bootstrap's application_log_config can take over.
//
// Each of Envoy's loggers (applog.Components) has its own level: all start
// at level, then --component-log-level sets some; records are filtered by
// their component's level, which the admin /logging lists and changes.
func newProxyLogger(level, componentLevels string, w io.Writer, format string, escaped bool) (*slog.Logger, *slog.LevelVar, *server.AppLog, error) {
	lv, err := parseLevel(level)
	if err != nil {
		return nil, nil, nil, err
	}
	cls, err := applog.ParseComponentLevels(componentLevels)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--component-log-level: %w", err)
	}
	reg := applog.NewRegistry(lv)
	changes := map[string]slog.Level{}
	for _, c := range cls {
		changes[c.Component] = c.Level
	}
	if err := reg.Set(changes); err != nil {
		return nil, nil, nil, fmt.Errorf("--component-log-level: %w", err)
	}
	h, err := applog.New(w, applog.Options{Format: format, Escaped: escaped, Level: lv, Components: reg})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--log-format: %w", err)
	}
	sw := applog.NewSwap(h)
	sw.SetComponents(reg)
	return slog.New(sw), lv, &server.AppLog{Swap: sw, Out: w, FormatFlag: format != "", Escaped: escaped}, nil
}

// applyConcurrency makes --concurrency, Envoy's worker count, the number
// of Go's Ps that run the proxy's goroutines (GOMAXPROCS): as Envoy, 0
// still runs one worker. Without the flag GOMAXPROCS stays Go's default
// (or --cpuset-threads sets it). The server reports the result as
// server.concurrency and /server_info's command_line_options.concurrency.
func applyConcurrency(fs *flag.FlagSet, n int) error {
	if !flagGiven(fs, "concurrency") {
		return nil
	}
	if n < 0 {
		return fmt.Errorf("error: --concurrency must not be negative, got %d", n)
	}
	runtime.GOMAXPROCS(max(1, n))
	return nil
}

func runProxy(args []string) int {
	fs, f := newProxyFlags("legate proxy")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if f.version {
		printVersion()
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "legate proxy: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := f.envoy.check(fs); err != nil {
		fmt.Fprintf(os.Stderr, "legate proxy: %v\n", err)
		return 1
	}
	if f.envoy.hotRestartVersion {
		// As Envoy with hot restart disabled (its HotRestartNopImpl): the
		// version is "disabled", on stderr, and the process exits.
		fmt.Fprint(os.Stderr, "disabled")
		return 0
	}
	var logOut io.Writer = os.Stderr
	if f.logPath != "" {
		lf, err := os.OpenFile(f.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "legate proxy: --log-path: %v\n", err)
			return 1
		}
		defer lf.Close()
		logOut = lf
	}
	log, lv, appLog, err := newProxyLogger(f.logLevel, f.componentLogLevel, logOut, f.logFormat, f.logEscaped)
	if err != nil {
		fmt.Fprintf(os.Stderr, "legate proxy: %v\n", err)
		return 1
	}
	slog.SetDefault(log)
	if err := applyConcurrency(fs, f.concurrency); err != nil {
		fmt.Fprintf(os.Stderr, "legate proxy: %v\n", err)
		return 1
	}
	if err := f.envoy.apply(fs, f.mode, applog.Component(log, "main")); err != nil {
		fmt.Fprintf(os.Stderr, "legate proxy: %v\n", err)
		return 1
	}
	if f.disableExtensions != "" {
		var names []string
		for _, e := range strings.Split(f.disableExtensions, ",") {
			// Envoy's form is <category>/<name>; the name alone is unique.
			if _, n, ok := strings.Cut(strings.TrimSpace(e), "/"); ok {
				e = n
			}
			if e = strings.TrimSpace(e); e != "" {
				names = append(names, e)
			}
		}
		extension.Disable(names...)
	}
	switch f.mode {
	case "serve", "validate", "init_only":
	default:
		fmt.Fprintf(os.Stderr, "legate proxy: --mode must be serve, validate or init_only, got %q\n", f.mode)
		return 1
	}
	opts := server.Options{
		ConfigPath: f.configPath, ConfigYAML: f.configYAML,
		ServiceNode: f.serviceNode, ServiceCluster: f.serviceCluster, ServiceZone: f.serviceZone,
		DrainTime: time.Duration(f.drainTime) * time.Second,
		Log:       log, LogLevel: lv, Version: version, CommandLine: os.Args,
		EnablePprof: f.enablePprof, AllowUnknownStaticFields: f.allowUnknownStatic, AppLog: appLog,
	}
	switch {
	case f.rejectUnknownDynamic:
		// As Envoy: with both flags, rejecting wins.
		resource.SetUnknownFieldPolicy(resource.RejectUnknown)
	case f.ignoreUnknownDynamic:
		resource.SetUnknownFieldPolicy(resource.IgnoreUnknown)
	}
	switch f.drainStrategy {
	case "immediate":
		opts.DrainTime = 0
	case "gradual":
	default:
		fmt.Fprintf(os.Stderr, "legate proxy: error: unknown drain-strategy '%s'\n", f.drainStrategy)
		return 1
	}
	srv, err := server.Load(opts)
	configLog := applog.Component(log, "config")
	for _, w := range srv.Warnings {
		configLog.Warn("config: " + w.String())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "error initializing configuration '%s': %v\n", f.configPath, err)
		return 1
	}
	if f.mode == "validate" {
		fmt.Printf("configuration '%s' OK\n", f.configPath)
		return 0
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "legate proxy: %v\n", err)
		srv.Shutdown(context.Background())
		return 1
	}
	if f.mode == "init_only" {
		srv.Shutdown(context.Background())
		return 0
	}
	if err := f.envoy.writeAdminAddress(srv.AdminAddress()); err != nil {
		// As Envoy: logged at critical, and the server runs on.
		applog.Component(log, "main").Log(context.Background(), applog.Levels["critical"], "cannot open admin address output file "+f.envoy.adminAddressPath+" for writing.", "error", err)
	}
	log.Info("legate proxy started", "version", version, "admin", srv.AdminAddress(), "listeners", srv.ListenerAddresses())
	return waitAndShutdown(srv, log)
}

// waitAndShutdown serves until SIGTERM/SIGINT or /quitquitquit, then
// drains: listeners stop accepting and in-flight requests get up to
// --drain-time-s to finish. SIGUSR1 reopens access logs.
func waitAndShutdown(srv *server.Server, log *slog.Logger) int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				srv.ReopenAccessLogs()
				log.Info("reopened access logs")
				continue
			case syscall.SIGHUP:
				continue // as Envoy, SIGHUP is ignored
			}
			log.Info("caught signal; draining", "signal", sig.String())
		case <-srv.Done():
			log.Info("quit requested through the admin API")
		}
		srv.Shutdown(context.Background())
		log.Info("exiting")
		return 0
	}
}

// runValidate checks each file as `legate proxy --mode validate -c FILE`.
func runValidate(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: legate validate FILE...")
		return 2
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	code := 0
	for _, p := range args {
		warns, err := validateFile(p, log)
		for _, w := range warns {
			fmt.Fprintf(os.Stderr, "%s: warning: %s\n", p, w)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: error: %v\n", p, err)
			code = 1
			continue
		}
		fmt.Printf("%s: OK\n", p)
	}
	return code
}

// validateFile checks a bootstrap, or an xDS resource file (a file whose
// top level is a DiscoveryResponse with resources:).
func validateFile(p string, log *slog.Logger) ([]config.Warning, error) {
	if server.IsResourceFile(p) {
		return server.ValidateResourceFile(p, log)
	}
	srv, err := server.Load(server.Options{ConfigPath: p, Log: log, LogLevel: new(slog.LevelVar)})
	return srv.Warnings, err
}
