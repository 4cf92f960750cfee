package oauth2

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

// Response code details, as Envoy's.
const (
	detailsRace        = "oauth.race_redirect"
	detailsLoggedIn    = "oauth.logged_in"
	detailsCredentials = "oauth.missing_credentials"
	detailsSignOut     = "oauth.sign_out"

	unauthorizedBody = "OAuth flow failed."

	statusHeader = "x-envoy-oauth-status"
	reasonHeader = "x-envoy-oauth-failure-reason"
)

// filter is one stream's OAuth2 filter.
type filter struct {
	root *filterConfig
	cb   httpfilter.Callbacks
	cfg  *filterConfig

	req    *headers.Request
	host   string
	flowID string

	// The session being set (updateTokens): tokens (empty when a
	// disable_*_set_cookie option keeps them out), cookie lifetimes and
	// the new OauthExpires.
	access, id, refresh                      string
	expiresIn, refreshExpiresIn, idExpiresIn string
	newExpires                               string
	refreshed                                bool
	hmacSecret                               []byte
}

// DecodeHeaders runs the flow (Envoy's decodeHeaders): pass-through,
// sign-out, a valid session, a refresh, a redirect to the authorization
// server, or the callback's code exchange.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	// The status headers are the filter's own: never trust a client's.
	h.Map.Del(statusHeader)
	h.Map.Del(reasonHeader)
	f.cfg = f.root
	if pr, ok := f.cb.PerRouteConfig().(*filterConfig); ok && pr != nil {
		f.cfg = pr
	}
	c := f.cfg
	if c == nil {
		return httpfilter.Continue
	}
	for _, m := range c.passThrough {
		if m(h) {
			c.stats.passthrough.Inc()
			return httpfilter.Continue
		}
	}
	f.hmacSecret = c.hmacSecret.Generic()
	if len(f.hmacSecret) == 0 || c.auth != tlsClientAuth && c.secret() == "" {
		// The secrets come over SDS; until they do Envoy answers 503.
		f.cb.Log().Warn("Responding with 503 Service Unavailable. Cause: OAuth2 secrets are not ready")
		c.stats.failure.Inc()
		f.cb.SendLocalReply(503, "Service Unavailable", httpfilter.LocalReply{Details: "OAuth2 secrets are not ready"})
		return httpfilter.StopIteration
	}
	f.req = h
	f.decryptCookies()
	if !c.preserveAuthorization {
		// Its content can not be validated; forward_bearer_token sets it
		// from the session below.
		h.Map.Del("authorization")
	}
	if c.forwardIDHeader != "" {
		// Envoy's own header: a client's is never forwarded.
		h.Map.Del(c.forwardIDHeader)
	}
	f.host = h.Authority
	path := h.Path
	fromAuthServer := c.redirectPath(path)

	if c.signoutPath(path) {
		f.signOut()
		return httpfilter.StopIteration
	}

	if f.loggedIn() {
		if fromAuthServer {
			// A callback for a session that is already valid (a race of
			// several resources through the login): back to the
			// original URL without exchanging the code.
			res := f.validateCallback(path)
			f.flowID = res.flowID
			if !res.ok {
				f.unauthorized(res.details)
				return httpfilter.StopIteration
			}
			if u, err := url.Parse(res.url); err == nil && c.redirectPath(u.RequestURI()) {
				f.unauthorized("State url query params matches the redirect path matcher: " + u.RequestURI())
				return httpfilter.StopIteration
			}
			f.reply302(res.url, f.flowCookieDeletions(), detailsRace)
			return httpfilter.StopIteration
		}
		f.removeFlowCookies()
		return httpfilter.Continue
	}

	if !fromAuthServer {
		if c.useRefreshToken {
			if rt := parseCookies(h).get(c.names.refresh); rt != "" {
				return f.refreshFlow(rt)
			}
		}
		switch {
		case f.allowFailed():
			f.continueFailed("Unauthorized, and forwarding as unauthorized because OAuth failure is allowed: " + path)
			return httpfilter.Continue
		case f.denyRedirect():
			f.unauthorized("Unauthorized, and redirecting to OAuth server is not allowed: " + path)
		default:
			f.redirectToAuthServer()
		}
		return httpfilter.StopIteration
	}

	// The callback: the query carries the code and the state.
	res := f.validateCallback(path)
	f.flowID = res.flowID
	if !res.ok {
		f.unauthorized(res.details)
		return httpfilter.StopIteration
	}
	redirectURI := c.redirectURI.String(f.cb.StreamInfo())
	enc, ok := flowCookie(parseCookies(h), c.names.verifier, res.flowID)
	if !ok {
		f.unauthorized("Code verifier cookie is missing in the request")
		return httpfilter.StopIteration
	}
	verifier, err := decrypt(enc, f.hmacSecret)
	if err != nil {
		f.unauthorized("Failed to decrypt code verifier: " + enc + ", error: " + err.Error())
		return httpfilter.StopIteration
	}
	t, terr := c.exchangeCode(res.code, redirectURI, verifier)
	if terr != nil {
		// The callback is Envoy's own path: allow_failed never applies.
		f.unauthorized(terr.Error())
		return httpfilter.StopIteration
	}
	f.updateTokens(t)
	set := f.sessionCookies()
	set = append(set, f.flowCookieDeletions()...)
	c.stats.success.Inc()
	f.reply302(res.url, set, detailsLoggedIn)
	return httpfilter.StopIteration
}

// EncodeHeaders sets the refreshed session's cookies on the response.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if f.refreshed {
		f.refreshed = false
		for _, v := range f.sessionCookies() {
			h.Map.Add("set-cookie", v)
		}
	}
	return httpfilter.Continue
}

// loggedIn validates the session cookies (Envoy's canSkipOAuth): the HMAC
// over the domain, expiry and tokens, and an expiry in the future.
func (f *filter) loggedIn() bool {
	c := f.cfg
	jar := parseCookies(f.req)
	expires := jar.get(c.names.expires)
	token := jar.get(c.names.bearer)
	domain := f.host
	if c.cookieDomain != "" {
		domain = c.cookieDomain
	}
	if !hmacValid(f.hmacSecret, jar.get(c.names.hmac), domain, expires, token, jar.get(c.names.idToken), jar.get(c.names.refresh)) {
		return false
	}
	exp, err := strconv.ParseUint(expires, 10, 64)
	if err != nil || exp <= uint64(time.Now().Unix()) {
		return false
	}
	c.stats.success.Inc()
	if c.forwardBearer && token != "" {
		f.req.Map.Set("authorization", "Bearer "+token)
	}
	f.forwardID(jar.get(c.names.idToken))
	return true
}

// forwardID sets forward_id_token's header: the ID token as a Bearer
// credential on Authorization, else as it is.
func (f *filter) forwardID(id string) {
	h := f.cfg.forwardIDHeader
	if h == "" || id == "" {
		return
	}
	if h == "authorization" {
		id = "Bearer " + id
	}
	f.req.Map.Set(h, id)
}

// refreshFlow renews an expired session with its refresh token (RFC 6749
// section 6) and lets the request through with the new tokens; the new
// cookies go out on the response.
func (f *filter) refreshFlow(rt string) httpfilter.Status {
	c := f.cfg
	t, terr := c.refreshTokens(rt)
	if terr != nil {
		f.cb.Log().Debug("oauth2: refreshing the access token failed", "error", terr.Error())
		c.stats.refreshFailed.Inc()
		switch {
		case f.allowFailed():
			f.continueFailed("Failed to refresh the access token, and forwarding as unauthorized because OAuth failure is allowed")
			return httpfilter.Continue
		case f.denyRedirect():
			f.unauthorized("Failed to refresh the access token, and redirecting to OAuth server is not allowed")
		default:
			f.redirectToAuthServer()
		}
		return httpfilter.StopIteration
	}
	f.updateTokens(t)
	jar := parseCookies(f.req)
	jar.set(c.names.expires, f.newExpires)
	if f.access != "" {
		jar.set(c.names.bearer, f.access)
	}
	if f.id != "" {
		jar.set(c.names.idToken, f.id)
	}
	if f.refresh != "" {
		jar.set(c.names.refresh, f.refresh)
	} else if jar.has(c.names.refresh) {
		// No new refresh token: the old one stays in the session.
		f.refresh = jar.get(c.names.refresh)
	}
	jar.set(c.names.hmac, f.encodedHMAC())
	jar.write(f.req)
	if c.forwardBearer && f.access != "" {
		f.req.Map.Set("authorization", "Bearer "+f.access)
	}
	f.forwardID(jar.get(c.names.idToken))
	f.refreshed = true
	c.stats.refreshOK.Inc()
	c.stats.success.Inc()
	f.removeFlowCookies()
	return httpfilter.Continue
}

// redirectToAuthServer starts the flow: 302 to the authorization endpoint
// (RFC 6749 section 4.1.1) with the nonce and code verifier cookies.
func (f *filter) redirectToAuthServer() {
	c := f.cfg
	scheme := "https"
	// https unless the request says http: OAuth needs TLS, but a
	// client that declares http gets http back.
	if strings.EqualFold(f.req.Scheme, "http") {
		scheme = "http"
	}
	base := scheme + "://" + f.host
	if c.originalURI != nil {
		base = c.originalURI.String(f.cb.StreamInfo())
	}
	if !hostAllowed(base, c.allowedDomains) {
		f.unauthorized("authority or original_request_uri failed domain allow-list validation: " + base)
		return
	}
	original := base + f.req.Path
	flow := randomHex()
	csrf := csrfToken(f.hmacSecret, flow)
	nonceTail := f.cookieTail(c.nonceCookie, strconv.FormatInt(int64(c.csrfExpiresIn/time.Second), 10))
	set := []string{withSuffix(c.names.nonce, flow) + "=" + csrf + nonceTail, c.names.nonce + "=" + csrf + nonceTail}

	q := make(map[string][]string, len(c.authQuery)+5)
	for k, v := range c.authQuery {
		q[k] = v
	}
	q["state"] = []string{encodeState(state{URL: original, CSRFToken: csrf, FlowID: flow})}
	redirectURI := c.redirectURI.String(f.cb.StreamInfo())
	if !hostAllowed(redirectURI, c.allowedDomains) {
		f.unauthorized("redirect_uri failed domain allow-list validation: " + redirectURI)
		return
	}
	q["redirect_uri"] = []string{urlEncode(redirectURI)}

	verifier := codeVerifier()
	encVerifier := encrypt(verifier, f.hmacSecret)
	vTail := f.cookieTail(c.verifierCookie, strconv.FormatInt(int64(c.verifierExpiresIn/time.Second), 10))
	set = append(set, withSuffix(c.names.verifier, flow)+"="+encVerifier+vTail, c.names.verifier+"="+encVerifier+vTail)
	q["code_challenge"] = []string{codeChallenge(verifier)}
	q["code_challenge_method"] = []string{"S256"}

	// Counted before the reply goes out, so a client that sees the
	// redirect sees the count.
	c.stats.unauthorized.Inc()
	f.reply302(c.authBase+"?"+queryString(q)+c.resources, set, detailsCredentials)
}

// signOut clears the session and flow cookies and redirects to / (or to
// the OpenID Connect end session endpoint, RP-Initiated Logout).
func (f *filter) signOut() {
	c := f.cfg
	dom := f.domainAttr()
	dels := []string{
		deleteCookie(c.names.hmac, c.hmacCookie.path, dom),
		deleteCookie(c.names.bearer, c.bearerCookie.path, dom),
		deleteCookie(c.names.idToken, c.idCookie.path, dom),
		deleteCookie(c.names.refresh, c.refreshCookie.path, dom),
		deleteCookie(c.names.expires, c.expiresCookie.path, dom),
	}
	jar := parseCookies(f.req)
	for _, ck := range jar {
		switch {
		case matchesBase(ck.name, c.names.nonce):
			dels = append(dels, deleteCookie(ck.name, c.nonceCookie.path, dom))
		case matchesBase(ck.name, c.names.verifier):
			dels = append(dels, deleteCookie(ck.name, c.verifierCookie.path, dom))
		}
	}
	def := f.req.Scheme + "://" + f.host + "/"
	loc := def
	if c.endSession != "" {
		loc = c.endSession + "?id_token_hint=" + jar.get(c.names.idToken) + "&client_id=" + c.clientID
		if !c.postLogoutOff {
			r := def
			if c.postLogout != nil {
				r = c.postLogout.String(f.cb.StreamInfo())
			}
			loc += "&post_logout_redirect_uri=" + urlEncode(r)
		}
	}
	f.reply302(loc, dels, detailsSignOut)
}

// updateTokens records a token response (Envoy's updateTokens).
func (f *filter) updateTokens(t tokens) {
	c := f.cfg
	if !c.disableAccessCookie {
		f.access = t.access
	}
	if !c.disableIDCookie {
		f.id = t.id
	}
	f.refresh = ""
	if c.useRefreshToken && !c.disableRefreshCookie {
		f.refresh = t.refresh
	}
	secs := int64(t.expiresIn / time.Second)
	f.expiresIn = strconv.FormatInt(secs, 10)
	now := time.Now().Unix()
	// The refresh token's cookie lives as its exp claim says, else
	// default_refresh_token_expires_in.
	f.refreshExpiresIn = f.expiresIn
	if c.useRefreshToken {
		if exp := jwtExp(t.refresh); exp != 0 {
			f.refreshExpiresIn = strconv.FormatInt(max(exp-now, 0), 10)
		} else {
			f.refreshExpiresIn = strconv.FormatInt(int64(c.defaultRefreshExpiresIn/time.Second), 10)
		}
	}
	// The ID token's cookie likewise, else the access token's lifetime.
	f.idExpiresIn = f.expiresIn
	if !c.idTokenUsesAccessExpiry && t.id != "" {
		if exp := jwtExp(t.id); exp != 0 {
			f.idExpiresIn = strconv.FormatInt(max(exp-now, 0), 10)
		}
	}
	f.newExpires = strconv.FormatInt(now+secs, 10)
}

func (f *filter) encodedHMAC() string {
	domain := f.host
	if f.cfg.cookieDomain != "" {
		domain = f.cfg.cookieDomain
	}
	return encodeHMAC(f.hmacSecret, domain, f.newExpires, f.access, f.id, f.refresh)
}

// sessionCookies are the Set-Cookie values of a new session (Envoy's
// setOAuthResponseCookies): a token now empty deletes the cookie the
// request had.
func (f *filter) sessionCookies() []string {
	c := f.cfg
	set := []string{
		c.names.hmac + "=" + f.encodedHMAC() + f.cookieTail(c.hmacCookie, f.expiresIn),
		c.names.expires + "=" + f.newExpires + f.cookieTail(c.expiresCookie, f.expiresIn),
	}
	jar := parseCookies(f.req)
	dom := f.domainAttr()
	for _, t := range []struct {
		name, value, maxAge string
		s                   cookieSettings
	}{
		{c.names.bearer, f.access, f.expiresIn, c.bearerCookie},
		{c.names.idToken, f.id, f.idExpiresIn, c.idCookie},
		{c.names.refresh, f.refresh, f.refreshExpiresIn, c.refreshCookie},
	} {
		switch {
		case t.value != "":
			set = append(set, t.name+"="+f.encryptToken(t.value)+f.cookieTail(t.s, t.maxAge))
		case jar.has(t.name):
			set = append(set, t.name+"=deleted; path="+t.s.path+"; expires=Thu, 01 Jan 1970 00:00:00 GMT"+dom)
		}
	}
	return set
}

func (f *filter) encryptToken(t string) string {
	if f.cfg.disableEncryption {
		return t
	}
	return encrypt(t, f.hmacSecret)
}

// decryptCookies replaces the encrypted token cookies of the request with
// their plaintext, for the HMAC check and the upstream. A token that does
// not decrypt (a legacy plaintext one, or one under another secret) stays
// as it is: the HMAC then decides.
func (f *filter) decryptCookies() {
	c := f.cfg
	if c.disableEncryption {
		return
	}
	jar := parseCookies(f.req)
	changed := false
	for _, name := range []string{c.names.bearer, c.names.idToken, c.names.refresh} {
		v := jar.get(name)
		if v == "" {
			continue
		}
		changed = true
		p, err := decrypt(v, f.hmacSecret)
		if err != nil || !headers.ValidValue(p) {
			f.cb.Log().Debug("oauth2: failed to decrypt token", "cookie", name)
			continue
		}
		jar.set(name, p)
	}
	if changed {
		jar.write(f.req)
	}
}

// removeFlowCookies keeps the OAuth flow's own cookies from the upstream
// (Envoy's oauth2_cleanup_cookies): the HMAC, expiry, refresh token and
// the nonce and code verifier cookies. The access and ID tokens stay.
func (f *filter) removeFlowCookies() {
	c := f.cfg
	jar := parseCookies(f.req)
	if len(jar) == 0 {
		return
	}
	jar.drop(func(n string) bool {
		return n == c.names.hmac || n == c.names.expires || n == c.names.refresh ||
			matchesBase(n, c.names.nonce) || matchesBase(n, c.names.verifier)
	})
	jar.write(f.req)
}

// continueFailed lets a request through unauthenticated (allow_failed_
// matcher): its OAuth cookies removed, the status headers set.
func (f *filter) continueFailed(reason string) {
	c := f.cfg
	jar := parseCookies(f.req)
	if len(jar) > 0 {
		jar.drop(func(n string) bool {
			return n == c.names.bearer || n == c.names.idToken || n == c.names.hmac || n == c.names.expires ||
				n == c.names.refresh || matchesBase(n, c.names.nonce) || matchesBase(n, c.names.verifier)
		})
		jar.write(f.req)
	}
	f.req.Map.Set(statusHeader, "failed")
	f.req.Map.Set(reasonHeader, reason)
	c.stats.allowFailed.Inc()
}

func (f *filter) allowFailed() bool {
	if f.cfg.redirectPath(f.req.Path) {
		return false // the callback never reaches the upstream
	}
	for _, m := range f.cfg.allowFailed {
		if m(f.req) {
			return true
		}
	}
	return false
}

func (f *filter) denyRedirect() bool {
	for _, m := range f.cfg.denyRedirect {
		if m(f.req) {
			return true
		}
	}
	return false
}

// callback is what a callback request's query says.
type callback struct {
	ok                         bool
	code, url, flowID, details string
}

// validateCallback checks the callback's query (RFC 6749 section 4.1.2):
// no error, a code and a state whose CSRF token matches the nonce cookie
// and whose URL is absolute (and allowed).
func (f *filter) validateCallback(path string) callback {
	_, rawQuery, _ := strings.Cut(path, "?")
	if i := strings.IndexByte(rawQuery, '#'); i >= 0 {
		rawQuery = rawQuery[:i]
	}
	q := parseQueryRaw(rawQuery)
	first := func(k string) (string, bool) {
		if v := q[k]; len(v) > 0 {
			return v[0], true
		}
		return "", false
	}
	if _, isErr := first("error"); isErr {
		// The state names the flow whose cookies the 401 deletes.
		flow := ""
		if s, ok := first("state"); ok {
			flow = f.validateState(s).flowID
		}
		return callback{flowID: flow, details: "OAuth server returned an error: " + rawQuery}
	}
	code, okCode := first("code")
	st, okState := first("state")
	if !okCode || !okState {
		return callback{details: "Code or state query param does not exist: " + rawQuery}
	}
	res := f.validateState(st)
	res.code = code
	return res
}

func (f *filter) validateState(param string) callback {
	st, text, err := decodeState(param)
	if err != nil {
		return callback{details: err.Error() + ": " + text}
	}
	// The flow id is trusted only once the CSRF token checks.
	v, ok := flowCookie(parseCookies(f.req), f.cfg.names.nonce, st.FlowID)
	if !ok || !constEq(v, st.CSRFToken) || !csrfTokenValid(f.hmacSecret, st.CSRFToken) {
		return callback{details: "CSRF token validation failed"}
	}
	u, err := url.Parse(st.URL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return callback{flowID: st.FlowID, details: "State url can not be initialized: " + st.URL}
	}
	if !hostAllowed(st.URL, f.cfg.allowedDomains) {
		return callback{flowID: st.FlowID, details: "State url host is not in the allowed redirect domains: " + st.URL}
	}
	return callback{ok: true, url: st.URL, flowID: st.FlowID}
}

// hostAllowed checks an absolute URL's host against
// allowed_redirect_domains (exact, case-insensitive, or "*.suffix").
func hostAllowed(raw string, domains []string) bool {
	if len(domains) == 0 {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	host := u.Hostname()
	for _, d := range domains {
		if strings.HasPrefix(d, "*.") {
			if suf := d[1:]; len(host) > len(suf) && strings.HasSuffix(strings.ToLower(host), strings.ToLower(suf)) {
				return true
			}
		} else if strings.EqualFold(host, d) {
			return true
		}
	}
	return false
}

func (f *filter) domainAttr() string {
	if f.cfg.cookieDomain == "" {
		return ""
	}
	return ";domain=" + f.cfg.cookieDomain
}

// cookieTail is Envoy's cookie attributes: ";path=…;Max-Age=…;secure;
// HttpOnly", SameSite, a domain first and Partitioned last when set.
func (f *filter) cookieTail(s cookieSettings, maxAge string) string {
	return f.domainAttr() + cookieTailOf(s, maxAge)
}

func cookieTailOf(s cookieSettings, maxAge string) string {
	t := ";path=" + s.path + ";Max-Age=" + maxAge + ";secure;HttpOnly" + s.sameSite
	if s.partitioned {
		t += ";Partitioned"
	}
	return t
}

// flowCookieDeletions expire the nonce and code verifier cookies of the
// flow (and their legacy unsuffixed names).
func (f *filter) flowCookieDeletions() []string {
	c := f.cfg
	dom := f.domainAttr()
	var out []string
	for _, b := range []struct{ name, path string }{{c.names.nonce, c.nonceCookie.path}, {c.names.verifier, c.verifierCookie.path}} {
		if f.flowID != "" {
			out = append(out, deleteCookie(withSuffix(b.name, f.flowID), b.path, dom))
		}
		out = append(out, deleteCookie(b.name, b.path, dom))
	}
	return out
}

// reply302 answers a redirect with the cookies.
func (f *filter) reply302(location string, setCookies []string, details string) {
	hv := make([]httpfilter.HeaderValue, 0, len(setCookies)+1)
	hv = append(hv, httpfilter.HeaderValue{Key: "location", Value: location})
	for _, s := range setCookies {
		hv = append(hv, httpfilter.HeaderValue{Key: "set-cookie", Value: s, Append: true})
	}
	f.cb.SendLocalReply(302, "", httpfilter.LocalReply{Details: details, Headers: hv})
}

// unauthorized answers 401 "OAuth flow failed." (Envoy's
// sendUnauthorizedResponse), expiring the flow's cookies when it is known.
func (f *filter) unauthorized(details string) {
	f.cb.Log().Warn("Responding with 401 Unauthorized. Cause: " + details)
	f.cfg.stats.failure.Inc()
	var hv []httpfilter.HeaderValue
	if f.flowID != "" {
		for _, s := range f.flowCookieDeletions() {
			hv = append(hv, httpfilter.HeaderValue{Key: "set-cookie", Value: s, Append: true})
		}
	}
	f.cb.SendLocalReply(401, unauthorizedBody, httpfilter.LocalReply{Details: details, Headers: hv})
}
