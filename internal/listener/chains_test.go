package listener

import (
	"net/netip"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/legateproxy/legate/internal/config"
)

func TestSelectChain(t *testing.T) {
	chainsYAML := []string{
		"{filter_chain_match: {server_names: [www.example.com]}}",                                    // 0
		"{filter_chain_match: {server_names: ['*.example.com']}}",                                    // 1
		"{filter_chain_match: {server_names: ['*.api.example.com']}}",                                // 2
		"{filter_chain_match: {transport_protocol: tls}}",                                            // 3
		"{filter_chain_match: {destination_port: 8443}}",                                             // 4
		"{filter_chain_match: {destination_port: 8443, server_names: [www.example.com]}}",            // 5
		"{filter_chain_match: {source_prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}}",  // 6
		"{filter_chain_match: {source_prefix_ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]}}", // 7
		"{filter_chain_match: {application_protocols: [h2]}}",                                        // 8
	}
	cs := &chainSet{}
	for i, y := range chainsYAML {
		fc := &listenerv3.FilterChain{}
		if _, err := config.Decode([]byte(y), fc, ""); err != nil {
			t.Fatal(err)
		}
		m, err := compileChainMatch(fc.GetFilterChainMatch(), "")
		if err != nil {
			t.Fatal(err)
		}
		cs.chains = append(cs.chains, &filterChain{name: string(rune('0' + i)), match: m})
	}
	cs.def = &filterChain{name: "default"}
	ap := netip.MustParseAddrPort
	cases := []struct {
		f    connFacts
		want string
	}{
		{connFacts{dst: ap("1.2.3.4:443"), sni: "www.example.com", tls: true, transport: "tls"}, "0"},
		{connFacts{dst: ap("1.2.3.4:443"), sni: "WWW.EXAMPLE.COM", tls: true, transport: "tls"}, "0"},
		{connFacts{dst: ap("1.2.3.4:443"), sni: "shop.example.com", transport: "tls"}, "1"},
		{connFacts{dst: ap("1.2.3.4:443"), sni: "v1.api.example.com", transport: "tls"}, "2"},
		{connFacts{dst: ap("1.2.3.4:443"), sni: "other.org", transport: "tls"}, "3"},
		// Destination port is checked first: 8443 chains win, then SNI among them.
		{connFacts{dst: ap("1.2.3.4:8443"), sni: "www.example.com", transport: "tls"}, "5"},
		{connFacts{dst: ap("1.2.3.4:8443"), sni: "shop.example.com", transport: "tls"}, "4"},
		// Longest source prefix wins.
		{connFacts{dst: ap("1.2.3.4:80"), src: ap("10.1.2.3:5000"), transport: "raw_buffer"}, "7"},
		{connFacts{dst: ap("1.2.3.4:80"), src: ap("10.9.2.3:5000"), transport: "raw_buffer"}, "6"},
		{connFacts{dst: ap("1.2.3.4:80"), src: ap("192.0.2.1:5000"), transport: "raw_buffer", alpn: []string{"h2"}}, "8"},
		// Nothing matches: the default chain.
		{connFacts{dst: ap("1.2.3.4:80"), src: ap("192.0.2.1:5000"), transport: "raw_buffer"}, "default"},
	}
	for _, tc := range cases {
		got := cs.selectChain(tc.f)
		name := "<nil>"
		if got != nil {
			name = got.name
		}
		if name != tc.want {
			t.Errorf("%+v: chain %s, want %s", tc.f, name, tc.want)
		}
	}
}
