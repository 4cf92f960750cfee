package upstream

import (
	"strings"
	"testing"
	"time"
)

// TestHTTP2Options: what the HTTP/2 client takes of http2_protocol_options
// (keepalive pings, HPACK table size) and what it refuses.
func TestHTTP2Options(t *testing.T) {
	for _, tc := range []struct {
		name, opts string
		err        string
		check      func(t *testing.T, c *Cluster)
	}{
		{name: "keepalive", opts: "connection_keepalive: {interval: 30s, timeout: 5s}", check: func(t *testing.T, c *Cluster) {
			if c.h2.t.ReadIdleTimeout != 30*time.Second || c.h2.t.PingTimeout != 5*time.Second {
				t.Errorf("ping idle %v timeout %v", c.h2.t.ReadIdleTimeout, c.h2.t.PingTimeout)
			}
		}},
		{name: "idle interval wins", opts: "connection_keepalive: {interval: 30s, timeout: 5s, connection_idle_interval: 10s}", check: func(t *testing.T, c *Cluster) {
			if c.h2.t.ReadIdleTimeout != 10*time.Second {
				t.Errorf("ping idle %v", c.h2.t.ReadIdleTimeout)
			}
		}},
		{name: "hpack", opts: "hpack_table_size: 8192", check: func(t *testing.T, c *Cluster) {
			if c.h2.t.MaxDecoderHeaderTableSize != 8192 || c.h2.t.MaxEncoderHeaderTableSize != 8192 {
				t.Errorf("hpack %d/%d", c.h2.t.MaxDecoderHeaderTableSize, c.h2.t.MaxEncoderHeaderTableSize)
			}
		}},
		{name: "hpack 0", opts: "hpack_table_size: 0", err: "hpack_table_size"},
		{name: "tuning accepted", opts: "max_concurrent_streams: 100, initial_stream_window_size: 65536, initial_connection_window_size: 1048576"},
		{name: "custom settings", opts: "custom_settings_parameters: [{identifier: 10, value: 1}]", err: "custom_settings_parameters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := `name: c
type: STATIC
connect_timeout: 1s
load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {` + tc.opts + `}}}}`
			c, err := compileYAML(t, y)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}
