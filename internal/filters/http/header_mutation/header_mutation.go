// Package header_mutation is Envoy's header mutation filter
// (envoy.filters.http.header_mutation): ordered lists of header mutations
// — remove a header, remove every header whose name matches a string
// matcher, or add one with a HeaderValueOption (append_action,
// keep_empty_value, %VARIABLE% substitutions) — applied to the request
// headers, the response headers and the request and response trailers.
//
// As Envoy's header_mutation.cc: the filter's own mutations run first,
// then those of every per-route HeaderMutationPerRoute config found for
// the stream (weighted cluster, route, virtual host, route configuration),
// most specific first, or least specific first with
// most_specific_header_mutations_wins, so that later mutations override
// earlier ones. The per-route configs are looked up once per stream (when
// the request headers arrive, or when the response starts if they never
// reached the filter). Each mutation sees the result of the ones before
// it, and a substitution such as %REQ(x)% reads the headers as they are
// at that point.
//
// The filter may also run in a cluster's upstream filter chain: there it
// mutates the upstream request and response, and substitutions read the
// upstream request's headers.
package header_mutation

import (
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Name is the filter's name.
const Name = "envoy.filters.http.header_mutation"

func init() {
	httpfilter.Register(Name, nil, &hmv3.HeaderMutation{}, &hmv3.HeaderMutationPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute, Upstream: true},
		"query_parameter_mutations and formatters are not implemented; removing a pseudo-header is refused "+
			"and remove_on_match never removes one")
}

// kind is what a mutation does.
type kind uint8

const (
	remove kind = iota
	add
	removeOnMatch
)

// mutation is one compiled envoy.config.common.mutation_rules.v3.HeaderMutation.
type mutation struct {
	kind  kind
	name  string            // remove
	op    []route.HeaderOp  // add: one op, a slice for route.ApplyHeaderOps
	match func(string) bool // removeOnMatch
}

// list is an ordered list of mutations.
type list struct {
	ms []mutation
	// dynamic: some value has %VARIABLE% substitutions.
	dynamic bool
}

// Mutations is a compiled Mutations message: the lists for each part of
// the exchange.
type Mutations struct {
	request, response, requestTrailers, responseTrailers list
}

// filterConfig is the compiled HeaderMutation filter config.
type filterConfig struct {
	mutations        *Mutations
	mostSpecificWins bool
	// only is mutations alone, the levels of a stream without per-route
	// configs.
	only []*Mutations
}

func compile(_ *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	c := cfg.(*hmv3.HeaderMutation)
	if err := config.CheckFields(c, path, "mutations", "most_specific_header_mutations_wins"); err != nil {
		return nil, err
	}
	m, err := compileMutations(c.GetMutations(), config.Join(path, "mutations"))
	if err != nil {
		return nil, err
	}
	return &filterConfig{mutations: m, mostSpecificWins: c.GetMostSpecificHeaderMutationsWins(), only: []*Mutations{m}}, nil
}

func compilePerRoute(_ *httpfilter.Context, cfg proto.Message, path string) (any, error) {
	c := cfg.(*hmv3.HeaderMutationPerRoute)
	if err := config.CheckFields(c, path, "mutations"); err != nil {
		return nil, err
	}
	return compileMutations(c.GetMutations(), config.Join(path, "mutations"))
}

func compileMutations(c *hmv3.Mutations, path string) (*Mutations, error) {
	out := &Mutations{}
	if c == nil {
		return out, nil
	}
	if err := config.CheckFields(c, path, "request_mutations", "response_mutations",
		"request_trailers_mutations", "response_trailers_mutations"); err != nil {
		return nil, err
	}
	for _, l := range []struct {
		dst   *list
		src   []*mutationrulesv3.HeaderMutation
		field string
	}{
		{&out.request, c.GetRequestMutations(), "request_mutations"},
		{&out.response, c.GetResponseMutations(), "response_mutations"},
		{&out.requestTrailers, c.GetRequestTrailersMutations(), "request_trailers_mutations"},
		{&out.responseTrailers, c.GetResponseTrailersMutations(), "response_trailers_mutations"},
	} {
		var err error
		if *l.dst, err = compileList(l.src, config.Join(path, l.field)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func compileList(src []*mutationrulesv3.HeaderMutation, path string) (list, error) {
	var l list
	for i, hm := range src {
		p := config.Index(path, i)
		if err := config.CheckFields(hm, p, "remove", "append", "remove_on_match"); err != nil {
			return list{}, err
		}
		var m mutation
		switch a := hm.GetAction().(type) {
		case *mutationrulesv3.HeaderMutation_Remove:
			name := headers.Lower(a.Remove)
			if len(name) > 0 && name[0] == ':' {
				return list{}, config.Errorf(config.Join(p, "remove"), "removing the pseudo-header %q is not implemented by legate", a.Remove)
			}
			m = mutation{kind: remove, name: name}
		case *mutationrulesv3.HeaderMutation_Append:
			op, err := route.CompileHeaderOp(a.Append, config.Join(p, "append"), compileValue)
			if err != nil {
				return list{}, err
			}
			m = mutation{kind: add, op: []route.HeaderOp{op}}
			l.dynamic = l.dynamic || op.Value != nil
		case *mutationrulesv3.HeaderMutation_RemoveOnMatch_:
			rp := config.Join(p, "remove_on_match")
			if err := config.CheckFields(a.RemoveOnMatch, rp, "key_matcher"); err != nil {
				return list{}, err
			}
			if a.RemoveOnMatch.GetKeyMatcher() == nil {
				return list{}, config.Errorf(config.Join(rp, "key_matcher"), "remove_on_match needs a key_matcher")
			}
			match, err := route.CompileStringMatcher(a.RemoveOnMatch.GetKeyMatcher(), config.Join(rp, "key_matcher"))
			if err != nil {
				return list{}, err
			}
			m = mutation{kind: removeOnMatch, match: match}
		default:
			return list{}, config.Errorf(p, "a header mutation needs one of remove, append or remove_on_match")
		}
		l.ms = append(l.ms, m)
	}
	return l, nil
}

// compileValue compiles a header value with %VARIABLE% substitutions, as
// route headers_to_add values are.
func compileValue(text string) (route.Value, error) {
	f, err := format.CompileHeaderValue(text)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// apply runs the mutations in order on m; info renders substitutions (nil
// when the list has none).
func (l *list) apply(m *headers.Map, info *streaminfo.Info) {
	for i := range l.ms {
		mu := &l.ms[i]
		switch mu.kind {
		case remove:
			m.Del(mu.name)
		case add:
			route.ApplyHeaderOps(m, mu.op, info)
		case removeOnMatch:
			m.DelFunc(func(f headers.Field) bool { return mu.match(f.Name) })
		}
	}
}

// NewFilter makes the filter for one stream.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cb: cb, cfg: c}
}

type filter struct {
	cb  httpfilter.Callbacks
	cfg *filterConfig
	// levels is the filter's mutations followed by the per-route ones,
	// in the order they apply; nil until looked up.
	levels []*Mutations
}

// mutations returns every Mutations that applies to the stream, in order:
// the filter's, then the per-route configs (most specific first unless
// most_specific_header_mutations_wins). They are looked up once, as Envoy
// does, so the request and the response see the same configs.
func (f *filter) mutations() []*Mutations {
	if f.levels != nil {
		return f.levels
	}
	prs := f.cb.AllPerRouteConfigs() // most specific first
	if len(prs) == 0 {
		f.levels = f.cfg.only
		return f.levels
	}
	levels := make([]*Mutations, 0, 1+len(prs))
	levels = append(levels, f.cfg.mutations)
	start := len(levels)
	for _, pr := range prs {
		if m, ok := pr.(*Mutations); ok {
			levels = append(levels, m)
		}
	}
	if f.cfg.mostSpecificWins {
		rest := levels[start:]
		for i, j := 0, len(rest)-1; i < j; i, j = i+1, j-1 {
			rest[i], rest[j] = rest[j], rest[i]
		}
	}
	f.levels = levels
	return levels
}

// info is the stream info substitutions read, with the headers the
// filter is mutating: the stream's own record when those are the
// stream's (a downstream filter), else a copy pointing at them (an
// upstream filter, whose headers are the upstream request's and
// response's).
func (f *filter) info(req *headers.Request, resp *headers.Response, trailers *headers.Map) *streaminfo.Info {
	info := f.cb.StreamInfo()
	if (req == nil || req == info.Request) && (resp == nil || resp == info.Response) &&
		(trailers == nil || trailers == info.RespTrailers) {
		return info
	}
	c := *info
	if req != nil {
		c.Request = req
	}
	if resp != nil {
		c.Response = resp
	}
	if trailers != nil {
		c.RespTrailers = trailers
	}
	return &c
}

// run applies the part of every level that pick selects to m.
func (f *filter) run(m *headers.Map, pick func(*Mutations) *list, req *headers.Request, resp *headers.Response, trailers *headers.Map) {
	var info *streaminfo.Info
	for _, lv := range f.mutations() {
		l := pick(lv)
		if l.dynamic && info == nil {
			info = f.info(req, resp, trailers)
		}
		l.apply(m, info)
	}
}

func pickRequest(m *Mutations) *list          { return &m.request }
func pickResponse(m *Mutations) *list         { return &m.response }
func pickRequestTrailers(m *Mutations) *list  { return &m.requestTrailers }
func pickResponseTrailers(m *Mutations) *list { return &m.responseTrailers }

// DecodeHeaders applies the request mutations.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	f.run(&h.Map, pickRequest, h, nil, nil)
	return httpfilter.Continue
}

// EncodeHeaders applies the response mutations.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	f.run(&h.Map, pickResponse, f.cb.RequestHeaders(), h, nil)
	return httpfilter.Continue
}

// DecodeTrailers applies the request trailer mutations.
func (f *filter) DecodeTrailers(t *headers.Map) httpfilter.Status {
	f.run(t, pickRequestTrailers, f.cb.RequestHeaders(), nil, nil)
	return httpfilter.Continue
}

// EncodeTrailers applies the response trailer mutations.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	f.run(t, pickResponseTrailers, f.cb.RequestHeaders(), f.cb.ResponseHeaders(), t)
	return httpfilter.Continue
}
