package stats

import (
	"fmt"
	"regexp"
	"strings"
)

// TagRule is one stats_config.stats_tags entry: a regex whose first
// submatch is cut from the stat name and whose second (or, with one
// group, the first) is the tag value; or a fixed value every stat gets.
type TagRule struct {
	name  string
	re    *regexp.Regexp
	fixed string
}

// lookaheadIdiom is the one lookahead Envoy's own tag regexes (and
// Istio's, which copy them) use: "(?=\.).*?\." — a dot follows, then
// anything up to a dot. RE2 has no lookahead; this is its equivalent.
var lookaheadIdiom = strings.NewReplacer(`(?=\.).*?\.`, `\.(?:.*?\.)?`)

// NewTagRule compiles a regex tag rule. Envoy's regexes are ECMAScript
// (std::regex); Go's are RE2, which has no lookaround or backreferences:
// the one idiom above is rewritten, anything else RE2 cannot run is an
// error that says so.
func NewTagRule(name, expr string) (TagRule, error) {
	re, err := regexp.Compile(lookaheadIdiom.Replace(expr))
	if err != nil {
		return TagRule{}, fmt.Errorf("regex %q: %w (Go's RE2 syntax: no lookahead or backreferences)", expr, err)
	}
	return TagRule{name: name, re: re}, nil
}

// FixedTag is a tag with a fixed value on every stat.
func FixedTag(name, value string) TagRule { return TagRule{name: name, fixed: value} }

// tagConfig is what Configure set.
type tagConfig struct {
	rules   []TagRule
	include func(string) bool
}

// Configure applies stats_config: custom tag rules (before Envoy's
// defaults, which a custom rule of the same name replaces; useDefaults
// false drops the defaults, as use_all_default_tags: false), and include,
// the stats_matcher (nil: every stat), which decides which stats the
// store exposes — admin, Prometheus and sinks alike.
func (s *Store) Configure(rules []TagRule, useDefaults bool, include func(string) bool) {
	cfg := &tagConfig{rules: append([]TagRule(nil), rules...), include: include}
	if useDefaults {
		custom := map[string]bool{}
		for _, r := range rules {
			custom[r.name] = true
		}
		for _, d := range defaultTagRules {
			if !custom[d.tag] {
				cfg.rules = append(cfg.rules, TagRule{name: d.tag, re: d.re})
			}
		}
	}
	s.tags.Store(cfg)
}

// included reports whether the stats_matcher admits a stat.
func (s *Store) included(name string) bool {
	if c := s.tags.Load(); c != nil && c.include != nil {
		return c.include(name)
	}
	return true
}

// ExtractTags applies the store's tag rules (Envoy's defaults unless
// Configure changed them) to a stat name.
func (s *Store) ExtractTags(name string) (string, []Tag) {
	c := s.tags.Load()
	if c == nil {
		return ExtractTags(name)
	}
	var tags []Tag
	for _, r := range c.rules {
		if r.re == nil {
			tags = append(tags, Tag{Name: r.name, Value: r.fixed})
			continue
		}
		m := r.re.FindStringSubmatchIndex(name)
		if len(m) < 4 || m[2] < 0 {
			continue
		}
		vs, ve := m[2], m[3]
		if len(m) >= 6 && m[4] >= 0 {
			vs, ve = m[4], m[5]
		}
		tags = append(tags, Tag{Name: r.name, Value: name[vs:ve]})
		name = name[:m[2]] + name[m[3]:]
	}
	return name, tags
}

// DefaultTagRule returns Envoy's default rule of a tag name (a stats_tags
// entry with only tag_name).
func DefaultTagRule(name string) (TagRule, bool) {
	for _, d := range defaultTagRules {
		if d.tag == name {
			return TagRule{name: d.tag, re: d.re}, true
		}
	}
	return TagRule{}, false
}
