package iptables

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the generated rules")

func mustCIDRs(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	_, c, err := ParseCIDRs("test", s, false)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRulesGolden compares the generated iptables-restore text, IPv4 then
// IPv6, with testdata/<name>.golden (go test -run TestRulesGolden -update
// rewrites them; review the diff against Istio's capture goldens).
func TestRulesGolden(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(t *testing.T, c *Config)
	}{
		{"defaults", func(*testing.T, *Config) {}},
		{"inbound-ports-list", func(_ *testing.T, c *Config) {
			c.InboundAll, c.InboundPorts = false, []string{"8080", "9000:9100"}
		}},
		{"inbound-none", func(_ *testing.T, c *Config) { c.InboundAll, c.InboundPorts = false, nil }},
		{"exclusions", func(t *testing.T, c *Config) {
			c.ExcludeInboundPorts = mergePorts(c.ExcludeInboundPorts, []string{"8443"})
			c.ExcludeOutboundPorts = []string{"3306", "6379"}
			c.ExcludeOutboundCIDRs = mustCIDRs(t, "10.96.0.0/12,169.254.169.254,2001:db8:1::/48")
		}},
		{"outbound-cidrs", func(t *testing.T, c *Config) {
			c.OutboundAll, c.OutboundCIDRs = false, mustCIDRs(t, "10.0.0.0/8,2001:db8::/32")
			c.IncludeOutboundPorts = []string{"32000"}
		}},
		{"outbound-none", func(_ *testing.T, c *Config) { c.OutboundAll = false }},
		{"outbound-loopback", func(t *testing.T, c *Config) {
			// Istio's loopback-outbound-iprange: the lo RETURNs go.
			c.OutboundAll, c.OutboundCIDRs = false, mustCIDRs(t, "127.1.2.3/32")
		}},
		{"owners-ports", func(_ *testing.T, c *Config) {
			c.ProxyUIDs, c.ProxyGIDs = []string{"3", "4"}, []string{"1", "2"}
			c.OutboundPort, c.InboundPort = 16001, 16006
		}},
		{"interfaces", func(_ *testing.T, c *Config) {
			c.ExcludeInterfaces = []string{"not-for-me"}
			c.RerouteInterfaces = []string{"eth1", "eth2"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.cfg(t, &c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			got := "# IPv4\n" + Restore(c.Rules(IPv4)) + "# IPv6\n" + Restore(c.Rules(IPv6))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rules differ from %s (-update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// TestRulesMatchIstio holds the defaults for one uid and "*" both ways to
// the exact lines of Istio's inbound-ports-wildcard golden plus the
// outbound wildcard jump, so a drift from Istio's shapes is caught even if
// a golden is regenerated carelessly.
func TestRulesMatchIstio(t *testing.T) {
	c := Default()
	c.ExcludeInboundPorts = nil
	want := `* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
`
	if got := Restore(c.Rules(IPv4)); got != want {
		t.Errorf("got\n%s\nwant (Istio's)\n%s", got, want)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantErr  string
		fn       func(string) error
	}{
		{"ports ok", "80,443, 8000:8999", "", func(s string) error { _, err := ParsePorts("-x", s); return err }},
		{"port zero", "0", "not a port", func(s string) error { _, err := ParsePorts("--exclude-outbound-ports", s); return err }},
		{"port big", "70000", "--exclude-outbound-ports", func(s string) error { _, err := ParsePorts("--exclude-outbound-ports", s); return err }},
		{"range bad", "80:x", "not a port", func(s string) error { _, err := ParsePorts("-x", s); return err }},
		{"cidr bad", "10.0.0.0/33", "not a CIDR", func(s string) error { _, _, err := ParseCIDRs("-x", s, false); return err }},
		{"cidr star excluded", "*", "not allowed", func(s string) error { _, _, err := ParseCIDRs("-x", s, false); return err }},
		{"cidr bare", "192.0.2.1,2001:db8::1", "", func(s string) error { _, _, err := ParseCIDRs("-x", s, false); return err }},
		{"uid bad", "istio-proxy", "not a numeric id", func(s string) error { _, err := ParseIDs("--proxy-uid", s); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.fn(tc.in)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	_, c, _ := ParseCIDRs("-x", "192.0.2.1,2001:db8::1", false)
	if c[0].String() != "192.0.2.1/32" || c[1].String() != "2001:db8::1/128" {
		t.Errorf("bare addresses: got %v", c)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.ProxyUIDs = nil
	if err := c.Validate(); err == nil {
		t.Error("no proxy uid: want an error")
	}
	c = Default()
	c.ExcludeInterfaces = []string{"eth0 -j DROP"}
	if err := c.Validate(); err == nil {
		t.Error("interface with spaces: want an error")
	}
}

func TestCleanupLines(t *testing.T) {
	save := `# Generated by iptables-nft-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
-A PREROUTING -p tcp -m mark --mark 0x539 -j CONNMARK --save-mark
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_DIVERT -j ACCEPT
:ISTIO_INBOUND - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:MINE - [0:0]
-A OUTPUT -p tcp -j MINE
-A OUTPUT -j ISTIO_OUTPUT
-A MINE -g ISTIO_OUTPUT
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
`
	got := cleanupLines(save)
	want := map[string]string{
		"mangle": "-D PREROUTING -p tcp -j ISTIO_INBOUND\n-F ISTIO_DIVERT\n-F ISTIO_INBOUND\n-X ISTIO_DIVERT\n-X ISTIO_INBOUND",
		"nat":    "-D OUTPUT -j ISTIO_OUTPUT\n-D MINE -g ISTIO_OUTPUT\n-F ISTIO_OUTPUT\n-X ISTIO_OUTPUT",
	}
	if len(got) != len(want) {
		t.Fatalf("tables: got %v", got)
	}
	for table, w := range want {
		if g := strings.Join(got[table], "\n"); g != w {
			t.Errorf("%s: got\n%s\nwant\n%s", table, g, w)
		}
	}
}
