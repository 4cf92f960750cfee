package jwt_authn

import (
	"testing"
	"time"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache(2, 10)
	c.put("a", map[string]any{"sub": "a"}, nil)
	c.put("b", map[string]any{"sub": "b"}, nil)
	c.get("a") // a is now the most recent
	c.put("c", map[string]any{"sub": "c"}, nil)
	if c.get("b") != nil || c.get("a") == nil || c.get("c") == nil {
		t.Errorf("LRU kept the wrong entries")
	}
	c.put("longer-than-ten", map[string]any{}, nil)
	if c.get("longer-than-ten") != nil {
		t.Errorf("a token over jwt_max_token_size was cached")
	}

	p := &provider{skew: time.Second, cache: newTokenCache(0, 0)}
	now := time.Now().Unix()
	p.cache.put("live", map[string]any{"exp": float64(now + 600), "aud": "api"}, nil)
	p.cache.put("dead", map[string]any{"exp": float64(now - 600)}, nil)
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
