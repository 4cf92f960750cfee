package jwt_authn

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
)

type claimHeader struct{ header, claim string }

type provider struct {
	name                 string
	issuer               string
	audiences            []string
	subjects             func(string) bool
	requireExp           bool
	maxLifetime          time.Duration
	skew                 time.Duration
	forward              bool
	locations            []tokenLocation
	forwardPayloadHeader string
	padForwardPayload    bool
	payloadInMetadata    string
	claimToHeaders       []claimHeader
	clearRouteCache      bool
	jwks                 *jwks
	// cache is jwt_cache_config (nil: none).
	cache *tokenCache
	// memo, without jwt_cache_config, keeps tokens whose signature
	// verified with the key set they verified against: a token seen again
	// with the same key set skips the signature check and the parse, and
	// every other rule is checked again. Unlike Envoy's JWT cache it ends
	// with the key set (a refetched JWKS verifies again), so it changes no
	// outcome: it only spares the RSA/ECDSA work (tens of µs) for the
	// clients that send the same token on every request.
	memo *tokenCache
}

// allAlgorithms are the JWS algorithms Envoy's jwt_authn accepts.
var allAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.HS256, jose.HS384, jose.HS512}

func compileProvider(ctx *httpfilter.Context, name string, p *jwtv3.JwtProvider, path string, sc stats.Scope) (*provider, error) {
	if err := config.CheckFields(p, path, "issuer", "audiences", "subjects", "require_expiration", "max_lifetime", "remote_jwks", "local_jwks",
		"forward", "from_headers", "from_params", "from_cookies", "forward_payload_header", "pad_forward_payload_header",
		"payload_in_metadata", "clock_skew_seconds", "jwt_cache_config", "claim_to_headers", "clear_route_cache"); err != nil {
		return nil, err
	}
	pr := &provider{name: name, issuer: p.GetIssuer(), audiences: p.GetAudiences(), requireExp: p.GetRequireExpiration(),
		skew: 60 * time.Second, forward: p.GetForward(), forwardPayloadHeader: headers.Lower(p.GetForwardPayloadHeader()),
		padForwardPayload: p.GetPadForwardPayloadHeader(), payloadInMetadata: p.GetPayloadInMetadata(), clearRouteCache: p.GetClearRouteCache()}
	if p.GetClockSkewSeconds() != 0 {
		pr.skew = time.Duration(p.GetClockSkewSeconds()) * time.Second
	}
	if jc := p.GetJwtCacheConfig(); jc != nil {
		pr.cache = newTokenCache(int(jc.GetJwtCacheSize()), int(jc.GetJwtMaxTokenSize()))
	} else {
		pr.memo = newTokenCache(0, 0)
	}
	if p.GetMaxLifetime() != nil {
		pr.maxLifetime = p.GetMaxLifetime().AsDuration()
	}
	if p.GetSubjects() != nil {
		m, err := route.CompileStringMatcher(p.GetSubjects(), config.Join(path, "subjects"))
		if err != nil {
			return nil, err
		}
		pr.subjects = m
	}
	for _, h := range p.GetFromHeaders() {
		pr.locations = append(pr.locations, tokenLocation{header: headers.Lower(h.GetName()), prefix: h.GetValuePrefix()})
	}
	for _, q := range p.GetFromParams() {
		pr.locations = append(pr.locations, tokenLocation{param: q})
	}
	for _, c := range p.GetFromCookies() {
		pr.locations = append(pr.locations, tokenLocation{cookie: c})
	}
	if len(pr.locations) == 0 {
		// Envoy's defaults: Authorization: Bearer <token>, ?access_token=.
		pr.locations = []tokenLocation{{header: "authorization", prefix: "Bearer "}, {param: "access_token"}}
	}
	for i, ch := range p.GetClaimToHeaders() {
		if ch.GetHeaderName() == "" || ch.GetClaimName() == "" {
			return nil, config.Errorf(config.Index(config.Join(path, "claim_to_headers"), i), "header_name and claim_name are required")
		}
		pr.claimToHeaders = append(pr.claimToHeaders, claimHeader{headers.Lower(ch.GetHeaderName()), ch.GetClaimName()})
	}
	var err error
	switch {
	case p.GetLocalJwks() != nil:
		pr.jwks, err = localJWKS(p.GetLocalJwks(), config.Join(path, "local_jwks"), ctx.Log)
	case p.GetRemoteJwks() != nil:
		pr.jwks, err = remoteJWKS(ctx, p.GetRemoteJwks(), config.Join(path, "remote_jwks"), sc)
	default:
		err = config.Errorf(path, "a provider needs local_jwks or remote_jwks")
	}
	if err != nil {
		return nil, err
	}
	return pr, nil
}

// jwks is a provider's key set: fixed, or fetched and cached.
type jwks struct {
	keys atomic.Pointer[jose.JSONWebKeySet]
	// remote
	async      *asyncclient.Client
	uri        *jwksURI
	cluster    string
	timeout    time.Duration
	cacheFor   time.Duration
	asyncFetch bool
	// refetchAfterFailure is async_fetch.failed_refetch_duration.
	refetchAfterFailure time.Duration
	// retries and backoff are retry_policy: extra attempts after a
	// connect failure, reset or 5xx (Envoy's default retry_on for JWKS).
	retries       int
	base, maxBack time.Duration
	mu            sync.Mutex
	fetchedAt     time.Time
	started       atomic.Bool
	ok, failed    *stats.Counter
}

type jwksURI struct{ raw, host string }

func parseJWKS(b []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		// A single JWK (not a set) is accepted too.
		var k jose.JSONWebKey
		if err2 := json.Unmarshal(b, &k); err2 != nil {
			return nil, fmt.Errorf("not a JWKS: %w", err)
		}
		set.Keys = []jose.JSONWebKey{k}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("the JWKS has no keys")
	}
	return &set, nil
}

func localJWKS(ds *corev3.DataSource, path string, log *slog.Logger) (*jwks, error) {
	if ds.GetSpecifier() == nil {
		return nil, config.Errorf(path, "empty JWKS data source")
	}
	b, _, err := config.ReadDataSource(ds, path)
	if err != nil {
		return nil, err
	}
	set, err := parseJWKS(b)
	if err != nil {
		// As Envoy ("Invalid inline jwks"): the config loads, the
		// provider has no keys, so every token it would verify fails.
		if log != nil {
			log.Warn("jwt_authn: invalid local JWKS; the provider has no keys and rejects every token", "path", path, "error", err)
		}
		set = &jose.JSONWebKeySet{}
	}
	j := &jwks{}
	j.keys.Store(set)
	return j, nil
}

func remoteJWKS(ctx *httpfilter.Context, r *jwtv3.RemoteJwks, path string, sc stats.Scope) (*jwks, error) {
	if err := config.CheckFields(r, path, "http_uri", "cache_duration", "async_fetch", "retry_policy"); err != nil {
		return nil, err
	}
	hu := r.GetHttpUri()
	if hu == nil || hu.GetCluster() == "" {
		return nil, config.Errorf(config.Join(path, "http_uri"), "http_uri with a cluster is required")
	}
	host, _ := asyncclient.HostPath(hu.GetUri())
	j := &jwks{async: ctx.Async, uri: &jwksURI{raw: hu.GetUri(), host: host}, cluster: hu.GetCluster(), timeout: time.Second,
		cacheFor: 5 * time.Minute, asyncFetch: r.GetAsyncFetch() != nil,
		ok: sc.Counter("jwks_fetch_success"), failed: sc.Counter("jwks_fetch_failed")}
	if hu.GetTimeout() != nil {
		j.timeout = hu.GetTimeout().AsDuration()
	}
	if r.GetCacheDuration() != nil {
		j.cacheFor = r.GetCacheDuration().AsDuration()
	}
	j.refetchAfterFailure = time.Second
	if af := r.GetAsyncFetch(); af != nil {
		if err := config.CheckFields(af, config.Join(path, "async_fetch"), "fast_listener", "failed_refetch_duration"); err != nil {
			return nil, err
		}
		if d := af.GetFailedRefetchDuration(); d != nil {
			j.refetchAfterFailure = d.AsDuration()
		}
	}
	if rp := r.GetRetryPolicy(); rp != nil {
		if err := compileRetry(j, rp, config.Join(path, "retry_policy")); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// compileRetry reads a core RetryPolicy as Envoy's jwt_authn does:
// num_retries defaults to 1, retry_on to "5xx,gateway-error,
// connect-failure,reset", retry_back_off to 1 s base and 10× that at most.
func compileRetry(j *jwks, rp *corev3.RetryPolicy, path string) error {
	if err := config.CheckFields(rp, path, "num_retries", "retry_on", "retry_back_off"); err != nil {
		return err
	}
	for _, on := range strings.Split(rp.GetRetryOn(), ",") {
		switch strings.TrimSpace(on) {
		case "", "5xx", "gateway-error", "connect-failure", "reset":
		default:
			return config.Errorf(config.Join(path, "retry_on"), "retry_on %q is not implemented for JWKS fetches; use 5xx, gateway-error, connect-failure or reset", on)
		}
	}
	j.retries = 1
	if n := rp.GetNumRetries(); n != nil {
		j.retries = int(n.GetValue())
	}
	j.base = time.Second
	if b := rp.GetRetryBackOff(); b != nil {
		if b.GetBaseInterval() != nil {
			j.base = b.GetBaseInterval().AsDuration()
		}
		if b.GetMaxInterval() != nil {
			j.maxBack = b.GetMaxInterval().AsDuration()
		}
	}
	if j.base <= 0 {
		return config.Errorf(config.Join(path, "retry_back_off.base_interval"), "base_interval must be positive")
	}
	if j.maxBack == 0 {
		j.maxBack = 10 * j.base
	}
	if j.maxBack < j.base {
		return config.Errorf(config.Join(path, "retry_back_off.max_interval"), "max_interval must not be less than base_interval")
	}
	return nil
}

// get returns the keys, fetching them when there are none or they are
// stale (async_fetch refreshes in the background instead).
func (j *jwks) get() (*jose.JSONWebKeySet, error) {
	if j.async == nil {
		return j.keys.Load(), nil
	}
	if j.asyncFetch && j.started.CompareAndSwap(false, true) {
		go j.refreshLoop()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if k := j.keys.Load(); k != nil && (j.asyncFetch || time.Since(j.fetchedAt) < j.cacheFor) {
		return k, nil
	}
	if err := j.fetch(); err != nil {
		if k := j.keys.Load(); k != nil {
			return k, nil // stale keys beat none
		}
		return nil, err
	}
	return j.keys.Load(), nil
}

func (j *jwks) refreshLoop() {
	for {
		j.mu.Lock()
		err := j.fetch()
		j.mu.Unlock()
		wait := j.cacheFor
		if err != nil {
			wait = j.refetchAfterFailure
		}
		time.Sleep(wait)
	}
}

// fetch fetches the JWKS, retrying per retry_policy with Envoy's
// jittered exponential back-off.
func (j *jwks) fetch() error {
	back := j.base
	for attempt := 0; ; attempt++ {
		retriable, err := j.fetchOnce()
		if err == nil || !retriable || attempt >= j.retries {
			if err != nil {
				j.failed.Inc()
			}
			return err
		}
		time.Sleep(time.Duration(rand.Int64N(int64(back)) + 1))
		back = min(2*back, j.maxBack)
	}
}

// fetchOnce makes one attempt; retriable says whether retry_on covers
// the failure (connect failure, reset or a 5xx).
func (j *jwks) fetchOnce() (retriable bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", j.uri.raw, nil)
	if err != nil {
		return false, err
	}
	req.Host = j.uri.host
	resp, err := j.async.Do(ctx, j.cluster, req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return true, fmt.Errorf("JWKS fetch: reading the body: %w", err)
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode >= 500, fmt.Errorf("JWKS fetch: status %d", resp.StatusCode)
	}
	set, err := parseJWKS(b)
	if err != nil {
		return false, err
	}
	j.keys.Store(set)
	j.fetchedAt = time.Now()
	j.ok.Inc()
	return false, nil
}

// decode parses a token's header and payload, without verifying anything.
func decode(token string) (*jose.JSONWebSignature, map[string]any, []byte, error) {
	if strings.Count(token, ".") != 2 {
		return nil, nil, nil, errVerification("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
	}
	sig, err := jose.ParseSigned(token, allAlgorithms)
	if err != nil {
		return nil, nil, nil, errVerification("Jwt header is an invalid JSON")
	}
	rawPayload, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[1])
	if err != nil {
		return nil, nil, nil, errVerification("Jwt payload is an invalid Base64")
	}
	var claims map[string]any
	dec := json.NewDecoder(strings.NewReader(string(rawPayload)))
	if err := dec.Decode(&claims); err != nil {
		return nil, nil, nil, errVerification("Jwt payload is an invalid JSON")
	}
	return sig, claims, rawPayload, nil
}

// verify checks a token against the provider and returns its payload.
func (p *provider) verify(token string, audiences []string) (map[string]any, []byte, error) {
	if p.cache != nil {
		if claims, raw, ok := p.cached(token, audiences); ok {
			return claims, raw, nil
		}
	}
	var (
		sig        *jose.JSONWebSignature
		claims     map[string]any
		rawPayload []byte
		err        error
	)
	memo := p.memo.get(token)
	if memo != nil {
		claims, rawPayload = memo.claims, memo.raw
	} else if sig, claims, rawPayload, err = decode(token); err != nil {
		return nil, nil, err
	}
	// Claims first, as Envoy: a token for another issuer goes no further.
	if iss, _ := claims["iss"].(string); p.issuer != "" && iss != p.issuer {
		return nil, nil, errVerification("Jwt issuer is not configured")
	}
	now := time.Now()
	exp, hasExp := number(claims["exp"])
	if !hasExp && p.requireExp {
		return nil, nil, errVerification("Jwt is expired")
	}
	if hasExp && now.After(time.Unix(int64(exp), 0).Add(p.skew)) {
		p.memo.remove(token)
		return nil, nil, errVerification("Jwt is expired")
	}
	if nbf, ok := number(claims["nbf"]); ok && now.Add(p.skew).Before(time.Unix(int64(nbf), 0)) {
		return nil, nil, errVerification("Jwt not yet valid")
	}
	if p.maxLifetime > 0 {
		iat, ok := number(claims["iat"])
		if !ok || !hasExp || time.Duration(exp-iat)*time.Second > p.maxLifetime {
			return nil, nil, errVerification("Jwt is expired")
		}
	}
	if len(audiences) > 0 && !audienceOK(claims["aud"], audiences) {
		return nil, nil, &jwtError{msg: "Audiences in Jwt are not allowed", forbidden: true}
	}
	if p.subjects != nil {
		if sub, _ := claims["sub"].(string); !p.subjects(sub) {
			return nil, nil, errVerification("Jwt subject is not allowed")
		}
	}
	keys, err := p.jwks.get()
	if err != nil || keys == nil {
		return nil, nil, errVerification("Jwks remote fetch is failed")
	}
	if memo != nil {
		if memo.keys == keys {
			return claims, rawPayload, nil
		}
		// The key set changed since: verify again.
		if sig, _, _, err = decode(token); err != nil {
			return nil, nil, err
		}
	}
	if len(sig.Signatures) != 1 {
		return nil, nil, errVerification("Jwt verification fails")
	}
	h := sig.Signatures[0].Header
	candidates := keys.Keys
	if h.KeyID != "" {
		candidates = keys.Key(h.KeyID)
	}
	matched := false
	for i := range candidates {
		k := &candidates[i]
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		matched = true
		if _, err := sig.Verify(k.Key); err == nil {
			if p.cache != nil {
				p.cache.put(token, claims, rawPayload, nil)
			} else {
				p.memo.put(token, claims, rawPayload, keys)
			}
			return claims, rawPayload, nil
		}
	}
	p.memo.remove(token)
	if !matched {
		return nil, nil, errVerification("Jwks doesn't have key to match kid or alg from Jwt")
	}
	return nil, nil, errVerification("Jwt verification fails")
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

func audienceOK(aud any, allowed []string) bool {
	var got []string
	switch x := aud.(type) {
	case string:
		got = []string{x}
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok {
				got = append(got, s)
			}
		}
	}
	for _, a := range got {
		for _, w := range allowed {
			// As Envoy, a scheme and a trailing slash do not matter.
			if trimAud(a) == trimAud(w) {
				return true
			}
		}
	}
	return false
}

func trimAud(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}
