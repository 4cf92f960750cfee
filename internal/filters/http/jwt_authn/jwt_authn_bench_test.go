package jwt_authn

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// benchCallbacks is the stream as the JWT filter sees it (no per-route
// config). Calling anything else panics (the embedded interface is nil).
type benchCallbacks struct {
	httpfilter.Callbacks
	info   streaminfo.Info
	denied string
}

func (c *benchCallbacks) PerRouteConfig() any          { return nil }
func (c *benchCallbacks) StreamInfo() *streaminfo.Info { return &c.info }
func (c *benchCallbacks) ClearRouteCache()             {}
func (c *benchCallbacks) SendLocalReply(_ int, body string, _ httpfilter.LocalReply) {
	c.denied = body
}

// BenchmarkJWTAuthn is bench/cmd/filtercost's jwt_authn variant in
// process: a provider with a local RS256 JWKS (2048-bit key) and one
// valid token per request, verified every time (Legate has no JWT cache).
// The verify sub-benchmark is the RSA signature check alone, the floor of
// what verifying costs without a cache.
func BenchmarkJWTAuthn(b *testing.B) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "bench", Algorithm: "RS256", Use: "sig"}}})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "bench"))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().Unix()
	claims, _ := json.Marshal(map[string]any{"iss": "https://issuer.example", "aud": "api.example", "sub": "user-1", "iat": now, "exp": now + 86400, "scope": "read write"})
	obj, err := signer.Sign(claims)
	if err != nil {
		b.Fatal(err)
	}
	token, _ := obj.CompactSerialize()

	compileWith := func(provider map[string]any) httpfilter.Config {
		provider["issuer"], provider["audiences"] = "https://issuer.example", []string{"api.example"}
		provider["local_jwks"] = map[string]any{"inline_string": string(set)}
		cfgJSON, _ := json.Marshal(map[string]any{
			"providers": map[string]any{"local": provider},
			"rules":     []any{map[string]any{"match": map[string]any{"prefix": "/"}, "requires": map[string]any{"provider_name": "local"}}},
		})
		var msg jwtv3.JwtAuthentication
		if err := protojson.Unmarshal(cfgJSON, &msg); err != nil {
			b.Fatal(err)
		}
		cfg, err := compile(&httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.bench.", Log: slog.Default()}, &msg, "jwt_authn")
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}
	for _, v := range []struct {
		name     string
		provider map[string]any
	}{{"filter", map[string]any{}}, {"filter_cached", map[string]any{"jwt_cache_config": map[string]any{}}}} {
		cfg := compileWith(v.provider)
		b.Run(v.name, func(b *testing.B) { benchFilter(b, cfg, token) })
	}
	b.Run("verify", func(b *testing.B) {
		parts := strings.Split(token, ".")
		sig, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			b.Fatal(err)
		}
		raw := sig.Signatures[0].Signature
		b.ReportAllocs()
		for b.Loop() {
			h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
			if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, h[:], raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchFilter runs the filter on a request carrying token, as the
// connection manager would for each request.
func benchFilter(b *testing.B, cfg httpfilter.Config, token string) {
	cb := &benchCallbacks{}
	req := &headers.Request{}
	authorization := "Bearer " + token // the proxy's parser made it once
	round := func() {
		// The filter removes the token (forward: false), so every
		// round builds the request again.
		req.Reset()
		req.Method, req.Scheme, req.Authority, req.Path = "GET", "http", "api.example", "/api/v5/items"
		req.Map.Add("user-agent", "wrk")
		req.Map.Add("authorization", authorization)
		req.Map.Add("accept", "*/*")
		cb.info = streaminfo.Info{}
		f := cfg.NewFilter(cb)
		f.(httpfilter.DecoderHeaders).DecodeHeaders(req, true)
	}
	round()
	if cb.denied != "" || req.Map.Has("authorization") {
		b.Fatalf("the valid token was not accepted (%q) or not removed", cb.denied)
	}
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
	if cb.denied != "" {
		b.Fatal(cb.denied)
	}
}
