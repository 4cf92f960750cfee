package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cares "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// ttlResolver resolves names with their TTLs (respect_dns_ttl), following
// /etc/hosts and /etc/resolv.conf (search domains, ndots) as the system
// resolver does, or querying the cluster's dns_resolvers.
type ttlResolver struct {
	servers []string // host:port
	search  []string
	ndots   int
	useTCP  bool
	hosts   func(name string) []netip.Addr
}

func newTTLResolver(servers []string, useTCP bool) *ttlResolver {
	r := &ttlResolver{servers: servers, ndots: 1, useTCP: useTCP, hosts: hostsFile}
	if f, err := os.Open("/etc/resolv.conf"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 {
				continue
			}
			switch fields[0] {
			case "nameserver":
				if len(servers) == 0 {
					r.servers = append(r.servers, net.JoinHostPort(fields[1], "53"))
				}
			case "search", "domain":
				r.search = fields[1:]
			case "options":
				for _, o := range fields[1:] {
					if v, ok := strings.CutPrefix(o, "ndots:"); ok {
						if n, err := strconv.Atoi(v); err == nil {
							r.ndots = n
						}
					}
				}
			}
		}
		f.Close()
	}
	return r
}

// hostsFile looks a name up in /etc/hosts.
func hostsFile(name string) []netip.Addr {
	f, err := os.Open("/etc/hosts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, h := range fields[1:] {
			if strings.EqualFold(h, name) {
				if a, err := netip.ParseAddr(fields[0]); err == nil {
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// candidates lists the FQDNs to try for name (resolv.conf search rules).
func (r *ttlResolver) candidates(name string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	var out []string
	if strings.Count(name, ".") >= r.ndots {
		out = append(out, name+".")
	}
	for _, s := range r.search {
		out = append(out, name+"."+strings.TrimSuffix(s, ".")+".")
	}
	if strings.Count(name, ".") < r.ndots {
		out = append(out, name+".")
	}
	return out
}

var errNoAnswer = errors.New("no addresses")

// lookup returns the addresses of name for the network ("ip4", "ip6" or
// "ip") and the smallest TTL among the answers (0 when the name came from
// /etc/hosts or is an IP literal).
func (r *ttlResolver) lookup(ctx context.Context, name, network string) ([]netip.Addr, time.Duration, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a}, 0, nil
	}
	if hs := r.hosts(name); len(hs) > 0 {
		return hs, 0, nil
	}
	if len(r.servers) == 0 {
		return nil, 0, errors.New("no DNS servers configured")
	}
	var types []dnsmessage.Type
	if network != "ip6" {
		types = append(types, dnsmessage.TypeA)
	}
	if network != "ip4" {
		types = append(types, dnsmessage.TypeAAAA)
	}
	var lastErr error = errNoAnswer
	for _, fqdn := range r.candidates(name) {
		var addrs []netip.Addr
		var ttl time.Duration
		for _, t := range types {
			as, tt, err := r.query(ctx, fqdn, t)
			if err != nil {
				lastErr = err
				continue
			}
			addrs = append(addrs, as...)
			if len(as) > 0 && (ttl == 0 || tt < ttl) {
				ttl = tt
			}
		}
		if len(addrs) > 0 {
			return addrs, ttl, nil
		}
	}
	return nil, 0, fmt.Errorf("resolve %s: %w", name, lastErr)
}

// query asks each server in turn for one record type.
func (r *ttlResolver) query(ctx context.Context, fqdn string, t dnsmessage.Type) ([]netip.Addr, time.Duration, error) {
	n, err := dnsmessage.NewName(fqdn)
	if err != nil {
		return nil, 0, err
	}
	id := uint16(time.Now().UnixNano())
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: n, Type: t, Class: dnsmessage.ClassINET}}}
	packed, err := msg.Pack()
	if err != nil {
		return nil, 0, err
	}
	var lastErr error
	for _, srv := range r.servers {
		resp, err := r.exchange(ctx, srv, packed, r.useTCP)
		if err == nil && resp.Header.Truncated && !r.useTCP {
			resp, err = r.exchange(ctx, srv, packed, true)
		}
		if err != nil {
			lastErr = err
			continue
		}
		if resp.Header.ID != id {
			lastErr = errors.New("DNS response ID mismatch")
			continue
		}
		if resp.Header.RCode == dnsmessage.RCodeNameError {
			return nil, 0, errNoAnswer
		}
		var out []netip.Addr
		var ttl uint32
		for _, a := range resp.Answers {
			switch b := a.Body.(type) {
			case *dnsmessage.AResource:
				out = append(out, netip.AddrFrom4(b.A))
			case *dnsmessage.AAAAResource:
				out = append(out, netip.AddrFrom16(b.AAAA))
			default:
				continue
			}
			if ttl == 0 || a.Header.TTL < ttl {
				ttl = a.Header.TTL
			}
		}
		return out, time.Duration(ttl) * time.Second, nil
	}
	return nil, 0, lastErr
}

func (r *ttlResolver) exchange(ctx context.Context, srv string, q []byte, tcp bool) (*dnsmessage.Message, error) {
	var d net.Dialer
	network := "udp"
	if tcp {
		network = "tcp"
	}
	conn, err := d.DialContext(ctx, network, srv)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	buf := make([]byte, 65536)
	if tcp {
		framed := append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
		if _, err := conn.Write(framed); err != nil {
			return nil, err
		}
		if _, err := readFull(conn, buf[:2]); err != nil {
			return nil, err
		}
		l := int(buf[0])<<8 | int(buf[1])
		if _, err := readFull(conn, buf[:l]); err != nil {
			return nil, err
		}
		buf = buf[:l]
	} else {
		if _, err := conn.Write(q); err != nil {
			return nil, err
		}
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf); err != nil {
		return nil, err
	}
	return &m, nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// DNSSettings are what a DNS resolution configuration gives lookups: the
// name servers (host:port; none: the system's), TCP instead of UDP, and
// no search domains (names are queried as given, absolute).
type DNSSettings struct {
	Servers  []string
	UseTCP   bool
	NoSearch bool
}

// CompileDNSResolver compiles a typed_dns_resolver_config at path (the
// c-ares resolver's CaresDnsResolverConfig, Envoy's default resolver) on
// top of s.
func CompileDNSResolver(tc *corev3.TypedExtensionConfig, path string, s *DNSSettings) error {
	r, err := extension.Lookup(extension.DNSResolver, tc.GetTypedConfig(), config.Join(path, "typed_config"))
	if err != nil {
		return err
	}
	p := config.Join(path, "typed_config")
	cfg := r.Config.(*cares.CaresDnsResolverConfig)
	if err := config.CheckFields(cfg, p, "resolvers", "dns_resolver_options", "use_resolvers_as_fallback", "filter_unroutable_families"); err != nil {
		return err
	}
	if cfg.GetFilterUnroutableFamilies() {
		return config.Unsupported(config.Join(p, "filter_unroutable_families"), "dropping the address families of no routable interface")
	}
	if o := cfg.GetDnsResolverOptions(); o != nil {
		if err := config.CheckFields(o, config.Join(p, "dns_resolver_options"), "use_tcp_for_dns_lookups", "no_default_search_domain"); err != nil {
			return err
		}
		s.UseTCP = s.UseTCP || o.GetUseTcpForDnsLookups()
		s.NoSearch = o.GetNoDefaultSearchDomain()
	}
	var servers []string
	for i, a := range cfg.GetResolvers() {
		if a.GetSocketAddress() == nil {
			return config.Errorf(config.Index(config.Join(p, "resolvers"), i), "a DNS resolver is a socket_address")
		}
		servers = append(servers, sockAddr(a))
	}
	// use_resolvers_as_fallback: the resolvers serve only when the system
	// configures no name server (c-ares reads /etc/resolv.conf first).
	if cfg.GetUseResolversAsFallback() && len(systemNameServers()) > 0 {
		servers = nil
	}
	s.Servers = append(s.Servers, servers...)
	return nil
}

// systemNameServers lists /etc/resolv.conf's name servers.
func systemNameServers() []string {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 2 && fields[0] == "nameserver" {
			out = append(out, fields[1])
		}
	}
	return out
}

// resolver is a net.Resolver querying s's servers (nil: the system
// resolver applies).
func (s DNSSettings) resolver() *net.Resolver {
	if len(s.Servers) == 0 && !s.UseTCP {
		return nil
	}
	servers, useTCP := s.Servers, s.UseTCP
	var dialer net.Dialer
	var next atomic.Uint64
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if len(servers) > 0 {
			addr = servers[next.Add(1)%uint64(len(servers))]
		}
		if useTCP {
			network = "tcp"
		}
		return dialer.DialContext(ctx, network, addr)
	}}
}

// absolute makes name absolute when search domains are off.
func (s DNSSettings) absolute(name string) string {
	if s.NoSearch && !strings.HasSuffix(name, ".") {
		return name + "."
	}
	return name
}

// ttlResolver builds the TTL-aware resolver for s.
func (s DNSSettings) ttlResolver() *ttlResolver {
	r := newTTLResolver(s.Servers, s.UseTCP)
	if s.NoSearch {
		r.search = nil
	}
	return r
}
