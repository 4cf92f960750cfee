// Package oauth2 is envoy.filters.http.oauth2: the OAuth 2.0 authorization
// code flow (RFC 6749 section 4.1, with PKCE, RFC 7636) in front of a
// service, as Envoy's source/extensions/filters/http/oauth2 (filter.cc,
// oauth_client.cc).
//
// A request without a valid session is redirected (302) to the
// authorization_endpoint with client_id, scope, response_type=code,
// redirect_uri, a PKCE code_challenge and a state parameter (base64url
// JSON holding the original URL, a signed CSRF token and a flow id); the
// CSRF token and the encrypted code verifier go in per-flow cookies
// (OauthNonce.<flow>, CodeVerifier.<flow>, and their unsuffixed legacy
// names). The callback on redirect_path_matcher checks the state against
// the nonce cookie, exchanges the code at token_endpoint (a cluster,
// through the async client) with the client secret (SDS generic secret)
// in the form body or HTTP Basic, and answers 302 back to the original URL
// setting OauthHMAC, OauthExpires, BearerToken, IdToken and RefreshToken
// (tokens AES-encrypted with the hmac_secret unless
// disable_token_encryption). Later requests pass when the HMAC of those
// cookies checks and OauthExpires is in the future; forward_bearer_token
// then sets Authorization: Bearer. An expired session with a refresh
// token is refreshed in line (the new cookies set on the response).
// signout_path clears the cookies. Failures answer 401 "OAuth flow
// failed." (503 "Service Unavailable" while the secrets have not arrived).
// Stats are http.<stat_prefix>.<oauth stat_prefix>oauth_{unauthorized_rq,
// failure,passthrough,success,refreshtoken_success,refreshtoken_failure,
// allow_failed_passthrough}.
package oauth2

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
)

// Name is the filter's name.
const Name = "envoy.filters.http.oauth2"

func init() {
	httpfilter.Register(Name, nil, &oauthv3.OAuth2{}, &oauthv3.OAuth2PerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"private_key_jwt_config (auth_type PRIVATE_KEY_JWT) and token_cookie_chunking are refused; chunked token cookies are not rejoined; token cookies are written and read AES-256-CBC (the gcm. cookies of oauth2_use_gcm_encryption are not read)")
}

// Default cookie names (Envoy's CookieNames).
const (
	defBearerToken  = "BearerToken"
	defOauthHMAC    = "OauthHMAC"
	defOauthExpires = "OauthExpires"
	defIDToken      = "IdToken"
	defRefreshToken = "RefreshToken"
	defOauthNonce   = "OauthNonce"
	defCodeVerifier = "CodeVerifier"
)

// cookieNames are the configured cookie names.
type cookieNames struct {
	bearer, hmac, expires, idToken, refresh, nonce, verifier string
}

// cookieSettings are a cookie's attributes (CookieConfig).
type cookieSettings struct {
	sameSite    string // ";SameSite=…" or ""
	path        string
	partitioned bool
}

// authType is how the client authenticates to the token endpoint.
type authType int

const (
	urlEncodedBody authType = iota
	basicAuth
	tlsClientAuth
)

// filterStats are the filter's counters.
type filterStats struct {
	unauthorized, failure, passthrough, success, refreshOK, refreshFailed, allowFailed *stats.Counter
}

// retryPolicy is a compiled core RetryPolicy for the token request.
type retryPolicy struct {
	retries   int
	base, max time.Duration
	on5xx     bool // 5xx (and gateway-error's 502-504)
	onGateway bool
	onConnect bool // connect-failure and reset
}

// filterConfig is one compiled OAuth2Config, shared by every stream.
type filterConfig struct {
	async   *asyncclient.Client
	cluster string
	// tokenPath and tokenHost are what the token request carries, from
	// the token endpoint's uri.
	tokenPath, tokenHost string
	timeout              time.Duration
	retry                *retryPolicy

	// authBase is the authorization endpoint without its query; authQuery
	// its query parameters with client_id, response_type and scope set.
	authBase  string
	authQuery map[string][]string
	resources string // "&resource=…" for each resource

	endSession     string
	postLogout     *format.Formatter // nil: the default <scheme>://<host>/
	postLogoutOff  bool
	clientID       string
	redirectURI    *format.Formatter
	originalURI    *format.Formatter // nil: <scheme>://<host>
	allowedDomains []string

	redirectPath, signoutPath func(string) bool

	clientSecret, hmacSecret *tlsx.Secret

	passThrough, denyRedirect, allowFailed []func(*headers.Request) bool

	names        cookieNames
	cookieDomain string
	auth         authType

	defaultExpiresIn, defaultRefreshExpiresIn time.Duration
	csrfExpiresIn, verifierExpiresIn          time.Duration

	// forwardIDHeader is forward_id_token's header (lower case, "" for
	// none).
	forwardIDHeader string

	forwardBearer, preserveAuthorization, useRefreshToken      bool
	disableIDCookie, disableAccessCookie, disableRefreshCookie bool
	disableEncryption, idTokenUsesAccessExpiry                 bool

	bearerCookie, hmacCookie, expiresCookie, idCookie, refreshCookie, nonceCookie, verifierCookie cookieSettings

	stats filterStats
}

// rootConfig is the compiled OAuth2: cfg nil when it has no config (the
// filter then acts only on routes whose per-route config gives one).
type rootConfig struct{ cfg *filterConfig }

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	m := msg.(*oauthv3.OAuth2)
	if err := config.CheckFields(m, path, "config"); err != nil {
		return nil, err
	}
	if m.GetConfig() == nil {
		return &rootConfig{}, nil
	}
	c, err := compileConfig(ctx, m.GetConfig(), config.Join(path, "config"))
	if err != nil {
		return nil, err
	}
	return &rootConfig{cfg: c}, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	m := msg.(*oauthv3.OAuth2PerRoute)
	if err := config.CheckFields(m, path, "config"); err != nil {
		return nil, err
	}
	return compileConfig(ctx, m.GetConfig(), config.Join(path, "config"))
}

func compileConfig(ctx *httpfilter.Context, pc *oauthv3.OAuth2Config, path string) (*filterConfig, error) {
	if err := config.CheckFields(pc, path, "token_endpoint", "retry_policy", "authorization_endpoint",
		"end_session_endpoint", "post_logout_redirect_uri", "credentials", "redirect_uri", "redirect_path_matcher",
		"signout_path", "forward_bearer_token", "preserve_authorization_header", "pass_through_matcher", "auth_scopes",
		"resources", "auth_type", "use_refresh_token", "default_expires_in", "deny_redirect_matcher",
		"default_refresh_token_expires_in", "disable_id_token_set_cookie", "disable_access_token_set_cookie",
		"disable_refresh_token_set_cookie", "cookie_configs", "stat_prefix", "csrf_token_expires_in",
		"code_verifier_token_expires_in", "disable_token_encryption", "allow_failed_matcher", "original_request_uri",
		"allowed_redirect_domains", "use_access_token_expiry_for_id_token_cookie", "forward_id_token"); err != nil {
		return nil, err
	}
	c := &filterConfig{async: ctx.Async, clientID: pc.GetCredentials().GetClientId(),
		forwardBearer: pc.GetForwardBearerToken(), preserveAuthorization: pc.GetPreserveAuthorizationHeader(),
		useRefreshToken: pc.GetUseRefreshToken() == nil || pc.GetUseRefreshToken().GetValue(),
		disableIDCookie: pc.GetDisableIdTokenSetCookie(), disableAccessCookie: pc.GetDisableAccessTokenSetCookie(),
		disableRefreshCookie: pc.GetDisableRefreshTokenSetCookie(), disableEncryption: pc.GetDisableTokenEncryption(),
		idTokenUsesAccessExpiry: pc.GetUseAccessTokenExpiryForIdTokenCookie(), endSession: pc.GetEndSessionEndpoint(),
		allowedDomains: pc.GetAllowedRedirectDomains(), cookieDomain: pc.GetCredentials().GetCookieDomain(),
		defaultExpiresIn: pc.GetDefaultExpiresIn().AsDuration(), defaultRefreshExpiresIn: 604800 * time.Second,
		csrfExpiresIn: 600 * time.Second, verifierExpiresIn: 600 * time.Second}
	if pc.GetDefaultRefreshTokenExpiresIn() != nil {
		c.defaultRefreshExpiresIn = pc.GetDefaultRefreshTokenExpiresIn().AsDuration()
	}
	if pc.GetCsrfTokenExpiresIn() != nil {
		c.csrfExpiresIn = pc.GetCsrfTokenExpiresIn().AsDuration()
	}
	if pc.GetCodeVerifierTokenExpiresIn() != nil {
		c.verifierExpiresIn = pc.GetCodeVerifierTokenExpiresIn().AsDuration()
	}

	// The token endpoint.
	te := pc.GetTokenEndpoint()
	tp := config.Join(path, "token_endpoint")
	if err := config.CheckFields(te, tp, "uri", "cluster", "timeout"); err != nil {
		return nil, err
	}
	if te.GetCluster() == "" {
		return nil, config.Errorf(config.Join(tp, "cluster"), "the token endpoint needs a cluster")
	}
	c.cluster = te.GetCluster()
	c.tokenHost, c.tokenPath = asyncclient.HostPath(te.GetUri())
	c.timeout = te.GetTimeout().AsDuration()
	if c.timeout <= 0 {
		// Envoy's AsyncClient treats a zero timeout as none.
		c.timeout = 0
	}
	if ctx.Clusters != nil && ctx.Clusters.Get(c.cluster) == nil && ctx.Log != nil {
		// As Envoy: only a warning, the cluster may come later over CDS.
		ctx.Log.Warn("OAuth2 filter: unknown cluster in config", "cluster", c.cluster, "path", config.Join(tp, "cluster"))
	}
	if rp := pc.GetRetryPolicy(); rp != nil {
		r, err := compileRetry(rp, config.Join(path, "retry_policy"))
		if err != nil {
			return nil, err
		}
		c.retry = r
	}

	// The authorization endpoint and its query.
	ae := pc.GetAuthorizationEndpoint()
	u, err := url.Parse(ae)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, config.Errorf(config.Join(path, "authorization_endpoint"), "OAuth2 filter: invalid authorization endpoint URL '%s' in config.", ae)
	}
	base, query, _ := strings.Cut(ae, "?")
	if i := strings.IndexByte(base, '#'); i >= 0 {
		base = base[:i]
	}
	c.authBase = base
	c.authQuery = parseQueryRaw(query)
	c.authQuery["client_id"] = []string{c.clientID}
	c.authQuery["response_type"] = []string{"code"}
	scopes := pc.GetAuthScopes()
	if len(scopes) == 0 {
		scopes = []string{"user"} // Envoy's default scope
	}
	c.authQuery["scope"] = []string{urlEncode(strings.Join(scopes, " "))}
	for _, r := range pc.GetResources() {
		c.resources += "&resource=" + urlEncode(r)
	}

	if c.endSession != "" {
		oidc := false
		for _, s := range pc.GetAuthScopes() {
			oidc = oidc || s == "openid"
		}
		if !oidc {
			return nil, config.Errorf(config.Join(path, "end_session_endpoint"), "OAuth2 filter: end session endpoint is only supported for OpenID Connect.")
		}
	}
	if pl := pc.GetPostLogoutRedirectUri(); pl != nil {
		switch pl.GetConfig().(type) {
		case *oauthv3.PostLogoutRedirectUri_Disabled:
			c.postLogoutOff = pl.GetDisabled()
		case *oauthv3.PostLogoutRedirectUri_Uri:
			f, err := format.CompileHeaderValue(pl.GetUri())
			if err != nil {
				return nil, config.Errorf(config.Join(path, "post_logout_redirect_uri.uri"), "%v", err)
			}
			c.postLogout = f
		}
	}

	if c.redirectURI, err = format.CompileHeaderValue(pc.GetRedirectUri()); err != nil {
		return nil, config.Errorf(config.Join(path, "redirect_uri"), "%v", err)
	}
	if o := pc.GetOriginalRequestUri(); o != "" {
		if c.originalURI, err = format.CompileHeaderValue(o); err != nil {
			return nil, config.Errorf(config.Join(path, "original_request_uri"), "%v", err)
		}
	}
	if c.redirectPath, err = pathMatcher(pc.GetRedirectPathMatcher(), config.Join(path, "redirect_path_matcher")); err != nil {
		return nil, err
	}
	if c.signoutPath, err = pathMatcher(pc.GetSignoutPath(), config.Join(path, "signout_path")); err != nil {
		return nil, err
	}
	for _, l := range []struct {
		name string
		in   []*routev3.HeaderMatcher
		out  *[]func(*headers.Request) bool
	}{
		{"pass_through_matcher", pc.GetPassThroughMatcher(), &c.passThrough},
		{"deny_redirect_matcher", pc.GetDenyRedirectMatcher(), &c.denyRedirect},
		{"allow_failed_matcher", pc.GetAllowFailedMatcher(), &c.allowFailed},
	} {
		for i, h := range l.in {
			m, err := route.CompileHeaderMatcher(h, config.Index(config.Join(path, l.name), i))
			if err != nil {
				return nil, err
			}
			*l.out = append(*l.out, m)
		}
	}

	switch pc.GetAuthType() {
	case oauthv3.OAuth2Config_URL_ENCODED_BODY:
		c.auth = urlEncodedBody
	case oauthv3.OAuth2Config_BASIC_AUTH:
		c.auth = basicAuth
	case oauthv3.OAuth2Config_TLS_CLIENT_AUTH:
		// RFC 8705: the client certificate of the token cluster's TLS
		// transport socket authenticates; no secret is sent.
		c.auth = tlsClientAuth
	default:
		return nil, config.Unsupported(config.Join(path, "auth_type"), "auth_type "+pc.GetAuthType().String(),
			"URL_ENCODED_BODY", "BASIC_AUTH", "TLS_CLIENT_AUTH")
	}

	// Credentials.
	cr := pc.GetCredentials()
	cp := config.Join(path, "credentials")
	if err := config.CheckFields(cr, cp, "client_id", "token_secret", "hmac_secret", "cookie_names", "cookie_domain"); err != nil {
		return nil, err
	}
	if ctx.SDS == nil {
		return nil, config.Errorf(cp, "secrets are not available here")
	}
	if ts := cr.GetTokenSecret(); c.auth == tlsClientAuth {
		// As Envoy: the certificate authenticates, a token_secret is
		// ignored (and not resolved).
		if ts != nil && ctx.Log != nil {
			ctx.Log.Debug("OAuth2 filter: token_secret is ignored when auth_type is TLS_CLIENT_AUTH", "path", config.Join(cp, "token_secret"))
		}
	} else if ts == nil {
		return nil, config.Errorf(config.Join(cp, "token_secret"), "token_secret is required when auth_type is not TLS_CLIENT_AUTH")
	} else if c.clientSecret, err = ctx.SDS(ts, config.Join(cp, "token_secret")); err != nil {
		return nil, err
	}
	if cr.GetHmacSecret() == nil {
		return nil, config.Errorf(config.Join(cp, "hmac_secret"), "hmac_secret is required")
	}
	if c.hmacSecret, err = ctx.SDS(cr.GetHmacSecret(), config.Join(cp, "hmac_secret")); err != nil {
		return nil, err
	}
	cn := cr.GetCookieNames()
	if cn != nil {
		if err := config.CheckFields(cn, config.Join(cp, "cookie_names"), "bearer_token", "oauth_hmac", "oauth_expires",
			"id_token", "refresh_token", "oauth_nonce", "code_verifier"); err != nil {
			return nil, err
		}
	}
	c.names = cookieNames{
		bearer: or(cn.GetBearerToken(), defBearerToken), hmac: or(cn.GetOauthHmac(), defOauthHMAC),
		expires: or(cn.GetOauthExpires(), defOauthExpires), idToken: or(cn.GetIdToken(), defIDToken),
		refresh: or(cn.GetRefreshToken(), defRefreshToken), nonce: or(cn.GetOauthNonce(), defOauthNonce),
		verifier: or(cn.GetCodeVerifier(), defCodeVerifier),
	}

	// Cookie attributes.
	cc := pc.GetCookieConfigs()
	ccp := config.Join(path, "cookie_configs")
	if cc != nil {
		if err := config.CheckFields(cc, ccp, "bearer_token_cookie_config", "oauth_hmac_cookie_config",
			"oauth_expires_cookie_config", "id_token_cookie_config", "refresh_token_cookie_config",
			"oauth_nonce_cookie_config", "code_verifier_cookie_config"); err != nil {
			return nil, err
		}
	}
	for _, s := range []struct {
		name string
		in   *oauthv3.CookieConfig
		out  *cookieSettings
	}{
		{"bearer_token_cookie_config", cc.GetBearerTokenCookieConfig(), &c.bearerCookie},
		{"oauth_hmac_cookie_config", cc.GetOauthHmacCookieConfig(), &c.hmacCookie},
		{"oauth_expires_cookie_config", cc.GetOauthExpiresCookieConfig(), &c.expiresCookie},
		{"id_token_cookie_config", cc.GetIdTokenCookieConfig(), &c.idCookie},
		{"refresh_token_cookie_config", cc.GetRefreshTokenCookieConfig(), &c.refreshCookie},
		{"oauth_nonce_cookie_config", cc.GetOauthNonceCookieConfig(), &c.nonceCookie},
		{"code_verifier_cookie_config", cc.GetCodeVerifierCookieConfig(), &c.verifierCookie},
	} {
		if s.in != nil {
			if err := config.CheckFields(s.in, config.Join(ccp, s.name), "same_site", "path", "partitioned"); err != nil {
				return nil, err
			}
		}
		*s.out = cookieSettings{path: or(s.in.GetPath(), "/"), partitioned: s.in.GetPartitioned()}
		switch s.in.GetSameSite() {
		case oauthv3.CookieConfig_STRICT:
			s.out.sameSite = ";SameSite=Strict"
		case oauthv3.CookieConfig_LAX:
			s.out.sameSite = ";SameSite=Lax"
		case oauthv3.CookieConfig_NONE:
			s.out.sameSite = ";SameSite=None"
		}
	}

	if fw := pc.GetForwardIdToken(); fw != nil {
		fp := config.Join(path, "forward_id_token")
		if err := config.CheckFields(fw, fp, "header"); err != nil {
			return nil, err
		}
		c.forwardIDHeader = headers.Lower(fw.GetHeader())
		if c.forwardIDHeader == "" || c.forwardIDHeader[0] == ':' || c.forwardIDHeader == "host" {
			return nil, config.Errorf(config.Join(fp, "header"), "invalid forward_id_token configuration: header '%s' can not be used to forward the ID token; pseudo-headers and the Host header are not allowed", fw.GetHeader())
		}
		// The header is Envoy's own: a pass-through keyed on it would let
		// a client bypass OAuth by sending it.
		for i, m := range pc.GetPassThroughMatcher() {
			if headers.Lower(m.GetName()) == c.forwardIDHeader {
				return nil, config.Errorf(config.Index(config.Join(path, "pass_through_matcher"), i), "invalid forward_id_token configuration: pass_through_matcher can not match on the forwarded ID token header '%s'", fw.GetHeader())
			}
		}
	}
	n := 0
	for _, b := range []bool{c.forwardBearer, c.forwardIDHeader == "authorization", c.preserveAuthorization} {
		if b {
			n++
		}
	}
	if n > 1 {
		return nil, config.Errorf(path, "invalid OAuth2 configuration: at most one of forward_bearer_token, preserve_authorization_header, or forward_id_token (when forwarding the ID token on the Authorization header) may be set, as they all use the Authorization header")
	}

	sc := ctx.Scope(pc.GetStatPrefix())
	c.stats = filterStats{unauthorized: sc.Counter("oauth_unauthorized_rq"), failure: sc.Counter("oauth_failure"),
		passthrough: sc.Counter("oauth_passthrough"), success: sc.Counter("oauth_success"),
		refreshOK: sc.Counter("oauth_refreshtoken_success"), refreshFailed: sc.Counter("oauth_refreshtoken_failure"),
		allowFailed: sc.Counter("oauth_allow_failed_passthrough")}
	return c, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseQueryRaw splits a query into its parameters without decoding them
// (Envoy's QueryParamsMulti::parseQueryString keeps values as written).
func parseQueryRaw(q string) map[string][]string {
	out := map[string][]string{}
	for _, kv := range strings.Split(q, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		out[k] = append(out[k], v)
	}
	return out
}

// queryString renders parameters in key order, as Envoy's QueryParamsMulti
// (a sorted map) does.
func queryString(q map[string][]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(q)) {
		for _, v := range q[k] {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(k + "=" + v)
		}
	}
	return b.String()
}

// pathMatcher compiles a PathMatcher: the string matcher applies to the
// path without its query and fragment, as Envoy's Matchers::PathMatcher.
func pathMatcher(pm *matcherv3.PathMatcher, path string) (func(string) bool, error) {
	if err := config.CheckFields(pm, path, "path"); err != nil {
		return nil, err
	}
	m, err := route.CompileStringMatcher(pm.GetPath(), config.Join(path, "path"))
	if err != nil {
		return nil, err
	}
	return func(p string) bool {
		if i := strings.IndexAny(p, "?#"); i >= 0 {
			p = p[:i]
		}
		return m(p)
	}, nil
}

// compileRetry reads a core RetryPolicy as Envoy's
// convertCoreToRouteRetryPolicy does for the token request: num_retries
// defaults to 1, retry_on to "5xx,gateway-error,connect-failure,reset",
// the back-off to the router's 25 ms base and 10× that at most.
func compileRetry(rp *corev3.RetryPolicy, path string) (*retryPolicy, error) {
	if err := config.CheckFields(rp, path, "num_retries", "retry_on", "retry_back_off"); err != nil {
		return nil, err
	}
	r := &retryPolicy{retries: 1, base: 25 * time.Millisecond}
	if n := rp.GetNumRetries(); n != nil {
		r.retries = int(n.GetValue())
	}
	on := rp.GetRetryOn()
	if on == "" {
		on = "5xx,gateway-error,connect-failure,reset"
	}
	for _, o := range strings.Split(on, ",") {
		switch strings.TrimSpace(o) {
		case "5xx":
			r.on5xx = true
		case "gateway-error":
			r.onGateway = true
		case "connect-failure", "reset":
			r.onConnect = true
		default:
			return nil, config.Unsupported(config.Join(path, "retry_on"), "retry_on "+o+" for the token request",
				"5xx", "gateway-error", "connect-failure", "reset")
		}
	}
	if b := rp.GetRetryBackOff(); b != nil {
		if err := config.CheckFields(b, config.Join(path, "retry_back_off"), "base_interval", "max_interval"); err != nil {
			return nil, err
		}
		r.base = b.GetBaseInterval().AsDuration()
		if r.base <= 0 {
			return nil, config.Errorf(config.Join(path, "retry_back_off.base_interval"), "base_interval must be positive")
		}
	}
	r.max = 10 * r.base
	if mi := rp.GetRetryBackOff().GetMaxInterval(); mi != nil {
		r.max = mi.AsDuration()
		if r.max < r.base {
			return nil, config.Errorf(config.Join(path, "retry_back_off.max_interval"), "max_interval must not be less than base_interval")
		}
	}
	return r, nil
}

// NewFilter makes the filter of one stream.
func (r *rootConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{root: r.cfg, cb: cb}
}
