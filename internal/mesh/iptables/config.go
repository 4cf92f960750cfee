// Package iptables writes a sidecar's traffic-capture rules, as Istio's
// istio-iptables (pilot-agent istio-iptables, the istio-init container)
// does: outbound TCP is redirected to the sidecar's virtualOutbound port
// (15001) and inbound TCP to virtualInbound (15006), in the nat table,
// with Istio's chain names (ISTIO_INBOUND, ISTIO_IN_REDIRECT,
// ISTIO_OUTPUT, ISTIO_REDIRECT) and rule shapes, for IPv4 and IPv6.
//
// Rules are rendered in iptables-restore form (Rules, Restore) and applied
// with iptables-restore --noflush in one transaction per family, which
// also removes any ISTIO_ chains left from an earlier run (Apply); Cleanup
// removes them.
package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/legateproxy/legate/internal/mesh"
)

// Chain names, Istio's.
const (
	ChainInbound    = "ISTIO_INBOUND"
	ChainInRedirect = "ISTIO_IN_REDIRECT"
	ChainOutput     = "ISTIO_OUTPUT"
	ChainRedirect   = "ISTIO_REDIRECT"
)

// chainPrefix marks every chain Istio's or Legate's capture owns; Cleanup
// removes all of them (including Istio's TPROXY and DNS chains).
const chainPrefix = "ISTIO_"

// Family is an IP version.
type Family int

// The families rules are written for.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// loopback is the family's loopback destination the sidecar never
// intercepts, Istio's HOST_IPV4_LOOPBACK_CIDR default and ::1/128.
func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.1/32"
}

// passthroughSource is the family's InboundPassthroughBind: connections
// from it on lo are the sidecar's own to the application.
func (f Family) passthroughSource() string {
	if f == IPv6 {
		return "::6/128"
	}
	return mesh.InboundPassthroughBind + "/32"
}

// Config is what to capture. Zero-value lists mean none; Default is what
// a standard sidecar needs.
type Config struct {
	// ProxyUIDs and ProxyGIDs are the sidecar's users and groups, whose
	// traffic goes out uncaptured (except to itself through a VIP).
	ProxyUIDs []string
	ProxyGIDs []string
	// OutboundPort and InboundPort are the redirect targets; TunnelPort is
	// never intercepted inbound nor for the proxy's calls to itself.
	OutboundPort uint16
	InboundPort  uint16
	TunnelPort   uint16
	// InboundAll captures every inbound port but ExcludeInboundPorts;
	// otherwise InboundPorts lists the captured ones (none when empty).
	InboundAll          bool
	InboundPorts        []string
	ExcludeInboundPorts []string
	// OutboundAll captures outbound TCP to every address but
	// ExcludeOutboundCIDRs; otherwise OutboundCIDRs lists the captured
	// ranges (none when empty).
	OutboundAll          bool
	OutboundCIDRs        []netip.Prefix
	ExcludeOutboundCIDRs []netip.Prefix
	// IncludeOutboundPorts are captured whatever their address;
	// ExcludeOutboundPorts (TCP and UDP) never are.
	IncludeOutboundPorts []string
	ExcludeOutboundPorts []string
	// ExcludeInterfaces are never captured, in or out; RerouteInterfaces'
	// inbound traffic is treated as outbound (Istio's kube-virt
	// interfaces, for VMs).
	ExcludeInterfaces []string
	RerouteInterfaces []string
}

// DefaultExcludeInboundPorts are never intercepted inbound whatever the
// flags say: the agent, readiness and Prometheus stats ports, the list
// Istio's injector always passes (-d 15090,15021,15020).
var DefaultExcludeInboundPorts = []string{
	strconv.Itoa(mesh.StatsPort), strconv.Itoa(mesh.ReadinessPort), strconv.Itoa(mesh.AgentPort),
}

// Default is a standard sidecar's capture: everything in and out, for
// uid and gid 1337, to 15006 and 15001, but the sidecar's own ports.
func Default() Config {
	return Config{
		ProxyUIDs:           []string{strconv.Itoa(mesh.ProxyUID)},
		ProxyGIDs:           []string{strconv.Itoa(mesh.ProxyGID)},
		OutboundPort:        mesh.OutboundPort,
		InboundPort:         mesh.InboundPort,
		TunnelPort:          mesh.TunnelPort,
		InboundAll:          true,
		ExcludeInboundPorts: append([]string(nil), DefaultExcludeInboundPorts...),
		OutboundAll:         true,
	}
}

// split is Istio's list syntax: comma-separated, blanks ignored.
func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParsePorts reads a comma-separated list of ports or port ranges
// (iptables' "8000:8999"); name is the flag, for the error.
func ParsePorts(name, s string) ([]string, error) {
	var out []string
	for _, p := range split(s) {
		lo, hi, isRange := strings.Cut(p, ":")
		if _, err := parsePort(lo); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, p, err)
		}
		if isRange {
			if _, err := parsePort(hi); err != nil {
				return nil, fmt.Errorf("%s: %q: %w", name, p, err)
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("not a port number (1-65535)")
	}
	return uint16(n), nil
}

// ParsePort reads one port; name is the flag, for the error.
func ParsePort(name, s string) (uint16, error) {
	n, err := parsePort(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s: %q: %w", name, s, err)
	}
	return n, nil
}

// ParseInboundPorts reads Istio's inbound port selection: "*" for all,
// a list, or "" for none.
func ParseInboundPorts(name, s string) (all bool, ports []string, err error) {
	if strings.TrimSpace(s) == "*" {
		return true, nil, nil
	}
	ports, err = ParsePorts(name, s)
	return false, ports, err
}

// ParseCIDRs reads a comma-separated list of CIDRs, IPv4 or IPv6 (a bare
// address is a /32 or /128); wildcard allows "*" for all.
func ParseCIDRs(name, s string, wildcard bool) (all bool, cidrs []netip.Prefix, err error) {
	if strings.TrimSpace(s) == "*" {
		if !wildcard {
			return false, nil, fmt.Errorf("%s: \"*\" is not allowed here (list the ranges to exclude)", name)
		}
		return true, nil, nil
	}
	for _, c := range split(s) {
		p, perr := netip.ParsePrefix(c)
		if perr != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return false, nil, fmt.Errorf("%s: %q is not a CIDR (such as 10.0.0.0/8 or 2001:db8::/32): %w", name, c, perr)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		cidrs = append(cidrs, p)
	}
	return false, cidrs, nil
}

// ParseIDs reads a comma-separated list of numeric user or group ids.
func ParseIDs(name, s string) ([]string, error) {
	var out []string
	for _, id := range split(s) {
		if _, err := strconv.ParseUint(id, 10, 32); err != nil {
			return nil, fmt.Errorf("%s: %q is not a numeric id", name, id)
		}
		out = append(out, id)
	}
	return out, nil
}

// Validate checks c for what iptables would reject late or what would
// lock the sidecar out of its own traffic.
func (c Config) Validate() error {
	if len(c.ProxyUIDs) == 0 {
		return fmt.Errorf("proxy uid: at least one is needed (the sidecar's own traffic would loop back to it)")
	}
	if c.OutboundPort == 0 || c.InboundPort == 0 || c.TunnelPort == 0 {
		return fmt.Errorf("outbound, inbound and tunnel ports must be set (1-65535)")
	}
	for _, ifc := range append(append([]string(nil), c.ExcludeInterfaces...), c.RerouteInterfaces...) {
		if strings.ContainsAny(ifc, " \t\n\"'") || len(ifc) > 15 {
			return fmt.Errorf("interface %q is not an interface name", ifc)
		}
	}
	return nil
}

// mergePorts is base followed by extra's ports not in it.
func mergePorts(base, extra []string) []string {
	out := append([]string(nil), base...)
	seen := map[string]bool{}
	for _, p := range base {
		seen[p] = true
	}
	for _, p := range extra {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// WithDefaultExclusions is c with DefaultExcludeInboundPorts first in
// its inbound exclusions, as Istio's injector always passes them.
func (c Config) WithDefaultExclusions() Config {
	c.ExcludeInboundPorts = mergePorts(DefaultExcludeInboundPorts, c.ExcludeInboundPorts)
	return c
}
