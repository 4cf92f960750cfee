package asyncclient

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestHostPath(t *testing.T) {
	for _, tc := range []struct{ uri, host, path string }{
		{"https://idp.example.com/oauth/token", "idp.example.com", "/oauth/token"},
		{"http://collector:4318/v1/traces?x=1", "collector:4318", "/v1/traces?x=1"},
		{"http://collector:4318", "collector:4318", "/"},
		{"collector:4318/v1/logs", "collector:4318", "/v1/logs"},
		{"collector", "collector", "/"},
		{"", "", "/"},
		{"http://a/b://c", "a", "/b://c"},
	} {
		if h, p := HostPath(tc.uri); h != tc.host || p != tc.path {
			t.Errorf("HostPath(%q) = %q, %q; want %q, %q", tc.uri, h, p, tc.host, tc.path)
		}
	}
}

func TestServiceHeader(t *testing.T) {
	hv := func(k, v string, raw []byte) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v, RawValue: raw}}
	}
	for _, tc := range []struct {
		in          *corev3.HeaderValueOption
		name, value string
		errAt       string // "" for no error
	}{
		{hv("X-Api-Key", "secret", nil), "x-api-key", "secret", ""},
		{hv("", "v", nil), "", "", "h.header.key"},
		{hv(":authority", "v", nil), "", "", "h.header.key"},
		{hv("x-a", "%REQ(x)%", nil), "", "", "h.header.value"},
		{hv("x-a", "", []byte("raw")), "", "", "h.header.raw_value"},
	} {
		name, value, err := ServiceHeader(tc.in, "h")
		if tc.errAt != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.errAt+":") {
				t.Errorf("%v: error %v, want one at %s", tc.in, err, tc.errAt)
			}
			continue
		}
		if err != nil || name != tc.name || value != tc.value {
			t.Errorf("%v: %q, %q, %v; want %q, %q", tc.in, name, value, err, tc.name, tc.value)
		}
	}
}
