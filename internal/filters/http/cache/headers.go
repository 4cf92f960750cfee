package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/headers"
)

// This file is the header logic of RFC 9111 as Envoy's cache filter applies
// it (cache_headers_utils.cc, cacheability_utils.cc, http_cache.cc): the
// Cache-Control directives of requests and responses, what may be served
// from or stored in the cache, a stored response's age and freshness.

// duration is a delta-seconds value of a directive; ok is false when the
// directive is absent or its argument invalid.
type duration struct {
	d  time.Duration
	ok bool
}

// maxDuration stands for max-stale without an argument (any staleness).
const maxDuration = time.Duration(1<<63 - 1)

// parseDuration reads a delta-seconds argument as Envoy does: quotes are
// stripped, a negative or malformed number makes the directive absent (RFC
// 9111 §1.2.2 leaves invalid values undefined).
func parseDuration(s string) duration {
	if len(s) > 1 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return duration{}
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return duration{}
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Too large for int64: RFC 9111 §1.2.2 says to use the greatest
		// value (2^31 seconds is "infinity").
		n = 1 << 31
	}
	if n > 1<<31 {
		n = 1 << 31
	}
	return duration{d: time.Duration(n) * time.Second, ok: true}
}

// directives splits a Cache-Control value into directive, argument pairs
// (names lower-cased: RFC 9111 §5.2 directives are case-insensitive).
func directives(v string, fn func(name, arg string)) {
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, arg, _ := strings.Cut(part, "=")
		fn(strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(arg))
	}
}

// requestCacheControl is a request's Cache-Control (RFC 9111 §5.2.1).
type requestCacheControl struct {
	// mustValidate is no-cache (or Pragma: no-cache).
	mustValidate bool
	noStore      bool
	noTransform  bool
	onlyIfCached bool
	maxAge       duration
	minFresh     duration
	maxStale     duration
}

func parseRequestCacheControl(v string) requestCacheControl {
	var c requestCacheControl
	directives(v, func(name, arg string) {
		switch name {
		case "no-cache":
			c.mustValidate = true
		case "no-store":
			c.noStore = true
		case "no-transform":
			c.noTransform = true
		case "only-if-cached":
			c.onlyIfCached = true
		case "max-age":
			c.maxAge = parseDuration(arg)
		case "min-fresh":
			c.minFresh = parseDuration(arg)
		case "max-stale":
			// RFC 9111 §5.2.1.2: without a value, any staleness is accepted.
			if arg == "" {
				c.maxStale = duration{d: maxDuration, ok: true}
			} else {
				c.maxStale = parseDuration(arg)
			}
		}
	})
	return c
}

// requestControl reads a request's cache directives: Cache-Control, or,
// when it is absent, Pragma: no-cache (RFC 9111 §5.4), as Envoy's
// LookupRequest.
func requestControl(h *headers.Request) requestCacheControl {
	if cc := h.Map.Joined("cache-control"); cc != "" {
		return parseRequestCacheControl(cc)
	}
	var c requestCacheControl
	c.mustValidate = parseRequestCacheControl(h.Map.Joined("pragma")).mustValidate
	return c
}

// responseCacheControl is a response's Cache-Control (RFC 9111 §5.2.2).
type responseCacheControl struct {
	// mustValidate is no-cache: the stored response needs validation on
	// every use.
	mustValidate bool
	// noStore is no-store or private (a shared cache must not store a
	// private response, §5.2.2.7).
	noStore bool
	// noStale is must-revalidate or proxy-revalidate: never served stale.
	noStale     bool
	noTransform bool
	public      bool
	// maxAge is s-maxage if present (it wins in a shared cache, §5.2.2.10),
	// else max-age.
	maxAge duration
}

func parseResponseCacheControl(v string) responseCacheControl {
	var c responseCacheControl
	sMaxAge := false
	directives(v, func(name, arg string) {
		switch name {
		case "no-cache":
			// Envoy ignores no-cache's field-name arguments: the whole
			// response is validated.
			c.mustValidate = true
		case "must-revalidate", "proxy-revalidate":
			c.noStale = true
		case "no-store", "private":
			c.noStore = true
		case "no-transform":
			c.noTransform = true
		case "public":
			c.public = true
		case "s-maxage":
			c.maxAge, sMaxAge = parseDuration(arg), true
		case "max-age":
			if !sMaxAge && !c.maxAge.ok {
				c.maxAge = parseDuration(arg)
			}
		}
	})
	return c
}

// httpTime parses an HTTP-date in the three forms RFC 9110 §5.6.7 says a
// recipient accepts; the zero time when absent or malformed.
func httpTime(v string) time.Time {
	if v == "" {
		return time.Time{}
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// cacheableStatus are the status codes Envoy stores: heuristically
// cacheable by default (RFC 9110 §15.1, RFC 7538 §3, RFC 7725 §3).
var cacheableStatus = map[int]bool{200: true, 203: true, 204: true, 206: true, 300: true, 301: true,
	308: true, 404: true, 405: true, 410: true, 414: true, 451: true, 501: true}

// uncacheableRequest says why a request cannot be served from the cache
// ("" when it can), as Envoy's canServeRequestFromCache: GET or HEAD with
// a path and host, no Authorization (RFC 9111 §3.5: a shared cache does
// not reuse responses to authenticated requests), a valid scheme, no
// If-Range (range validation against the cache is not implemented).
func uncacheableRequest(h *headers.Request) string {
	switch {
	case h.Path == "":
		return "no path"
	case h.Authority == "":
		return "no host"
	case h.Map.Has("authorization"):
		return "authorization"
	case h.Method != "GET" && h.Method != "HEAD":
		return h.Method
	case h.Scheme != "" && h.Scheme != "http" && h.Scheme != "https":
		return "scheme"
	case h.Map.Has("if-range"):
		return "if-range"
	}
	return ""
}

// cacheableResponse reports whether a response may be stored, as Envoy's
// isCacheableResponse: not no-store/private, a cacheable status, enough to
// compute a freshness lifetime (no-cache, max-age / s-maxage, or both
// Date and Expires: RFC 9111 §4.2.1), and a Vary the allow list accepts.
func cacheableResponse(h *headers.Response, vary *varyAllowList) bool {
	cc := parseResponseCacheControl(h.Map.Joined("cache-control"))
	hasLifetime := cc.mustValidate || cc.maxAge.ok || (h.Map.Has("date") && h.Map.Has("expires"))
	return !cc.noStore && cacheableStatus[h.Status] && hasLifetime && vary.allowsHeaders(&h.Map)
}

// calculateAge is a stored response's current age (RFC 9111 §4.2.3), as
// Envoy computes it: the corrected initial age (the larger of the apparent
// age, response_time - Date, and the Age header; the response delay taken
// as negligible) plus the time resident in the cache.
func calculateAge(h *headers.Map, responseTime, now time.Time) time.Duration {
	date := httpTime(h.Get("date"))
	ageValue := time.Duration(0)
	if n, err := strconv.ParseInt(strings.TrimSpace(h.Get("age")), 10, 64); err == nil && n >= 0 {
		ageValue = time.Duration(n) * time.Second
	}
	// Envoy takes a missing Date as the epoch (a huge age). The proxy adds
	// Date to every response before the filters see it (RFC 9110 §6.6.1),
	// so one is missing only from a response a filter made: the time it
	// was received then stands for it (no apparent age).
	apparent := time.Duration(0)
	if !date.IsZero() {
		apparent = max(0, responseTime.Sub(date))
	}
	initial := max(apparent, ageValue)
	age := initial + now.Sub(responseTime)
	return age.Truncate(time.Second)
}

// freshnessLifetime is a stored response's freshness lifetime (RFC 9111
// §4.2.1): s-maxage or max-age, else Expires - Date. Responses without
// either are not stored, bar no-cache ones, which are always validated.
func freshnessLifetime(h *headers.Map, cc responseCacheControl) time.Duration {
	if cc.maxAge.ok {
		return cc.maxAge.d
	}
	expires, date := httpTime(h.Get("expires")), httpTime(h.Get("date"))
	if expires.IsZero() || date.IsZero() {
		// RFC 9111 §5.3: an invalid Expires means already expired.
		return 0
	}
	return expires.Sub(date)
}

// requiresValidation is Envoy's LookupRequest::requiresValidation: whether
// a stored response of this age may be served to this request without
// asking the origin (RFC 9111 §4.2, §5.2.1).
func requiresValidation(h *headers.Map, age time.Duration, req requestCacheControl) bool {
	cc := parseResponseCacheControl(h.Joined("cache-control"))
	if cc.mustValidate || req.mustValidate || (req.maxAge.ok && req.maxAge.d < age) {
		return true
	}
	lifetime := freshnessLifetime(h, cc)
	if age > lifetime {
		// Stale: only max-stale allows serving it, and must-revalidate
		// forbids it whatever the request says (§5.2.2.2).
		allowed := req.maxStale.ok && req.maxStale.d > age-lifetime
		return cc.noStale || !allowed
	}
	// Fresh: min-fresh may ask for more remaining freshness (§5.2.1.3).
	return req.minFresh.ok && req.minFresh.d > lifetime-age
}

// varyValues are the header names a response's Vary lists, sorted and
// without duplicates (Envoy's btree_set), as written (not lower-cased).
func varyValues(h *headers.Map) []string {
	var out []string
	for _, v := range h.Values("vary") {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				out = append(out, tok)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// hasVary is Envoy's VaryHeaderUtils::hasVary: a non-empty Vary.
func hasVary(h *headers.Map) bool { return h.Get("vary") != "" }

// varyAllowList is allowed_vary_headers: the header names a response may
// vary on and still be stored.
type varyAllowList struct {
	rules []func(string) bool
}

func (l *varyAllowList) allowsValue(name string) bool {
	for _, r := range l.rules {
		if r(name) {
			return true
		}
	}
	return false
}

// allowsHeaders is Envoy's VaryAllowList::allowsHeaders: every header the
// response varies on is allowed; "Vary: *" never is (RFC 9110 §12.5.5:
// such a response can never match a later request).
func (l *varyAllowList) allowsHeaders(h *headers.Map) bool {
	if !hasVary(h) {
		return true
	}
	for _, v := range varyValues(h) {
		if v == "*" || !l.allowsValue(v) {
			return false
		}
	}
	return true
}

// varyIdentifier is Envoy's createVaryIdentifier: the values of the
// request headers a response varies on, which select among the stored
// variants (RFC 9111 §4.1). ok is false when a header is not allowed (the
// allow list changed since the entry was stored). The separators cannot
// occur in header names or values.
func varyIdentifier(l *varyAllowList, vary []string, req *headers.Request) (string, bool) {
	var b strings.Builder
	b.WriteString("vary-id\n")
	for _, v := range vary {
		if !l.allowsValue(v) {
			return "", false
		}
		b.WriteString(v)
		b.WriteByte('\r')
		b.WriteString(strings.Join(req.Values(strings.ToLower(v)), "\r"))
		b.WriteByte('\n')
	}
	return b.String(), true
}

// byteRange is [begin, end) of a body.
type byteRange struct{ begin, end int64 }

// rangeResult is what a request's Range asks of a stored body of known
// length, as Envoy's RangeUtils::createRangeDetails: none (serve all),
// unsatisfiable (416), or one range (206). Only one range is handled, as
// Envoy (no multipart/byteranges responses).
type rangeResult struct {
	present       bool
	unsatisfiable bool
	r             byteRange
}

// parseRange reads "bytes=first-last" / "bytes=-suffix" with a single
// range spec; ok is false for anything else (the Range is then ignored,
// RFC 9110 §14.2 allows it).
func parseRange(v string) (first, last int64, suffix, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes=")
	if !found || strings.Contains(rest, ",") {
		return 0, 0, false, false
	}
	a, b, found := strings.Cut(rest, "-")
	if !found || (a == "" && b == "") || !digits(a) || !digits(b) {
		return 0, 0, false, false
	}
	last = -1 // open-ended
	if b != "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil {
			return 0, 0, false, false
		}
		last = n
	}
	if a == "" {
		return 0, last, true, true
	}
	n, err := strconv.ParseInt(a, 10, 64)
	if err != nil || (last >= 0 && n > last) {
		return 0, 0, false, false
	}
	return n, last, false, true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// rangeFor applies the request's Range to a body of length n, as Envoy's
// createAdjustedRangeDetails: a range covering the whole body is served
// as a 200, one starting past the end is unsatisfiable.
func rangeFor(req *headers.Request, n int64) rangeResult {
	vs := req.Map.Values("range")
	if len(vs) != 1 {
		// Several Range fields are invalid (RFC 9110 §5.3): ignored.
		return rangeResult{}
	}
	first, last, suffix, ok := parseRange(vs[0])
	if !ok {
		return rangeResult{}
	}
	if n == 0 {
		return rangeResult{present: true, unsatisfiable: true}
	}
	if suffix {
		if last == 0 {
			return rangeResult{present: true, unsatisfiable: true}
		}
		if last >= n {
			return rangeResult{}
		}
		return rangeResult{present: true, r: byteRange{n - last, n}}
	}
	if first >= n {
		return rangeResult{present: true, unsatisfiable: true}
	}
	if last < 0 || last >= n-1 {
		if first == 0 {
			return rangeResult{}
		}
		return rangeResult{present: true, r: byteRange{first, n}}
	}
	return rangeResult{present: true, r: byteRange{first, last + 1}}
}

// etagMatches is the weak comparison of If-None-Match (RFC 9110 §13.1.2):
// "*" or any listed entity tag equal to etag once W/ is dropped.
func etagMatches(ifNoneMatch, etag string) bool {
	if etag == "" {
		return false
	}
	weak := func(s string) string { return strings.TrimPrefix(strings.TrimSpace(s), "W/") }
	e := weak(etag)
	for _, tag := range strings.Split(ifNoneMatch, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || (tag != "" && weak(tag) == e) {
			return true
		}
	}
	return false
}

// notModified evaluates a client's conditional GET/HEAD against a stored
// response (RFC 9111 §4.3.2, RFC 9110 §13.2.2): If-None-Match first, and
// If-Modified-Since only without it, against Last-Modified or else Date.
func notModified(req *headers.Request, stored *headers.Map) bool {
	if inm := req.Map.Joined("if-none-match"); inm != "" {
		return etagMatches(inm, stored.Get("etag"))
	}
	ims := httpTime(req.Map.Get("if-modified-since"))
	if ims.IsZero() {
		return false
	}
	lm := httpTime(stored.Get("last-modified"))
	if lm.IsZero() {
		lm = httpTime(stored.Get("date"))
	}
	return !lm.IsZero() && !lm.After(ims)
}

// conditional reports whether a request carries a precondition the cache
// evaluates itself.
func conditional(req *headers.Request) bool {
	return req.Map.Has("if-none-match") || req.Map.Has("if-modified-since")
}

// notModifiedHeaders are the fields a 304 carries (RFC 9110 §15.4.5):
// those a 200 would have sent that a cache uses to update its entry.
var notModifiedHeaders = []string{"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified", "age"}

// headersNotToUpdate are the stored fields a 304 does not replace (Envoy's
// applyHeaderUpdate): they describe the stored body, or identify it.
var headersNotToUpdate = map[string]bool{"content-range": true, "content-length": true, "etag": true, "vary": true}

// applyHeaderUpdate merges a validating 304's fields into a stored head
// (RFC 9111 §3.2, §4.3.4): each field the 304 carries replaces every
// stored value of that name, bar headersNotToUpdate.
func applyHeaderUpdate(update, stored *headers.Map) {
	done := map[string]bool{}
	for _, f := range update.Fields() {
		if headersNotToUpdate[f.Name] {
			continue
		}
		if !done[f.Name] {
			stored.Del(f.Name)
			done[f.Name] = true
		}
		stored.Add(f.Name, f.Value)
	}
}
