package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/applog"
	"github.com/legateproxy/legate/internal/testutil"
)

// Every flag of Envoy's command line is honoured, accepted where it has no
// effect without hot restart, or refused with an error naming it.
func TestFlagsEnvoy(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" when accepted
	}{
		{[]string{"--restart-epoch", "0", "--base-id", "5", "--disable-hot-restart", "--use-dynamic-base-id"}, ""},
		{[]string{"--parent-shutdown-time-s", "90", "--skip-hot-restart-on-no-parent", "--skip-hot-restart-parent-stats"}, ""},
		{[]string{"--socket-path", "/tmp/envoy_domain_socket", "--socket-mode", "644"}, ""},
		{[]string{"--socket-mode", "999"}, ""}, // not read with the abstract default path, as Envoy
		{[]string{"--socket-path", "/tmp/s", "--socket-mode", "999"}, "error: invalid socket-mode '999'"},
		{[]string{"--local-address-ip-version", "v4"}, ""},
		{[]string{"--local-address-ip-version", "v6"}, "Envoy flag --local-address-ip-version is not implemented by Legate"},
		{[]string{"--local-address-ip-version", "v5"}, "error: unknown IP address version 'v5'"},
		{[]string{"--restart-epoch", "1"}, "Envoy flag --restart-epoch is not implemented by Legate: epoch 1 is a hot restart"},
		{[]string{"--restart-epoch", "2", "--use-dynamic-base-id"}, "error: cannot use --restart-epoch=2 with --use-dynamic-base-id"},
		{[]string{"--file-flush-interval-msec", "9000"}, ""},
		{[]string{"--file-flush-interval-msec", "100"}, "Envoy flag --file-flush-interval-msec is not implemented by Legate"},
		{[]string{"--file-flush-min-size-kb", "64"}, ""},
		{[]string{"--file-flush-min-size-kb", "8"}, "Envoy flag --file-flush-min-size-kb is not implemented by Legate"},
		{[]string{"--cpuset-threads", "--enable-mutex-tracing", "--enable-core-dump"}, ""},
		{[]string{"--enable-fine-grain-logging"}, "Envoy flag --enable-fine-grain-logging is not implemented by Legate"},
		{[]string{"--log-stacktrace-single-entry"}, "Envoy flag --log-stacktrace-single-entry is not implemented by Legate"},
		{[]string{"--stats-tag", "foo:bar", "--stats-tag", "baz:bar"}, "Envoy flag --stats-tag is not implemented by Legate"},
		{[]string{"--stats-tag", "foo"}, "error: misformatted stats-tag 'foo'"},
		{[]string{"--stats-tag", "f-o:bar"}, "error: misformatted stats-tag 'f-o:bar' contains invalid char in 'f-o'"},
		{[]string{"--stats-tag", "foo:b.r"}, "error: misformatted stats-tag 'foo:b.r' contains invalid char in 'b.r'"},
		{[]string{"--admin-address-path", "/tmp/x", "--base-id-path", "/tmp/y", "--hot-restart-version"}, ""},
	} {
		fs, f := newProxyFlags("legate proxy")
		if err := fs.Parse(tc.args); err != nil {
			t.Errorf("%v: parse: %v", tc.args, err)
			continue
		}
		err := f.envoy.check(fs)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%v: refused: %v", tc.args, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
		}
	}
}

func TestFlagsApply(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	dir := t.TempDir()
	for _, tc := range []struct {
		args     []string
		mode     string
		procs    int    // GOMAXPROCS after, 0: unchanged
		baseFile string // what --base-id-path holds, "-" for no file
	}{
		{[]string{"--cpuset-threads"}, "serve", cpusetCPUs(), "-"},
		{[]string{"--cpuset-threads", "--concurrency", "1"}, "serve", 0, "-"}, // --concurrency wins, as Envoy
		{[]string{"--base-id", "7", "--base-id-path", filepath.Join(dir, "a")}, "serve", 0, "7"},
		{[]string{"--base-id-path", filepath.Join(dir, "b"), "--disable-hot-restart"}, "serve", 0, "-"},
		{[]string{"--base-id-path", filepath.Join(dir, "c")}, "validate", 0, "-"},
	} {
		fs, f := newProxyFlags("legate proxy")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		runtime.GOMAXPROCS(3)
		if err := f.envoy.apply(fs, tc.mode, slog.New(slog.DiscardHandler)); err != nil {
			t.Errorf("%v: %v", tc.args, err)
		}
		if want := tc.procs; want != 0 && runtime.GOMAXPROCS(0) != want {
			t.Errorf("%v: GOMAXPROCS %d, want %d", tc.args, runtime.GOMAXPROCS(0), want)
		} else if want == 0 && runtime.GOMAXPROCS(0) != 3 {
			t.Errorf("%v: GOMAXPROCS changed to %d", tc.args, runtime.GOMAXPROCS(0))
		}
		if f.envoy.baseIDPath != "" {
			b, err := os.ReadFile(f.envoy.baseIDPath)
			if got := string(b); (tc.baseFile == "-") != (err != nil) || (err == nil && got != tc.baseFile) {
				t.Errorf("%v: base id file %q, %v; want %q", tc.args, got, err, tc.baseFile)
			}
		}
	}
}

// --component-log-level sets the level of each of Envoy's loggers; the
// others stay at --log-level.
func TestFlagsComponentLogLevel(t *testing.T) {
	for _, tc := range []struct {
		level, components string
		err               string
		logged            map[string]bool // component → a debug record is written
	}{
		{"info", "upstream:debug,connection:trace", "", map[string]bool{"upstream": true, "connection": true, "main": false, "router": false}},
		{"debug", "upstream:error", "", map[string]bool{"upstream": false, "main": true}},
		{"info", "bogus:debug", "--component-log-level: error: invalid component specified 'bogus'", nil},
		{"info", "upstream:loud", "--component-log-level: error: invalid log level specified 'loud'", nil},
		{"info", "upstream=debug", "--component-log-level: error: component log level not correctly specified 'upstream=debug'", nil},
	} {
		var b bytes.Buffer
		log, _, _, err := newProxyLogger(tc.level, tc.components, &b, "[%n] %v", false)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: error %v, want %q", tc.components, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for c, want := range tc.logged {
			b.Reset()
			applog.Component(log, c).Debug("x")
			if got := b.String() == "["+c+"] x\n"; got != want {
				t.Errorf("%s: %s debug logged=%v, want %v (%q)", tc.components, c, got, want, b.String())
			}
		}
	}
}

// -h/--help anywhere in the arguments of a command without flags prints
// its usage; after "--" an argument is an operand.
func TestCLIHelpAnywhere(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rest []string
		help bool
	}{
		{[]string{"upgrade", "--help"}, nil, true},
		{[]string{"f.yaml", "-h"}, nil, true},
		{[]string{"help"}, nil, true},
		{[]string{"f.yaml", "help"}, []string{"f.yaml", "help"}, false}, // a file named help
		{[]string{"--", "--help"}, []string{"--help"}, false},
		{[]string{"upgrade", "--", "-h"}, []string{"upgrade", "-h"}, false},
		{[]string{"a.yaml", "b.yaml"}, []string{"a.yaml", "b.yaml"}, false},
	} {
		rest, help := plainArgs(tc.args)
		if help != tc.help || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
			t.Errorf("%q: %q, %v; want %q, %v", tc.args, rest, help, tc.rest, tc.help)
		}
	}
}

// The binary: help on subcommands, Envoy's flag errors, --hot-restart-version,
// --admin-address-path and the upgrade of envoy.squash.
func TestCLIBinary(t *testing.T) {
	good := writeFile(t, `static_resources: {clusters: [{name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}]}`)
	squash := writeFile(t, `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.http_connection_manager
        config:
          stat_prefix: s
          route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: a}}]}]}
          http_filters:
          - {name: envoy.squash, config: {cluster: a, attachment_template: {k: v}}}
          - {name: envoy.router}
  clusters: [{name: a, connect_timeout: 1s, hosts: [{socket_address: {address: 127.0.0.1, port_value: 1}}]}]
`)
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"config", "upgrade", "--help"}, 0, "", "usage: legate config upgrade FILE"},
		{[]string{"config", "upgrade", good, "--help"}, 0, "", "usage: legate config upgrade FILE"},
		{[]string{"validate", good, "--help"}, 0, "", "usage: legate validate FILE..."},
		{[]string{"validate", "--", "--help"}, 1, "", "--help: error:"},
		{[]string{"config", "upgrade", squash}, 0, "name: envoy.filters.http.squash", `deprecated v2 name "envoy.squash" upgraded to "envoy.filters.http.squash"`},
		{[]string{"proxy", "--hot-restart-version"}, 0, "", "disabled"},
		{[]string{"proxy", "--mode", "validate", "-c", good, "--restart-epoch", "1"}, 1, "", "Envoy flag --restart-epoch is not implemented by Legate"},
		{[]string{"proxy", "--mode", "validate", "-c", good, "--component-log-level", "nope:debug"}, 1, "", "error: invalid component specified 'nope'"},
		{[]string{"proxy", "--mode", "validate", "-c", good, "--drain-strategy", "slow"}, 1, "", "error: unknown drain-strategy 'slow'"},
		{[]string{"proxy", "--mode", "validate", "-c", good, "--concurrency", "-1"}, 1, "", "error: --concurrency must not be negative, got -1"},
		{[]string{"proxy", "--mode", "validate", "-c", good, "--component-log-level", "upstream:debug", "--restart-epoch", "0", "--disable-hot-restart", "--cpuset-threads"}, 0, "OK", ""},
	} {
		cmd := exec.Command(legateBin, tc.args...)
		var so, se strings.Builder
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(so.String(), tc.stdout) || !strings.Contains(se.String(), tc.stderr) {
			t.Errorf("legate %v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, so.String(), se.String())
		}
	}

	// --admin-address-path: the admin address, once it listens.
	cfg := writeFile(t, `admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources: {clusters: [{name: a, type: STATIC, load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}]}`)
	addrFile := filepath.Join(t.TempDir(), "admin")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, legateBin, "proxy", "-c", cfg, "--admin-address-path", addrFile, "--drain-time-s", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var addr string
	testutil.Eventually(t, 20*time.Second, func() bool {
		b, err := os.ReadFile(addrFile)
		addr = string(b)
		return err == nil && addr != ""
	}, "no admin address file")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
		t.Errorf("admin address file: %q", addr)
	}
}
