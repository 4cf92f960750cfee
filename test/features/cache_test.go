// HTTP caching: envoy.filters.http.cache and cache_v2 with the in-memory
// storage.

package features_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/testutil"
)

// cacheOriginLog records what the caching origin saw, per path.
type cacheOriginLog struct {
	mu   sync.Mutex
	hits map[string]int
	inm  map[string][]string // If-None-Match per request, "" when absent
}

func (o *cacheOriginLog) record(r *http.Request) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.hits[r.URL.Path]++
	o.inm[r.URL.Path] = append(o.inm[r.URL.Path], r.Header.Get("if-none-match"))
	return o.hits[r.URL.Path]
}

func (o *cacheOriginLog) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

func (o *cacheOriginLog) ifNoneMatch(path string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.inm[path]...)
}

const cacheLargeSize = 4 << 20

// cacheLargeBody is the large response, a pattern that shows misplaced bytes.
var cacheLargeBody = func() []byte {
	b := make([]byte, cacheLargeSize)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}()

// cacheOrigin serves the paths the cache tests use. release is closed by
// the test once it has read the first half of /large.
func cacheOrigin(o *cacheOriginLog, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := o.record(r)
		h := w.Header()
		switch r.URL.Path {
		case "/fresh", "/fresh-nc":
			h.Set("cache-control", "max-age=600")
			h.Set("etag", `"e-fresh"`)
			if r.Header.Get("if-none-match") == `"e-fresh"` {
				h.Set("x-validated", strconv.Itoa(n))
				w.WriteHeader(304)
				return
			}
			h.Set("x-origin", "fresh")
			io.WriteString(w, "hello")
		case "/stale":
			// Stored already stale: Date is two minutes old, max-age one.
			h.Set("cache-control", "max-age=60")
			h.Set("etag", `"v1"`)
			if r.Header.Get("if-none-match") == `"v1"` {
				// The 304 dates the response now: fresh again.
				h.Set("x-refreshed", "yes")
				w.WriteHeader(304)
				return
			}
			h.Set("date", time.Now().Add(-2*time.Minute).UTC().Format(http.TimeFormat))
			io.WriteString(w, "stale body")
		case "/nostore":
			h.Set("cache-control", "no-store, max-age=600")
			io.WriteString(w, "n"+strconv.Itoa(n))
		case "/private":
			h.Set("cache-control", "private, max-age=600")
			io.WriteString(w, "p"+strconv.Itoa(n))
		case "/vary-ok":
			h.Set("cache-control", "max-age=600")
			h.Set("vary", "x-lang")
			io.WriteString(w, "lang="+r.Header.Get("x-lang"))
		case "/vary-bad":
			h.Set("cache-control", "max-age=600")
			h.Set("vary", "user-agent")
			io.WriteString(w, "ua")
		case "/head-only", "/req-nostore":
			h.Set("cache-control", "max-age=600")
			io.WriteString(w, "full body")
		case "/large":
			h.Set("cache-control", "max-age=600")
			h.Set("content-length", strconv.Itoa(cacheLargeSize))
			half := cacheLargeSize / 2
			w.Write(cacheLargeBody[:half])
			w.(http.Flusher).Flush()
			if n == 1 {
				// The rest comes only once the client has the first half:
				// a proxy that stored the whole body before sending any
				// would never get it.
				select {
				case <-release:
				case <-time.After(5 * time.Second):
				}
			}
			w.Write(cacheLargeBody[half:])
		case "/max-body":
			h.Set("cache-control", "max-age=600")
			io.WriteString(w, strings.Repeat("x", 2000))
		default:
			w.WriteHeader(404)
		}
	})
}

func cacheFilter(typ, storage, extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return `http_filters: [{name: cache, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.` + typ +
		`, typed_config: {"@type": type.googleapis.com/envoy.extensions.http.` + storage + `}` + extra + `}},
	  {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`
}

// TestCache: envoy.filters.http.cache with the simple storage through a
// real proxy in front of an origin that counts its requests.
func TestCache(t *testing.T) {
	o := &cacheOriginLog{hits: map[string]int{}, inm: map[string][]string{}}
	up := testutil.StartUpstream(t, cacheOrigin(o, nil))
	p := start(t, cfg{
		hcm: cacheFilter("cache.v3.CacheConfig", "cache.simple_http_cache.v3.SimpleHttpCacheConfig",
			`allowed_vary_headers: [{exact: x-lang}], max_body_bytes: 1000`),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: origin}}"),
		clusters: "[" + staticCluster("origin", "", up.Addr) + "]",
	})
	c := testutil.Client()
	url := func(path string) string { return p.URL("http", path) }

	t.Run("MissThenHit", func(t *testing.T) {
		code, h, body := testutil.Get(t, c, url("/fresh"))
		if code != 200 || body != "hello" || h.Get("age") != "" {
			t.Fatalf("miss: %d %q age=%q", code, body, h.Get("age"))
		}
		code, h, body = testutil.Get(t, c, url("/fresh"))
		if code != 200 || body != "hello" || h.Get("x-origin") != "fresh" || h.Get("etag") != `"e-fresh"` {
			t.Fatalf("hit: %d %q %v", code, body, h)
		}
		if age, err := strconv.Atoi(h.Get("age")); err != nil || age < 0 || age > 60 {
			t.Errorf("hit: age %q, want a small number of seconds", h.Get("age"))
		}
		if n := o.count("/fresh"); n != 1 {
			t.Errorf("origin saw /fresh %d times, want 1", n)
		}
	})

	t.Run("HTTP2Hit", func(t *testing.T) {
		code, h, body := testutil.Get(t, testutil.H2CClient(), url("/fresh"))
		if code != 200 || body != "hello" || h.Get("age") == "" || o.count("/fresh") != 1 {
			t.Errorf("HTTP/2 hit: %d %q age=%q, origin %d requests", code, body, h.Get("age"), o.count("/fresh"))
		}
	})

	t.Run("HeadFromStoredGet", func(t *testing.T) {
		code, h, body := testutil.Do(t, c, "HEAD", url("/fresh"), "")
		if code != 200 || body != "" || h.Get("content-length") != "5" || h.Get("age") == "" {
			t.Errorf("HEAD: %d %q content-length=%q age=%q", code, body, h.Get("content-length"), h.Get("age"))
		}
		if n := o.count("/fresh"); n != 1 {
			t.Errorf("HEAD went to the origin (%d requests)", n)
		}
		// A HEAD miss goes upstream and stores nothing.
		testutil.Do(t, c, "HEAD", url("/head-only"), "")
		code, _, body = testutil.Get(t, c, url("/head-only"))
		if code != 200 || body != "full body" || o.count("/head-only") != 2 {
			t.Errorf("GET after HEAD: %d %q, origin %d requests, want 2", code, body, o.count("/head-only"))
		}
	})

	t.Run("ConditionalFromCache", func(t *testing.T) {
		code, h, body := testutil.Get(t, c, url("/fresh"), "if-none-match", `"e-fresh"`)
		if code != 304 || body != "" || h.Get("etag") != `"e-fresh"` {
			t.Errorf("If-None-Match: %d %q etag=%q", code, body, h.Get("etag"))
		}
		code, _, body = testutil.Get(t, c, url("/fresh"), "if-none-match", `"other"`)
		if code != 200 || body != "hello" {
			t.Errorf("If-None-Match other: %d %q", code, body)
		}
		if n := o.count("/fresh"); n != 1 {
			t.Errorf("conditional requests went to the origin (%d)", n)
		}
	})

	t.Run("Range", func(t *testing.T) {
		code, h, body := testutil.Get(t, c, url("/fresh"), "range", "bytes=1-3")
		if code != 206 || body != "ell" || h.Get("content-range") != "bytes 1-3/5" {
			t.Errorf("range: %d %q %q", code, body, h.Get("content-range"))
		}
		code, h, _ = testutil.Get(t, c, url("/fresh"), "range", "bytes=9-")
		if code != 416 || h.Get("content-range") != "bytes */5" {
			t.Errorf("unsatisfiable: %d %q", code, h.Get("content-range"))
		}
		if n := o.count("/fresh"); n != 1 {
			t.Errorf("ranges went to the origin (%d)", n)
		}
	})

	t.Run("RequestNoCacheValidates", func(t *testing.T) {
		testutil.Get(t, c, url("/fresh-nc"))
		code, h, body := testutil.Get(t, c, url("/fresh-nc"), "cache-control", "no-cache")
		if code != 200 || body != "hello" || h.Get("x-validated") != "2" || h.Get("age") != "" {
			t.Errorf("no-cache: %d %q x-validated=%q age=%q", code, body, h.Get("x-validated"), h.Get("age"))
		}
		if got := o.ifNoneMatch("/fresh-nc"); len(got) != 2 || got[1] != `"e-fresh"` {
			t.Errorf("origin's If-None-Match: %q", got)
		}
		// Pragma: no-cache does the same without Cache-Control.
		testutil.Get(t, c, url("/fresh-nc"), "pragma", "no-cache")
		if n := o.count("/fresh-nc"); n != 3 {
			t.Errorf("pragma: origin saw %d requests, want 3", n)
		}
	})

	t.Run("StaleRevalidatedWith304", func(t *testing.T) {
		code, _, body := testutil.Get(t, c, url("/stale"))
		if code != 200 || body != "stale body" {
			t.Fatalf("first: %d %q", code, body)
		}
		code, h, body := testutil.Get(t, c, url("/stale"))
		if code != 200 || body != "stale body" || h.Get("x-refreshed") != "yes" {
			t.Fatalf("validated: %d %q %v", code, body, h)
		}
		if got := o.ifNoneMatch("/stale"); len(got) != 2 || got[0] != "" || got[1] != `"v1"` {
			t.Errorf("origin's If-None-Match: %q, want none then the stored ETag", got)
		}
		// The 304's Date refreshed the entry: served from the cache now,
		// with the header the 304 added.
		code, h, body = testutil.Get(t, c, url("/stale"))
		if code != 200 || body != "stale body" || h.Get("age") == "" || h.Get("x-refreshed") != "yes" {
			t.Errorf("after validation: %d %q age=%q x-refreshed=%q", code, body, h.Get("age"), h.Get("x-refreshed"))
		}
		if n := o.count("/stale"); n != 2 {
			t.Errorf("origin saw /stale %d times, want 2", n)
		}
	})

	t.Run("NoStoreAndPrivate", func(t *testing.T) {
		for _, path := range []string{"/nostore", "/private"} {
			_, _, b1 := testutil.Get(t, c, url(path))
			_, _, b2 := testutil.Get(t, c, url(path))
			if b1 == b2 || o.count(path) != 2 {
				t.Errorf("%s: bodies %q %q, origin %d requests: want each from the origin", path, b1, b2, o.count(path))
			}
		}
		// A request's no-store keeps its response out of the cache.
		testutil.Get(t, c, url("/req-nostore"), "cache-control", "no-store")
		testutil.Get(t, c, url("/req-nostore"))
		if n := o.count("/req-nostore"); n != 2 {
			t.Errorf("request no-store: origin %d requests, want 2", n)
		}
	})

	t.Run("Vary", func(t *testing.T) {
		for _, lang := range []string{"en", "en", "fr", "fr", "en"} {
			code, _, body := testutil.Get(t, c, url("/vary-ok"), "x-lang", lang)
			if code != 200 || body != "lang="+lang {
				t.Errorf("x-lang %s: %d %q", lang, code, body)
			}
		}
		if n := o.count("/vary-ok"); n != 2 {
			t.Errorf("allowed Vary: origin %d requests, want 2 (one per variant)", n)
		}
		testutil.Get(t, c, url("/vary-bad"))
		testutil.Get(t, c, url("/vary-bad"))
		if n := o.count("/vary-bad"); n != 2 {
			t.Errorf("Vary on a header not allowed: origin %d requests, want 2", n)
		}
	})

	t.Run("OnlyIfCached", func(t *testing.T) {
		code, _, _ := testutil.Get(t, c, url("/never"), "cache-control", "only-if-cached")
		if code != 504 || o.count("/never") != 0 {
			t.Errorf("only-if-cached miss: %d, origin %d", code, o.count("/never"))
		}
		code, _, body := testutil.Get(t, c, url("/fresh"), "cache-control", "only-if-cached")
		if code != 200 || body != "hello" {
			t.Errorf("only-if-cached hit: %d %q", code, body)
		}
	})

	t.Run("MaxBodyBytes", func(t *testing.T) {
		testutil.Get(t, c, url("/max-body"))
		_, _, body := testutil.Get(t, c, url("/max-body"))
		if len(body) != 2000 || o.count("/max-body") != 2 {
			t.Errorf("over max_body_bytes: %d bytes, origin %d requests, want 2", len(body), o.count("/max-body"))
		}
	})

	t.Run("StatusCounted", func(t *testing.T) {
		before := p.Stat(t, "http.ingress.downstream_rq_2xx")
		testutil.Get(t, c, url("/fresh"))
		if after := p.Stat(t, "http.ingress.downstream_rq_2xx"); after != before+1 {
			t.Errorf("downstream_rq_2xx %d → %d: a cached response counts", before, after)
		}
	})
}

// TestCacheLargeBodyStreams: a large response reaches the client while it
// is stored (the origin holds the second half until the client has read
// the first), and the stored copy is served whole afterwards.
func TestCacheLargeBodyStreams(t *testing.T) {
	o := &cacheOriginLog{hits: map[string]int{}, inm: map[string][]string{}}
	release := make(chan struct{})
	up := testutil.StartUpstream(t, cacheOrigin(o, release))
	p := start(t, cfg{
		hcm:      cacheFilter("cache.v3.CacheConfig", "cache.simple_http_cache.v3.SimpleHttpCacheConfig", ""),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: origin}}"),
		clusters: "[" + staticCluster("origin", "", up.Addr) + "]",
	})
	c := testutil.Client()
	resp, err := c.Get(p.URL("http", "/large"))
	if err != nil {
		t.Fatal(err)
	}
	// The first half less what the proxy may hold in its write buffers
	// (a relayed content-length body is not flushed chunk by chunk).
	first := make([]byte, cacheLargeSize/2-256<<10)
	start := time.Now()
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("first half: %v", err)
	}
	if time.Since(start) > 4*time.Second {
		t.Errorf("the first half came only after the origin gave up waiting: the body was not streamed")
	}
	if n := o.count("/large"); n != 1 {
		t.Fatalf("origin saw /large %d times before the end, want 1", n)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got := append(first, rest...); !bytes.Equal(got, cacheLargeBody) {
		t.Fatalf("miss: body of %d bytes differs", len(got))
	}
	code, h, body := testutil.Get(t, c, p.URL("http", "/large"))
	if code != 200 || sha256.Sum256([]byte(body)) != sha256.Sum256(cacheLargeBody) || h.Get("age") == "" {
		t.Errorf("hit: %d, %d bytes, age=%q", code, len(body), h.Get("age"))
	}
	if n := o.count("/large"); n != 1 {
		t.Errorf("origin saw /large %d times, want 1", n)
	}
}

// TestCacheV2Stats: envoy.filters.http.cache_v2 shares the engine and
// counts its events as Envoy names them.
func TestCacheV2Stats(t *testing.T) {
	o := &cacheOriginLog{hits: map[string]int{}, inm: map[string][]string{}}
	up := testutil.StartUpstream(t, cacheOrigin(o, nil))
	p := start(t, cfg{
		hcm:      cacheFilter("cache_v2.v3.CacheV2Config", "cache_v2.simple_http_cache.v3.SimpleHttpCacheV2Config", ""),
		vhosts:   vhost("{match: {prefix: /}, route: {cluster: origin}}"),
		clusters: "[" + staticCluster("origin", "", up.Addr) + "]",
	})
	c := testutil.Client()
	for i := 0; i < 3; i++ {
		testutil.Get(t, c, p.URL("http", "/fresh"))
	}
	testutil.Get(t, c, p.URL("http", "/stale"))
	testutil.Get(t, c, p.URL("http", "/stale"))
	testutil.Do(t, c, "POST", p.URL("http", "/fresh"), "body")
	if n := o.count("/fresh"); n != 2 { // two misses: the GET, then the POST passing through
		t.Errorf("origin saw /fresh %d times, want 2", n)
	}
	const prefix = "cache.event.cache_label.envoy_extensions_http_cache_v2_simple.event_type."
	for event, want := range map[string]int64{"hit": 2, "miss": 2, "validate": 1, "uncacheable": 1, "failed_validation": 0} {
		// The store and its stats are shared by the process's cache_v2
		// filters, as Envoy's singleton: this proxy's own counters.
		if got := p.Stat(t, prefix+event); got != want {
			t.Errorf("%s = %d, want %d", prefix+event, got, want)
		}
	}
}

// TestCacheConfigErrors: what the cache filters refuse.
func TestCacheConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, typ, storage, extra, want string
	}{
		{"override_upstream_cluster", "cache_v2.v3.CacheV2Config", "cache_v2.simple_http_cache.v3.SimpleHttpCacheV2Config",
			"override_upstream_cluster: other", "override_upstream_cluster is not supported by legate"},
		{"file system storage", "cache.v3.CacheConfig", "cache.file_system_http_cache.v3.FileSystemHttpCacheConfig",
			"", "not implemented by legate"},
		{"v2 storage in v1", "cache.v3.CacheConfig", "cache_v2.simple_http_cache.v3.SimpleHttpCacheV2Config",
			"", "does not go here"},
	} {
		y := cfg{
			hcm:      cacheFilter(tc.typ, tc.storage, tc.extra),
			vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
			clusters: "[]",
		}.String()
		if tc.storage == "cache.file_system_http_cache.v3.FileSystemHttpCacheConfig" {
			y = strings.Replace(y, "FileSystemHttpCacheConfig}", "FileSystemHttpCacheConfig, manager_config: {thread_pool: {thread_count: 1}}, cache_path: /tmp}", 1)
		}
		_, err := testutil.TryStartProxy(t, y, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	y := cfg{
		hcm:      `http_filters: [{name: cache, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig}}, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`,
		vhosts:   vhost("{match: {prefix: /}, direct_response: {status: 200}}"),
		clusters: "[]",
	}.String()
	if _, err := testutil.TryStartProxy(t, y, nil); err == nil || !strings.Contains(err.Error(), "at least one of typed_config or disabled must be set") {
		t.Errorf("no typed_config: %v", err)
	}
	// disabled: the filter does nothing (its storage is not looked up).
	y = strings.Replace(y, "CacheConfig}", "CacheConfig, disabled: true}", 1)
	p, err := testutil.TryStartProxy(t, y, nil)
	if err != nil {
		t.Fatalf("disabled: %v", err)
	}
	code, _, _ := testutil.Get(t, testutil.Client(), p.URL("http", "/"))
	if code != 200 {
		t.Errorf("disabled: %d", code)
	}
}
