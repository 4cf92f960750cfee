// Package matcher is Envoy's unified matcher API (xds.type.matcher.v3.Matcher):
// matcher lists of predicates over inputs (request headers, addresses,
// SNI, …) and matcher trees of exact and prefix maps, each ending in an
// action. Inputs are extensions (envoy.matching.http.input and network
// inputs) found through the registry; actions are compiled by the user of
// the matcher (RBAC, composite, route selection), which passes a compile
// function.
package matcher

import (
	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/strmatch"
)

// Data is what inputs read: the request (nil for network matching), the
// response (nil before it starts) and the stream or connection record.
type Data struct {
	Req  *headers.Request
	Resp *headers.Response
	Info *streaminfo.Info
}

// Input extracts one value to match; ok is false when it is absent.
type Input func(d *Data) (v string, ok bool)

// InputFactory is the Factory of an extension.MatchingInput registration.
type InputFactory func(cfg proto.Message, path string) (Input, error)

// ActionCompiler compiles the action of an on_match.
type ActionCompiler func(tc *xdscorev3.TypedExtensionConfig, path string) (any, error)

// Matcher is a compiled matcher.
type Matcher struct {
	list      []fieldMatcher
	tree      *tree
	onNoMatch *onMatch
}

type onMatch struct {
	action       any
	sub          *Matcher
	keepMatching bool
}

type fieldMatcher struct {
	pred    predicate
	onMatch onMatch
}

type predicate func(d *Data) bool

type tree struct {
	input  Input
	exact  map[string]*onMatch
	prefix map[string]*onMatch
	maxLen int
}

// Options are what a matcher compiles with.
type Options struct {
	// Action compiles the actions of the on_match entries.
	Action ActionCompiler
	// Input, if set, vets every input's decoded typed_config at path
	// before it compiles, for users that evaluate the matcher on part of
	// the data only (Envoy's MatchTreeValidationVisitor: a route table
	// matches on request headers alone).
	Input func(cfg proto.Message, path string) error
}

// Compile compiles a matcher; action compiles the actions of its on_match
// entries.
func Compile(m *xdsmatcherv3.Matcher, path string, action ActionCompiler) (*Matcher, error) {
	return CompileWith(m, path, Options{Action: action})
}

// CompileWith compiles a matcher with opts.
func CompileWith(m *xdsmatcherv3.Matcher, path string, opts Options) (*Matcher, error) {
	c := &compiler{opts: opts}
	return c.matcher(m, path)
}

type compiler struct{ opts Options }

func (c *compiler) matcher(m *xdsmatcherv3.Matcher, path string) (*Matcher, error) {
	if err := config.CheckFields(m, path, "matcher_list", "matcher_tree", "on_no_match"); err != nil {
		return nil, err
	}
	out := &Matcher{}
	switch t := m.GetMatcherType().(type) {
	case *xdsmatcherv3.Matcher_MatcherList_:
		lp := config.Join(path, "matcher_list")
		for i, fm := range t.MatcherList.GetMatchers() {
			fp := config.Index(config.Join(lp, "matchers"), i)
			p, err := c.predicate(fm.GetPredicate(), config.Join(fp, "predicate"))
			if err != nil {
				return nil, err
			}
			om, err := c.onMatch(fm.GetOnMatch(), config.Join(fp, "on_match"))
			if err != nil {
				return nil, err
			}
			out.list = append(out.list, fieldMatcher{pred: p, onMatch: *om})
		}
	case *xdsmatcherv3.Matcher_MatcherTree_:
		tp := config.Join(path, "matcher_tree")
		mt := t.MatcherTree
		in, err := c.input(mt.GetInput(), config.Join(tp, "input"))
		if err != nil {
			return nil, err
		}
		tr := &tree{input: in}
		var mm *xdsmatcherv3.Matcher_MatcherTree_MatchMap
		var mp string
		switch tt := mt.GetTreeType().(type) {
		case *xdsmatcherv3.Matcher_MatcherTree_ExactMatchMap:
			mm, mp = tt.ExactMatchMap, config.Join(tp, "exact_match_map")
			tr.exact = map[string]*onMatch{}
		case *xdsmatcherv3.Matcher_MatcherTree_PrefixMatchMap:
			mm, mp = tt.PrefixMatchMap, config.Join(tp, "prefix_match_map")
			tr.prefix = map[string]*onMatch{}
		default:
			return nil, config.Unsupported(tp, "custom_match matcher trees", "exact_match_map", "prefix_match_map")
		}
		for k, v := range mm.GetMap() {
			om, err := c.onMatch(v, config.Join(mp, "map["+k+"]"))
			if err != nil {
				return nil, err
			}
			if tr.exact != nil {
				tr.exact[k] = om
			} else {
				tr.prefix[k] = om
				tr.maxLen = max(tr.maxLen, len(k))
			}
		}
		out.tree = tr
	default:
		if m.GetOnNoMatch() == nil {
			return nil, config.Errorf(path, "a matcher needs matcher_list, matcher_tree or on_no_match")
		}
	}
	if m.GetOnNoMatch() != nil {
		om, err := c.onMatch(m.GetOnNoMatch(), config.Join(path, "on_no_match"))
		if err != nil {
			return nil, err
		}
		out.onNoMatch = om
	}
	return out, nil
}

func (c *compiler) onMatch(om *xdsmatcherv3.Matcher_OnMatch, path string) (*onMatch, error) {
	if om == nil {
		return nil, config.Errorf(path, "on_match is required")
	}
	if err := config.CheckFields(om, path, "matcher", "action", "keep_matching"); err != nil {
		return nil, err
	}
	out := &onMatch{keepMatching: om.GetKeepMatching()}
	switch {
	case om.GetMatcher() != nil:
		sub, err := c.matcher(om.GetMatcher(), config.Join(path, "matcher"))
		if err != nil {
			return nil, err
		}
		out.sub = sub
	case om.GetAction() != nil:
		a, err := c.opts.Action(om.GetAction(), config.Join(path, "action"))
		if err != nil {
			return nil, err
		}
		out.action = a
	default:
		return nil, config.Errorf(path, "on_match needs a matcher or an action")
	}
	return out, nil
}

func (c *compiler) predicate(p *xdsmatcherv3.Matcher_MatcherList_Predicate, path string) (predicate, error) {
	if p == nil {
		return nil, config.Errorf(path, "predicate is required")
	}
	switch t := p.GetMatchType().(type) {
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_SinglePredicate_:
		sp := t.SinglePredicate
		spath := config.Join(path, "single_predicate")
		if err := config.CheckFields(sp, spath, "input", "value_match"); err != nil {
			return nil, err
		}
		in, err := c.input(sp.GetInput(), config.Join(spath, "input"))
		if err != nil {
			return nil, err
		}
		sm, err := compileXDSStringMatcher(sp.GetValueMatch(), config.Join(spath, "value_match"))
		if err != nil {
			return nil, err
		}
		return func(d *Data) bool {
			v, ok := in(d)
			return ok && sm(v)
		}, nil
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_OrMatcher:
		ps, err := c.predicates(t.OrMatcher.GetPredicate(), config.Join(path, "or_matcher.predicate"))
		if err != nil {
			return nil, err
		}
		return func(d *Data) bool {
			for _, p := range ps {
				if p(d) {
					return true
				}
			}
			return false
		}, nil
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_AndMatcher:
		ps, err := c.predicates(t.AndMatcher.GetPredicate(), config.Join(path, "and_matcher.predicate"))
		if err != nil {
			return nil, err
		}
		return func(d *Data) bool {
			for _, p := range ps {
				if !p(d) {
					return false
				}
			}
			return true
		}, nil
	case *xdsmatcherv3.Matcher_MatcherList_Predicate_NotMatcher:
		inner, err := c.predicate(t.NotMatcher, config.Join(path, "not_matcher"))
		if err != nil {
			return nil, err
		}
		return func(d *Data) bool { return !inner(d) }, nil
	}
	return nil, config.Errorf(path, "predicate has no match type")
}

func (c *compiler) predicates(ps []*xdsmatcherv3.Matcher_MatcherList_Predicate, path string) ([]predicate, error) {
	out := make([]predicate, 0, len(ps))
	for i, p := range ps {
		cp, err := c.predicate(p, config.Index(path, i))
		if err != nil {
			return nil, err
		}
		out = append(out, cp)
	}
	return out, nil
}

// compileXDSStringMatcher compiles an xds.type.matcher.v3.StringMatcher
// (the same fields as Envoy's).
func compileXDSStringMatcher(sm *xdsmatcherv3.StringMatcher, path string) (func(string) bool, error) {
	if sm == nil {
		return nil, config.Unsupported(path, "custom_match single predicates", "value_match")
	}
	js, err := protojson.Marshal(sm)
	if err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	esm := &matcherv3.StringMatcher{}
	if err := protojson.Unmarshal(js, esm); err != nil {
		return nil, config.Errorf(path, "%v", err)
	}
	m, err := strmatch.Compile(esm, path)
	if err != nil {
		return nil, err
	}
	return m.Match, nil
}

func (c *compiler) input(tc *xdscorev3.TypedExtensionConfig, path string) (Input, error) {
	if tc == nil {
		return nil, config.Errorf(path, "input is required")
	}
	r, err := extension.Lookup(extension.MatchingInput, tc.GetTypedConfig(), config.Join(path, "typed_config"))
	if err != nil {
		return nil, err
	}
	if c.opts.Input != nil {
		if err := c.opts.Input(r.Config, config.Join(path, "typed_config")); err != nil {
			return nil, err
		}
	}
	return r.Ext.Factory.(InputFactory)(r.Config, config.Join(path, "typed_config"))
}

// Match runs the matcher and returns the action of the first match (nil,
// false when nothing matched and there is no on_no_match).
func (m *Matcher) Match(d *Data) (any, bool) {
	if m == nil {
		return nil, false
	}
	for i := range m.list {
		fm := &m.list[i]
		if !fm.pred(d) {
			continue
		}
		if a, ok := fm.onMatch.run(d); ok && !fm.onMatch.keepMatching {
			return a, true
		}
	}
	if t := m.tree; t != nil {
		if v, ok := t.input(d); ok {
			if om := t.lookup(v); om != nil {
				if a, ok := om.run(d); ok {
					return a, true
				}
			}
		}
	}
	if m.onNoMatch != nil {
		return m.onNoMatch.run(d)
	}
	return nil, false
}

func (om *onMatch) run(d *Data) (any, bool) {
	if om.sub != nil {
		return om.sub.Match(d)
	}
	return om.action, true
}

// lookup finds the exact entry, or the longest matching prefix.
func (t *tree) lookup(v string) *onMatch {
	if t.exact != nil {
		return t.exact[v]
	}
	for n := min(len(v), t.maxLen); n >= 0; n-- {
		if om := t.prefix[v[:n]]; om != nil {
			return om
		}
	}
	return nil
}
