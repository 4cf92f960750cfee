// Package strmatch compiles Envoy's string matchers
// (envoy.type.matcher.v3.StringMatcher and RegexMatcher), shared by the
// route table (header and query parameter matchers), the unified matcher
// API (internal/matcher) and the filters: exact, prefix, suffix, contains
// and safe_regex (a full-string match), with ignore_case.
package strmatch

import (
	"regexp"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/legateproxy/legate/internal/config"
)

type kind uint8

const (
	exact kind = iota
	prefix
	suffix
	contains
	regex
)

// Matcher is a compiled string matcher. The zero value matches the empty
// string exactly.
type Matcher struct {
	kind       kind
	value      string // lower case for an ignore_case contains
	re         *regexp.Regexp
	ignoreCase bool
}

// Exact, Prefix, Suffix and Contains are case-sensitive matchers of one
// kind (the deprecated *_match fields of a HeaderMatcher).
func Exact(v string) Matcher    { return Matcher{kind: exact, value: v} }
func Prefix(v string) Matcher   { return Matcher{kind: prefix, value: v} }
func Suffix(v string) Matcher   { return Matcher{kind: suffix, value: v} }
func Contains(v string) Matcher { return Matcher{kind: contains, value: v} }

// Regex matches values re matches (compile re with CompileRegex for
// Envoy's full-string semantics).
func Regex(re *regexp.Regexp) Matcher { return Matcher{kind: regex, re: re} }

// Match reports whether v matches.
func (m *Matcher) Match(v string) bool {
	switch m.kind {
	case exact:
		if m.ignoreCase {
			return strings.EqualFold(v, m.value)
		}
		return v == m.value
	case prefix:
		if m.ignoreCase {
			return len(v) >= len(m.value) && strings.EqualFold(v[:len(m.value)], m.value)
		}
		return strings.HasPrefix(v, m.value)
	case suffix:
		if len(v) < len(m.value) {
			return false
		}
		if m.ignoreCase {
			return strings.EqualFold(v[len(v)-len(m.value):], m.value)
		}
		return strings.HasSuffix(v, m.value)
	case contains:
		if m.ignoreCase {
			return strings.Contains(strings.ToLower(v), m.value)
		}
		return strings.Contains(v, m.value)
	default:
		return m.re.MatchString(v)
	}
}

// Compile compiles an envoy.type.matcher.v3.StringMatcher at path.
func Compile(sm *matcherv3.StringMatcher, path string) (Matcher, error) {
	if err := config.CheckFields(sm, path, "exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"); err != nil {
		return Matcher{}, err
	}
	out := Matcher{ignoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.kind, out.value = exact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.kind, out.value = prefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.kind, out.value = suffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.kind, out.value = contains, p.Contains
		if out.ignoreCase {
			out.value = strings.ToLower(out.value)
		}
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex, config.Join(path, "safe_regex"))
		if err != nil {
			return out, err
		}
		if out.ignoreCase {
			re = regexp.MustCompile("(?i)" + re.String())
		}
		out.kind, out.re = regex, re
	default:
		return out, config.Errorf(path, "string matcher has no pattern")
	}
	return out, nil
}

// CompileRegex compiles a RegexMatcher as a full-string match (Envoy's
// safe_regex must match the whole value). RE2 and Go's regexp share syntax.
func CompileRegex(rm *matcherv3.RegexMatcher, path string) (*regexp.Regexp, error) {
	if err := config.CheckFields(rm, path, "google_re2", "regex"); err != nil {
		return nil, err
	}
	re, err := regexp.Compile("^(?:" + rm.GetRegex() + ")$")
	if err != nil {
		return nil, config.Errorf(config.Join(path, "regex"), "invalid regex %q: %v", rm.GetRegex(), err)
	}
	return re, nil
}
