package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/legateproxy/legate/internal/certgen"
)

func testSigner(t *testing.T) *Signer {
	t.Helper()
	set, err := certgen.Generate(certgen.Options{Lifetime: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(set.CA, set.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testCSR(t *testing.T, uris ...string) (*x509.CertificateRequest, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, p)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestNewSignerRejectsLeaf(t *testing.T) {
	set, err := certgen.Generate(certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSigner(set.ControllerCert, set.ControllerKey); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Fatalf("a leaf certificate was accepted as the CA: %v", err)
	}
	if _, err := NewSigner(set.CA, set.ProxyKey); err == nil {
		t.Fatal("a key that does not match the CA was accepted")
	}
}

func TestSignCSR(t *testing.T) {
	s := testSigner(t)
	now := time.Now()
	const id = "spiffe://cluster.local/ns/shop/sa/web"
	for _, tc := range []struct {
		name      string
		ttl       time.Duration
		wantAfter time.Time
	}{
		{"lifetime as asked", time.Hour, now.Add(time.Hour)},
		{"cut at the CA's expiry", 1000 * time.Hour, s.Cert.NotAfter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, _ := testCSR(t, id)
			p, err := s.SignCSR(csr, id, tc.ttl, now)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := pem.Decode(p)
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !c.NotAfter.Equal(tc.wantAfter.Truncate(time.Second)) {
				t.Errorf("NotAfter %s, want %s", c.NotAfter, tc.wantAfter)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != id || len(c.DNSNames) != 0 || c.Subject.CommonName != "" {
				t.Errorf("names: URIs %v DNS %v subject %q", c.URIs, c.DNSNames, c.Subject)
			}
			pool := x509.NewCertPool()
			pool.AddCert(s.Cert)
			for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
				if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{u}, CurrentTime: now}); err != nil {
					t.Errorf("verify for %v: %v", u, err)
				}
			}
			// The SAN extension is critical: the subject is empty.
			for _, e := range c.Extensions {
				if e.Id.String() == "2.5.29.17" && !e.Critical {
					t.Error("subjectAltName is not critical")
				}
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		md   metadata.MD
		want string
	}{
		{"istio's header", metadata.Pairs("authorization", "Bearer abc.def"), "abc.def"},
		{"second value", metadata.Pairs("authorization", "Basic x", "authorization", "Bearer t"), "t"},
		{"no scheme", metadata.Pairs("authorization", "abc"), ""},
		{"empty token", metadata.Pairs("authorization", "Bearer  "), ""},
		{"none", metadata.MD{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bearerToken(metadata.NewIncomingContext(context.Background(), tc.md))
			if got != tc.want || (tc.want == "") != (err != nil) {
				t.Fatalf("bearerToken = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestMeshed(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"legate-injection": "enabled"}, true},
		{map[string]string{"istio-injection": "enabled"}, true},
		{map[string]string{"istio-injection": "disabled"}, false},
		{nil, false},
	} {
		if got := Meshed(tc.labels); got != tc.want {
			t.Errorf("Meshed(%v) = %v", tc.labels, got)
		}
	}
}
