package tlsx_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/testutil"
	"github.com/legateproxy/legate/internal/tlsx"
)

// ocspResponse is a good OCSP response for serial, signed by the CA.
func ocspResponse(t *testing.T, ca *testutil.CA, serial *big.Int, nextUpdate time.Time) []byte {
	t.Helper()
	der, err := ocsp.CreateResponse(ca.Cert, ca.Cert, ocsp.Response{Status: ocsp.Good, SerialNumber: serial,
		ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: nextUpdate}, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// compileOCSP compiles a DownstreamTlsContext with one certificate and
// its ocsp_staple (nil: none).
func compileOCSP(t *testing.T, certPEM, keyPEM []byte, staple *corev3.DataSource, policy tlsv3.DownstreamTlsContext_OcspStaplePolicy) (*tlsx.ServerContext, error) {
	t.Helper()
	dtc := &tlsv3.DownstreamTlsContext{OcspStaplePolicy: policy, CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inlineBytes(certPEM), PrivateKey: inlineBytes(keyPEM), OcspStaple: staple}}}}
	a, err := anypb.New(dtc)
	if err != nil {
		t.Fatal(err)
	}
	store := tlsx.NewStore(nil)
	t.Cleanup(store.Close)
	ts := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	return tlsx.CompileServer(ts, "transport_socket", tlsx.Deps{Store: store, Stats: stats.NewStore().Scope("listener.test.ssl.")})
}

// handshake runs a TLS handshake with Go's client, which always asks for
// a staple (status_request), and returns the OCSP response it got.
func handshake(t *testing.T, sc *tlsx.ServerContext, ca *testutil.CA) ([]byte, error) {
	t.Helper()
	cc, sconn := net.Pipe()
	defer cc.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := sc.Server(sconn); err == nil {
			c.Close()
		} else {
			sconn.Close()
		}
	}()
	c := tls.Client(cc, &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
	c.SetDeadline(time.Now().Add(10 * time.Second))
	err := c.Handshake()
	st := c.ConnectionState()
	c.Close()
	<-done
	return st.OCSPResponse, err
}

// TestOCSPStaplePolicy: Envoy's ocspStapleAction for a client that asks
// for a staple — LENIENT_STAPLING staples a valid response and omits an
// expired one; STRICT_STAPLING fails the handshake on an expired
// response; MUST_STAPLE fails without a valid one (and a certificate
// without a response is a config error).
func TestOCSPStaplePolicy(t *testing.T) {
	ca := testutil.NewCA(t, "ocsp-ca")
	leaf := ca.Issue(t, "server", "localhost")
	good := ocspResponse(t, ca, leaf.Cert.SerialNumber, time.Now().Add(time.Hour))
	expired := ocspResponse(t, ca, leaf.Cert.SerialNumber, time.Now().Add(-time.Minute))
	const (
		lenient = tlsv3.DownstreamTlsContext_LENIENT_STAPLING
		strict  = tlsv3.DownstreamTlsContext_STRICT_STAPLING
		must    = tlsv3.DownstreamTlsContext_MUST_STAPLE
	)
	cases := []struct {
		name      string
		staple    []byte
		policy    tlsv3.DownstreamTlsContext_OcspStaplePolicy
		configErr string
		fails     bool
		stapled   bool
	}{
		{"lenient valid", good, lenient, "", false, true},
		{"lenient expired", expired, lenient, "", false, false},
		{"lenient none", nil, lenient, "", false, false},
		{"strict valid", good, strict, "", false, true},
		{"strict expired", expired, strict, "", true, false},
		{"strict none", nil, strict, "", false, false},
		{"must valid", good, must, "", false, true},
		{"must expired", expired, must, "", true, false},
		{"must none", nil, must, "Required OCSP response is missing from TLS context", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ds *corev3.DataSource
			if tc.staple != nil {
				ds = inlineBytes(tc.staple)
			}
			sc, err := compileOCSP(t, leaf.CertPEM, leaf.KeyPEM, ds, tc.policy)
			if tc.configErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.configErr) {
					t.Fatalf("config error %v, want %q", err, tc.configErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := handshake(t, sc, ca)
			if tc.fails {
				if err == nil {
					t.Fatal("the handshake succeeded; the policy should fail it")
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if tc.stapled && !bytes.Equal(got, tc.staple) {
				t.Errorf("OCSP response %d bytes, want the configured %d", len(got), len(tc.staple))
			}
			if !tc.stapled && len(got) != 0 {
				t.Errorf("an OCSP response was stapled; want none")
			}
			if len(got) > 0 {
				if _, err := ocsp.ParseResponseForCert(got, leaf.Cert, ca.Cert); err != nil {
					t.Errorf("the stapled response does not verify: %v", err)
				}
			}
		})
	}
}

// TestOCSPStapleExpiresWhileServing: a strict context staples its
// response until nextUpdate passes, then fails handshakes, without a
// config change.
func TestOCSPStapleExpiresWhileServing(t *testing.T) {
	ca := testutil.NewCA(t, "ocsp-ca")
	leaf := ca.Issue(t, "server", "localhost")
	der := ocspResponse(t, ca, leaf.Cert.SerialNumber, time.Now().Add(2*time.Second))
	sc, err := compileOCSP(t, leaf.CertPEM, leaf.KeyPEM, inlineBytes(der), tlsv3.DownstreamTlsContext_STRICT_STAPLING)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := handshake(t, sc, ca); err != nil || !bytes.Equal(got, der) {
		t.Fatalf("before expiry: staple %d bytes, %v", len(got), err)
	}
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, err := handshake(t, sc, ca)
		return err != nil
	}, "handshakes kept succeeding after the OCSP response expired")
}

// TestOCSPStapleConfigErrors: Envoy's load-time checks of ocsp_staple.
func TestOCSPStapleConfigErrors(t *testing.T) {
	ca := testutil.NewCA(t, "ocsp-ca")
	leaf := ca.Issue(t, "server", "localhost")
	other := ca.Issue(t, "other", "localhost")
	unauthorized, _ := asn1.Marshal(struct{ Status asn1.Enumerated }{6}) // OCSPResponseStatus unauthorized
	cases := []struct {
		name   string
		staple *corev3.DataSource
		want   string
	}{
		{"another certificate's response", inlineBytes(ocspResponse(t, ca, other.Cert.SerialNumber, time.Now().Add(time.Hour))), "OCSP response does not match its TLS certificate"},
		{"unsuccessful", inlineBytes(unauthorized), "OCSP response was unsuccessful"},
		{"garbage", inlineBytes([]byte("not der")), "OCSP response does not parse"},
		{"inline_string", &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "x"}}, "OCSP staple cannot be provided via inline_string"},
	}
	for _, tc := range cases {
		if _, err := compileOCSP(t, leaf.CertPEM, leaf.KeyPEM, tc.staple, tlsv3.DownstreamTlsContext_LENIENT_STAPLING); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}

	// A certificate with the RFC 7633 status_request feature must staple
	// whatever the policy.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	feature, _ := asn1.Marshal([]int{5})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "must"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}, Value: feature}}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	if _, err := compileOCSP(t, certPEM, keyPEM, nil, tlsv3.DownstreamTlsContext_LENIENT_STAPLING); err == nil || !strings.Contains(err.Error(), "OCSP response is required for must-staple certificate") {
		t.Errorf("must-staple certificate without a response: %v", err)
	}
	// With a valid response it serves, stapled; expired, it fails even
	// under LENIENT_STAPLING (the certificate upgrades the policy).
	sc, err := compileOCSP(t, certPEM, keyPEM, inlineBytes(ocspResponse(t, ca, big.NewInt(77), time.Now().Add(-time.Minute))), tlsv3.DownstreamTlsContext_LENIENT_STAPLING)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, sc, ca); err == nil {
		t.Error("a must-staple certificate with an expired response was served")
	}
}
