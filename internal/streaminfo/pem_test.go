package streaminfo_test

import (
	"encoding/pem"
	"net/url"
	"strings"
	"testing"

	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/testutil"
)

// TestURLEncodedPEM: Envoy's encoding — %20 for the space in the PEM
// header (not query encoding's '+'), %0A, %2B, %2F and %3D; it decodes back
// to the PEM with plain percent-decoding.
func TestURLEncodedPEM(t *testing.T) {
	ca := testutil.NewCA(t, "pem-ca")
	leaf := ca.Issue(t, "leaf", "leaf.example.com")
	got := streaminfo.URLEncodedPEM(leaf.Cert)
	if !strings.HasPrefix(got, "-----BEGIN%20CERTIFICATE-----%0A") {
		t.Fatalf("prefix: %.40s", got)
	}
	for _, c := range []string{" ", "\n", "+", "/", "="} {
		if strings.Contains(got, c) {
			t.Errorf("%q left unescaped in %s", c, got)
		}
	}
	dec, err := url.PathUnescape(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Cert.Raw})); dec != want {
		t.Errorf("decoded:\n%s\nwant:\n%s", dec, want)
	}
	if two := streaminfo.URLEncodedPEM(leaf.Cert, ca.Cert); !strings.HasPrefix(two, got) || len(two) <= len(got) {
		t.Error("a chain is not the leaf followed by the rest")
	}
}
