package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/iptables"
)

func init() {
	register("iptables", "install a sidecar's traffic capture rules (the init container; Istio's istio-iptables)", runIptables)
}

// iptablesFlags are `legate iptables`' flags: Legate's long names, with
// Istio's istio-iptables names (short and long) as aliases, so Istio's
// injection templates run unchanged.
type iptablesFlags struct {
	proxyUID, proxyGID                              string
	outboundPort, inboundPort, tunnelPort           string
	inboundPorts, excludeInboundPorts               string
	outboundCIDRs, excludeOutboundCIDRs             string
	includeOutboundPorts, excludeOutboundPorts      string
	excludeInterfaces, rerouteInterfaces            string
	mode, tproxyMark, tproxyTable                   string
	ipv6, iptablesBinary, netns, logLevel, istioLog string
	dryRun, cleanup, skipApply                      bool
	// Istio switches Legate does not implement: an error when set.
	redirectDNS, captureAllDNS, dropInvalid, runValidation, nativeNft, cniMode bool
	// Istio switches that change nothing here (see docs/iptables.md).
	dualStack, reconcile, forceApply bool
	probePort, probeTimeout          string
}

func newIptablesFlags(out io.Writer) (*flag.FlagSet, *iptablesFlags) {
	fs := flag.NewFlagSet("legate iptables", flag.ContinueOnError)
	fs.SetOutput(out)
	f := &iptablesFlags{}
	str := func(p *string, def, usage string, names ...string) {
		fs.StringVar(p, names[0], def, usage)
		for _, alias := range names[1:] {
			fs.StringVar(p, alias, def, "Istio's name for --"+names[0])
		}
	}
	boolean := func(p *bool, usage string, names ...string) {
		fs.BoolVar(p, names[0], false, usage)
		for _, alias := range names[1:] {
			fs.BoolVar(p, alias, false, "Istio's name for --"+names[0])
		}
	}
	port := func(n int) string { return strconv.Itoa(n) }
	str(&f.proxyUID, port(mesh.ProxyUID), "comma-separated uids whose traffic is not captured (the sidecar's)", "proxy-uid", "u")
	str(&f.proxyGID, "", "comma-separated gids whose traffic is not captured (default: --proxy-uid)", "proxy-gid", "g")
	str(&f.outboundPort, port(mesh.OutboundPort), "port outbound TCP is redirected to (virtualOutbound)", "outbound-port", "p", "envoy-port")
	str(&f.inboundPort, port(mesh.InboundPort), "port inbound TCP is redirected to (virtualInbound)", "inbound-port", "z", "inbound-capture-port")
	str(&f.tunnelPort, port(mesh.TunnelPort), "inbound tunnel port, never captured", "inbound-tunnel-port", "e")
	str(&f.inboundPorts, "*", `inbound ports captured: "*" for all, a comma-separated list, or "" for none`, "inbound-ports", "b", "istio-inbound-ports")
	str(&f.excludeInboundPorts, "", "inbound ports not captured when --inbound-ports is \"*\" ("+strings.Join(iptables.DefaultExcludeInboundPorts, ",")+" always are)", "exclude-inbound-ports", "d", "istio-local-exclude-ports")
	str(&f.outboundCIDRs, "*", `outbound destinations captured: "*" for all, comma-separated CIDRs (IPv4 and IPv6), or "" for none`, "outbound-cidrs", "i", "istio-service-cidr")
	str(&f.excludeOutboundCIDRs, "", "comma-separated CIDRs never captured outbound", "exclude-outbound-cidrs", "x", "istio-service-exclude-cidr")
	str(&f.includeOutboundPorts, "", "outbound ports captured whatever the destination", "include-outbound-ports", "q", "istio-outbound-ports")
	str(&f.excludeOutboundPorts, "", "outbound ports (TCP and UDP) never captured", "exclude-outbound-ports", "o", "istio-local-outbound-ports-exclude")
	str(&f.excludeInterfaces, "", "interfaces whose traffic is never captured, in or out", "exclude-interfaces", "c", "istio-exclude-interfaces")
	str(&f.rerouteInterfaces, "", "interfaces whose inbound traffic is captured as outbound (VMs)", "reroute-interfaces", "k", "kube-virt-interfaces")
	str(&f.mode, "REDIRECT", "inbound interception mode: REDIRECT (TPROXY is not implemented)", "mode", "m", "istio-inbound-interception-mode")
	str(&f.tproxyMark, "", "TPROXY mark (TPROXY mode only, not implemented)", "istio-inbound-tproxy-mark", "t")
	str(&f.tproxyTable, "", "TPROXY route table (TPROXY mode only, not implemented)", "istio-inbound-tproxy-route-table", "r")
	str(&f.ipv6, "auto", "IPv6 rules: auto (when ip6tables works here), true (required), false", "ipv6")
	str(&f.iptablesBinary, "", "iptables variant: nft or legacy (default: detected)", "iptables-binary", "force-iptables-binary")
	str(&f.netns, "", "network namespace path to apply the rules in (default: this process's)", "network-namespace")
	str(&f.logLevel, "info", "log level (debug, info, warning, error)", "log-level")
	str(&f.istioLog, "", "Istio's log levels (scope:level,...); its default scope's level sets --log-level", "log_output_level")
	boolean(&f.dryRun, "print the rules in iptables-restore form and change nothing", "dry-run", "n")
	boolean(&f.cleanup, "remove the ISTIO_ chains and the rules jumping to them, and install nothing", "cleanup", "cleanup-only")
	boolean(&f.skipApply, "do nothing (Istio's --skip-rule-apply)", "skip-rule-apply")
	boolean(&f.redirectDNS, "not implemented: Istio's DNS capture", "redirect-dns")
	boolean(&f.captureAllDNS, "not implemented: Istio's DNS capture", "capture-all-dns")
	boolean(&f.dropInvalid, "not implemented: Istio's INVALID conntrack drop", "drop-invalid")
	boolean(&f.runValidation, "not implemented: Istio's post-install probe", "run-validation")
	boolean(&f.nativeNft, "not implemented: native nftables rules (the nf_tables iptables tools are used)", "native-nftables")
	boolean(&f.cniMode, "not implemented: running as the CNI plugin", "cni-mode")
	boolean(&f.dualStack, "accepted: IPv6 rules follow --ipv6", "dual-stack")
	boolean(&f.reconcile, "accepted: existing ISTIO_ rules are always replaced atomically", "reconcile")
	boolean(&f.forceApply, "accepted: rules are always applied", "force-apply")
	str(&f.probePort, "", "accepted with --run-validation only", "iptables-probe-port")
	str(&f.probeTimeout, "", "accepted with --run-validation only", "probe-timeout")
	return fs, f
}

// config turns the flags into a capture configuration, or an error that
// names the flag.
func (f *iptablesFlags) config() (iptables.Config, error) {
	var c iptables.Config
	var err error
	notImpl := map[string]bool{"--redirect-dns": f.redirectDNS, "--capture-all-dns": f.captureAllDNS,
		"--drop-invalid": f.dropInvalid, "--run-validation": f.runValidation, "--native-nftables": f.nativeNft, "--cni-mode": f.cniMode}
	for _, name := range []string{"--redirect-dns", "--capture-all-dns", "--drop-invalid", "--run-validation", "--native-nftables", "--cni-mode"} {
		if notImpl[name] {
			return c, fmt.Errorf("%s is not implemented by legate iptables; leave it unset", name)
		}
	}
	switch strings.ToUpper(strings.TrimSpace(f.mode)) {
	case "", "REDIRECT":
	case "TPROXY":
		return c, fmt.Errorf("--mode TPROXY is not implemented (only REDIRECT): leave sidecar.istio.io/interceptionMode unset or REDIRECT")
	default:
		return c, fmt.Errorf("--mode %q: must be REDIRECT", f.mode)
	}
	if c.ProxyUIDs, err = iptables.ParseIDs("--proxy-uid", f.proxyUID); err != nil {
		return c, err
	}
	gid := f.proxyGID
	if strings.TrimSpace(gid) == "" {
		gid = f.proxyUID // Istio's: the gid defaults to the uid
	}
	if c.ProxyGIDs, err = iptables.ParseIDs("--proxy-gid", gid); err != nil {
		return c, err
	}
	if c.OutboundPort, err = iptables.ParsePort("--outbound-port", f.outboundPort); err != nil {
		return c, err
	}
	if c.InboundPort, err = iptables.ParsePort("--inbound-port", f.inboundPort); err != nil {
		return c, err
	}
	if c.TunnelPort, err = iptables.ParsePort("--inbound-tunnel-port", f.tunnelPort); err != nil {
		return c, err
	}
	if c.InboundAll, c.InboundPorts, err = iptables.ParseInboundPorts("--inbound-ports", f.inboundPorts); err != nil {
		return c, err
	}
	if c.ExcludeInboundPorts, err = iptables.ParsePorts("--exclude-inbound-ports", f.excludeInboundPorts); err != nil {
		return c, err
	}
	if c.OutboundAll, c.OutboundCIDRs, err = iptables.ParseCIDRs("--outbound-cidrs", f.outboundCIDRs, true); err != nil {
		return c, err
	}
	if _, c.ExcludeOutboundCIDRs, err = iptables.ParseCIDRs("--exclude-outbound-cidrs", f.excludeOutboundCIDRs, false); err != nil {
		return c, err
	}
	if c.IncludeOutboundPorts, err = iptables.ParsePorts("--include-outbound-ports", f.includeOutboundPorts); err != nil {
		return c, err
	}
	if c.ExcludeOutboundPorts, err = iptables.ParsePorts("--exclude-outbound-ports", f.excludeOutboundPorts); err != nil {
		return c, err
	}
	c.ExcludeInterfaces = splitList(f.excludeInterfaces)
	c.RerouteInterfaces = splitList(f.rerouteInterfaces)
	c = c.WithDefaultExclusions()
	return c, c.Validate()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// level is --log-level, or the default scope's level of Istio's
// --log_output_level ("default:info,ads:debug").
func (f *iptablesFlags) level() string {
	for _, kv := range strings.Split(f.istioLog, ",") {
		scope, lvl, ok := strings.Cut(strings.TrimSpace(kv), ":")
		if !ok {
			scope, lvl = "default", scope
		}
		if scope == "default" && lvl != "" && lvl != "none" {
			return lvl
		}
	}
	return f.logLevel
}

func runIptables(args []string) int {
	fs, f := newIptablesFlags(os.Stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "legate iptables: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, _, err := newLogger(f.level(), os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "legate iptables: --log-level: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := f.run(ctx, os.Stdout, log); err != nil {
		log.Error("legate iptables failed", "error", err)
		fmt.Fprintf(os.Stderr, "legate iptables: %v\n", err)
		return 1
	}
	return 0
}

// run does what the flags say: print, clean up or apply.
func (f *iptablesFlags) run(ctx context.Context, out io.Writer, log *slog.Logger) error {
	var ipv6, require6 bool
	switch strings.ToLower(f.ipv6) {
	case "auto", "":
		ipv6 = true
	case "true", "1", "yes":
		ipv6, require6 = true, true
	case "false", "0", "no":
	default:
		return fmt.Errorf("--ipv6 %q: use auto, true or false", f.ipv6)
	}
	if f.skipApply {
		log.Info("--skip-rule-apply: no rules changed")
		return nil
	}
	if f.cleanup {
		if f.dryRun {
			return fmt.Errorf("--cleanup with --dry-run: a dry run of the cleanup is not supported (run iptables-save to see what would be removed)")
		}
		tools, err := iptables.Detect(ctx, f.iptablesBinary, f.netns)
		if err != nil {
			return err
		}
		return iptables.Cleanup(ctx, iptables.Options{Tools: tools, IPv6: ipv6, Require6: require6, Log: log})
	}
	c, err := f.config()
	if err != nil {
		return err
	}
	if f.dryRun {
		fmt.Fprintf(out, "# iptables-restore --noflush\n%s", iptables.Restore(c.Rules(iptables.IPv4)))
		if ipv6 {
			fmt.Fprintf(out, "# ip6tables-restore --noflush\n%s", iptables.Restore(c.Rules(iptables.IPv6)))
		}
		return nil
	}
	tools, err := iptables.Detect(ctx, f.iptablesBinary, f.netns)
	if err != nil {
		return err
	}
	log.Info("using iptables", "variant", tools.Variant, "ipv6", tools.HasIPv6)
	return iptables.Apply(ctx, c, iptables.Options{Tools: tools, IPv6: ipv6, Require6: require6, Log: log})
}
