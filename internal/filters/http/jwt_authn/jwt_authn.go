// Package jwt_authn is envoy.filters.http.jwt_authn: JSON Web Tokens taken
// from headers, query parameters or cookies are verified against each
// provider's JWKS (inline, from a file, or fetched through a cluster and
// cached), its issuer, audiences, subjects and lifetimes; rules (or
// per-route requirement names) say which providers a request needs, with
// requires_any / requires_all / allow_missing / allow_missing_or_failed.
// A verified token's payload can be forwarded as a header, copied claim by
// claim into headers and published as dynamic metadata. Failures answer
// 401 (403 for audiences) with Envoy's messages and WWW-Authenticate.
package jwt_authn

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
)

// Name is the filter's name and its dynamic-metadata namespace.
const Name = "envoy.filters.http.jwt_authn"

func init() {
	httpfilter.Register(Name, []string{"envoy.extensions.filters.http.jwt_authn"}, &jwtv3.JwtAuthentication{}, &jwtv3.PerRouteConfig{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"filter_state_rules and header_in_metadata are not implemented; jwt_cache_config keeps verified tokens (LRU, time and audience rechecked on each use), without it a token seen again with the same key set skips only its signature check (a refetched JWKS verifies it again)")
}

type rule struct {
	match func(*headers.Request) bool
	req   requirement // nil: no verification
}

type filterConfig struct {
	providers                     map[string]*provider
	rules                         []rule
	reqMap                        map[string]requirement
	bypassCORS                    bool
	stripFailure                  bool
	allowed, denied, corsBypassed *stats.Counter
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*jwtv3.JwtAuthentication)
	if err := config.CheckFields(c, path, "providers", "rules", "bypass_cors_preflight", "requirement_map", "stat_prefix", "strip_failure_response"); err != nil {
		return nil, err
	}
	sc := ctx.Scope("jwt_authn." + c.GetStatPrefix())
	if c.GetStatPrefix() != "" {
		sc = ctx.Scope("jwt_authn." + c.GetStatPrefix() + ".")
	}
	f := &filterConfig{providers: map[string]*provider{}, reqMap: map[string]requirement{}, bypassCORS: c.GetBypassCorsPreflight(),
		stripFailure: c.GetStripFailureResponse(),
		allowed:      sc.Counter("allowed"), denied: sc.Counter("denied"), corsBypassed: sc.Counter("cors_preflight_bypassed")}
	names := make([]string, 0, len(c.GetProviders()))
	for n := range c.GetProviders() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p, err := compileProvider(ctx, n, c.GetProviders()[n], fmt.Sprintf("%s.providers[%q]", path, n), sc)
		if err != nil {
			return nil, err
		}
		f.providers[n] = p
	}
	for n, r := range c.GetRequirementMap() {
		req, err := f.requirement(r, fmt.Sprintf("%s.requirement_map[%q]", path, n))
		if err != nil {
			return nil, err
		}
		f.reqMap[n] = req
	}
	for i, r := range c.GetRules() {
		rp := config.Index(config.Join(path, "rules"), i)
		if err := config.CheckFields(r, rp, "match", "requires", "requirement_name"); err != nil {
			return nil, err
		}
		m, err := route.CompileRouteMatch(r.GetMatch(), config.Join(rp, "match"))
		if err != nil {
			return nil, err
		}
		ru := rule{match: m}
		switch {
		case r.GetRequires() != nil:
			if ru.req, err = f.requirement(r.GetRequires(), config.Join(rp, "requires")); err != nil {
				return nil, err
			}
		case r.GetRequirementName() != "":
			if ru.req = f.reqMap[r.GetRequirementName()]; ru.req == nil {
				return nil, config.Errorf(config.Join(rp, "requirement_name"), "requirement %q is not in requirement_map", r.GetRequirementName())
			}
		}
		f.rules = append(f.rules, ru)
	}
	return f, nil
}

// perRoute is a compiled PerRouteConfig.
type perRoute struct {
	disabled bool
	name     string
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*jwtv3.PerRouteConfig)
	return &perRoute{disabled: p.GetDisabled(), name: p.GetRequirementName()}, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// v and one verified token live in the filter (one allocation per
	// request for all three): most requirements verify one token.
	v     verifier
	token [1]verifiedToken
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	c := f.cfg
	if c.bypassCORS && h.Method == "OPTIONS" && h.Map.Has("origin") && h.Map.Has("access-control-request-method") {
		c.corsBypassed.Inc()
		return httpfilter.Continue
	}
	var req requirement
	if pr, ok := f.cb.PerRouteConfig().(*perRoute); ok {
		if pr.disabled {
			return httpfilter.Continue
		}
		if req = c.reqMap[pr.name]; req == nil {
			f.deny(h, errVerification("Jwt requirement "+pr.name+" is not configured"))
			return httpfilter.StopIteration
		}
	} else {
		for _, r := range c.rules {
			if r.match(h) {
				req = r.req
				break
			}
		}
	}
	if req == nil {
		return httpfilter.Continue
	}
	v := &f.v
	*v = verifier{f: f, h: h, verified: f.token[:0]}
	if err := req.check(v); err != nil {
		f.deny(h, err)
		return httpfilter.StopIteration
	}
	v.apply()
	c.allowed.Inc()
	return httpfilter.Continue
}

// deny answers 401 (403 when the audiences do not match) with Envoy's
// message and a WWW-Authenticate challenge (RFC 6750 §3).
func (f *filter) deny(h *headers.Request, err error) {
	f.cfg.denied.Inc()
	status := 401
	var je *jwtError
	if errors.As(err, &je) && je.forbidden {
		status = 403
	}
	msg := err.Error()
	realm := "http://" + h.Authority + strings.SplitN(h.Path, "?", 2)[0]
	hv := []httpfilter.HeaderValue{{Key: "www-authenticate", Value: `Bearer realm="` + realm + `", error="invalid_token"`}}
	if f.cfg.stripFailure {
		msg = ""
	}
	f.cb.SendLocalReply(status, msg, httpfilter.LocalReply{Details: "jwt_authn_access_denied{" + strings.ReplaceAll(err.Error(), " ", "_") + "}", Headers: hv})
}

// jwtError is a verification failure with Envoy's message.
type jwtError struct {
	msg       string
	missing   bool
	forbidden bool
}

func (e *jwtError) Error() string { return e.msg }

func errVerification(msg string) error { return &jwtError{msg: msg} }

var errMissing = &jwtError{msg: "Jwt is missing", missing: true}

// verifier carries one request's verification: the tokens found and
// what the verified ones add to the request.
type verifier struct {
	f        *filter
	h        *headers.Request
	verified []verifiedToken
}

type verifiedToken struct {
	p       *provider
	loc     tokenLocation
	payload map[string]any
	raw     []byte // the payload's JSON
}

// apply forwards what verified tokens carry, as the providers ask.
func (v *verifier) apply() {
	for _, t := range v.verified {
		p := t.p
		if !p.forward {
			t.loc.remove(v.h)
		}
		if p.forwardPayloadHeader != "" {
			enc := base64.RawURLEncoding
			if p.padForwardPayload {
				enc = base64.URLEncoding
			}
			v.h.Map.Set(p.forwardPayloadHeader, enc.EncodeToString(t.raw))
		}
		for _, ch := range p.claimToHeaders {
			if s, ok := claimString(t.payload, ch.claim); ok {
				v.h.Map.Set(ch.header, s)
			}
		}
		if p.payloadInMetadata != "" {
			if st, err := structpb.NewStruct(t.payload); err == nil {
				v.f.cb.StreamInfo().SetDynamicMetadata(Name, map[string]*structpb.Value{p.payloadInMetadata: structpb.NewStructValue(st)})
			}
		}
		if p.clearRouteCache && (p.forwardPayloadHeader != "" || len(p.claimToHeaders) > 0) {
			v.f.cb.ClearRouteCache()
		}
	}
}

// claimString reads a claim (nested with "."), as a string, a number or
// a boolean, or a list joined by ",", as Envoy's claim_to_headers.
func claimString(payload map[string]any, name string) (string, bool) {
	var cur any = payload
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[part]; !ok {
			return "", false
		}
	}
	switch x := cur.(type) {
	case string:
		return x, true
	case bool, float64, json.Number:
		return fmt.Sprint(x), true
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				parts = append(parts, s)
			}
		}
		return strings.Join(parts, ","), len(parts) > 0
	}
	return "", false
}

// tokenChar is the alphabet of a JWT: base64url and the dots between its
// parts.
var tokenChar = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_." {
		t[c] = true
	}
	return t
}()

// extractJWT is Envoy's extractJWT for what follows a header's value
// prefix: the token starts at the first JWT character and ends before the
// next character that is not one ("Bearer  t", "Bearer t, x" and
// "Bearer t;x" all give t). With no JWT character at all the value is
// kept, as Envoy does.
func extractJWT(v string) string {
	start := 0
	for start < len(v) && !tokenChar[v[start]] {
		start++
	}
	if start == len(v) {
		return v
	}
	end := start
	for end < len(v) && tokenChar[v[end]] {
		end++
	}
	return v[start:end]
}

// tokenLocation is where a token was (or may be) found.
type tokenLocation struct {
	header, prefix, param, cookie string
}

func (l tokenLocation) extract(h *headers.Request) (string, bool) {
	switch {
	case l.header != "":
		v := h.Map.Get(l.header)
		if v == "" {
			return "", false
		}
		if l.prefix != "" {
			i := strings.Index(v, l.prefix)
			if i < 0 {
				return "", false
			}
			v = extractJWT(v[i+len(l.prefix):])
		}
		return strings.TrimSpace(v), v != ""
	case l.param != "":
		_, q, ok := strings.Cut(h.Path, "?")
		if !ok {
			return "", false
		}
		vs, _ := url.ParseQuery(q)
		v := vs.Get(l.param)
		return v, v != ""
	case l.cookie != "":
		for _, line := range h.Map.Values("cookie") {
			for _, part := range strings.Split(line, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
				if ok && k == l.cookie {
					return v, v != ""
				}
			}
		}
	}
	return "", false
}

// remove takes a forwarded-no-more token out of the request.
func (l tokenLocation) remove(h *headers.Request) {
	if l.header != "" {
		h.Map.Del(l.header)
	}
}
