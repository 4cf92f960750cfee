// Package basic_auth is envoy.filters.http.basic_auth: it checks the
// request's Basic credentials (RFC 7617) against an htpasswd list of
// users whose passwords are stored as {SHA} (base64 of SHA-1, the only
// scheme Envoy accepts) and answers 401 with a WWW-Authenticate: Basic
// challenge when they are missing or wrong. The credentials come from the
// Authorization header or the configured authentication_header; the
// user's name may be forwarded upstream in forward_username_header; per
// route (BasicAuthPerRoute) the users and the realm are replaced. As
// Envoy's basic_auth_filter.cc and config.cc; stats are
// http.<stat_prefix>.basic_auth.{allowed,denied}.
package basic_auth

import (
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	basicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/basic_auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name.
const Name = "envoy.filters.http.basic_auth"

// maxURILength bounds the path part of the default realm, as Envoy's
// MaximumUriLength (buildOriginalUri truncates the path to it).
const maxURILength = 256

func init() {
	httpfilter.Register(Name, nil, &basicv3.BasicAuth{}, &basicv3.BasicAuthPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "allow_missing and emit_dynamic_metadata are not implemented")
}

// users maps a user name to the base64 SHA-1 of its password, as written
// after {SHA} in the htpasswd line.
type users map[string]string

// RouteConfig is a compiled BasicAuthPerRoute: its users replace the
// filter's (an empty list denies everyone), its realm, when set, the
// filter's.
type RouteConfig struct {
	users users
	realm string
}

type filterConfig struct {
	users           users
	forwardHeader   string // lower case; "" forwards nothing
	authHeader      string // lower case
	realm           string // "" uses the request's URI
	allowed, denied *stats.Counter
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*basicv3.BasicAuth)
	// allow_missing and emit_dynamic_metadata (OR-combination with other
	// authentication filters) are not implemented: CheckFields refuses them.
	if err := config.CheckFields(c, path, "users", "forward_username_header", "authentication_header", "realm"); err != nil {
		return nil, err
	}
	text, err := dataSource(c.GetUsers(), config.Join(path, "users"), false)
	if err != nil {
		return nil, err
	}
	u, err := parseHtpasswd(text)
	if err != nil {
		return nil, config.Errorf(config.Join(path, "users"), "%v", err)
	}
	auth := "authorization"
	if h := c.GetAuthenticationHeader(); h != "" {
		auth = headers.Lower(h)
	}
	sc := ctx.Scope("basic_auth.")
	return &filterConfig{users: u, forwardHeader: headers.Lower(c.GetForwardUsernameHeader()), authHeader: auth,
		realm: c.GetRealm(), allowed: sc.Counter("allowed"), denied: sc.Counter("denied")}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	c := msg.(*basicv3.BasicAuthPerRoute)
	if err := config.CheckFields(c, path, "users", "realm"); err != nil {
		return nil, err
	}
	// Envoy reads a per-route list allowing it to be empty.
	text, err := dataSource(c.GetUsers(), config.Join(path, "users"), true)
	if err != nil {
		return nil, err
	}
	u, err := parseHtpasswd(text)
	if err != nil {
		return nil, config.Errorf(config.Join(path, "users"), "%v", err)
	}
	return &RouteConfig{users: u, realm: c.GetRealm()}, nil
}

// dataSource reads the users' DataSource; allowEmpty is Envoy's
// DataSource::read flag.
func dataSource(ds *corev3.DataSource, path string, allowEmpty bool) (string, error) {
	if ds == nil {
		if allowEmpty {
			return "", nil
		}
		return "", config.Errorf(path, "users is required: an htpasswd list of user:{SHA}hash lines")
	}
	if err := config.CheckFields(ds, path, "inline_string", "inline_bytes", "filename", "environment_variable"); err != nil {
		return "", err
	}
	var s string
	// A source with no specifier reads as empty (Envoy's DataSource::read),
	// which the rule below accepts or refuses.
	if ds.GetSpecifier() != nil {
		b, _, err := config.ReadDataSource(ds, path)
		if err != nil {
			return "", err
		}
		s = string(b)
	}
	if s == "" && !allowEmpty {
		return "", config.Errorf(path, "DataSource cannot be empty: give the users as user:{SHA}hash lines")
	}
	return s, nil
}

// parseHtpasswd reads htpasswd lines as Envoy's readHtpasswd: lines split
// on "\n" only (no trimming, as Envoy), empty lines and lines starting
// with "#" skipped, each other line name:{SHA}<28 characters of base64>.
func parseHtpasswd(text string) (users, error) {
	u := users{}
	for i, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		n := i + 1
		name, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("basic auth: invalid htpasswd format, username:password is expected (line %d)", n)
		}
		if name == "" || hash == "" {
			return nil, fmt.Errorf("basic auth: empty user name or password (line %d)", n)
		}
		if _, dup := u[name]; dup {
			return nil, fmt.Errorf("basic auth: duplicate user '%s' (line %d)", name, n)
		}
		h, ok := strings.CutPrefix(hash, "{SHA}")
		if !ok {
			return nil, fmt.Errorf("basic auth: unsupported htpasswd format: please use {SHA} for '%s' (line %d; e.g. htpasswd -s)", name, n)
		}
		// Base64 of a 20-byte SHA-1 digest is 28 characters.
		if len(h) != 28 {
			return nil, fmt.Errorf("basic auth: invalid SHA hash length for '%s' (line %d)", name, n)
		}
		u[name] = h
	}
	return u, nil
}

// valid reports whether password is user's.
func (u users) valid(user, password string) bool {
	want, ok := u[user]
	if !ok {
		return false
	}
	sum := sha1.Sum([]byte(password))
	got := base64.StdEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
}

// DecodeHeaders checks the credentials.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	u, realm := f.cfg.users, f.cfg.realm
	if rc, _ := f.cb.PerRouteConfig().(*RouteConfig); rc != nil {
		u = rc.users
		if rc.realm != "" {
			realm = rc.realm
		}
	}
	// Envoy reads the first value only.
	v, ok := h.Map.Lookup(f.cfg.authHeader)
	if !ok {
		return f.deny(h, realm, "User authentication failed. Missing username and password.", "no_credential_for_basic_auth")
	}
	// The scheme is matched case-sensitively, as Envoy (RFC 7617 makes it
	// case-insensitive, but Envoy compares "Basic " exactly).
	token, ok := strings.CutPrefix(v, "Basic ")
	if !ok {
		return f.deny(h, realm, "User authentication failed. Expected 'Basic' authentication scheme.", "invalid_scheme_for_basic_auth")
	}
	decoded := decodeWithoutPadding(token)
	user, password, ok := strings.Cut(decoded, ":")
	if !ok {
		return f.deny(h, realm, "User authentication failed. Invalid basic credential format.", "invalid_format_for_basic_auth")
	}
	if !u.valid(user, password) {
		return f.deny(h, realm, "User authentication failed. Invalid username/password combination.", "invalid_credential_for_basic_auth")
	}
	if f.cfg.forwardHeader != "" {
		h.Map.Set(f.cfg.forwardHeader, user)
	}
	f.cfg.allowed.Inc()
	return httpfilter.Continue
}

func (f *filter) deny(h *headers.Request, realm, body, details string) httpfilter.Status {
	f.cfg.denied.Inc()
	if realm == "" {
		realm = originalURI(h)
	}
	f.cb.SendLocalReply(401, body, httpfilter.LocalReply{Details: details,
		Headers: []httpfilter.HeaderValue{{Key: "www-authenticate", Value: `Basic realm="` + realm + `"`}}})
	return httpfilter.StopIteration
}

// originalURI is Envoy's Http::Utility::buildOriginalUri with a 256-byte
// path limit: scheme://host followed by x-envoy-original-path (the path
// before a rewrite) or the path.
func originalURI(h *headers.Request) string {
	if h.Path == "" {
		return ""
	}
	p := h.Path
	if o, ok := h.Map.Lookup("x-envoy-original-path"); ok {
		p = o
	}
	if len(p) > maxURILength {
		p = p[:maxURILength]
	}
	return h.Scheme + "://" + h.Authority + p
}

// decodeWithoutPadding is Envoy's Base64::decodeWithoutPadding: standard
// base64 whose "=" padding may be left out; anything invalid decodes to
// "".
func decodeWithoutPadding(s string) string {
	if s == "" {
		return ""
	}
	if r := len(s) % 4; r != 0 {
		s += strings.Repeat("=", 4-r)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return ""
	}
	return string(b)
}
