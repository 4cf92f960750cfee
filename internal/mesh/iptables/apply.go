package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Tools are the iptables commands of one variant (nf_tables or legacy)
// for both families, run in a network namespace when Netns is set.
type Tools struct {
	// Variant is "nft", "legacy" or "" (the unsuffixed commands).
	Variant string
	// Netns, when set, is a network namespace path (/proc/PID/ns/net,
	// /var/run/netns/NAME) the commands run in, through nsenter.
	Netns string
	// HasIPv6 reports whether ip6tables of the variant works here.
	HasIPv6 bool
}

// bin is the variant's command for family f: "iptables-nft-restore".
func (t Tools) bin(f Family, tool string) string {
	name := "iptables"
	if f == IPv6 {
		name = "ip6tables"
	}
	if t.Variant != "" {
		name += "-" + t.Variant
	}
	if tool != "" {
		name += "-" + tool
	}
	return name
}

func (t Tools) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if t.Netns != "" {
		return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + t.Netns, "--", name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// run runs a tool with stdin, returning stdout, or an error with stderr.
func (t Tools) run(ctx context.Context, stdin string, name string, args ...string) (string, string, error) {
	cmd := t.command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	return out.String(), strings.TrimSpace(errb.String()), err
}

// save is iptables-save's output for f (all tables).
func (t Tools) save(ctx context.Context, f Family) (string, error) {
	name := t.bin(f, "save")
	out, stderr, err := t.run(ctx, "", name)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, stderr)
	}
	return out, nil
}

// works reports whether variant's f tools run and the kernel has the nat
// table for them; rules is whether any rule is already installed.
func (t Tools) works(ctx context.Context, f Family) (ok, rules bool) {
	name := t.bin(f, "save")
	if t.Netns == "" {
		if _, err := exec.LookPath(name); err != nil {
			return false, false
		}
	}
	if _, _, err := t.run(ctx, "", name, "-t", "nat"); err != nil {
		return false, false
	}
	out, _, err := t.run(ctx, "", name)
	return true, err == nil && strings.Contains(out, "\n-A ")
}

// Detect finds the iptables variant to use, as Istio does: the one that
// already holds rules when only one does (mixing nf_tables and legacy
// rules in one namespace breaks both), else nf_tables (what Debian and
// current distributions ship), else legacy, else the unsuffixed
// commands. force ("nft", "legacy") skips the choice.
func Detect(ctx context.Context, force, netns string) (Tools, error) {
	var candidates []string
	switch force {
	case "":
		candidates = []string{"nft", "legacy", ""}
	case "nft", "legacy":
		candidates = []string{force}
	default:
		return Tools{}, fmt.Errorf("iptables binary %q: use nft or legacy", force)
	}
	var working []Tools
	withRules := -1
	for _, v := range candidates {
		t := Tools{Variant: v, Netns: netns}
		ok, rules := t.works(ctx, IPv4)
		if !ok {
			continue
		}
		t.HasIPv6, _ = t.works(ctx, IPv6)
		if rules && withRules == -1 {
			withRules = len(working)
		} else if rules {
			withRules = -2 // more than one has rules: take the default order
		}
		working = append(working, t)
	}
	switch {
	case len(working) == 0:
		return Tools{}, fmt.Errorf("no working iptables found (tried iptables-nft-save, iptables-legacy-save, iptables-save -t nat): install the iptables package, and run as root with CAP_NET_ADMIN")
	case withRules >= 0:
		return working[withRules], nil
	default:
		return working[0], nil
	}
}

// Options say how Apply and Cleanup run.
type Options struct {
	Tools Tools
	// IPv6 applies the IPv6 rules too; Require6 fails when ip6tables does
	// not work rather than skipping IPv6 with a warning.
	IPv6     bool
	Require6 bool
	Log      *slog.Logger
}

func (o Options) families() ([]Family, error) {
	fams := []Family{IPv4}
	if !o.IPv6 {
		return fams, nil
	}
	if o.Tools.HasIPv6 {
		return append(fams, IPv6), nil
	}
	if o.Require6 {
		return nil, fmt.Errorf("IPv6 rules were asked for (--ipv6=true) but %s does not work here (no ip6tables, or no IPv6 nat in the kernel)", o.Tools.bin(IPv6, "save"))
	}
	o.logger().Warn("ip6tables does not work here; IPv6 traffic is not captured", "tool", o.Tools.bin(IPv6, "save"))
	return fams, nil
}

func (o Options) logger() *slog.Logger {
	if o.Log != nil {
		return o.Log
	}
	return slog.Default()
}

// Apply installs c's rules, replacing any ISTIO_ chains and jumps already
// there, in one iptables-restore --noflush transaction per family (so a
// rerun of the init container leaves the same rules, and a failure leaves
// the namespace as it was).
func Apply(ctx context.Context, c Config, o Options) error {
	if err := c.Validate(); err != nil {
		return err
	}
	fams, err := o.families()
	if err != nil {
		return err
	}
	for _, f := range fams {
		current, err := o.Tools.save(ctx, f)
		if err != nil {
			return err
		}
		rules := c.Rules(f)
		lines := restoreLines(rules, cleanupLines(current))
		for _, l := range lines {
			o.logger().Debug("iptables-restore input", "family", f.String(), "line", l)
		}
		if err := o.restore(ctx, f, lines); err != nil {
			return err
		}
		o.logger().Info("capture rules applied", "family", f.String(), "tool", o.Tools.bin(f, "restore"), "rules", len(rules))
	}
	return nil
}

// Cleanup removes every ISTIO_ chain, and the rules that jump to them,
// from every table; nothing to remove is no error.
func Cleanup(ctx context.Context, o Options) error {
	fams, err := o.families()
	if err != nil {
		return err
	}
	for _, f := range fams {
		current, err := o.Tools.save(ctx, f)
		if err != nil {
			return err
		}
		lines := restoreLines(nil, cleanupLines(current))
		if len(lines) == 0 {
			o.logger().Info("no capture rules to remove", "family", f.String())
			continue
		}
		for _, l := range lines {
			o.logger().Debug("iptables-restore input", "family", f.String(), "line", l)
		}
		if err := o.restore(ctx, f, lines); err != nil {
			return err
		}
		o.logger().Info("capture rules removed", "family", f.String(), "tool", o.Tools.bin(f, "restore"))
	}
	return nil
}

// failedLine finds the input line iptables-restore blames: "Error
// occurred at line: N" (parse errors) or "line N failed" (commit errors).
var failedLine = regexp.MustCompile(`(?:Error occurred at line: |line )(\d+)`)

// RuleError is an iptables-restore failure; Rule is the input line it
// blamed, when it named one.
type RuleError struct {
	Tool   string
	Line   int
	Rule   string
	Output string
	Err    error
}

func (e *RuleError) Error() string {
	switch {
	case e.Rule == "COMMIT":
		return fmt.Sprintf("%s: the kernel rejected the table's rules at COMMIT (are the nat, owner and REDIRECT netfilter modules available?): %s", e.Tool, e.Output)
	case e.Rule != "":
		return fmt.Sprintf("%s: rule %q (input line %d) failed: %s", e.Tool, e.Rule, e.Line, e.Output)
	default:
		return fmt.Sprintf("%s failed: %s", e.Tool, e.Output)
	}
}

func (e *RuleError) Unwrap() error { return e.Err }

func (o Options) restore(ctx context.Context, f Family, lines []string) error {
	name := o.Tools.bin(f, "restore")
	args := []string{"--noflush"}
	if o.Tools.Variant == "legacy" {
		args = append(args, "--wait") // legacy serialises on the xtables lock
	}
	_, stderr, err := o.Tools.run(ctx, strings.Join(lines, "\n")+"\n", name, args...)
	if err == nil {
		return nil
	}
	re := &RuleError{Tool: name, Output: trimUsageHint(stderr), Err: err}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		re.Output = err.Error()
	}
	if m := failedLine.FindStringSubmatch(stderr); m != nil {
		if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(lines) {
			re.Line, re.Rule = n, lines[n-1]
		}
	}
	return re
}

// trimUsageHint drops iptables' "Try `iptables-restore -h'" line, which
// is no help for generated input.
func trimUsageHint(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "Try `") {
			out = append(out, l)
		}
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}

// cleanupLines reads iptables-save output and returns, per table, the
// iptables-restore lines that remove its ISTIO_ chains: -D of every rule
// of a built-in or other chain that jumps to one, then -F and -X of each.
func cleanupLines(save string) map[string][]string {
	out := map[string][]string{}
	var table string
	var chains []string
	var jumps []string
	flush := func() {
		if table == "" {
			return
		}
		var ls []string
		ls = append(ls, jumps...)
		for _, c := range chains {
			ls = append(ls, "-F "+c)
		}
		for _, c := range chains {
			ls = append(ls, "-X "+c)
		}
		if len(ls) > 0 {
			out[table] = ls
		}
		table, chains, jumps = "", nil, nil
	}
	for _, l := range strings.Split(save, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "*"):
			flush()
			table = strings.TrimSpace(l[1:])
		case l == "COMMIT":
			flush()
		case strings.HasPrefix(l, ":"):
			if name, _, _ := strings.Cut(l[1:], " "); strings.HasPrefix(name, chainPrefix) {
				chains = append(chains, name)
			}
		case strings.HasPrefix(l, "-A "):
			fields := strings.Fields(l)
			if len(fields) < 2 || strings.HasPrefix(fields[1], chainPrefix) {
				continue // flushed with its chain
			}
			for i := 2; i+1 < len(fields); i++ {
				if (fields[i] == "-j" || fields[i] == "-g") && strings.HasPrefix(fields[i+1], chainPrefix) {
					jumps = append(jumps, "-D "+l[len("-A "):])
					break
				}
			}
		}
	}
	flush()
	return out
}
