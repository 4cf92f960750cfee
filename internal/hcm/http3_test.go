package hcm

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
)

func TestHTTP3Options(t *testing.T) {
	d := &listener.Context{Stats: stats.NewStore()}
	cases := []struct {
		name     string
		codec    codecType
		opts     *corev3.Http3ProtocolOptions
		quic     bool
		upgrades map[string]bool
		want     string // "" accepts
	}{
		{name: "HTTP3 on QUIC", codec: codecHTTP3, opts: &corev3.Http3ProtocolOptions{}, quic: true},
		{name: "no options", codec: codecHTTP3, quic: true},
		{name: "options on a TCP codec have no effect", codec: codecHTTP2, opts: &corev3.Http3ProtocolOptions{AllowExtendedConnect: true}},
		{name: "override_stream_error", codec: codecHTTP3, opts: &corev3.Http3ProtocolOptions{OverrideStreamErrorOnInvalidHttpMessage: wrapperspb.Bool(true)}, quic: true},
		{name: "override_stream_error false", codec: codecHTTP3, opts: &corev3.Http3ProtocolOptions{OverrideStreamErrorOnInvalidHttpMessage: wrapperspb.Bool(false)}, quic: true, want: "override_stream_error_on_invalid_http_message"},
		{name: "extended CONNECT", codec: codecHTTP3, opts: &corev3.Http3ProtocolOptions{AllowExtendedConnect: true}, quic: true, want: "allow_extended_connect"},
		{name: "QUIC options belong to the listener", codec: codecHTTP3, opts: &corev3.Http3ProtocolOptions{QuicProtocolOptions: &corev3.QuicProtocolOptions{}}, quic: true, want: "udp_listener_config.quic_options"},
		{name: "HTTP3 on TCP", codec: codecHTTP3, want: "needs a QUIC listener"},
		{name: "AUTO on QUIC", codec: codecAuto, quic: true, want: "needs codec_type HTTP3"},
		{name: "CONNECT on HTTP/3", codec: codecHTTP3, quic: true, upgrades: map[string]bool{"connect": true}, want: "upgrade_configs"},
		{name: "a disabled upgrade", codec: codecHTTP3, quic: true, upgrades: map[string]bool{"websocket": false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &hcmConfig{codec: tc.codec, statPrefix: "p", upgrades: tc.upgrades}
			err := compileHTTP3(&hcmv3.HttpConnectionManager{Http3ProtocolOptions: tc.opts}, "hcm", c)
			if err == nil {
				err = checkHTTP3Chain(c, listener.ChainOptions{QUIC: tc.quic}, "hcm", d)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			case tc.want == "" && tc.quic && c.h3 == nil:
				t.Fatal("no HTTP/3 stats on a QUIC connection manager")
			}
		})
	}
}
