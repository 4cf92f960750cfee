package cache

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/strmatch"
)

func hmap(kv ...string) headers.Map {
	var m headers.Map
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func date(d time.Duration) string { return t0.Add(d).Format(http.TimeFormat) }

func TestParseCacheControl(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want requestCacheControl
	}{
		{"", requestCacheControl{}},
		{"no-cache", requestCacheControl{mustValidate: true}},
		{"No-Store, only-if-cached", requestCacheControl{noStore: true, onlyIfCached: true}},
		{"max-age=10, min-fresh=\"5\"", requestCacheControl{maxAge: duration{10 * time.Second, true}, minFresh: duration{5 * time.Second, true}}},
		{"max-stale", requestCacheControl{maxStale: duration{maxDuration, true}}},
		{"max-stale=7", requestCacheControl{maxStale: duration{7 * time.Second, true}}},
		// Invalid arguments make the directive absent, as Envoy.
		{"max-age=-1, min-fresh=abc", requestCacheControl{}},
		{"max-age=99999999999999999999", requestCacheControl{maxAge: duration{(1 << 31) * time.Second, true}}},
	} {
		if got := parseRequestCacheControl(tc.in); got != tc.want {
			t.Errorf("request %q = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want responseCacheControl
	}{
		{"public, max-age=60", responseCacheControl{public: true, maxAge: duration{60 * time.Second, true}}},
		// s-maxage wins over max-age in a shared cache, in either order.
		{"max-age=60, s-maxage=10", responseCacheControl{maxAge: duration{10 * time.Second, true}}},
		{"s-maxage=10, max-age=60", responseCacheControl{maxAge: duration{10 * time.Second, true}}},
		{"private", responseCacheControl{noStore: true}},
		{"no-cache=\"set-cookie\", must-revalidate", responseCacheControl{mustValidate: true, noStale: true}},
		{"proxy-revalidate, no-transform", responseCacheControl{noStale: true, noTransform: true}},
	} {
		if got := parseResponseCacheControl(tc.in); got != tc.want {
			t.Errorf("response %q = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestRequestControlPragma(t *testing.T) {
	for _, tc := range []struct {
		hdr  []string
		want bool
	}{
		{[]string{"pragma", "no-cache"}, true},
		// Pragma counts only without Cache-Control (RFC 9111 §5.4).
		{[]string{"pragma", "no-cache", "cache-control", "max-age=5"}, false},
		{nil, false},
	} {
		r := &headers.Request{Map: hmap(tc.hdr...)}
		if got := requestControl(r).mustValidate; got != tc.want {
			t.Errorf("%v: mustValidate %v, want %v", tc.hdr, got, tc.want)
		}
	}
}

func TestFreshnessLifetime(t *testing.T) {
	for _, tc := range []struct {
		name string
		head headers.Map
		want time.Duration
	}{
		{"max-age", hmap("cache-control", "max-age=30"), 30 * time.Second},
		{"s-maxage", hmap("cache-control", "max-age=30, s-maxage=5"), 5 * time.Second},
		{"expires-date", hmap("date", date(0), "expires", date(90*time.Second)), 90 * time.Second},
		{"max-age over expires", hmap("cache-control", "max-age=3", "date", date(0), "expires", date(time.Hour)), 3 * time.Second},
		{"invalid expires", hmap("date", date(0), "expires", "0"), 0},
		{"nothing", hmap(), 0},
	} {
		cc := parseResponseCacheControl(tc.head.Joined("cache-control"))
		if got := freshnessLifetime(&tc.head, cc); got != tc.want {
			t.Errorf("%s: lifetime %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCalculateAge(t *testing.T) {
	// Envoy's CalculateAgeTest cases: response_time, now, Date and Age.
	for _, tc := range []struct {
		name         string
		head         headers.Map
		responseTime time.Duration
		now          time.Duration
		want         time.Duration
	}{
		{"no initial age", hmap("date", date(0)), 0, 5 * time.Second, 5 * time.Second},
		{"apparent age", hmap("date", date(0)), 3 * time.Second, 5 * time.Second, 5 * time.Second},
		{"age header", hmap("date", date(0), "age", "3"), 0, 5 * time.Second, 8 * time.Second},
		{"apparent lower than age", hmap("date", date(0), "age", "3"), time.Second, 5 * time.Second, 7 * time.Second},
		{"apparent higher than age", hmap("date", date(0), "age", "1"), 3 * time.Second, 5 * time.Second, 5 * time.Second},
		{"date in the future", hmap("date", date(10*time.Second)), 0, 2 * time.Second, 2 * time.Second},
		{"bad age", hmap("date", date(0), "age", "x"), 0, 1500 * time.Millisecond, time.Second},
		{"no date", hmap(), 0, 4 * time.Second, 4 * time.Second},
	} {
		if got := calculateAge(&tc.head, t0.Add(tc.responseTime), t0.Add(tc.now)); got != tc.want {
			t.Errorf("%s: age %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRequiresValidation(t *testing.T) {
	fresh60 := hmap("date", date(0), "cache-control", "max-age=60")
	for _, tc := range []struct {
		name string
		head headers.Map
		age  time.Duration
		req  string
		want bool
	}{
		{"fresh", fresh60, 10 * time.Second, "", false},
		{"at lifetime", fresh60, 60 * time.Second, "", false},
		{"stale", fresh60, 61 * time.Second, "", true},
		{"response no-cache", hmap("cache-control", "no-cache, max-age=60"), 0, "", true},
		{"request no-cache", fresh60, 0, "no-cache", true},
		{"request max-age exceeded", fresh60, 20 * time.Second, "max-age=10", true},
		{"request max-age met", fresh60, 5 * time.Second, "max-age=10", false},
		{"max-stale allows", fresh60, 70 * time.Second, "max-stale=20", false},
		{"max-stale too small", fresh60, 90 * time.Second, "max-stale=20", true},
		{"max-stale any", fresh60, time.Hour, "max-stale", false},
		{"must-revalidate beats max-stale", hmap("cache-control", "max-age=60, must-revalidate"), 70 * time.Second, "max-stale", true},
		{"min-fresh unmet", fresh60, 50 * time.Second, "min-fresh=20", true},
		{"min-fresh met", fresh60, 30 * time.Second, "min-fresh=20", false},
		{"expires", hmap("date", date(0), "expires", date(30*time.Second)), 20 * time.Second, "", false},
		{"expired", hmap("date", date(0), "expires", date(30*time.Second)), 40 * time.Second, "", true},
	} {
		if got := requiresValidation(&tc.head, tc.age, parseRequestCacheControl(tc.req)); got != tc.want {
			t.Errorf("%s: requiresValidation %v, want %v", tc.name, got, tc.want)
		}
	}
}

func allow(names ...string) *varyAllowList {
	l := &varyAllowList{}
	for _, n := range names {
		m := strmatch.Exact(n)
		l.rules = append(l.rules, m.Match)
	}
	return l
}

func TestCacheableResponse(t *testing.T) {
	va := allow("accept-encoding")
	for _, tc := range []struct {
		name   string
		status int
		head   headers.Map
		want   bool
	}{
		{"max-age", 200, hmap("cache-control", "max-age=10"), true},
		{"s-maxage", 200, hmap("cache-control", "s-maxage=10"), true},
		{"no-cache only", 200, hmap("cache-control", "no-cache"), true},
		{"expires and date", 200, hmap("date", date(0), "expires", date(time.Minute)), true},
		{"expires without date", 200, hmap("expires", date(time.Minute)), false},
		{"no lifetime", 200, hmap("cache-control", "public"), false},
		{"no-store", 200, hmap("cache-control", "no-store, max-age=10"), false},
		{"private", 200, hmap("cache-control", "private, max-age=10"), false},
		{"404", 404, hmap("cache-control", "max-age=10"), true},
		{"301", 301, hmap("cache-control", "max-age=10"), true},
		{"302", 302, hmap("cache-control", "max-age=10"), false},
		{"500", 500, hmap("cache-control", "max-age=10"), false},
		{"vary allowed", 200, hmap("cache-control", "max-age=10", "vary", "accept-encoding"), true},
		{"vary other", 200, hmap("cache-control", "max-age=10", "vary", "accept-encoding, user-agent"), false},
		{"vary star", 200, hmap("cache-control", "max-age=10", "vary", "*"), false},
		// Envoy matches the Vary token as written.
		{"vary case", 200, hmap("cache-control", "max-age=10", "vary", "Accept-Encoding"), false},
	} {
		h := &headers.Response{Status: tc.status, Map: tc.head}
		if got := cacheableResponse(h, va); got != tc.want {
			t.Errorf("%s: cacheable %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestUncacheableRequest(t *testing.T) {
	ok := func() *headers.Request {
		return &headers.Request{Method: "GET", Scheme: "http", Authority: "h", Path: "/p"}
	}
	for _, tc := range []struct {
		name string
		mod  func(r *headers.Request)
		want string
	}{
		{"get", func(*headers.Request) {}, ""},
		{"head", func(r *headers.Request) { r.Method = "HEAD" }, ""},
		{"post", func(r *headers.Request) { r.Method = "POST" }, "POST"},
		{"authorization", func(r *headers.Request) { r.Map.Add("authorization", "x") }, "authorization"},
		{"no host", func(r *headers.Request) { r.Authority = "" }, "no host"},
		{"if-range", func(r *headers.Request) { r.Map.Add("if-range", "\"e\"") }, "if-range"},
		{"scheme", func(r *headers.Request) { r.Scheme = "ftp" }, "scheme"},
		// Conditionals are answered by the cache itself.
		{"if-none-match", func(r *headers.Request) { r.Map.Add("if-none-match", "\"e\"") }, ""},
	} {
		r := ok()
		tc.mod(r)
		if got := uncacheableRequest(r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRangeFor(t *testing.T) {
	for _, tc := range []struct {
		rng  []string
		n    int64
		want rangeResult
	}{
		{nil, 10, rangeResult{}},
		{[]string{"bytes=2-4"}, 10, rangeResult{present: true, r: byteRange{2, 5}}},
		{[]string{"bytes=2-"}, 10, rangeResult{present: true, r: byteRange{2, 10}}},
		{[]string{"bytes=-3"}, 10, rangeResult{present: true, r: byteRange{7, 10}}},
		{[]string{"bytes=0-"}, 10, rangeResult{}},  // the whole body: a 200
		{[]string{"bytes=-10"}, 10, rangeResult{}}, // likewise
		{[]string{"bytes=5-100"}, 10, rangeResult{present: true, r: byteRange{5, 10}}},
		{[]string{"bytes=10-12"}, 10, rangeResult{present: true, unsatisfiable: true}},
		{[]string{"bytes=-0"}, 10, rangeResult{present: true, unsatisfiable: true}},
		{[]string{"bytes=0-1"}, 0, rangeResult{present: true, unsatisfiable: true}},
		{[]string{"bytes=0-1,3-4"}, 10, rangeResult{}}, // several ranges: the whole body
		{[]string{"bytes=4-2"}, 10, rangeResult{}},
		{[]string{"items=0-1"}, 10, rangeResult{}},
		{[]string{"bytes=0-1", "bytes=2-3"}, 10, rangeResult{}},
	} {
		r := &headers.Request{Map: hmap()}
		for _, v := range tc.rng {
			r.Map.Add("range", v)
		}
		if got := rangeFor(r, tc.n); got != tc.want {
			t.Errorf("%v of %d: %+v, want %+v", tc.rng, tc.n, got, tc.want)
		}
	}
}

func TestNotModified(t *testing.T) {
	stored := hmap("etag", `"v1"`, "last-modified", date(-time.Hour), "date", date(0))
	for _, tc := range []struct {
		hdr  []string
		want bool
	}{
		{[]string{"if-none-match", `"v1"`}, true},
		{[]string{"if-none-match", `W/"v1"`}, true},
		{[]string{"if-none-match", `"v0", "v1"`}, true},
		{[]string{"if-none-match", `*`}, true},
		{[]string{"if-none-match", `"v2"`}, false},
		// If-None-Match wins over If-Modified-Since.
		{[]string{"if-none-match", `"v2"`, "if-modified-since", date(0)}, false},
		{[]string{"if-modified-since", date(0)}, true},
		{[]string{"if-modified-since", date(-2 * time.Hour)}, false},
		{[]string{"if-modified-since", "garbage"}, false},
	} {
		r := &headers.Request{Map: hmap(tc.hdr...)}
		if got := notModified(r, &stored); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.hdr, got, tc.want)
		}
	}
	// Without Last-Modified, Date is the stored response's modification time.
	noLM := hmap("date", date(0))
	if !notModified(&headers.Request{Map: hmap("if-modified-since", date(time.Second))}, &noLM) {
		t.Error("If-Modified-Since after Date: want not modified")
	}
}

func TestVaryIdentifier(t *testing.T) {
	l := allow("accept-encoding", "x-lang")
	req := &headers.Request{Map: hmap("accept-encoding", "gzip", "x-lang", "en", "x-lang", "fr")}
	resp := hmap("vary", "x-lang, accept-encoding", "vary", "accept-encoding")
	vs := varyValues(&resp)
	if strings.Join(vs, ",") != "accept-encoding,x-lang" {
		t.Fatalf("vary values %v", vs)
	}
	id, ok := varyIdentifier(l, vs, req)
	if !ok || id != "vary-id\naccept-encoding\rgzip\nx-lang\ren\rfr\n" {
		t.Errorf("id %q %v", id, ok)
	}
	if _, ok := varyIdentifier(allow("x-lang"), vs, req); ok {
		t.Error("a header no longer allowed must not make an identifier")
	}
}

func TestApplyHeaderUpdate(t *testing.T) {
	stored := hmap("etag", `"a"`, "content-length", "5", "x-multi", "1", "x-multi", "2", "cache-control", "max-age=1")
	update := hmap("etag", `"b"`, "content-length", "0", "x-multi", "3", "x-multi", "4", "cache-control", "max-age=9", "x-new", "n")
	applyHeaderUpdate(&update, &stored)
	for name, want := range map[string]string{"etag": `"a"`, "content-length": "5", "x-multi": "3,4", "cache-control": "max-age=9", "x-new": "n"} {
		if got := strings.Join(stored.Values(name), ","); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

func TestFilterQuery(t *testing.T) {
	eq := func(v string) *strmatch.Matcher { m := strmatch.Exact(v); return &m }
	for _, tc := range []struct {
		name     string
		inc, exc []queryMatcher
		path     string
		want     string
	}{
		{"include", []queryMatcher{{name: "a"}}, nil, "/p?b=2&a=1&c=3", "/p?a=1"},
		{"exclude", nil, []queryMatcher{{name: "utm"}}, "/p?a=1&utm=x&b=2", "/p?a=1&b=2"},
		{"exclude wins", []queryMatcher{{name: "a"}}, []queryMatcher{{name: "a", sm: eq("2")}}, "/p?a=1&a=2", "/p?a=1"},
		{"none kept", []queryMatcher{{name: "z"}}, nil, "/p?a=1", "/p"},
		{"no query", []queryMatcher{{name: "a"}}, nil, "/p", "/p"},
	} {
		c := &filterConfig{qInclude: tc.inc, qExclude: tc.exc}
		if got := c.filterQuery(tc.path); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	c := &filterConfig{excludeScheme: true, excludeHost: true}
	if c.cacheKey("http", "a", "/x") != c.cacheKey("https", "b", "/x") {
		t.Error("exclude_scheme and exclude_host: keys differ")
	}
	if (&filterConfig{}).cacheKey("http", "a", "/x") == (&filterConfig{}).cacheKey("https", "a", "/x") {
		t.Error("scheme is part of the default key")
	}
}

func TestStoreLRU(t *testing.T) {
	s := newStore(4 * 2048)
	req := &headers.Request{}
	mk := func(n int) *entry { return &entry{status: 200, body: make([]byte, n)} }
	for _, k := range []string{"a", "b", "c"} {
		if !s.insert(k, mk(1500), nil, "") {
			t.Fatalf("insert %s refused", k)
		}
	}
	// a is used, so b is the least recently used when d comes.
	if s.lookup("a", req, allow()) == nil {
		t.Fatal("a missing")
	}
	s.insert("d", mk(1500), nil, "")
	s.insert("e", mk(1500), nil, "")
	if s.lookup("b", req, allow()) != nil {
		t.Error("b should have been evicted first")
	}
	if s.lookup("a", req, allow()) == nil {
		t.Error("a, recently used, was evicted")
	}
	if s.bytes() > 4*2048 {
		t.Errorf("store holds %d bytes, over its budget", s.bytes())
	}
	// An entry over a quarter of the budget is refused.
	if s.insert("big", mk(2100), nil, "") {
		t.Error("an entry over the per-entry bound was stored")
	}
	// Variants: a marker at the key, the variant under its vary id.
	l := allow("accept-encoding")
	gz := &headers.Request{Map: hmap("accept-encoding", "gzip")}
	id, _ := varyIdentifier(l, []string{"accept-encoding"}, gz)
	s.insert("v", mk(10), []string{"accept-encoding"}, id)
	if n := s.len(); n != 6 { // a, c, d, e, the variant and its marker
		t.Errorf("store holds %d entries, want 6", n)
	}
	if s.lookup("v", gz, l) == nil {
		t.Error("variant not found")
	}
	if s.lookup("v", &headers.Request{Map: hmap("accept-encoding", "br")}, l) != nil {
		t.Error("another variant's request found the gzip one")
	}
}
