// Listeners: addresses (IPv6) and the connection manager's server name.

package features_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

func TestIPv6ListenerAndServerName(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback on this machine")
	}
	ln.Close()
	u := testutil.StartUpstream(t, testutil.EchoHandler("u"))
	h, port := u.Host()
	p := testutil.StartProxy(t, fmt.Sprintf(`
static_resources:
  listeners:
  - name: v6
    address: {socket_address: {address: "::1", port_value: 0}}
    filter_chains: [{filters: [%s]}]
  clusters: [%s]
`, (`{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: v6, server_name: legate-edge,
  route_config: {virtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: u}}]}]},
  http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}`),
		staticCluster("u", "", net.JoinHostPort(h, port))), nil)
	code, hdr, body := testutil.Get(t, testutil.Client(), "http://"+p.Addr("v6")+"/six")
	if code != 200 || !strings.Contains(body, "path=/six") || hdr.Get("server") != "legate-edge" {
		t.Fatalf("IPv6 listener: %d server=%q\n%s", code, hdr.Get("server"), body)
	}
	if a, _ := netip.ParseAddrPort(p.Addr("v6")); !a.Addr().Is6() {
		t.Fatalf("bound %s, want IPv6", p.Addr("v6"))
	}
}

// TestFilterChainMatcher: Listener.filter_chain_matcher picks a chain by
// name from the connection's network inputs (here the source IP, the
// client binding 127.0.0.2, and in a matcher tree the destination port);
// no match is the default filter chain, and Envoy's rules on chain names
// and filter_chain_match are enforced.
func TestFilterChainMatcher(t *testing.T) {
	chains := `    filter_chains:
    - {name: from-two, filters: [` + directResponse(`, response: {inline_string: "two"}`) + `]}
    - {name: other, filters: [` + directResponse(`, response: {inline_string: "other"}`) + `]}
    default_filter_chain: {filters: [` + directResponse(`, response: {inline_string: "default"}`) + `]}
`
	p := testutil.StartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: list
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
`+chains+`    filter_chain_matcher:
      matcher_list:
        matchers:
        - predicate:
            single_predicate:
              input: {name: ip, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput}}
              value_match: {exact: 127.0.0.2}
          on_match: {action: {name: chain, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: from-two}}}
  - name: tree
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
`+chains+`    filter_chain_matcher:
      matcher_tree:
        input: {name: port, typed_config: {"@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.TransportProtocolInput}}
        exact_match_map:
          map:
            raw_buffer: {action: {name: chain, typed_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: other}}}
`, nil)
	read := func(addr, local string) string {
		d := net.Dialer{Timeout: 2 * time.Second}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := read(p.Addr("list"), "127.0.0.2"); got != "two" {
		t.Errorf("from 127.0.0.2: %q, want the chain the matcher names", got)
	}
	if got := read(p.Addr("list"), "127.0.0.1"); got != "default" {
		t.Errorf("from 127.0.0.1: %q, want the default chain", got)
	}
	if got := read(p.Addr("tree"), ""); got != "other" {
		t.Errorf("matcher tree on the transport protocol: %q, want other", got)
	}
	for _, tc := range []struct{ chains, matcher, want string }{
		{"[{filters: [" + directResponse("") + "]}]", "on_no_match: {action: {name: c, typed_config: {'@type': type.googleapis.com/google.protobuf.StringValue, value: x}}}", "needs a name"},
		{"[{name: a, filters: [" + directResponse("") + "]}]", "on_no_match: {action: {name: c, typed_config: {'@type': type.googleapis.com/google.protobuf.StringValue, value: b}}}", `filter chain "b" is not defined`},
		{"[{name: a, filter_chain_match: {destination_port: 1}, filters: [" + directResponse("") + "]}]", "on_no_match: {action: {name: c, typed_config: {'@type': type.googleapis.com/google.protobuf.StringValue, value: a}}}", "cannot be used with filter_chain_matcher"},
	} {
		_, err := testutil.TryStartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: bad
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains: `+tc.chains+`
    filter_chain_matcher: {`+tc.matcher+`}
`, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.chains, err, tc.want)
		}
	}
}

// TestAdditionalAddresses: a listener with additional_addresses accepts on
// each of them with the same filter chains (Envoy's multi-address
// listener, as Istio configures for dual stack); a listener update keeps
// them bound; a duplicate address is refused.
func TestAdditionalAddresses(t *testing.T) {
	port := testutil.FreePort(t)
	p := testutil.StartProxy(t, fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: multi
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    additional_addresses:
    - address: {socket_address: {address: 127.0.0.2, port_value: %d}}
    filter_chains: [{filters: [%s]}]
`, port, directResponse(`, response: {inline_string: "hello"}`)), nil)
	for _, addr := range []string{p.Addr("multi"), fmt.Sprintf("127.0.0.2:%d", port)} {
		if got, _ := readAllFrom(t, addr, ""); got != "hello" {
			t.Errorf("%s: %q, want hello", addr, got)
		}
	}
	_, err := testutil.TryStartProxy(t, `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: dup
    address: {socket_address: {address: 127.0.0.1, port_value: 18999}}
    additional_addresses: [{address: {socket_address: {address: 127.0.0.1, port_value: 18999}}}]
    filter_chains: [{filters: [`+directResponse("")+`]}]
`, nil)
	if err == nil || !strings.Contains(err.Error(), "already an address of this listener") {
		t.Errorf("duplicate additional address: err = %v", err)
	}
}
