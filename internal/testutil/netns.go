package testutil

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// inNetnsEnv marks a test process re-executed inside its own network
// namespace.
const inNetnsEnv = "LEGATE_TEST_NETNS"

// InNetns runs the calling test inside a private network namespace (a new
// user and network namespace from `unshare -rn`, with only loopback up),
// so that floods and faults reach nothing but what the test starts: the
// test binary re-executes itself there with -test.run naming this test.
// It returns true in the re-executed process, where the test body goes on;
// in the parent it waits for the child, reports its output and failure,
// and returns false (the caller returns at once):
//
//	if !testutil.InNetns(t) {
//		return
//	}
//
// Without unshare, or where user namespaces are not allowed, the test is
// skipped with the reason — unless LEGATE_REQUIRE_NETNS=1 (CI), where it
// fails.
func InNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(inNetnsEnv) == "1" {
		return true
	}
	unavailable := func(why string) bool {
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatalf("a private network namespace is required: %s", why)
		}
		t.Skipf("needs a private network namespace: %s", why)
		return false
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return unavailable("unshare (util-linux) is not installed")
	}
	args := []string{"-n"}
	if os.Getuid() != 0 {
		args = []string{"-rn"} // a user namespace makes the network namespace unprivileged
	}
	if out, err := exec.Command("unshare", append(args, "true")...).CombinedOutput(); err != nil {
		return unavailable("unshare " + strings.Join(args, " ") + ": " + strings.TrimSpace(string(out)))
	}
	// The test runs alone in the child: its subtests too, nothing else.
	run := "^" + strings.SplitN(t.Name(), "/", 2)[0] + "$"
	script := `set -e; ip link set lo up 2>/dev/null || ifconfig lo up; exec "$0" "$@"`
	cmdArgs := append(args, "sh", "-c", script, os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
	cmd := exec.Command("unshare", cmdArgs...)
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a private network namespace:\n%s", out)
	if err != nil {
		t.Fatalf("%s failed in its network namespace: %v", t.Name(), err)
	}
	// A skip in the child exits 0 like a pass: where a namespace is
	// required (CI), a test or subtest that skipped there is a failure.
	if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
		if skips := unexpectedSkips(string(out), os.Getenv(SubtestSkipsOKEnv) == "1"); len(skips) > 0 {
			t.Fatalf("skipped in its network namespace, where CI requires it to run:\n%s", strings.Join(skips, "\n"))
		}
	}
	return false
}

// SubtestSkipsOKEnv, set to 1 by a test before InNetns, lets its
// subtests skip in the namespace where CI requires tests to run: a suite
// that skips the cases of features not claimed (the Gateway API
// conformance suite) still fails if the test itself skips.
const SubtestSkipsOKEnv = "LEGATE_NETNS_SUBTEST_SKIPS_OK"

// unexpectedSkips are the skip lines of a child's output that fail a
// test: all of them, or with subtestsOK only those of top-level tests.
func unexpectedSkips(out string, subtestsOK bool) []string {
	skips := SkipLines(out)
	if subtestsOK {
		skips = slices.DeleteFunc(skips, func(s string) bool {
			name, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(s, "--- SKIP:")), " ")
			return strings.Contains(name, "/")
		})
	}
	return skips
}

// SkipLines returns the "--- SKIP" lines (with the reason that follows
// each) of a re-executed test binary's -test.v output.
func SkipLines(out string) []string {
	var skips []string
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "--- SKIP:") {
			s := strings.TrimSpace(l)
			if i+1 < len(lines) {
				s += " " + strings.TrimSpace(lines[i+1])
			}
			skips = append(skips, s)
		}
	}
	return skips
}
