package proxy_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestClientCARotationEndsResumption: with fixed session_ticket_keys, a
// client whose CA the listener no longer trusts must not get back in by
// resuming a session from before the rotation (Go skips certificate
// verification on resumption unless VerifyConnection checks it).
func TestClientCARotationEndsResumption(t *testing.T) {
	ca1, ca2 := testutil.NewCA(t, "ca-one"), testutil.NewCA(t, "ca-two")
	server := ca1.Issue(t, "server", "mtls.example.com")
	client := ca1.Issue(t, "client", "spiffe://cluster.local/ns/default/sa/client")
	dir := t.TempDir()
	sdsFile := filepath.Join(dir, "ca.yaml")
	writeCA := func(pem []byte) {
		tmp := sdsFile + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf(`resources:
- "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret
  name: client_ca
  validation_context: {trusted_ca: {inline_bytes: %s}}
`, base64.StdEncoding.EncodeToString(pem))), 0o644)
		if err := os.Rename(tmp, sdsFile); err != nil {
			t.Fatal(err)
		}
	}
	writeCA(ca1.CertPEM)
	ticketKey := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 80))
	y := fmt.Sprintf(`
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: https
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters: [%s]
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          session_ticket_keys: {keys: [{inline_bytes: %s}]}
          common_tls_context:
            tls_certificates: [{certificate_chain: %s, private_key: %s}]
            validation_context_sds_secret_config:
              name: client_ca
              sds_config: {path_config_source: {path: %s}, resource_api_version: V3}
`, fmt.Sprintf(hcmPrefix, "s", "{match: {prefix: /}, direct_response: {status: 200, body: {inline_string: ok}}}"),
		ticketKey, pemInline(server.CertPEM), pemInline(server.KeyPEM), sdsFile)
	p := testutil.StartProxy(t, y, nil)
	sessions := tls.NewLRUClientSessionCache(8)
	// get makes one request on a new connection; it reports whether the
	// TLS session was resumed.
	get := func(cache tls.ClientSessionCache) (resumed bool, err error) {
		cfg := &tls.Config{ServerName: "mtls.example.com", RootCAs: ca1.Pool, Certificates: []tls.Certificate{client.TLS},
			ClientSessionCache: cache, MaxVersion: tls.VersionTLS12}
		c, err := tls.Dial("tcp", p.Addr("https"), cfg)
		if err != nil {
			return false, err
		}
		defer c.Close()
		resumed = c.ConnectionState().DidResume
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		b, err := io.ReadAll(c)
		if err != nil {
			return resumed, err
		}
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
			return resumed, fmt.Errorf("response %q", b)
		}
		return resumed, nil
	}
	if _, err := get(sessions); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	if resumed, err := get(sessions); err != nil || !resumed {
		t.Fatalf("second connection should resume the session: resumed=%v err=%v", resumed, err)
	}
	// The listener now trusts only ca2.
	writeCA(ca2.CertPEM)
	testutil.Eventually(t, 5*time.Second, func() bool { _, err := get(nil); return err != nil }, "the rotated CA does not refuse new handshakes")
	if resumed, err := get(sessions); err == nil {
		t.Fatalf("a client the new CA refuses got in by resuming a session (resumed=%v)", resumed)
	}
}
