// Package cache is envoy.filters.http.cache (CacheConfig) and
// envoy.filters.http.cache_v2 (CacheV2Config), one engine for both, with
// the in-memory storage envoy.extensions.http.cache.simple
// (SimpleHttpCacheConfig) and its cache_v2 twin (SimpleHttpCacheV2Config).
// It follows Envoy's cache filter (cache_filter.cc, cacheability_utils.cc,
// cache_headers_utils.cc, http_cache.cc) and RFC 9111:
//
//   - A GET or HEAD without a body, Authorization or If-Range is looked up
//     by scheme, host and path (key_creator_params may drop the scheme or
//     host, and keep or drop query parameters). Request Cache-Control (or
//     Pragma: no-cache) applies unless ignore_request_cache_control_header:
//     no-cache forces validation, max-age, min-fresh and max-stale bound
//     the age served, no-store forbids storing the response, and
//     only-if-cached answers 504 when nothing fresh is stored (RFC 9111
//     §5.2.1.7; Envoy parses it but does not act on it).
//   - A fresh stored response is answered by the filter itself, with Age
//     (RFC 9111 §4.2.3), the RFCF response flag and details
//     cache.response_from_cache_filter; its body is written in pieces. HEAD
//     gets the head of a stored GET; a single byte Range is served as 206
//     (or 416), several ranges as the whole response, as Envoy. A client's
//     If-None-Match / If-Modified-Since is answered 304 from a fresh entry
//     (RFC 9111 §4.3.2; Envoy's cache filter lets those requests bypass
//     the cache).
//   - A stale one is validated: the request goes upstream with
//     If-None-Match (the stored ETag) and If-Modified-Since (Last-Modified,
//     else Date); a 304 refreshes the stored headers (unless its ETag
//     differs) and the client gets the stored response with the 304's
//     headers merged in; any other answer is relayed and may replace the
//     entry.
//   - A response is stored when the request allows it (not HEAD, no
//     no-store) and it is cacheable: not no-store/private, a status Envoy
//     caches, a freshness lifetime (no-cache, s-maxage/max-age, or Date and
//     Expires), a Vary naming only allowed_vary_headers (never "*"). It
//     streams to the client as it is stored; one larger than
//     max_body_bytes (or the store's per-entry bound) is not stored. 206
//     responses are not stored (Envoy would store a part as the whole).
//
// Storage: Envoy keeps one simple cache per server, shared by every cache
// filter, and never evicts. Here there is one store per storage type for
// the process (a proxy is one server), with a budget of 128 MiB and
// least-recently-used eviction; one entry may take a quarter of it.
//
// Stats: cache_v2's counters, as Envoy names them at the server's root
// scope: cache.event.cache_label.<storage>.event_type.<hit|miss|validate|
// failed_validation|uncacheable> (<storage> is
// envoy_extensions_http_cache_v2_simple). Envoy's cache (v1) filter has no
// stats. Unsafe methods do not invalidate stored responses, as in Envoy.
package cache

import (
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cache/v3"
	cachev2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cache_v2/v3"
	simplev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/cache/simple_http_cache/v3"
	simplev2v3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/cache_v2/simple_http_cache/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/strmatch"
)

// Storage extension points, as Envoy names them (the typed_config of the
// two filters).
const (
	StorageCategory   extension.Category = "envoy.http.cache"
	StorageV2Category extension.Category = "envoy.http.cache_v2"
)

// Storage names: Envoy's registered factory names.
const (
	simpleName   = "envoy.extensions.http.cache.simple"
	simpleV2Name = "envoy.extensions.http.cache_v2.simple"
)

// The process's stores, one per storage type (Envoy's singletons).
var (
	simpleStore   = newStore(defaultMaxBytes)
	simpleV2Store = newStore(defaultMaxBytes)
)

// storageFactory is the Factory of a storage registration: the store its
// filters share.
type storageFactory func() *store

const notes = "simple cache: bounded to 128 MiB with LRU eviction (Envoy's is unbounded); client conditional requests and only-if-cached are answered from the cache (RFC 9111); 206 responses are not stored"

func init() {
	httpfilter.Register("envoy.filters.http.cache", nil, &cachev3.CacheConfig{}, nil,
		httpfilter.Factory{Compile: compileV1}, notes)
	httpfilter.Register("envoy.filters.http.cache_v2", nil, &cachev2v3.CacheV2Config{}, nil,
		httpfilter.Factory{Compile: compileV2}, notes+"; override_upstream_cluster is not implemented")
	extension.Register(extension.Extension{Name: simpleName, Aliases: []string{"envoy.http.cache.simple_http_cache"},
		Category: StorageCategory, Config: &simplev3.SimpleHttpCacheConfig{},
		Factory: storageFactory(func() *store { return simpleStore }), Notes: "bounded (128 MiB, LRU)"})
	extension.Register(extension.Extension{Name: simpleV2Name, Aliases: []string{"envoy.http.cache_v2.simple_http_cache"},
		Category: StorageV2Category, Config: &simplev2v3.SimpleHttpCacheV2Config{},
		Factory: storageFactory(func() *store { return simpleV2Store }), Notes: "bounded (128 MiB, LRU)"})
}

// queryMatcher is a compiled QueryParameterMatcher of key_creator_params.
type queryMatcher struct {
	name string
	sm   *strmatch.Matcher // nil: present_match
}

func (q *queryMatcher) matches(name, value string) bool {
	return name == q.name && (q.sm == nil || q.sm.Match(value))
}

// filterConfig is a compiled CacheConfig or CacheV2Config.
type filterConfig struct {
	store         *store
	vary          varyAllowList
	ignoreReqCC   bool
	maxBodyBytes  int64 // 0: the store's bound only
	excludeScheme bool
	excludeHost   bool
	qInclude      []queryMatcher
	qExclude      []queryMatcher
	// stats are cache_v2's (nil for cache).
	stats *eventStats
}

// eventStats are cache_v2's counters (stats.cc), by CacheEntryStatus.
type eventStats struct {
	hit, miss, validate, failedValidation, uncacheable *stats.Counter
}

func newEventStats(st *stats.Store, storage string) *eventStats {
	label := strings.ReplaceAll(storage, ".", "_")
	c := func(event string) *stats.Counter {
		return st.Counter("cache.event.cache_label." + label + ".event_type." + event)
	}
	return &eventStats{hit: c("hit"), miss: c("miss"), validate: c("validate"),
		failedValidation: c("failed_validation"), uncacheable: c("uncacheable")}
}

// common are the fields CacheConfig and CacheV2Config share.
type common struct {
	typedConfig  *anypb.Any
	disabled     *wrapperspb.BoolValue
	vary         []*matcherv3.StringMatcher
	keyParams    keyParams
	maxBodyBytes uint32
	ignoreReqCC  bool
}

// keyParams is a KeyCreatorParams of either version.
type keyParams interface {
	proto.Message
	GetExcludeScheme() bool
	GetExcludeHost() bool
	GetQueryParametersIncluded() []*routev3.QueryParameterMatcher
	GetQueryParametersExcluded() []*routev3.QueryParameterMatcher
}

var commonFields = []string{"typed_config", "disabled", "allowed_vary_headers", "key_creator_params",
	"max_body_bytes", "ignore_request_cache_control_header"}

func compileV1(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*cachev3.CacheConfig)
	if err := config.CheckFields(c, path, commonFields...); err != nil {
		return nil, err
	}
	var kp keyParams
	if c.GetKeyCreatorParams() != nil {
		kp = c.GetKeyCreatorParams()
	}
	return compileCommon(common{c.GetTypedConfig(), c.GetDisabled(), c.GetAllowedVaryHeaders(), kp,
		c.GetMaxBodyBytes(), c.GetIgnoreRequestCacheControlHeader()}, StorageCategory, nil, path)
}

func compileV2(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*cachev2v3.CacheV2Config)
	if err := config.CheckFields(c, path, append(commonFields, "override_upstream_cluster")...); err != nil {
		return nil, err
	}
	if c.GetOverrideUpstreamCluster() != "" {
		// Legate's filter validates and fills the cache through the
		// route's own upstream request, so there is no side channel to
		// send elsewhere.
		return nil, config.Unsupported(config.Join(path, "override_upstream_cluster"), "override_upstream_cluster")
	}
	var kp keyParams
	if c.GetKeyCreatorParams() != nil {
		kp = c.GetKeyCreatorParams()
	}
	return compileCommon(common{c.GetTypedConfig(), c.GetDisabled(), c.GetAllowedVaryHeaders(), kp,
		c.GetMaxBodyBytes(), c.GetIgnoreRequestCacheControlHeader()}, StorageV2Category, ctx, path)
}

func compileCommon(c common, cat extension.Category, ctx *httpfilter.Context, path string) (httpfilter.Config, error) {
	if c.disabled.GetValue() {
		// As Envoy: a disabled cache filter is a no-op, its storage is not
		// even looked up.
		return httpfilter.ConfigFunc(func(httpfilter.Callbacks) httpfilter.Filter { return passThrough{} }), nil
	}
	if c.typedConfig == nil {
		// Envoy's message, from the filter's factory.
		return nil, config.Errorf(path, "at least one of typed_config or disabled must be set")
	}
	r, err := extension.Lookup(cat, c.typedConfig, config.Join(path, "typed_config"))
	if err != nil {
		return nil, err
	}
	if err := config.CheckFields(r.Config, config.Join(path, "typed_config")); err != nil {
		return nil, err
	}
	fc := &filterConfig{store: r.Ext.Factory.(storageFactory)(), ignoreReqCC: c.ignoreReqCC,
		maxBodyBytes: int64(c.maxBodyBytes)}
	for i, sm := range c.vary {
		m, err := strmatch.Compile(sm, config.Index(config.Join(path, "allowed_vary_headers"), i))
		if err != nil {
			return nil, err
		}
		fc.vary.rules = append(fc.vary.rules, m.Match)
	}
	if kp := c.keyParams; kp != nil {
		kpath := config.Join(path, "key_creator_params")
		if err := config.CheckFields(kp, kpath, "exclude_scheme", "exclude_host", "query_parameters_included", "query_parameters_excluded"); err != nil {
			return nil, err
		}
		fc.excludeScheme, fc.excludeHost = kp.GetExcludeScheme(), kp.GetExcludeHost()
		if fc.qInclude, err = compileQuery(kp.GetQueryParametersIncluded(), config.Join(kpath, "query_parameters_included")); err != nil {
			return nil, err
		}
		if fc.qExclude, err = compileQuery(kp.GetQueryParametersExcluded(), config.Join(kpath, "query_parameters_excluded")); err != nil {
			return nil, err
		}
	}
	if ctx != nil && ctx.Stats != nil {
		fc.stats = newEventStats(ctx.Stats, r.Ext.Name)
	}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		return &filter{cfg: fc, cb: cb}
	}), nil
}

func compileQuery(qs []*routev3.QueryParameterMatcher, path string) ([]queryMatcher, error) {
	var out []queryMatcher
	for i, q := range qs {
		qp := config.Index(path, i)
		if err := config.CheckFields(q, qp, "name", "string_match", "present_match"); err != nil {
			return nil, err
		}
		qm := queryMatcher{name: q.GetName()}
		if sm := q.GetStringMatch(); sm != nil {
			s, err := strmatch.Compile(sm, config.Join(qp, "string_match"))
			if err != nil {
				return nil, err
			}
			qm.sm = &s
		} else if !q.GetPresentMatch() {
			return nil, config.Errorf(qp, "query parameter matcher needs string_match or present_match: true")
		}
		out = append(out, qm)
	}
	return out, nil
}

// passThrough is the filter of a disabled config.
type passThrough struct{}

// cacheKey is the key of a request: scheme, host and path as Envoy's
// LookupRequest builds it, less what key_creator_params excludes.
func (c *filterConfig) cacheKey(scheme, host, path string) string {
	if c.excludeScheme {
		scheme = ""
	}
	if c.excludeHost {
		host = ""
	}
	if len(c.qInclude) > 0 || len(c.qExclude) > 0 {
		path = c.filterQuery(path)
	}
	return scheme + "\x00" + host + "\x00" + path
}

// filterQuery keeps the query parameters query_parameters_included
// matches (all when it is empty) bar those query_parameters_excluded
// matches, in their order.
func (c *filterConfig) filterQuery(path string) string {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return path
	}
	var kept []string
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		name, value, _ := strings.Cut(kv, "=")
		keep := len(c.qInclude) == 0
		for i := range c.qInclude {
			if c.qInclude[i].matches(name, value) {
				keep = true
				break
			}
		}
		for i := range c.qExclude {
			if keep && c.qExclude[i].matches(name, value) {
				keep = false
			}
		}
		if keep {
			kept = append(kept, kv)
		}
	}
	if len(kept) == 0 {
		return base
	}
	return base + "?" + strings.Join(kept, "&")
}
