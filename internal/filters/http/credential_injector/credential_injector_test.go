package credential_injector

import (
	"errors"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	civ3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
)

func genericSecret(t *testing.T, store *tlsx.Store, name, value string) {
	t.Helper()
	err := store.Set(&tlsv3.Secret{Name: name, Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{
		Secret: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: value}}}}}, "1", "s")
	if err != nil {
		t.Fatal(err)
	}
}

func testContext(store *tlsx.Store) *httpfilter.Context {
	return &httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.t.",
		SDS: func(sc *tlsv3.SdsSecretConfig, path string) (*tlsx.Secret, error) {
			sec := store.Get(sc.GetName())
			if sec.Proto() == nil {
				return nil, config.Errorf(path, "no static secret named %q", sc.GetName())
			}
			return sec, nil
		}}
}

func TestGenericInject(t *testing.T) {
	store := tlsx.NewStore(nil)
	defer store.Close()
	genericSecret(t, store, "tok", "abc\r\n")
	genericSecret(t, store, "blank", "\n")
	for _, tc := range []struct {
		name      string
		g         generic
		existing  string
		overwrite bool
		want      string
		err       error
	}{
		{"inject", generic{header: "authorization", prefix: "Bearer ", secret: store.Get("tok")}, "", false, "Bearer abc", nil},
		{"keep", generic{header: "authorization", secret: store.Get("tok")}, "mine", false, "mine", errAlreadyExists},
		{"overwrite", generic{header: "authorization", secret: store.Get("tok")}, "mine", true, "abc", nil},
		{"empty secret", generic{header: "authorization", secret: store.Get("blank")}, "", false, "", errNoCredential},
	} {
		h := &headers.Request{Path: "/"}
		if tc.existing != "" {
			h.Map.Set("authorization", tc.existing)
		}
		err := tc.g.inject(h, tc.overwrite)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
		}
		if got := h.Map.Get("authorization"); got != tc.want {
			t.Errorf("%s: authorization %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseTokenResponse(t *testing.T) {
	for _, tc := range []struct {
		body string
		tok  string
		exp  time.Duration
		bad  bool
	}{
		{`{"access_token":"a","expires_in":3600,"token_type":"bearer"}`, "Bearer a", time.Hour, false},
		{`{"access_token":"a","expires_in":"60"}`, "Bearer a", time.Minute, false},
		{`{"access_token":"a"}`, "", 0, true},
		{`{"expires_in":5}`, "", 0, true},
		{`{"access_token":"a","expires_in":-1}`, "", 0, true},
		{`access_token=a&expires_in=5`, "", 0, true},
	} {
		tok, exp, err := parseTokenResponse([]byte(tc.body))
		if tc.bad {
			if !errors.Is(err, errBadToken) {
				t.Errorf("%s: error %v, want a bad token", tc.body, err)
			}
			continue
		}
		if err != nil || tok != tc.tok || exp != tc.exp {
			t.Errorf("%s: %q %v %v", tc.body, tok, exp, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	store := tlsx.NewStore(nil)
	defer store.Close()
	genericSecret(t, store, "tok", "abc")
	gen := func(name string) *anypb.Any {
		a, _ := anypb.New(&genericv3.Generic{Credential: &tlsv3.SdsSecretConfig{Name: name}})
		return a
	}
	other, _ := anypb.New(wrapperspb.String("x"))
	for _, tc := range []struct {
		name string
		a    *anypb.Any
		err  string
	}{
		{"ok", gen("tok"), ""},
		{"missing secret", gen("nope"), `f.credential.typed_config.credential: no static secret named "nope"`},
		{"other type", other, "is not supported by legate"},
	} {
		_, err := compile(testContext(store), &civ3.CredentialInjector{Credential: &corev3.TypedExtensionConfig{Name: "c", TypedConfig: tc.a}}, "f")
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestEncodeOrdered(t *testing.T) {
	if got := encodeOrdered([][2]string{{"b", "x y"}, {"a", "1&2"}}); got != "b=x+y&a=1%262" {
		t.Errorf("%q", got)
	}
}
