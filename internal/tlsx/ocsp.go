package tlsx

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/crypto/ocsp"

	"github.com/legateproxy/legate/internal/config"
)

// ocspStaple is a TlsCertificate's ocsp_staple: the DER OCSP response
// stapled in handshakes with clients that ask for one (status_request),
// and when it stops being valid.
type ocspStaple struct {
	der        []byte
	nextUpdate time.Time // zero: no nextUpdate, never expires
}

// expired is Envoy's OcspResponseWrapper::isExpired: past nextUpdate.
func (o *ocspStaple) expired(now time.Time) bool {
	return !o.nextUpdate.IsZero() && now.After(o.nextUpdate)
}

// loadOCSPStaple reads and checks a certificate's ocsp_staple, as
// Envoy: DER by filename or inline_bytes only, a successful response, for
// the certificate's serial number. nil without one.
func loadOCSPStaple(ds *corev3.DataSource, leaf *x509.Certificate, path string) (*ocspStaple, string, error) {
	if ds == nil {
		return nil, "", nil
	}
	if _, ok := ds.GetSpecifier().(*corev3.DataSource_InlineString); ok {
		// Envoy: a DER response cannot be a string.
		return nil, "", config.Errorf(path, "OCSP staple cannot be provided via inline_string")
	}
	der, file, err := readData(ds, path)
	if err != nil {
		return nil, "", err
	}
	// The issuer is not given: as Envoy, the response's signature is the
	// client's to check; the proxy only staples it.
	r, err := ocsp.ParseResponse(der, nil)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) {
			return nil, "", config.Errorf(path, "OCSP response was unsuccessful (%v)", re.Status)
		}
		return nil, "", config.Errorf(path, "OCSP response does not parse: %v; give the DER response (e.g. openssl ocsp -respout)", err)
	}
	if leaf == nil || r.SerialNumber == nil || r.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return nil, "", config.Errorf(path, "OCSP response does not match its TLS certificate")
	}
	return &ocspStaple{der: der, nextUpdate: r.NextUpdate}, file, nil
}

// oidTLSFeature is the TLS Feature extension (RFC 7633); with
// status_request (5) in it the certificate is "must staple".
var oidTLSFeature = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// mustStaple reports whether a certificate carries the RFC 7633
// status_request feature, which makes Envoy treat it as MUST_STAPLE
// whatever the context's policy.
func mustStaple(leaf *x509.Certificate) bool {
	if leaf == nil {
		return false
	}
	for _, e := range leaf.Extensions {
		if !e.Id.Equal(oidTLSFeature) {
			continue
		}
		var features []int
		if _, err := asn1.Unmarshal(e.Value, &features); err != nil {
			return false
		}
		for _, f := range features {
			if f == 5 {
				return true
			}
		}
	}
	return false
}

// checkOCSPConfig is Envoy's load-time check of a server context's
// certificates: a must-staple certificate, or any under MUST_STAPLE,
// needs an OCSP response.
func checkOCSPConfig(c *common, policy tlsv3.DownstreamTlsContext_OcspStaplePolicy, path string) error {
	for _, s := range c.certs {
		m := s.load()
		if m == nil {
			continue // SDS, not there yet: the handshake applies the policy
		}
		for i, cert := range m.certs {
			if m.staple(i) != nil {
				continue
			}
			if mustStaple(cert.Leaf) {
				return config.Errorf(path, "OCSP response is required for must-staple certificate")
			}
			if policy == tlsv3.DownstreamTlsContext_MUST_STAPLE {
				return config.Errorf(path, "Required OCSP response is missing from TLS context")
			}
		}
	}
	return nil
}

// staple is the OCSP response of the material's i-th certificate, or nil.
func (m *material) staple(i int) *ocspStaple {
	if i < len(m.staples) {
		return m.staples[i]
	}
	return nil
}

// ocspCertificates applies the OCSP policy at now (Envoy's
// ocspStapleAction): all are the certificates for clients that did not
// ask for a staple, a valid response attached; capable those for clients
// that did, without the certificates whose policy (MUST_STAPLE, or
// STRICT_STAPLING with an expired response) fails the handshake; expiry
// is when the next response expires (zero: none will). stapling reports
// whether any certificate has a response or a failing policy, i.e.
// whether capable can differ from all.
func ocspCertificates(c *common, policy tlsv3.DownstreamTlsContext_OcspStaplePolicy, now time.Time) (all, capable []tls.Certificate, expiry time.Time, differ bool) {
	for _, s := range c.certs {
		m := s.load()
		if m == nil {
			continue
		}
		for i, cp := range m.certs {
			cert := *cp
			cert.OCSPStaple = nil
			st := m.staple(i)
			valid := st != nil && !st.expired(now)
			if valid {
				cert.OCSPStaple = st.der
				if !st.nextUpdate.IsZero() && (expiry.IsZero() || st.nextUpdate.Before(expiry)) {
					expiry = st.nextUpdate
				}
			}
			p := policy
			if mustStaple(cert.Leaf) {
				p = tlsv3.DownstreamTlsContext_MUST_STAPLE
			}
			fail := false
			switch p {
			case tlsv3.DownstreamTlsContext_STRICT_STAPLING:
				fail = st != nil && !valid
			case tlsv3.DownstreamTlsContext_MUST_STAPLE:
				fail = !valid
			}
			all = append(all, cert)
			if fail {
				differ = true
			} else {
				capable = append(capable, cert)
			}
		}
	}
	return all, capable, expiry, differ
}

// errOCSPStaple fails the handshake of a client that asked for a staple
// when no certificate can be used with one under the policy.
var errOCSPStaple = errors.New("tls: no certificate with a valid OCSP response for the ocsp_staple_policy")

// askedForStaple reports whether the ClientHello has the status_request
// extension (RFC 6066 §8, type 5): Envoy's isClientOcspCapable.
func askedForStaple(h *tls.ClientHelloInfo) bool {
	for _, e := range h.Extensions {
		if e == 5 {
			return true
		}
	}
	return false
}
