// legate proxy: the application log's layout (--log-format,
// --log-format-escaped, application_log_config).

package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// runUntilStarted runs the proxy until it logs that it started, stops it
// and returns its stderr lines.
func runUntilStarted(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command(legateBin, append([]string{"proxy", "--drain-time-s", "0"}, args...)...)
	out := &testutil.LogBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "legate proxy started") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	return strings.Split(strings.TrimSpace(out.String()), "\n")
}

func adminOnly(t *testing.T, extra string) string {
	return writeFile(t, fmt.Sprintf("admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n%s", freePort(t), extra))
}

func TestLogFormat(t *testing.T) {
	// Envoy's default layout.
	lines := runUntilStarted(t, "-c", adminOnly(t, ""))
	def := regexp.MustCompile(`^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[info\]\[main\] \[cmd/legate/proxy\.go:\d+\] legate proxy started `)
	if !matchAny(def, lines) {
		t.Errorf("default layout not Envoy's:\n%s", strings.Join(lines, "\n"))
	}
	// --log-format.
	lines = runUntilStarted(t, "-c", adminOnly(t, ""), "--log-format", "LG|%L|%n|%v")
	if !matchAny(regexp.MustCompile(`^LG\|I\|main\|legate proxy started `), lines) {
		t.Errorf("--log-format not applied:\n%s", strings.Join(lines, "\n"))
	}
	// application_log_config: JSON lines.
	lines = runUntilStarted(t, "-c", adminOnly(t, `application_log_config: {log_format: {json_format: {lvl: "%l", message: "%j"}}}`))
	found := false
	for _, l := range lines {
		var m map[string]string
		if json.Unmarshal([]byte(l), &m) == nil && m["lvl"] == "info" && strings.HasPrefix(m["message"], "legate proxy started") {
			found = true
		}
	}
	if !found {
		t.Errorf("application_log_config json_format not applied:\n%s", strings.Join(lines, "\n"))
	}
	// Both at once is refused, as Envoy does.
	out, err := exec.Command(legateBin, "proxy", "--mode", "validate", "--log-format", "%v", "-c",
		adminOnly(t, `application_log_config: {log_format: {text_format: "%v"}}`)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "only one of ApplicationLogConfig.log_format or the --log-format option") {
		t.Errorf("--log-format with application_log_config: %v %s", err, out)
	}
	// A flag Legate does not implement is an error, not ignored.
	out, err = exec.Command(legateBin, "proxy", "--log-format", "%Q %v", "-c", adminOnly(t, "")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "%Q") {
		t.Errorf("unknown format flag: %v %s", err, out)
	}
}

func matchAny(re *regexp.Regexp, lines []string) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}
