package sni_dynamic_forward_proxy

import (
	"testing"

	dnscachev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/dynamic_forward_proxy/v3"
	snidfpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/sni_dynamic_forward_proxy/v3"

	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func TestDynamicPort(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want uint32
		ok   bool
	}{{"8443", 8443, true}, {"0", 0, false}, {"65536", 0, false}, {"x", 0, false}} {
		p, ok := DynamicPort(map[string]streaminfo.FilterStateValue{DynamicPortKey: streaminfo.StringObject(tt.v)})
		if p != tt.want || ok != tt.ok {
			t.Errorf("DynamicPort(%q) = %d, %v; want %d, %v", tt.v, p, ok, tt.want, tt.ok)
		}
	}
	if _, ok := DynamicPort(nil); ok {
		t.Error("DynamicPort without filter state is set")
	}
}

// TestOnNewConnection resolves IP literals (no DNS query): the port and the
// saved address land in the connection's filter state.
func TestOnNewConnection(t *testing.T) {
	f, err := compile(&listener.Context{}, &snidfpv3.FilterConfig{
		DnsCacheConfig:      &dnscachev3.DnsCacheConfig{Name: "sni_dfp_unit"},
		PortSpecifier:       &snidfpv3.FilterConfig_PortValue{PortValue: 8443},
		SaveUpstreamAddress: true,
	}, listener.ChainOptions{}, "f")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		sni       string
		state     map[string]streaminfo.FilterStateValue
		port, got string
	}{
		{"sni", "127.0.0.9", nil, "8443", "127.0.0.9:8443"},
		{"dynamic host and port", "ignored.example", map[string]streaminfo.FilterStateValue{
			DynamicHostKey: streaminfo.StringObject("127.0.0.7"), DynamicPortKey: streaminfo.StringObject("9000")}, "9000", "127.0.0.7:9000"},
		{"no sni", "", nil, "", ""},
	} {
		tc := &listener.Conn{SNI: tt.sni, FilterState: tt.state}
		if err := f.OnNewConnection(tc); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		str := func(k string) string {
			if v := tc.FilterState[k]; v != nil {
				return v.String()
			}
			return ""
		}
		if str(DynamicPortKey) != tt.port || str(UpstreamAddressKey) != tt.got {
			t.Errorf("%s: port %q, address %q; want %q, %q", tt.name, str(DynamicPortKey), str(UpstreamAddressKey), tt.port, tt.got)
		}
	}
}
