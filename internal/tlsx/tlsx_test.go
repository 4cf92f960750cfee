package tlsx

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

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
