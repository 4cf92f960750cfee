package jwt_authn

import (
	"container/list"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// tokenCache is a provider's jwt_cache_config: tokens that verified, by
// their text, so a token seen again skips the signature check (Envoy's
// JwtCache, an LRU of jwt_cache_size entries, 100 by default; tokens
// longer than jwt_max_token_size, 4096 bytes by default, are not kept).
// Time and audience rules are checked again on every use.
type tokenCache struct {
	mu      sync.Mutex
	size    int
	maxLen  int
	entries map[string]*list.Element
	lru     *list.List // front: most recently used
}

type cachedToken struct {
	token  string
	claims map[string]any
	raw    []byte
	// keys is the key set the token verified with (the provider's memo;
	// nil in jwt_cache_config's cache).
	keys *jose.JSONWebKeySet
}

func newTokenCache(size, maxLen int) *tokenCache {
	if size <= 0 {
		size = 100
	}
	if maxLen <= 0 {
		maxLen = 4096
	}
	return &tokenCache{size: size, maxLen: maxLen, entries: map[string]*list.Element{}, lru: list.New()}
}

func (c *tokenCache) get(token string) *cachedToken {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[token]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cachedToken)
}

func (c *tokenCache) put(token string, claims map[string]any, raw []byte, keys *jose.JSONWebKeySet) {
	if c == nil || len(token) > c.maxLen {
		return
	}
	// The token is a view into the connection's read buffer (the HTTP/1
	// codec parses in place), which the next request overwrites: a key
	// kept past this request must own its bytes, or a later request's
	// token laid over it matches the entry.
	token = strings.Clone(token)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[token]; ok {
		c.lru.MoveToFront(e)
		e.Value.(*cachedToken).keys = keys
		return
	}
	c.entries[token] = c.lru.PushFront(&cachedToken{token: token, claims: claims, raw: raw, keys: keys})
	for c.lru.Len() > c.size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cachedToken).token)
	}
}

func (c *tokenCache) remove(token string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[token]; ok {
		c.lru.Remove(e)
		delete(c.entries, token)
	}
}

// cached returns a cached token's claims when they still pass the
// provider's time rules and the audiences; a token whose time is up
// leaves the cache (the full check then says why it fails).
func (p *provider) cached(token string, audiences []string) (map[string]any, []byte, bool) {
	t := p.cache.get(token)
	if t == nil {
		return nil, nil, false
	}
	if exp, ok := number(t.claims["exp"]); ok && time.Now().After(time.Unix(int64(exp), 0).Add(p.skew)) {
		p.cache.remove(token)
		return nil, nil, false
	}
	if len(audiences) > 0 && !audienceOK(t.claims["aud"], audiences) {
		return nil, nil, false
	}
	return t.claims, t.raw, true
}
