package config

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
)

// FuzzDecode feeds arbitrary text to the loader: it must never panic, and
// whatever it accepts must pass protoc-gen-validate or be reported.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"static_resources: {clusters: [{name: a, type: STATIC}]}",
		"admin: {address: {socket_address: {address: 127.0.0.1, port_value: 9901}}}",
		"static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - name: envoy.http_connection_manager\n        config: {stat_prefix: x}\n",
		"x: !ignore &a {b: 1}\nnode: {id: n, metadata: {k: [1, true, null]}}",
		"static_resources: {clusters: [{<<: {name: m}, hosts: [{socket_address: {address: h, port_value: 1}}]}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b := &bootstrapv3.Bootstrap{}
		if _, err := Decode(data, b, ""); err != nil {
			return
		}
		_ = Validate(b, "")
	})
}
