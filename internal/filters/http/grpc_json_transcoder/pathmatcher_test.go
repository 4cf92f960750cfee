package grpc_json_transcoder

import (
	"reflect"
	"strings"
	"testing"
)

// TestParseTemplate: the template grammar as the library parses it —
// variables bind segment ranges ("**" ranges count from the end), custom
// verbs split off, and what the library refuses is refused.
func TestParseTemplate(t *testing.T) {
	for _, c := range []struct {
		in   string
		segs []string
		verb string
		vars []templateVar
	}{
		{"/", nil, "", nil},
		{"/shelves", []string{"shelves"}, "", nil},
		{"/shelves/{shelf}", []string{"shelves", "*"}, "", []templateVar{{fieldPath: []string{"shelf"}, start: 1, end: 2}}},
		{"/shelves/{shelf.id}/books/{book}", []string{"shelves", "*", "books", "*"}, "",
			[]templateVar{{fieldPath: []string{"shelf", "id"}, start: 1, end: 2}, {fieldPath: []string{"book"}, start: 3, end: 4}}},
		{"/v1/{name=shelves/*/books/**}", []string{"v1", "shelves", "*", "books", "**"}, "",
			[]templateVar{{fieldPath: []string{"name"}, start: 1, end: -1, wildcard: true}}},
		{"/shelves/{shelf}:clear", []string{"shelves", "*"}, "clear", []templateVar{{fieldPath: []string{"shelf"}, start: 1, end: 2}}},
		{"/a/**/b", []string{"a", "**", "b"}, "", nil},
		{"/*/{x=**}", []string{"*", "**"}, "", []templateVar{{fieldPath: []string{"x"}, start: 1, end: -1, wildcard: true}}},
	} {
		got, err := parseTemplate(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got.segments, c.segs) || got.verb != c.verb || !reflect.DeepEqual(got.variables, c.vars) {
			t.Errorf("%s: got %q %q %+v, want %q %q %+v", c.in, got.segments, got.verb, got.variables, c.segs, c.verb, c.vars)
		}
	}
	for _, bad := range []string{"", "shelves", "/shelves/", "/{shelf", "/{}", "/{a={b}}", "/**/*", "/**/{x}", "/a:b/c", "/a/{x=}", "//a"} {
		if _, err := parseTemplate(bad); err == nil {
			t.Errorf("%q parsed; the library refuses it", bad)
		}
	}
}

func testMatcher(t *testing.T, rules ...string) *pathMatcher {
	t.Helper()
	pm := newPathMatcher()
	for _, r := range rules {
		method, tmpl, _ := strings.Cut(r, " ")
		if err := pm.register(method, tmpl, &registration{method: &methodInfo{grpcPath: r}, ignoredQuery: map[string]bool{"api_key": true}}); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
	}
	return pm
}

func match(pm *pathMatcher, method, target string) (string, []binding) {
	path, query, _ := strings.Cut(target, "?")
	r, bs := pm.lookup(method, path, query)
	if r == nil {
		return "", nil
	}
	return r.method.grpcPath, bs
}

// TestPathMatcherPrecedence: literals win over "*" which wins over "**",
// methods are kept apart (a custom "*" kind matches any), trailing
// slashes do not matter, and a path registered twice matches nothing.
func TestPathMatcherPrecedence(t *testing.T) {
	pm := testMatcher(t,
		"GET /shelves/{shelf}",
		"GET /shelves/special",
		"GET /shelves/{shelf}/books/{book}",
		"GET /files/**",
		"GET /files/{dir}/index",
		"POST /shelves/{shelf}",
		"* /any/{x}",
		"GET /dup",
		"POST /dup",
		"GET /dup",
		"GET /",
	)
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/shelves/7", "GET /shelves/{shelf}"},
		{"GET", "/shelves/special", "GET /shelves/special"},
		{"GET", "/shelves/7/", "GET /shelves/{shelf}"},
		{"POST", "/shelves/7", "POST /shelves/{shelf}"},
		{"PUT", "/shelves/7", ""},
		{"GET", "/shelves/7/books/9", "GET /shelves/{shelf}/books/{book}"},
		{"GET", "/shelves/7/books", ""},
		{"GET", "/files/a/index", "GET /files/{dir}/index"},
		{"GET", "/files/a/b/c", "GET /files/**"},
		{"GET", "/files", "GET /files/**"},
		{"DELETE", "/any/1", "* /any/{x}"},
		{"GET", "/dup", ""},
		{"POST", "/dup", "POST /dup"},
		{"GET", "/", "GET /"},
		{"GET", "/nothing", ""},
	} {
		if got, _ := match(pm, c.method, c.path); got != c.want {
			t.Errorf("%s %s: matched %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

// TestPathMatcherBindings: the path's variables and the query string bind
// fields, unescaped as the library does (a single segment fully, several
// by url_unescape_spec, query values fully, '+' only with
// query_param_unescape_plus), ignored parameters and ones without a value
// left out.
func TestPathMatcherBindings(t *testing.T) {
	pm := testMatcher(t, "GET /shelves/{shelf}/books/{book.id}", "GET /v1/{name=shelves/*/books/**}", "GET /raw/{x=**}")
	_, bs := match(pm, "GET", "/shelves/1/books/a%2Fb?book.title=War%20%26+Peace&api_key=k&flag&=v&book.quotes=x&book.quotes=y")
	want := []binding{
		{[]string{"shelf"}, "1"},
		{[]string{"book", "id"}, "a/b"},
		{[]string{"book", "title"}, "War &+Peace"},
		{[]string{"book", "quotes"}, "x"},
		{[]string{"book", "quotes"}, "y"},
	}
	if !reflect.DeepEqual(bs, want) {
		t.Errorf("bindings:\n got %q\nwant %q", bs, want)
	}
	_, bs = match(pm, "GET", "/v1/shelves/s1/books/a/b%2Fc%20d")
	if want := []binding{{[]string{"name"}, "shelves/s1/books/a/b%2Fc d"}}; !reflect.DeepEqual(bs, want) {
		t.Errorf("multi-segment default spec: got %q, want %q", bs, want)
	}
	pm.queryPlus = true
	_, bs = match(pm, "GET", "/shelves/1/books/2?book.title=a+b")
	if bs[2].value != "a b" {
		t.Errorf("query_param_unescape_plus: %q", bs[2].value)
	}
	for spec, want := range map[unescapeSpec]string{
		unescapeExceptReserved: "%2f%23/ %23",
		unescapeExceptSlash:    "%2f#/ %23",
		unescapeAll:            "/#/ %23",
	} {
		pm.spec = spec
		// The example of url_unescape_spec's documentation.
		if _, bs := match(pm, "GET", "/raw/%2f%23/%20%2523"); len(bs) != 1 || bs[0].value != want {
			t.Errorf("spec %d: got %q, want %q", spec, bs, want)
		}
	}
	if got := urlUnescape("%4", unescapeAll, false) + urlUnescape("%zz%41", unescapeAll, false); got != "%4%zzA" {
		t.Errorf("malformed escapes: %q", got)
	}
}

// TestPathMatcherVerbs: a custom verb is split off only when a template
// registers it, or with match_unregistered_custom_verb.
func TestPathMatcherVerbs(t *testing.T) {
	pm := testMatcher(t, "POST /shelves/{shelf}:clear", "POST /shelves/{shelf}", "POST /notes/{note}")
	for _, c := range []struct{ path, want string }{
		{"/shelves/1:clear", "POST /shelves/{shelf}:clear"},
		{"/shelves/1", "POST /shelves/{shelf}"},
		{"/notes/a:b", "POST /notes/{note}"}, // ":b" is no verb: part of the segment
	} {
		if got, _ := match(pm, "POST", c.path); got != c.want {
			t.Errorf("%s: matched %q, want %q", c.path, got, c.want)
		}
	}
	if _, bs := match(pm, "POST", "/notes/a:b"); bs[0].value != "a:b" {
		t.Errorf("segment with a colon bound %q", bs[0].value)
	}
	pm.anyVerb = true
	if got, _ := match(pm, "POST", "/notes/a:b"); got != "" {
		t.Errorf("match_unregistered_custom_verb: /notes/a:b matched %q, want nothing", got)
	}
}
