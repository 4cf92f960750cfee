package upstream

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestParseAltSvc(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		in        string
		port      string
		ma        time.Duration
		ok, clear bool
	}{
		{in: `h3=":443"; ma=86400`, port: "443", ma: 86400 * time.Second, ok: true},
		{in: `h3=":8443"`, port: "8443", ma: 24 * time.Hour, ok: true},
		{in: `h3-29=":443", h3=":4433"; ma=60; persist=1`, port: "4433", ma: time.Minute, ok: true},
		{in: `h2=":443", h3=":9000";ma="120"`, port: "9000", ma: 2 * time.Minute, ok: true},
		{in: `h3="other.example.com:443"`},
		{in: `h3=":0"`},
		{in: `h3=":443"; ma=0`},
		{in: `h3=":notaport"`},
		{in: `h3`},
		{in: `clear`, clear: true},
		{in: `h3="a,b:1", h3=":7"`, port: "7", ma: 24 * time.Hour, ok: true},
	}
	for _, tc := range cases {
		e, clear, ok := parseAltSvc(tc.in, now)
		if ok != tc.ok || clear != tc.clear {
			t.Errorf("%q: ok=%v clear=%v, want %v %v", tc.in, ok, clear, tc.ok, tc.clear)
			continue
		}
		if ok && (e.port != tc.port || !e.expires.Equal(now.Add(tc.ma))) {
			t.Errorf("%q: port %q expires %v, want %q %v", tc.in, e.port, e.expires.Sub(now), tc.port, tc.ma)
		}
	}
}

func TestAltSvcCache(t *testing.T) {
	now := time.Unix(1000, 0)
	a := &altSvcCache{max: 2, m: map[string]altEntry{}, now: func() time.Time { return now }}
	a.learn("10.0.0.1:443", `h3=":8443"; ma=10`)
	e, ok := a.get("10.0.0.1:443")
	if !ok || e.endpoint("10.0.0.1:443") != "10.0.0.1:8443" {
		t.Fatalf("learned entry = %+v %v", e, ok)
	}
	a.learn("10.0.0.2:443", `h3=":443"`)
	a.learn("10.0.0.3:443", `h3=":443"`) // over max_entries: not kept
	if _, ok := a.get("10.0.0.3:443"); ok {
		t.Error("an entry over max_entries was kept")
	}
	a.learn("10.0.0.2:443", "clear")
	if _, ok := a.get("10.0.0.2:443"); ok {
		t.Error("clear did not remove the entry")
	}
	a.forgetEndpoint("10.0.0.1:8443")
	if _, ok := a.get("10.0.0.1:443"); ok {
		t.Error("forgetEndpoint kept the entry")
	}
	a.learn("10.0.0.1:443", `h3=":8443"; ma=10`)
	now = now.Add(11 * time.Second)
	if _, ok := a.get("10.0.0.1:443"); ok {
		t.Error("an expired entry was used")
	}
	// IPv6 origins keep their brackets.
	if got := (altEntry{port: "443"}).endpoint("[2001:db8::1]:80"); got != "[2001:db8::1]:443" {
		t.Errorf("IPv6 endpoint = %q", got)
	}
}

func TestQUICProtocolOptions(t *testing.T) {
	cases := []struct {
		name  string
		opts  *corev3.QuicProtocolOptions
		check func(*quic.Config) bool
		want  string
	}{
		{name: "none", check: func(c *quic.Config) bool { return c.MaxIdleTimeout == 0 }},
		{name: "streams and windows", opts: &corev3.QuicProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(10),
			InitialStreamWindowSize: wrapperspb.UInt32(1 << 20), InitialConnectionWindowSize: wrapperspb.UInt32(1 << 22)},
			check: func(c *quic.Config) bool {
				return c.MaxIncomingStreams == 10 && c.InitialStreamReceiveWindow == 1<<20 && c.InitialConnectionReceiveWindow == 1<<22 &&
					c.MaxStreamReceiveWindow >= 1<<20 && c.MaxIdleTimeout == 300*time.Second
			}},
		{name: "idle and keepalive", opts: &corev3.QuicProtocolOptions{IdleNetworkTimeout: durationpb.New(30 * time.Second),
			ConnectionKeepalive: &corev3.QuicKeepAliveSettings{MaxInterval: durationpb.New(5 * time.Second)}},
			check: func(c *quic.Config) bool {
				return c.MaxIdleTimeout == 30*time.Second && c.KeepAlivePeriod == 5*time.Second
			}},
		{name: "port migration", opts: &corev3.QuicProtocolOptions{NumTimeoutsToTriggerPortMigration: wrapperspb.UInt32(2)}, want: "num_timeouts_to_trigger_port_migration"},
		{name: "max packet length", opts: &corev3.QuicProtocolOptions{MaxPacketLength: wrapperspb.UInt64(1350)},
			check: func(c *quic.Config) bool { return c.InitialPacketSize == 1350 && c.DisablePathMTUDiscovery }},
		{name: "max packet length above QUIC's largest", opts: &corev3.QuicProtocolOptions{MaxPacketLength: wrapperspb.UInt64(9000)},
			check: func(c *quic.Config) bool { return c.InitialPacketSize == 1452 && c.DisablePathMTUDiscovery }},
		{name: "max packet length too small", opts: &corev3.QuicProtocolOptions{MaxPacketLength: wrapperspb.UInt64(1000)}, want: "max_packet_length"},
		{name: "connection options", opts: &corev3.QuicProtocolOptions{ConnectionOptions: "BBR2"}, want: "connection_options"},
		{name: "client connection options", opts: &corev3.QuicProtocolOptions{ClientConnectionOptions: "5RTO"}, want: "client_connection_options"},
		{name: "client packet writer", opts: &corev3.QuicProtocolOptions{ClientPacketWriter: &corev3.TypedExtensionConfig{Name: "w"}}, want: "client_packet_writer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			qc := &quic.Config{}
			err := QUICProtocolOptions(tc.opts, "q", qc)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error = %v, want one naming %q", err, tc.want)
				}
				return
			}
			if err != nil || !tc.check(qc) {
				t.Fatalf("err %v, config %+v", err, qc)
			}
		})
	}
}

// TestHTTP3StreamErrorOption: quic-go resets only the stream of a
// malformed response, so override_stream_error_on_invalid_http_message
// true (or unset) is accepted and false is refused by name.
func TestHTTP3StreamErrorOption(t *testing.T) {
	for _, tc := range []struct {
		v    *wrapperspb.BoolValue
		want string
	}{
		{v: nil}, {v: wrapperspb.Bool(true)}, {v: wrapperspb.Bool(false), want: "p.override_stream_error_on_invalid_http_message"},
	} {
		err := (&Cluster{}).compileHTTP3(&corev3.Http3ProtocolOptions{OverrideStreamErrorOnInvalidHttpMessage: tc.v}, "p")
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: error %v, want %q", tc.v, err, tc.want)
		}
	}
}
