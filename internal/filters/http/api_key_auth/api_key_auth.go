// Package api_key_auth is envoy.filters.http.api_key_auth: it takes an API
// key from the request (the first of key_sources that yields one: a
// header, with a "Bearer " prefix stripped, a query parameter or a
// cookie), looks it up in credentials and answers 401 "Client
// authentication failed." when there is none or it is unknown; per route
// (ApiKeyAuthPerRoute) the credentials, key sources and forwarding may be
// replaced and allowed_clients restricts which clients pass (else 403
// "Client is forbidden."). Forwarding sets the client's id in a request
// header and may hide the key from the upstream. As Envoy's
// api_key_auth.cc; stats are http.<stat_prefix>.api_key_auth.{allowed,
// unauthorized,forbidden}.
package api_key_auth

import (
	"sort"
	"strings"

	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.api_key_auth"

func init() {
	httpfilter.Register(Name, nil, &apikeyv3.ApiKeyAuth{}, &apikeyv3.ApiKeyAuthPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

// source is one KeySource: exactly one of header (lower case), query and
// cookie is set.
type source struct {
	header, query, cookie string
}

// forwarding is a compiled Forwarding.
type forwarding struct {
	header string
	hide   bool
}

// authConfig is what the filter and per-route configs share (Envoy's
// ApiKeyAuthConfig): nil or empty fields defer to the filter's.
type authConfig struct {
	credentials map[string]string // key → client
	sources     []source
	// fwd is never nil: Envoy builds its Forwarding from the message's
	// forwarding field whether or not it is set, so a per-route config
	// always replaces the filter's forwarding (with none, when unset).
	fwd *forwarding
}

// RouteConfig is a compiled ApiKeyAuthPerRoute.
type RouteConfig struct {
	authConfig
	allowed map[string]bool
}

type filterConfig struct {
	authConfig
	allowed, unauthorized, forbidden *stats.Counter
}

type authMessage interface {
	proto.Message
	GetCredentials() []*apikeyv3.Credential
	GetKeySources() []*apikeyv3.KeySource
	GetForwarding() *apikeyv3.Forwarding
}

func compileAuth(m authMessage, path string) (authConfig, error) {
	var out authConfig
	for i, s := range m.GetKeySources() {
		p := config.Index(config.Join(path, "key_sources"), i)
		if err := config.CheckFields(s, p, "header", "query", "cookie"); err != nil {
			return out, err
		}
		// As Envoy, header takes precedence over query, query over cookie.
		switch {
		case s.GetHeader() != "":
			out.sources = append(out.sources, source{header: headers.Lower(s.GetHeader())})
		case s.GetQuery() != "":
			out.sources = append(out.sources, source{query: s.GetQuery()})
		case s.GetCookie() != "":
			out.sources = append(out.sources, source{cookie: s.GetCookie()})
		default:
			return out, config.Errorf(p, "One of 'header'/'query'/'cookie' must be set.")
		}
	}
	for i, c := range m.GetCredentials() {
		p := config.Index(config.Join(path, "credentials"), i)
		if err := config.CheckFields(c, p, "key", "client"); err != nil {
			return out, err
		}
		if out.credentials == nil {
			out.credentials = map[string]string{}
		}
		if _, dup := out.credentials[c.GetKey()]; dup {
			return out, config.Errorf(p, "Duplicated credential key: '%s'", c.GetKey())
		}
		out.credentials[c.GetKey()] = c.GetClient()
	}
	f := m.GetForwarding()
	if f != nil {
		if err := config.CheckFields(f, config.Join(path, "forwarding"), "header", "hide_credentials"); err != nil {
			return out, err
		}
	}
	out.fwd = &forwarding{header: headers.Lower(f.GetHeader()), hide: f.GetHideCredentials()}
	return out, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*apikeyv3.ApiKeyAuth)
	if err := config.CheckFields(c, path, "credentials", "key_sources", "forwarding"); err != nil {
		return nil, err
	}
	a, err := compileAuth(c, path)
	if err != nil {
		return nil, err
	}
	sc := ctx.Scope("api_key_auth.")
	return &filterConfig{authConfig: a, allowed: sc.Counter("allowed"), unauthorized: sc.Counter("unauthorized"),
		forbidden: sc.Counter("forbidden")}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	c := msg.(*apikeyv3.ApiKeyAuthPerRoute)
	if err := config.CheckFields(c, path, "credentials", "key_sources", "allowed_clients", "forwarding"); err != nil {
		return nil, err
	}
	a, err := compileAuth(c, path)
	if err != nil {
		return nil, err
	}
	rc := &RouteConfig{authConfig: a}
	if len(c.GetAllowedClients()) > 0 {
		rc.allowed = map[string]bool{}
		for _, cl := range c.GetAllowedClients() {
			rc.allowed[cl] = true
		}
	}
	return rc, nil
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders authenticates the request.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	creds, sources, fwd := f.cfg.credentials, f.cfg.sources, f.cfg.fwd
	rc, _ := f.cb.PerRouteConfig().(*RouteConfig)
	if rc != nil {
		if len(rc.credentials) > 0 {
			creds = rc.credentials
		}
		if len(rc.sources) > 0 {
			sources = rc.sources
		}
		fwd = rc.fwd
	}
	if len(sources) == 0 {
		return f.deny(401, "missing_key_sources")
	}
	if len(creds) == 0 {
		return f.deny(401, "missing_credentials")
	}
	key := ""
	for _, s := range sources {
		if key = s.key(h); key != "" {
			break
		}
	}
	if key == "" {
		return f.deny(401, "missing_api_key")
	}
	client, ok := creds[key]
	if !ok {
		// Envoy's details, misspelling included.
		return f.deny(401, "unkonwn_api_key")
	}
	if rc != nil && rc.allowed != nil && !rc.allowed[client] {
		return f.deny(403, "client_not_allowed")
	}
	if fwd.header != "" {
		h.Map.Set(fwd.header, client)
	}
	if fwd.hide {
		for _, s := range sources {
			s.remove(h)
		}
	}
	f.cfg.allowed.Inc()
	return httpfilter.Continue
}

func (f *filter) deny(status int, details string) httpfilter.Status {
	body := "Client authentication failed."
	if status == 401 {
		f.cfg.unauthorized.Inc()
	} else {
		body = "Client is forbidden."
		f.cfg.forbidden.Inc()
	}
	f.cb.SendLocalReply(status, body, httpfilter.LocalReply{Details: details})
	return httpfilter.StopIteration
}

// key returns the source's key, "" when it has none.
func (s source) key(h *headers.Request) string {
	switch {
	case s.header != "":
		v, _ := h.Map.Lookup(s.header)
		return strings.TrimPrefix(v, "Bearer ")
	case s.query != "":
		for _, p := range queryParams(h.Path) {
			if p.key == s.query {
				return p.value // the first value
			}
		}
		return ""
	default:
		return cookieValue(h.Map.Values("cookie"), s.cookie)
	}
}

// remove drops the source's key from the request (hide_credentials).
func (s source) remove(h *headers.Request) {
	switch {
	case s.header != "":
		h.Map.Del(s.header)
	case s.query != "":
		h.Path = removeQueryParam(h.Path, s.query)
	default:
		removeCookie(&h.Map, s.cookie)
	}
}

type param struct {
	key, value string // decoded
	raw        string // as written
}

// queryParams parses the query as Envoy's parseAndDecodeQueryString:
// "&"-separated, each name and value percent-decoded (a "+" stays a "+").
func queryParams(path string) []param {
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return nil
	}
	var out []param
	q := path[i+1:]
	for len(q) > 0 {
		part := q
		if j := strings.IndexByte(q, '&'); j >= 0 {
			part, q = q[:j], q[j+1:]
		} else {
			q = ""
		}
		k, v, _ := strings.Cut(part, "=")
		out = append(out, param{key: percentDecode(k), value: percentDecode(v), raw: part})
	}
	return out
}

// removeQueryParam removes every value of name from the query. As Envoy
// (QueryParamsMulti::replaceQueryString), the query that remains is
// rebuilt in the order of its sorted parameter names, each as name=value;
// unlike Envoy, the rebuilt parameters keep their original encoding, as
// Envoy writes the decoded values back (which can make an invalid path).
func removeQueryParam(path, name string) string {
	params := queryParams(path)
	base := path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		base = path[:i]
	}
	kept := params[:0]
	for _, p := range params {
		if p.key != name {
			kept = append(kept, p)
		}
	}
	sort.SliceStable(kept, func(a, b int) bool { return kept[a].key < kept[b].key })
	var b strings.Builder
	b.WriteString(base)
	for i, p := range kept {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		k, v, _ := strings.Cut(p.raw, "=")
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
	}
	return b.String()
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// percentDecode is Envoy's PercentEncoding::decode: %XX sequences become
// their byte; a malformed one stays as it is.
func percentDecode(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cookie is one name=value pair of a Cookie header, as Envoy's
// forEachCookie splits them (a pair without "=" is skipped, a quoted
// value loses its quotes).
type cookie struct{ name, value string }

func cookies(lines []string) []cookie {
	var out []cookie
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			if part == "" {
				continue
			}
			eq := strings.IndexByte(part, '=')
			if eq < 0 {
				continue
			}
			name := strings.TrimLeft(part[:eq], " ")
			v := part[eq+1:]
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			out = append(out, cookie{name, v})
		}
	}
	return out
}

func cookieValue(lines []string, name string) string {
	for _, c := range cookies(lines) {
		if c.name == name {
			return c.value
		}
	}
	return ""
}

// removeCookie drops the named cookie: the other cookies are joined into
// one Cookie header ("; "), which goes when none is left.
func removeCookie(m *headers.Map, name string) {
	lines := m.Values("cookie")
	if len(lines) == 0 {
		return
	}
	var kept []string
	for _, c := range cookies(lines) {
		if c.name != name {
			kept = append(kept, c.name+"="+c.value)
		}
	}
	m.Del("cookie")
	if len(kept) > 0 {
		m.Set("cookie", strings.Join(kept, "; "))
	}
}
