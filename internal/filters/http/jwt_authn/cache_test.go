package jwt_authn

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache(2, 10)
	c.put("a", map[string]any{"sub": "a"}, nil, nil)
	c.put("b", map[string]any{"sub": "b"}, nil, nil)
	c.get("a") // a is now the most recent
	c.put("c", map[string]any{"sub": "c"}, nil, nil)
	if c.get("b") != nil || c.get("a") == nil || c.get("c") == nil {
		t.Errorf("LRU kept the wrong entries")
	}
	c.put("longer-than-ten", map[string]any{}, nil, nil)
	if c.get("longer-than-ten") != nil {
		t.Errorf("a token over jwt_max_token_size was cached")
	}

	p := &provider{skew: time.Second, cache: newTokenCache(0, 0)}
	now := time.Now().Unix()
	p.cache.put("live", map[string]any{"exp": float64(now + 600), "aud": "api"}, nil, nil)
	p.cache.put("dead", map[string]any{"exp": float64(now - 600)}, nil, nil)
	if _, _, ok := p.cached("live", []string{"api"}); !ok {
		t.Error("a live cached token was not used")
	}
	if _, _, ok := p.cached("live", []string{"other"}); ok {
		t.Error("a cached token passed another audience")
	}
	if _, _, ok := p.cached("dead", nil); ok || p.cache.get("dead") != nil {
		t.Error("an expired cached token was used or kept")
	}
}

// TestSignatureMemo: without jwt_cache_config, a token seen again with the
// same key set skips only the signature check; a new key set (a refetched
// JWKS that dropped the key) verifies it again, and the time and
// audience rules apply on every use.
func TestSignatureMemo(t *testing.T) {
	keyA, _ := rsa.GenerateKey(rand.Reader, 2048)
	keyB, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now().Unix()
	setA := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &keyA.PublicKey, KeyID: "a", Algorithm: "RS256"}}}
	p := &provider{skew: time.Second, jwks: &jwks{}, memo: newTokenCache(0, 0)}
	p.jwks.keys.Store(setA)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: keyA}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "a"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(map[string]any{"exp": now + 600, "aud": "api"})
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := obj.CompactSerialize()

	steps := []struct {
		name  string
		setup func()
		token string
		aud   []string
		want  string // "" for success, else the error text
	}{
		{"first use verifies", nil, good, []string{"api"}, ""},
		{"memoized: still accepted", nil, good, []string{"api"}, ""},
		{"memoized: audience checked again", nil, good, []string{"other"}, "Audiences in Jwt are not allowed"},
		{"a hit skips the signature check (an entry planted with the current key set)", func() {
			p.memo.put("planted", map[string]any{"exp": float64(now + 600)}, nil, setA)
		}, "planted", nil, ""},
		{"memoized but expired", func() {
			p.memo.put("old", map[string]any{"exp": float64(now - 600)}, nil, setA)
		}, "old", nil, "Jwt is expired"},
		{"a new key set without the key: verified again, refused", func() {
			p.jwks.keys.Store(&jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &keyB.PublicKey, KeyID: "a", Algorithm: "RS256"}}})
		}, good, []string{"api"}, "Jwt verification fails"},
		{"the same key again, in a new set: verified again, accepted", func() {
			p.jwks.keys.Store(&jose.JSONWebKeySet{Keys: setA.Keys})
		}, good, []string{"api"}, ""},
	}
	for _, st := range steps {
		if st.setup != nil {
			st.setup()
		}
		_, _, err := p.verify(st.token, st.aud)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != st.want {
			t.Errorf("%s: error %q, want %q", st.name, got, st.want)
		}
	}
	if e := p.memo.get("old"); e != nil {
		t.Error("an expired memoized token stayed in the memo")
	}
}

// TestTokenCacheOwnsKeys: the token a filter sees is a view into the
// connection's read buffer; the cache must copy it, or the next request's
// token, parsed into the same bytes, would find the earlier entry (a token
// with another signature accepted).
func TestTokenCacheOwnsKeys(t *testing.T) {
	c := newTokenCache(0, 0)
	buf := []byte("aaaa.bbbb.good")
	view := unsafe.String(&buf[0], len(buf))
	c.put(view, map[string]any{"sub": "a"}, nil, nil)
	copy(buf, "aaaa.bbbb.evil") // the next request in the same buffer
	if c.get("aaaa.bbbb.evil") != nil {
		t.Fatal("a token laid over a cached one's bytes found its entry")
	}
	if c.get("aaaa.bbbb.good") == nil {
		t.Fatal("the cached token is gone")
	}
}
