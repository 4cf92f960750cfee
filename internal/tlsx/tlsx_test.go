package tlsx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/legateproxy/legate/internal/config"
)

func TestParams(t *testing.T) {
	cases := []struct {
		yaml string
		want string // error substring, "" for success
		min  uint16
	}{
		{"{tls_minimum_protocol_version: TLSv1_3}", "", tls.VersionTLS13},
		{"{cipher_suites: ['[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]', ECDHE-RSA-AES256-GCM-SHA384]}", "", tls.VersionTLS12},
		{"{cipher_suites: [DES-CBC3-SHA]}", `cipher "DES-CBC3-SHA" is not available in Go's crypto/tls`, 0},
		{"{ecdh_curves: [X25519, P-256]}", "", tls.VersionTLS12},
		{"{ecdh_curves: [brainpoolP256r1]}", `curve "brainpoolP256r1" is not available`, 0},
		// Envoy joins the list with ":" for BoringSSL, so an entry may be a list.
		{"{ecdh_curves: ['X25519:P-256:P-521:P-384']}", "", tls.VersionTLS12},
		{"{ecdh_curves: ['X25519:brainpoolP256r1']}", `curve "brainpoolP256r1" is not available`, 0},
		{"{ecdh_curves: ['X25519::P-256']}", `curve "" is not available`, 0},
		{"{ecdh_curves: ['']}", `curve "" is not available`, 0},
		{"{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}", "above tls_maximum_protocol_version", 0},
		{"{signature_algorithms: [ecdsa_secp256r1_sha256]}", "signature_algorithms is not supported by legate", 0},
	}
	for _, tc := range cases {
		p := &tlsv3.TlsParameters{}
		if _, err := config.Decode([]byte(tc.yaml), p, "tls_params"); err != nil {
			t.Fatal(err)
		}
		var cfg tls.Config
		err := applyParams(&cfg, p, "tls_params", true)
		if tc.want != "" {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.want)
			}
			continue
		}
		if err != nil || cfg.MinVersion != tc.min {
			t.Errorf("%s: %v min=%x", tc.yaml, err, cfg.MinVersion)
		}
	}
}

func TestParseClientHello(t *testing.T) {
	// Capture a real ClientHello from Go's TLS client.
	c, s := pipe()
	go tls.Client(c, &tls.Config{ServerName: "sni.example.com", NextProtos: []string{"h2", "http/1.1"}}).Handshake()
	buf := make([]byte, 4096)
	n, _ := s.Read(buf)
	for i := 1; i < n; i++ {
		if _, err := ParseClientHello(buf[:i]); err != ErrNeedMore && i < 5 {
			t.Fatalf("prefix of %d bytes: %v, want ErrNeedMore", i, err)
		}
	}
	h, err := ParseClientHello(buf[:n])
	if err != nil || !h.TLS || h.ServerName != "sni.example.com" || strings.Join(h.ALPN, ",") != "h2,http/1.1" {
		t.Fatalf("%+v %v", h, err)
	}
	if h, err := ParseClientHello([]byte("GET / HTTP/1.1\r\n")); err != nil || h.TLS {
		t.Fatalf("plain HTTP: %+v %v", h, err)
	}
}

func pipe() (net.Conn, net.Conn) { return net.Pipe() }

// TestCurvePreferences checks the order and the names ecdh_curves gives
// Go's crypto/tls: entries split on ":" as Envoy's joined BoringSSL list
// is, BoringSSL's aliases mapped, duplicates dropped.
func TestCurvePreferences(t *testing.T) {
	cases := []struct {
		yaml string
		want []tls.CurveID
	}{
		{"{}", nil},
		{"{ecdh_curves: [X25519, P-256]}", []tls.CurveID{tls.X25519, tls.CurveP256}},
		{"{ecdh_curves: ['X25519:P-256:P-521:P-384']}", []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP521, tls.CurveP384}},
		{"{ecdh_curves: ['P-384:X25519', P-256]}", []tls.CurveID{tls.CurveP384, tls.X25519, tls.CurveP256}},
		{"{ecdh_curves: [prime256v1, secp384r1, secp521r1, x25519]}", []tls.CurveID{tls.CurveP256, tls.CurveP384, tls.CurveP521, tls.X25519}},
		{"{ecdh_curves: ['X25519:P-256', X25519]}", []tls.CurveID{tls.X25519, tls.CurveP256}},
		{"{ecdh_curves: [X25519MLKEM768]}", []tls.CurveID{tls.X25519MLKEM768}},
	}
	for _, tc := range cases {
		p := &tlsv3.TlsParameters{}
		if _, err := config.Decode([]byte(tc.yaml), p, "tls_params"); err != nil {
			t.Fatal(err)
		}
		var cfg tls.Config
		if err := applyParams(&cfg, p, "tls_params", false); err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		if !slices.Equal(cfg.CurvePreferences, tc.want) {
			t.Errorf("%s: curves %v, want %v", tc.yaml, cfg.CurvePreferences, tc.want)
		}
	}
}

// selfSigned returns a throwaway ECDSA certificate for handshakes.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"curves.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestCurveHandshake: a colon-joined ecdh_curves entry limits the groups a
// real handshake can agree on to the listed ones, as BoringSSL's curves
// list does in Envoy.
func TestCurveHandshake(t *testing.T) {
	cert := selfSigned(t)
	cases := []struct {
		server string // ecdh_curves
		client []tls.CurveID
		want   tls.CurveID // 0: the handshake fails
	}{
		{"['P-384:P-521']", []tls.CurveID{tls.CurveP521}, tls.CurveP521},
		{"['P-384:P-521']", []tls.CurveID{tls.X25519, tls.CurveP384}, tls.CurveP384},
		{"['P-384:P-521']", []tls.CurveID{tls.X25519}, 0},
		{"['X25519:P-256:P-521:P-384']", []tls.CurveID{tls.CurveP256}, tls.CurveP256},
	}
	for _, tc := range cases {
		p := &tlsv3.TlsParameters{}
		if _, err := config.Decode([]byte("{ecdh_curves: "+tc.server+"}"), p, "tls_params"); err != nil {
			t.Fatal(err)
		}
		srv := &tls.Config{Certificates: []tls.Certificate{cert}}
		if err := applyParams(srv, p, "tls_params", true); err != nil {
			t.Fatal(err)
		}
		// Loopback TCP, whose buffers let both ends close at once
		// (net.Pipe would block the two close_notify writes).
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			s, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			sc := tls.Server(s, srv)
			err = sc.Handshake()
			sc.Close()
			done <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, CurvePreferences: tc.client})
		err = cc.Handshake()
		got := cc.ConnectionState().CurveID
		cc.Close()
		serr := <-done
		ln.Close()
		if tc.want == 0 {
			if err == nil && serr == nil {
				t.Errorf("server %s, client %v: handshake agreed on %v, want a failure", tc.server, tc.client, got)
			}
			continue
		}
		if err != nil || serr != nil || got != tc.want {
			t.Errorf("server %s, client %v: curve %v (client %v, server %v), want %v", tc.server, tc.client, got, err, serr, tc.want)
		}
	}
}
