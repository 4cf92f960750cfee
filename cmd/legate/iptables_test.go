package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestIptablesDryRun runs `legate iptables --dry-run` with Legate's flags
// and with the arguments Istio's injection template passes.
func TestIptablesDryRun(t *testing.T) {
	defaults, err := exec.Command(legateBin, "iptables", "--dry-run").Output()
	if err != nil {
		t.Fatalf("legate iptables --dry-run: %v", err)
	}
	for _, want := range []string{
		"# iptables-restore --noflush\n* nat\n-N ISTIO_INBOUND\n",
		"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n",
		"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n",
		"-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN\n-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN\n-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN\n-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n",
		"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT\n",
		"-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n",
		"# ip6tables-restore --noflush\n",
		"-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN\n",
	} {
		if !strings.Contains(string(defaults), want) {
			t.Errorf("defaults lack %q:\n%s", want, defaults)
		}
	}

	cases := []struct {
		name     string
		args     []string
		same     bool     // output equals the defaults'
		contains []string // else: lines the output has
		lacks    []string
		fails    string // exit 1 with this in stderr
	}{
		{name: "istio injection template", same: true, args: []string{
			"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
			"-d", "15090,15021,15020", "--log_output_level=default:info"}},
		{name: "legate long flags", same: true, args: []string{
			"--proxy-uid", "1337", "--proxy-gid", "1337", "--outbound-port", "15001", "--inbound-port", "15006",
			"--inbound-ports", "*", "--outbound-cidrs", "*"}},
		{name: "lists", args: []string{
			"--inbound-ports", "8080,9090", "--exclude-outbound-cidrs", "10.96.0.0/12,2001:db8::/32",
			"--exclude-outbound-ports", "3306", "--include-outbound-ports", "32000", "--ipv6=false"},
			contains: []string{
				"-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT\n-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT\n",
				"-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN\n-A ISTIO_OUTPUT -p udp --dport 3306 -j RETURN\n",
				"-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN\n-A ISTIO_OUTPUT -p tcp --dport 32000 -j ISTIO_REDIRECT\n"},
			lacks: []string{"ip6tables", "--dport 15090", "2001:db8::/32"}},
		{name: "no inbound", args: []string{"--inbound-ports", "", "-o", "25"},
			lacks: []string{"PREROUTING"}, contains: []string{"--dport 25 -j RETURN"}},
		{name: "tproxy", args: []string{"-m", "TPROXY"}, fails: "TPROXY is not implemented"},
		{name: "bad port", args: []string{"--exclude-outbound-ports", "70000"}, fails: "--exclude-outbound-ports: \"70000\""},
		{name: "bad cidr", args: []string{"-x", "10.0.0.0/40"}, fails: "--exclude-outbound-cidrs"},
		{name: "dns capture", args: []string{"--redirect-dns"}, fails: "--redirect-dns is not implemented"},
		{name: "bad ipv6", args: []string{"--ipv6", "maybe"}, fails: "--ipv6"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(legateBin, append([]string{"iptables", "--dry-run"}, tc.args...)...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if tc.fails != "" {
				if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), tc.fails) {
					t.Fatalf("got %v, stderr %q; want exit 1 saying %q", err, stderr.String(), tc.fails)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			if tc.same && string(out) != string(defaults) {
				t.Errorf("output differs from the defaults':\n%s", out)
			}
			for _, w := range tc.contains {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.lacks {
				if strings.Contains(string(out), w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestIptablesApplyAndCleanup runs a bare `legate iptables`, then
// `legate iptables --cleanup`, in a private network namespace.
func TestIptablesApplyAndCleanup(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	if _, err := exec.LookPath("iptables-save"); err != nil {
		t.Skip("needs iptables")
	}
	save := func() string {
		out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v\n%s", err, out)
		}
		return string(out)
	}
	for range 2 { // a rerun (init container restart) is fine
		if out, err := exec.Command(legateBin, "iptables").CombinedOutput(); err != nil {
			t.Fatalf("legate iptables: %v\n%s", err, out)
		}
	}
	s := save()
	for _, want := range []string{"-A OUTPUT -j ISTIO_OUTPUT", "-A PREROUTING -p tcp -j ISTIO_INBOUND", "--to-ports 15001", "--to-ports 15006"} {
		if strings.Count(s, want) != 1 {
			t.Errorf("iptables-save has %q %d times, want once:\n%s", want, strings.Count(s, want), s)
		}
	}
	if out, err := exec.Command(legateBin, "iptables", "--cleanup").CombinedOutput(); err != nil {
		t.Fatalf("legate iptables --cleanup: %v\n%s", err, out)
	}
	if s := save(); strings.Contains(s, "ISTIO_") {
		t.Errorf("after --cleanup:\n%s", s)
	}
}
