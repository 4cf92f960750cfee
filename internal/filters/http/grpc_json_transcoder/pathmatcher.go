package grpc_json_transcoder

import (
	"errors"
	"strings"
)

// This file is the path matching of grpc-httpjson-transcoding, the library
// Envoy's transcoder uses: google.api.http path templates
// (http_template.cc), the trie they are registered in and looked up by
// (path_matcher.h, path_matcher_node.cc) and the variable bindings taken
// from the path and the query string, with the library's unescaping rules
// (percent_encoding.h). Its quirks are kept on purpose: a path registered
// twice for one method matches nothing, literal segments compare escaped,
// a custom verb is only split off when some template uses it.

// Trie keys of the template segments that are not literals.
const (
	singleParamKey = "/."
	wildcardPart   = "*"
	wildcardPath   = "**"
	// methodWildcard is the HTTP method key that matches any method (a
	// custom pattern of kind "*").
	methodWildcard = "*"
)

// pathTemplate is a parsed path template:
//
//	Template = "/" Segments [ Verb ] ;
//	Segments = Segment { "/" Segment } ;
//	Segment  = "*" | "**" | LITERAL | Variable ;
//	Variable = "{" FieldPath [ "=" Segments ] "}" ;
//	FieldPath = IDENT { "." IDENT } ;
//	Verb     = ":" LITERAL ;
type pathTemplate struct {
	segments  []string
	verb      string
	variables []templateVar
}

// templateVar is a variable of a template: the segments [start, end) it
// binds; with "**" inside, end is negative and counts from the end of the
// request path (-1 is its last segment).
type templateVar struct {
	fieldPath  []string
	start, end int
	wildcard   bool
}

var errBadTemplate = errors.New("invalid path template")

// parseTemplate parses a path template as the library's parser does.
func parseTemplate(s string) (*pathTemplate, error) {
	if s == "/" {
		return &pathTemplate{}, nil
	}
	p := &templateParser{in: s}
	if !p.consume('/') || !p.segments() {
		return nil, errBadTemplate
	}
	if p.i < len(p.in) && p.in[p.i] == ':' {
		p.i++
		v, ok := p.literal()
		if !ok {
			return nil, errBadTemplate
		}
		p.t.verb = v
	}
	if p.i != len(p.in) {
		return nil, errBadTemplate
	}
	// No wildcard may follow "**".
	seenPath := false
	for _, seg := range p.t.segments {
		if seenPath && (seg == wildcardPart || seg == wildcardPath || seg == singleParamKey) {
			return nil, errBadTemplate
		}
		if seg == wildcardPath {
			seenPath = true
		}
	}
	for i := range p.t.variables {
		if v := &p.t.variables[i]; v.wildcard {
			v.end = v.end - len(p.t.segments) - 1
		}
	}
	return &p.t, nil
}

type templateParser struct {
	in    string
	i     int
	t     pathTemplate
	inVar bool
}

func (p *templateParser) consume(c byte) bool {
	if p.i < len(p.in) && p.in[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *templateParser) segments() bool {
	if !p.segment() {
		return false
	}
	for p.consume('/') {
		if !p.segment() {
			return false
		}
	}
	return true
}

func (p *templateParser) segment() bool {
	if p.i >= len(p.in) {
		return false
	}
	switch p.in[p.i] {
	case '*':
		p.i++
		if p.consume('*') {
			p.t.segments = append(p.t.segments, wildcardPath)
			if p.inVar {
				p.t.variables[len(p.t.variables)-1].wildcard = true
			}
			return true
		}
		p.t.segments = append(p.t.segments, wildcardPart)
		return true
	case '{':
		return p.variable()
	}
	lit, ok := p.literal()
	if ok {
		p.t.segments = append(p.t.segments, lit)
	}
	return ok
}

func (p *templateParser) variable() bool {
	if !p.consume('{') || p.inVar {
		return false
	}
	p.inVar = true
	p.t.variables = append(p.t.variables, templateVar{start: len(p.t.segments)})
	v := func() *templateVar { return &p.t.variables[len(p.t.variables)-1] }
	for {
		id, ok := p.identifier()
		if !ok {
			return false
		}
		v().fieldPath = append(v().fieldPath, id)
		if !p.consume('.') {
			break
		}
	}
	if p.consume('=') {
		if !p.segments() {
			return false
		}
	} else {
		p.t.segments = append(p.t.segments, wildcardPart)
	}
	p.inVar = false
	v().end = len(p.t.segments)
	if v().start >= v().end {
		return false
	}
	return p.consume('}')
}

// identifier reads a field name: anything up to '.', '}' or '='.
func (p *templateParser) identifier() (string, bool) {
	start := p.i
	for p.i < len(p.in) && p.in[p.i] != '.' && p.in[p.i] != '}' && p.in[p.i] != '=' {
		p.i++
	}
	return p.in[start:p.i], p.i > start
}

// literal reads a literal segment: anything up to '/', ':' or '}'.
func (p *templateParser) literal() (string, bool) {
	start := p.i
	for p.i < len(p.in) && p.in[p.i] != '/' && p.in[p.i] != ':' && p.in[p.i] != '}' {
		p.i++
	}
	return p.in[start:p.i], p.i > start
}

// unescapeSpec is url_unescape_spec.
type unescapeSpec int

const (
	unescapeExceptReserved unescapeSpec = iota // ALL_CHARACTERS_EXCEPT_RESERVED
	unescapeExceptSlash                        // ALL_CHARACTERS_EXCEPT_SLASH
	unescapeAll                                // ALL_CHARACTERS
)

// isReserved is RFC 6570's reserved set.
func isReserved(c byte) bool { return strings.IndexByte("!#$&'()*+,/:;=?@[]", c) >= 0 }

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// urlUnescape is the library's UrlUnescapeString: %XX sequences are
// decoded unless spec keeps them, malformed ones stay as they are, and
// with plus a '+' is a space.
func urlUnescape(s string, spec unescapeSpec, plus bool) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plus && c == '+' {
			b.WriteByte(' ')
			continue
		}
		if c == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				d := hi<<4 | lo
				keep := (spec == unescapeExceptReserved && isReserved(d)) || (spec == unescapeExceptSlash && d == '/')
				if !keep {
					b.WriteByte(d)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}

// binding is a value for a field path of the request message, from the
// path or the query string (the library's VariableBinding).
type binding struct {
	fieldPath []string
	value     string
}

// registration is what one registered template leads to.
type registration struct {
	method    *methodInfo
	variables []templateVar
	// bodyPath is the rule's body ("" for none, "*" for all).
	bodyPath string
	// ignoredQuery are ignored_query_parameters.
	ignoredQuery map[string]bool
}

type lookupResult struct {
	reg      *registration
	multiple bool
}

// matcherNode is one node of the trie: children by segment, results by
// HTTP method (and custom verb).
type matcherNode struct {
	children map[string]*matcherNode
	results  map[string]*lookupResult
	wildcard bool
}

func newNode() *matcherNode {
	return &matcherNode{children: map[string]*matcherNode{}, results: map[string]*lookupResult{}}
}

// insert adds a template path; a second registration of the same path
// and method replaces the first and marks it as registered twice, which
// makes lookups of it fail.
func (n *matcherNode) insert(segs []string, key string, r *registration) {
	if len(segs) == 0 {
		if ex, ok := n.results[key]; ok {
			ex.reg, ex.multiple = r, true
			return
		}
		n.results[key] = &lookupResult{reg: r}
		return
	}
	c := n.children[segs[0]]
	if c == nil {
		c = newNode()
		n.children[segs[0]] = c
	}
	if segs[0] == wildcardPath {
		c.wildcard = true
	}
	c.insert(segs[1:], key, r)
}

func (n *matcherNode) result(key string) *lookupResult {
	if r, ok := n.results[key]; ok {
		return r
	}
	if r, ok := n.results[methodWildcard]; ok {
		return r
	}
	return nil
}

// lookup is PathMatcherNode::LookupPath: literals first, then a single
// parameter, "*" and "**"; a "**" node keeps consuming segments until the
// rest matches one of its children.
func (n *matcherNode) lookup(parts []string, i int, key string) *lookupResult {
	for ; ; i++ {
		if i == len(parts) {
			if r := n.result(key); r != nil {
				return r
			}
			// A "**" child matches nothing too: the root matches "/**".
			if c := n.children[wildcardPath]; c != nil {
				return c.result(key)
			}
			return nil
		}
		if r := n.lookupChild(parts[i], parts, i, key); r != nil {
			return r
		}
		if !n.wildcard {
			break
		}
	}
	for _, k := range [...]string{singleParamKey, wildcardPart, wildcardPath} {
		if r := n.lookupChild(k, parts, i, key); r != nil {
			return r
		}
	}
	return nil
}

func (n *matcherNode) lookupChild(k string, parts []string, i int, key string) *lookupResult {
	if c := n.children[k]; c != nil {
		return c.lookup(parts, i+1, key)
	}
	return nil
}

// pathMatcher maps (HTTP method, path) to a method.
type pathMatcher struct {
	root        *matcherNode
	customVerbs map[string]bool
	spec        unescapeSpec
	queryPlus   bool
	anyVerb     bool // match_unregistered_custom_verb
}

func newPathMatcher() *pathMatcher {
	return &pathMatcher{root: newNode(), customVerbs: map[string]bool{}}
}

// register adds a template for an HTTP method.
func (pm *pathMatcher) register(httpMethod, tmpl string, r *registration) error {
	t, err := parseTemplate(tmpl)
	if err != nil {
		return err
	}
	reg := *r
	reg.variables = t.variables
	pm.root.insert(t.segments, httpMethod+t.verb, &reg)
	if t.verb != "" {
		pm.customVerbs[t.verb] = true
	}
	return nil
}

// requestParts splits a request path (without its query) into segments,
// taking off a custom verb that some template registered (any, with
// match_unregistered_custom_verb) and trailing empty segments.
func (pm *pathMatcher) requestParts(path string) (parts []string, verb string) {
	lastColon, lastSlash := strings.LastIndexByte(path, ':'), strings.LastIndexByte(path, '/')
	if lastColon >= 0 && lastColon > lastSlash {
		if v := path[lastColon+1:]; pm.anyVerb || pm.customVerbs[v] {
			verb, path = v, path[:lastColon]
		}
	}
	if len(path) > 0 {
		parts = strings.Split(path[1:], "/")
	}
	for len(parts) > 0 && parts[len(parts)-1] == "" {
		parts = parts[:len(parts)-1]
	}
	return parts, verb
}

// lookup finds the method of a request and its bindings: the path's
// variables, then the query parameters (but the ignored ones).
func (pm *pathMatcher) lookup(httpMethod, path, query string) (*registration, []binding) {
	parts, verb := pm.requestParts(path)
	res := pm.root.lookup(parts, 0, httpMethod+verb)
	if res == nil || res.reg == nil || res.multiple {
		return nil, nil
	}
	r := res.reg
	var bs []binding
	for _, v := range r.variables {
		end := v.end
		if end < 0 {
			end = len(parts) + v.end + 1
		}
		// A variable of several segments (or with "**") keeps what the
		// unescape spec says; a single segment is fully unescaped.
		spec := unescapeAll
		if end-v.start > 1 || v.end < 0 {
			spec = pm.spec
		}
		var val strings.Builder
		for i := v.start; i < end && i < len(parts); i++ {
			if i > v.start {
				val.WriteByte('/')
			}
			val.WriteString(urlUnescape(parts[i], spec, false))
		}
		bs = append(bs, binding{fieldPath: v.fieldPath, value: val.String()})
	}
	if query != "" {
		for _, param := range strings.Split(query, "&") {
			eq := strings.IndexByte(param, '=')
			if eq <= 0 {
				continue // no name, or no value: not a binding
			}
			name := param[:eq]
			if r.ignoredQuery[name] {
				continue
			}
			bs = append(bs, binding{fieldPath: strings.Split(name, "."), value: urlUnescape(param[eq+1:], unescapeAll, pm.queryPlus)})
		}
	}
	return r, bs
}
