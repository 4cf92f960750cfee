// HttpConnectionManager.scheme_header_transformation: scheme_to_overwrite
// sets the request's :scheme (and x-forwarded-proto) before the filters;
// match_upstream sends the upstream transport's scheme (https over TLS,
// http otherwise); without either the request's own :scheme goes upstream.
package features_test

import (
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/legateproxy/legate/internal/testutil"
)

// schemeUpstream is a raw HTTP/2 server (Go's server does not expose the
// :scheme it receives) that records each request's :scheme and
// x-forwarded-proto and answers 200.
type schemeUpstream struct {
	mu   sync.Mutex
	seen []string // ":scheme xfp"
}

func (u *schemeUpstream) last() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return ""
	}
	return u.seen[len(u.seen)-1]
}

func (u *schemeUpstream) serve(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.conn(c)
		}
	}()
}

func (u *schemeUpstream) conn(c net.Conn) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := c.Read(preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			u.mu.Lock()
			u.seen = append(u.seen, f.PseudoValue("scheme")+" "+strings.Join(headerValues(f, "x-forwarded-proto"), ","))
			u.mu.Unlock()
			hbuf.Reset()
			enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "0"})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: true})
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
	}
}

func headerValues(f *http2.MetaHeadersFrame, name string) []string {
	var out []string
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			out = append(out, hf.Value)
		}
	}
	return out
}

// TestSchemeHeaderTransformation: a plaintext downstream request reaches
// an HTTP/2 upstream with :scheme http by default (even over upstream
// TLS), https with scheme_to_overwrite (x-forwarded-proto too, as Envoy's
// mutateRequestHeaders), and with match_upstream https to a TLS cluster
// and http to a plaintext one.
func TestSchemeHeaderTransformation(t *testing.T) {
	ca := testutil.NewCA(t, "scheme-ca")
	leaf := ca.Issue(t, "backend", "backend.internal")
	plain, tlsUp := &schemeUpstream{}, &schemeUpstream{}
	pln, _ := net.Listen("tcp", "127.0.0.1:0")
	plain.serve(t, pln)
	tln, _ := net.Listen("tcp", "127.0.0.1:0")
	tlsUp.serve(t, tls.NewListener(tln, &tls.Config{Certificates: []tls.Certificate{leaf.TLS}, NextProtos: []string{"h2"}}))
	h2 := "typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {'@type': type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http2_protocol_options: {}}}}"
	upTLS := `transport_socket: {name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: backend.internal,
	  common_tls_context: {alpn_protocols: [h2], validation_context: {trusted_ca: ` + pemInline(ca.CertPEM) + `}}}}`
	clusters := "[" + staticCluster("plain", h2, pln.Addr().String()) + ", " + staticCluster("tls", h2+", "+upTLS, tln.Addr().String()) + "]"
	vh := vhost("{match: {prefix: /plain}, route: {cluster: plain}}", "{match: {prefix: /tls}, route: {cluster: tls}}")
	c := testutil.Client()
	for _, tc := range []struct {
		name, hcm          string
		wantPlain, wantTLS string
	}{
		{"default", "", "http http", "http http"},
		{"overwrite", "scheme_header_transformation: {scheme_to_overwrite: https}", "https https", "https https"},
		{"match_upstream", "scheme_header_transformation: {match_upstream: true}", "http http", "https http"},
		// scheme_to_overwrite wins over match_upstream.
		{"both", "scheme_header_transformation: {scheme_to_overwrite: https, match_upstream: true}", "https https", "https https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, cfg{hcm: tc.hcm, vhosts: vh, clusters: clusters})
			for _, x := range []struct {
				path string
				up   *schemeUpstream
				want string
			}{{"/plain", plain, tc.wantPlain}, {"/tls", tlsUp, tc.wantTLS}} {
				if code, body, _ := testutil.Get(t, c, p.URL("http", x.path)); code != 200 {
					t.Fatalf("%s: status %d %s", x.path, code, body)
				}
				if got := x.up.last(); got != x.want {
					t.Errorf("%s: upstream saw :scheme/x-forwarded-proto %q, want %q", x.path, got, x.want)
				}
			}
		})
	}
	if _, err := testutil.TryStartProxy(t, cfg{hcm: "scheme_header_transformation: {scheme_to_overwrite: ftp}", vhosts: vh, clusters: clusters}.String(), nil); err == nil {
		t.Error("scheme_to_overwrite ftp was accepted; Envoy allows only http and https")
	}
}
