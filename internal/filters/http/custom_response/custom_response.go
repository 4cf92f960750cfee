// Package custom_response is envoy.filters.http.custom_response: when a
// response (from the upstream or a local reply) matches the
// custom_response_matcher — the unified matcher, usually on the response
// status (envoy.matching.inputs.status_code_input, status_code_class_input,
// which this package registers) — its policy replaces it. The local
// response policy (envoy.http.custom_response.local_response_policy)
// answers with a local reply: its body (formatted by body_format, with
// %LOCAL_REPLY_BODY%), status_code (else the response's) and
// response_headers_to_add, bypassing the encoder filters as Envoy's
// sendLocalReply does once response headers exist. A route's
// CustomResponse whose matcher matches (the most specific one) wins over
// the filter's. As Envoy's custom_response_filter.cc and
// local_response_policy.cc.
//
// The redirect policy (an internal redirect that recreates the stream) is
// not implemented: a config naming it is an error.
package custom_response

import (
	"strconv"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	crv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/custom_response/v3"
	localv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/local_response_policy/v3"
	redirectv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/custom_response/redirect_policy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/matcher"
	"github.com/legateproxy/legate/internal/route"
)

// Name is the filter's name.
const Name = "envoy.filters.http.custom_response"

// Names of the status code matching inputs.
const (
	StatusCodeInput      = "envoy.matching.inputs.status_code_input"
	StatusCodeClassInput = "envoy.matching.inputs.status_code_class_input"
)

func init() {
	httpfilter.Register(Name, nil, &crv3.CustomResponse{}, &crv3.CustomResponse{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"the redirect policy is not implemented")
	registerInput(StatusCodeInput, &matcherv3.HttpResponseStatusCodeMatchInput{}, func(d *matcher.Data) (string, bool) {
		if d.Resp == nil || d.Resp.Status == 0 {
			return "", false
		}
		return strconv.Itoa(d.Resp.Status), true
	})
	registerInput(StatusCodeClassInput, &matcherv3.HttpResponseStatusCodeClassMatchInput{}, func(d *matcher.Data) (string, bool) {
		if d.Resp == nil || d.Resp.Status < 100 || d.Resp.Status > 599 {
			return "", false
		}
		return string(rune('0'+d.Resp.Status/100)) + "xx", true
	})
}

// registerInput registers a response matching input unless the matcher
// package already does.
func registerInput(name string, cfg proto.Message, in matcher.Input) {
	if extension.ByName(extension.MatchingInput, name) != nil {
		return
	}
	extension.Register(extension.Extension{Name: name, Category: extension.MatchingInput, Config: cfg,
		Factory: matcher.InputFactory(func(c proto.Message, path string) (matcher.Input, error) {
			if err := config.CheckFields(c, path); err != nil {
				return nil, err
			}
			return in, nil
		})})
}

// filterConfig is a compiled CustomResponse (the filter's or a route's).
type filterConfig struct {
	m *matcher.Matcher // nil: no matcher, never matches
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c, err := compileConfig(msg.(*crv3.CustomResponse), path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return compileConfig(msg.(*crv3.CustomResponse), path)
}

func compileConfig(c *crv3.CustomResponse, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "custom_response_matcher"); err != nil {
		return nil, err
	}
	out := &filterConfig{}
	if c.GetCustomResponseMatcher() == nil {
		// As Envoy: no matcher is allowed, for filters whose policies are
		// all per route.
		return out, nil
	}
	m, err := matcher.Compile(c.GetCustomResponseMatcher(), config.Join(path, "custom_response_matcher"), compileAction)
	if err != nil {
		return nil, err
	}
	out.m = m
	return out, nil
}

// compileAction compiles a policy: the action's typed_config.
func compileAction(tc *xdscorev3.TypedExtensionConfig, path string) (any, error) {
	tp := config.Join(path, "typed_config")
	if tc.GetTypedConfig() == nil {
		return nil, config.Errorf(tp, "a custom response action needs a policy")
	}
	_, msg, err := extension.Unpack(tc.GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	switch p := msg.(type) {
	case *localv3.LocalResponsePolicy:
		return compileLocal(p, tp)
	case *redirectv3.RedirectPolicy:
		return nil, config.Unsupported(tp, "the custom response redirect policy (envoy.http.custom_response.redirect_policy)",
			"envoy.http.custom_response.local_response_policy")
	default:
		return nil, config.Errorf(tp, "%s is not a custom response policy", msg.ProtoReflect().Descriptor().FullName())
	}
}

// localPolicy is a compiled LocalResponsePolicy.
type localPolicy struct {
	body    *string
	format  format.Entry
	status  int // 0: the response's
	headers []route.HeaderOp
	// details: keep the stream's details, else set detail ("" clears
	// them, Envoy's default).
	keepDetails bool
	detail      string
}

func compileLocal(p *localv3.LocalResponsePolicy, path string) (*localPolicy, error) {
	if err := config.CheckFields(p, path, "body", "body_format", "status_code", "response_headers_to_add",
		"preserve_response_code_details", "response_code_details"); err != nil {
		return nil, err
	}
	out := &localPolicy{keepDetails: p.GetPreserveResponseCodeDetails(), detail: p.GetResponseCodeDetails()}
	if b := p.GetBody(); b != nil {
		s, err := dataSource(b, config.Join(path, "body"))
		if err != nil {
			return nil, err
		}
		out.body = &s
	}
	if bf := p.GetBodyFormat(); bf != nil {
		e, err := format.FromSubstitutionFormatString(bf, config.Join(path, "body_format"))
		if err != nil {
			return nil, err
		}
		out.format = e
	}
	if sc := p.GetStatusCode(); sc != nil {
		out.status = int(sc.GetValue()) // [200, 600), validated
	}
	ops, err := route.CompileHeaderOps(p.GetResponseHeadersToAdd(), config.Join(path, "response_headers_to_add"), compileValue)
	if err != nil {
		return nil, err
	}
	out.headers = ops
	return out, nil
}

func compileValue(text string) (route.Value, error) {
	v, err := format.CompileHeaderValue(text)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// dataSource reads a local response body (inline or from a file).
func dataSource(ds *corev3.DataSource, path string) (string, error) {
	if err := config.CheckFields(ds, path, "inline_string", "inline_bytes", "filename"); err != nil {
		return "", err
	}
	b, _, err := config.ReadDataSource(ds, path)
	return string(b), err
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks
	// held is the policy waiting for the body of a local reply it
	// formats (body_format without body).
	held   *localPolicy
	status int
}

// policy is the most specific route's matching policy, else the
// filter's.
func (f *filter) policy(h *headers.Response) *localPolicy {
	// As Envoy's HttpMatchingDataImpl here: only the response headers
	// (and the stream info) are available to the matcher.
	d := &matcher.Data{Resp: h, Info: f.cb.StreamInfo()}
	for _, pc := range f.cb.AllPerRouteConfigs() {
		if c, ok := pc.(*filterConfig); ok {
			if a, ok := c.m.Match(d); ok {
				if p, ok := a.(*localPolicy); ok {
					return p
				}
			}
		}
	}
	if a, ok := f.cfg.m.Match(d); ok {
		if p, ok := a.(*localPolicy); ok {
			return p
		}
	}
	return nil
}

// EncodeHeaders replaces a matching response.
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	p := f.policy(h)
	if p == nil {
		return httpfilter.Continue
	}
	info := f.cb.StreamInfo()
	if p.body == nil && p.format != nil && !endStream && info.ResponseCodeDetails != "via_upstream" {
		// The body format of a policy without a body formats the local
		// reply's own body: wait for it.
		f.held, f.status = p, h.Status
		return httpfilter.StopIteration
	}
	body := ""
	if p.body != nil {
		body = *p.body
	}
	f.reply(p, h.Status, body)
	return httpfilter.StopIteration
}

// EncodeData buffers the body a held policy formats.
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.held == nil {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	p := f.held
	f.held = nil
	f.reply(p, f.status, string(b.Bytes()))
	return httpfilter.StopNoBuffer
}

// reply sends the policy's local reply, as Envoy's LocalResponsePolicy::
// encodeHeaders: status_code or the response's, the body (formatted),
// the headers to add, and the response code details.
func (f *filter) reply(p *localPolicy, status int, body string) {
	info := f.cb.StreamInfo()
	if p.status != 0 {
		status = p.status
	} else if status == 0 {
		status = 500
	}
	if p.format != nil {
		saved := info.LocalReplyBody
		info.LocalReplyBody = body
		body = string(p.format.Append(nil, info))
		info.LocalReplyBody = saved
	}
	var hv []httpfilter.HeaderValue
	if len(p.headers) > 0 {
		var m headers.Map
		route.ApplyHeaderOps(&m, p.headers, info)
		for _, fd := range m.Fields() {
			hv = append(hv, httpfilter.HeaderValue{Key: fd.Name, Value: fd.Value, Append: true})
		}
	}
	details := p.detail
	if p.keepDetails {
		details = info.ResponseCodeDetails
	}
	f.cb.SendLocalReply(status, body, httpfilter.LocalReply{Details: details, Headers: hv})
}
