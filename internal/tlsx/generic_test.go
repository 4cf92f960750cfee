package tlsx

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// TestGenericSecretHeld: a generic secret's value is held for the
// extensions that read it, and replaced by an update.
func TestGenericSecretHeld(t *testing.T) {
	s := NewStore(nil)
	defer s.Close()
	mk := func(v string) *tlsv3.Secret {
		return &tlsv3.Secret{Name: "g", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
			Secret: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: v}}}}}
	}
	if err := s.Set(mk("one"), "1", "secrets[0]"); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Get("g").Generic()); got != "one" {
		t.Fatalf("Generic() = %q, want one", got)
	}
	if err := s.Set(mk("two"), "2", "secrets[0]"); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Get("g").Generic()); got != "two" {
		t.Fatalf("after update Generic() = %q, want two", got)
	}
}
