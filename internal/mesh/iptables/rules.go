package iptables

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Rule is one iptables-restore line of a table: "-A CHAIN ..." or
// "-I CHAIN N ...".
type Rule struct {
	Table string
	Chain string
	Line  string
}

// builder collects rules in Istio's order.
type builder struct{ rules []Rule }

func (b *builder) append(table, chain string, params ...string) {
	b.rules = append(b.rules, Rule{Table: table, Chain: chain, Line: "-A " + chain + " " + strings.Join(params, " ")})
}

func (b *builder) insert(table, chain string, pos int, params ...string) {
	b.rules = append(b.rules, Rule{Table: table, Chain: chain, Line: "-I " + chain + " " + strconv.Itoa(pos) + " " + strings.Join(params, " ")})
}

// builtin are the chains and targets iptables defines: no -N for them.
var builtin = map[string]bool{
	"PREROUTING": true, "INPUT": true, "FORWARD": true, "OUTPUT": true, "POSTROUTING": true,
	"RETURN": true, "ACCEPT": true, "DROP": true, "REJECT": true, "REDIRECT": true, "MARK": true,
	"TPROXY": true, "CONNMARK": true, "CT": true, "LOG": true,
}

// Rules are c's rules for family f, in Istio's order (run.go's Run for
// REDIRECT mode).
func (c Config) Rules(f Family) []Rule {
	b := &builder{}
	port := func(p uint16) string { return strconv.Itoa(int(p)) }

	// Excluded interfaces return before anything jumps to ISTIO_ chains.
	for _, ifc := range c.ExcludeInterfaces {
		b.append("nat", "PREROUTING", "-i", ifc, "-j", "RETURN")
		b.append("nat", "OUTPUT", "-o", ifc, "-j", "RETURN")
	}
	// Rerouted (VM) interfaces are not inbound: inserted first, so the
	// ISTIO_REDIRECT inserts below end up ahead of these returns.
	for _, ifc := range c.RerouteInterfaces {
		b.insert("nat", "PREROUTING", 1, "-i", ifc, "-j", "RETURN")
	}

	b.append("nat", ChainInbound, "-p", "tcp", "--dport", port(c.TunnelPort), "-j", "RETURN")
	b.append("nat", ChainRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(c.OutboundPort))
	b.append("nat", ChainInRedirect, "-p", "tcp", "-j", "REDIRECT", "--to-ports", port(c.InboundPort))

	if c.InboundAll || len(c.InboundPorts) > 0 {
		b.append("nat", "PREROUTING", "-p", "tcp", "-j", ChainInbound)
		if c.InboundAll {
			for _, p := range c.ExcludeInboundPorts {
				b.append("nat", ChainInbound, "-p", "tcp", "--dport", p, "-j", "RETURN")
			}
			b.append("nat", ChainInbound, "-p", "tcp", "-j", ChainInRedirect)
		} else {
			for _, p := range c.InboundPorts {
				b.append("nat", ChainInbound, "-p", "tcp", "--dport", p, "-j", ChainInRedirect)
			}
		}
	}

	b.append("nat", "OUTPUT", "-j", ChainOutput)
	// Port exclusions come before the return-to-self redirects.
	for _, p := range c.ExcludeOutboundPorts {
		b.append("nat", ChainOutput, "-p", "tcp", "--dport", p, "-j", "RETURN")
		b.append("nat", ChainOutput, "-p", "udp", "--dport", p, "-j", "RETURN")
	}
	// The sidecar's inbound passthrough connects to the application from
	// 127.0.0.6 (::6): never captured.
	b.append("nat", ChainOutput, "-o", "lo", "-s", f.passthroughSource(), "-j", "RETURN")

	// A loopback CIDR in the include list means app-to-app on lo is to be
	// captured, so the lo RETURNs are left out (either family's, as Istio).
	includesLoopback := slices.ContainsFunc(c.OutboundCIDRs, func(p netip.Prefix) bool { return p.Addr().IsLoopback() })
	owner := func(kind string, ids []string) {
		for _, id := range ids {
			// The proxy calling a VIP that resolves to its own pod goes
			// over lo to a non-loopback address: send it to inbound
			// (app -> sidecar (out) -> sidecar (in) -> app).
			b.append("nat", ChainOutput, "-o", "lo", "!", "-d", f.loopback(), "-p", "tcp",
				"!", "--dport", port(c.TunnelPort), "-m", "owner", "--"+kind+"-owner", id, "-j", ChainInRedirect)
			if !includesLoopback {
				// The application calling itself by pod address over lo.
				b.append("nat", ChainOutput, "-o", "lo", "-m", "owner", "!", "--"+kind+"-owner", id, "-j", "RETURN")
			}
			// The sidecar's own traffic, TCP or UDP, never loops back.
			b.append("nat", ChainOutput, "-m", "owner", "--"+kind+"-owner", id, "-j", "RETURN")
		}
	}
	owner("uid", c.ProxyUIDs)
	owner("gid", c.ProxyGIDs)

	// Envoy-aware applications and container-to-container traffic use
	// localhost.
	b.append("nat", ChainOutput, "-d", f.loopback(), "-j", "RETURN")
	for _, p := range c.ExcludeOutboundCIDRs {
		if isFamily(p, f) {
			b.append("nat", ChainOutput, "-d", p.String(), "-j", "RETURN")
		}
	}
	for _, p := range c.IncludeOutboundPorts {
		b.append("nat", ChainOutput, "-p", "tcp", "--dport", p, "-j", ChainRedirect)
	}
	if c.OutboundAll {
		b.append("nat", ChainOutput, "-j", ChainRedirect)
		for _, ifc := range c.RerouteInterfaces {
			b.insert("nat", "PREROUTING", 1, "-i", ifc, "-j", ChainRedirect)
		}
	} else {
		for _, p := range c.OutboundCIDRs {
			if !isFamily(p, f) {
				continue
			}
			for _, ifc := range c.RerouteInterfaces {
				b.insert("nat", "PREROUTING", 1, "-i", ifc, "-d", p.String(), "-j", ChainRedirect)
			}
			b.append("nat", ChainOutput, "-d", p.String(), "-j", ChainRedirect)
		}
	}
	return b.rules
}

func isFamily(p netip.Prefix, f Family) bool {
	return p.Addr().Is4() == (f == IPv4)
}

// Restore renders rules in iptables-restore form, as Istio's builder: per
// table (sorted), the -N of every chain the rules use or jump to, then
// the rules, then COMMIT.
func Restore(rules []Rule) string {
	return strings.Join(restoreLines(rules, nil), "\n") + "\n"
}

// restoreLines renders rules, with prelude (per table: cleanup lines) ahead
// of each table's -N lines.
func restoreLines(rules []Rule, prelude map[string][]string) []string {
	tables := map[string][]Rule{}
	for _, r := range rules {
		tables[r.Table] = append(tables[r.Table], r)
	}
	for t := range prelude {
		if _, ok := tables[t]; !ok {
			tables[t] = nil
		}
	}
	names := make([]string, 0, len(tables))
	for t := range tables {
		names = append(names, t)
	}
	slices.Sort(names)
	var out []string
	for _, t := range names {
		rs := tables[t]
		if len(rs) == 0 && len(prelude[t]) == 0 {
			continue
		}
		out = append(out, "* "+t)
		out = append(out, prelude[t]...)
		seen := map[string]bool{}
		newChain := func(c string) {
			if !builtin[c] && !seen[c] {
				out = append(out, "-N "+c)
			}
			seen[c] = true
		}
		for _, r := range rs {
			newChain(r.Chain)
		}
		// Chains only jumped to are created too.
		for _, r := range rs {
			if f := strings.Fields(r.Line); len(f) >= 2 && f[len(f)-2] == "-j" {
				newChain(f[len(f)-1])
			}
		}
		for _, r := range rs {
			out = append(out, r.Line)
		}
		out = append(out, "COMMIT")
	}
	return out
}
