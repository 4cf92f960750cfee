package route

import (
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/strmatch"
)

// pathKind is how a route matches the path.
type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
	pathConnect
)

// Match is a compiled RouteMatch.
type Match struct {
	kind          pathKind
	value         string // prefix or exact path (lower case when !caseSensitive)
	re            *regexp.Regexp
	caseSensitive bool
	headers       []headerMatcher
	query         []queryMatcher
	grpc          bool
	fraction      uint32 // runtime_fraction numerator per million; 0 means always (when !hasFraction)
	hasFraction   bool
	// rt, fracKey and fracDef read runtime_fraction's runtime_key from the
	// layered runtime on each match (nil rt: the default only).
	rt      *runtime.Loader
	fracKey string
	fracDef *typev3.FractionalPercent
}

// matches reports whether the request matches.
// CompileRouteMatch compiles a RouteMatch on its own (for filters whose
// rules match requests as routes do, such as jwt_authn): path, headers,
// query parameters, grpc.
func CompileRouteMatch(pm *routev3.RouteMatch, path string) (func(*headers.Request) bool, error) {
	c := &compiler{clusters: map[string]bool{}}
	m, err := c.match(pm, path)
	if err != nil {
		return nil, err
	}
	return m.matches, nil
}

func (m *Match) matches(r *headers.Request) bool {
	path := r.Path
	switch m.kind {
	case pathConnect:
		if r.Method != "CONNECT" {
			return false
		}
	case pathPrefix:
		if !hasPrefix(path, m.value, m.caseSensitive) {
			return false
		}
	case pathExact:
		if !equalPath(stripQuery(path), m.value, m.caseSensitive) {
			return false
		}
	case pathSeparatedPrefix:
		p := stripQuery(path)
		if !hasPrefix(p, m.value, m.caseSensitive) {
			return false
		}
		if len(p) > len(m.value) && p[len(m.value)] != '/' {
			return false
		}
	case pathRegex:
		if !m.re.MatchString(stripQuery(path)) {
			return false
		}
	}
	if r.Method == "CONNECT" && m.kind != pathConnect {
		// Only connect_matcher routes match CONNECT requests.
		return false
	}
	if m.grpc && !strings.HasPrefix(r.Map.Get("content-type"), "application/grpc") {
		return false
	}
	for i := range m.headers {
		if !m.headers[i].matches(r) {
			return false
		}
	}
	if len(m.query) > 0 {
		q := rawQuery(path)
		for i := range m.query {
			if !m.query[i].matches(q) {
				return false
			}
		}
	}
	if m.hasFraction {
		perMillion := m.fraction
		if m.rt != nil && m.fracKey != "" {
			// Envoy's featureEnabled(runtime_key, default_value): the key's
			// integer is the numerator over the default's denominator.
			num, den := m.rt.Snapshot().Fraction(m.fracKey, m.fracDef)
			perMillion = uint32(min(uint64(num)*1_000_000/uint64(den), 1_000_000))
		}
		if rand.Uint32N(1_000_000) >= perMillion {
			return false
		}
	}
	return true
}

func stripQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

func rawQuery(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		q := p[i+1:]
		if j := strings.IndexByte(q, '#'); j >= 0 {
			q = q[:j]
		}
		return q
	}
	return ""
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func equalPath(s, v string, caseSensitive bool) bool {
	if caseSensitive {
		return s == v
	}
	return strings.EqualFold(s, v)
}

// CompileStringMatcher compiles an envoy.type.matcher.v3.StringMatcher
// (exact, prefix, suffix, contains, safe_regex as a full match, ignore_case).
func CompileStringMatcher(sm *matcherv3.StringMatcher, path string) (func(string) bool, error) {
	m, err := strmatch.Compile(sm, path)
	if err != nil {
		return nil, err
	}
	return m.Match, nil
}

// headerMatcher is a compiled HeaderMatcher.
type headerMatcher struct {
	name           string
	kind           uint8 // 0 string, 1 present, 2 range
	sm             strmatch.Matcher
	present        bool
	lo, hi         int64
	invert         bool
	missingAsEmpty bool
}

func (h *headerMatcher) matches(r *headers.Request) bool {
	// Envoy matches multiple values joined by ",".
	v, ok := r.JoinedLookup(h.name)
	if !ok && h.missingAsEmpty {
		ok = true
	}
	var res bool
	switch h.kind {
	case 1:
		res = ok == h.present
	case 2:
		if ok {
			n, err := strconv.ParseInt(v, 10, 64)
			res = err == nil && n >= h.lo && n < h.hi
		}
	default:
		res = ok && h.sm.Match(v)
	}
	if h.invert {
		// An inverted matcher on a missing header matches, except for
		// present_match, whose inversion is plain negation.
		return !res
	}
	return res
}

// queryMatcher is a compiled QueryParameterMatcher.
type queryMatcher struct {
	name string
	sm   *strmatch.Matcher // nil: present_match
}

func (q *queryMatcher) matches(query string) bool {
	for query != "" {
		var kv string
		if i := strings.IndexByte(query, '&'); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			kv, query = query, ""
		}
		k, v, _ := strings.Cut(kv, "=")
		if k != q.name {
			continue
		}
		if q.sm == nil {
			return true
		}
		return q.sm.Match(v)
	}
	return false
}

// fractionPerMillion converts a FractionalPercent to parts per million.
func fractionPerMillion(f *typev3.FractionalPercent) uint32 {
	n := f.GetNumerator()
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		n *= 10000
	case typev3.FractionalPercent_TEN_THOUSAND:
		n *= 100
	}
	if n > 1_000_000 {
		n = 1_000_000
	}
	return n
}

// CompileHeaderMatcher compiles a HeaderMatcher for use outside route
// tables (access-log header filters).
func CompileHeaderMatcher(h *routev3.HeaderMatcher, path string) (func(*headers.Request) bool, error) {
	hm, err := compileHeaderMatcher(h, path)
	if err != nil {
		return nil, err
	}
	return hm.matches, nil
}
