package hcm

import (
	"crypto/x509"
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/legateproxy/legate/internal/streaminfo"
)

// xfccFields are the set_current_client_cert_details fields.
type xfccFields struct {
	subject, cert, chain, dns, uri bool
}

const xfccHeader = "x-forwarded-client-cert"

// clientCertHeader applies forward_client_cert_details to the request's
// x-forwarded-client-cert, as Envoy: SANITIZE (the default) removes it;
// FORWARD_ONLY keeps it on mTLS connections; APPEND_FORWARD adds this
// connection's client certificate details on mTLS; SANITIZE_SET replaces
// it with them on mTLS; ALWAYS_FORWARD_ONLY keeps it. Without a client
// certificate, every mode but ALWAYS_FORWARD_ONLY removes it.
func (s *stream) clientCertHeader() {
	m := &s.req.Map
	mode := s.cfg.xfcc
	if mode == hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY {
		return
	}
	mtls := s.conn.tc.TLS != nil && s.conn.tc.TLS.PeerCert != nil
	if !mtls || mode == hcmv3.HttpConnectionManager_SANITIZE {
		m.Del(xfccHeader)
		return
	}
	switch mode {
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		if old := m.Joined(xfccHeader); old != "" {
			m.Set(xfccHeader, old+","+s.clientCertDetails())
			return
		}
		m.Set(xfccHeader, s.clientCertDetails())
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		m.Set(xfccHeader, s.clientCertDetails())
	}
}

// clientCertDetails renders one XFCC element: By (the URI SAN of this
// proxy's certificate, when it has one), Hash, then Cert, Chain,
// Subject, URI and DNS as set_current_client_cert_details asks, in
// Envoy's order and quoting.
func (s *stream) clientCertDetails() string {
	t := s.conn.tc.TLS
	f := s.cfg.xfccSet
	var b strings.Builder
	if len(t.LocalURISAN) > 0 {
		// Envoy's By: the first URI SAN of the local certificate.
		b.WriteString("By=" + t.LocalURISAN[0] + ";")
	}
	b.WriteString("Hash=")
	b.WriteString(t.PeerFingerprint)
	if f.cert {
		b.WriteString(`;Cert="` + streaminfo.URLEncodedPEM(t.PeerCert) + `"`)
	}
	if f.chain {
		b.WriteString(`;Chain="` + streaminfo.URLEncodedPEM(append([]*x509.Certificate{t.PeerCert}, t.PeerChain...)...) + `"`)
	}
	if f.subject {
		b.WriteString(`;Subject="` + strings.ReplaceAll(t.PeerSubject, `"`, `\"`) + `"`)
	}
	if f.uri && len(t.PeerURISAN) > 0 {
		b.WriteString(";URI=" + t.PeerURISAN[0])
	}
	if f.dns {
		for _, d := range t.PeerDNSSAN {
			b.WriteString(";DNS=" + d)
		}
	}
	return b.String()
}
