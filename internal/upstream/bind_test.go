package upstream

import (
	"net/netip"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCompileBindConfig(t *testing.T) {
	sa := func(a string, port uint32) *corev3.SocketAddress {
		return &corev3.SocketAddress{Address: a, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}
	}
	extra := func(a string) []*corev3.ExtraSourceAddress {
		return []*corev3.ExtraSourceAddress{{Address: sa(a, 0)}}
	}
	for _, c := range []struct {
		name string
		bc   *corev3.BindConfig
		want string // error substring; "" is accepted
	}{
		{"source address", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0)}, ""},
		{"fixed port and freebind", &corev3.BindConfig{SourceAddress: sa("192.0.2.9", 4000), Freebind: wrapperspb.Bool(true)}, ""},
		{"one of each family", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), ExtraSourceAddresses: extra("::1")}, ""},
		{"no source address", &corev3.BindConfig{}, "b.source_address: an upstream bind config needs a source_address"},
		{"same family twice", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), ExtraSourceAddresses: extra("127.0.0.7")}, "b.extra_source_addresses: source_address 127.0.0.6 and the extra source address 127.0.0.7 are of the same IP version"},
		{"three addresses", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), ExtraSourceAddresses: append(extra("::1"), extra("::2")...)}, "at most two"},
		{"a name", &corev3.BindConfig{SourceAddress: sa("localhost", 0)}, "b.source_address.address"},
		{"selector", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), LocalAddressSelector: &corev3.TypedExtensionConfig{Name: "x", TypedConfig: &anypb.Any{}}}, "b.local_address_selector"},
		{"listening option", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), SocketOptions: []*corev3.SocketOption{{Level: 1, Name: 2, Value: &corev3.SocketOption_IntValue{IntValue: 1}, State: corev3.SocketOption_STATE_LISTENING}}}, "b.socket_options[0].state"},
		{"option without a value", &corev3.BindConfig{SourceAddress: sa("127.0.0.6", 0), SocketOptions: []*corev3.SocketOption{{Level: 1, Name: 2}}}, "b.socket_options[0]: a socket option needs int_value or buf_value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := CompileBindConfig(c.bc, "b")
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestBindSource: the source address of the upstream's family, else
// source_address (Envoy's default local address selector).
func TestBindSource(t *testing.T) {
	b, err := CompileBindConfig(&corev3.BindConfig{
		SourceAddress:        &corev3.SocketAddress{Address: "127.0.0.6", PortSpecifier: &corev3.SocketAddress_PortValue{}},
		ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: &corev3.SocketAddress{Address: "::1", PortSpecifier: &corev3.SocketAddress_PortValue{}}}},
	}, "b")
	if err != nil {
		t.Fatal(err)
	}
	for dst, want := range map[string]string{"127.0.0.1:80": "127.0.0.6:0", "[::1]:80": "[::1]:0", "[::ffff:127.0.0.1]:80": "127.0.0.6:0", "unix:/x": "127.0.0.6:0"} {
		if got := b.source(dst); got != netip.MustParseAddrPort(want) {
			t.Errorf("%s: source %s, want %s", dst, got, want)
		}
	}
}
