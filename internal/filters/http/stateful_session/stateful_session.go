// Package stateful_session is envoy.filters.http.stateful_session: it
// keeps a client on the upstream host it was first sent to. The session
// state extension reads the host's address from the request (a cookie,
// envoy.http.stateful_session.cookie, or a header,
// envoy.http.stateful_session.header) and the filter asks the load
// balancer for that host (streaminfo.Info.UpstreamOverrideHost, which the
// cluster honours when the host is in its host set with a health status
// common_lb_config.override_host_status allows). On the response, when
// the host that served it is not the one the client named, the extension
// tells the client the new one (Set-Cookie, or the header).
//
// With strict, a request whose host cannot be used fails with 503 "no
// healthy upstream" (status_on_strict_destination_not_found when the host
// is not in the cluster at all) instead of falling back to the load
// balancer. StatefulSessionPerRoute disables the filter for a route or
// replaces its config. With stat_prefix, the counters
// http.<hcm prefix>.stateful_session.<stat_prefix>.{routed,failed_open,
// failed_closed} count the requests that named a host. As Envoy's
// source/extensions/filters/http/stateful_session and
// source/extensions/http/stateful_session/{cookie,header}.
package stateful_session

import (
	"encoding/base64"
	"fmt"

	ssv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	headerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/header/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Name is the filter's name.
const Name = "envoy.filters.http.stateful_session"

func init() {
	httpfilter.Register(Name, nil, &ssv3.StatefulSession{}, &ssv3.StatefulSessionPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"session_state: envoy.http.stateful_session.cookie and envoy.http.stateful_session.header")
}

// sessionFactory is a compiled session state extension.
type sessionFactory interface {
	// create reads the session from the request; nil when the extension
	// does not apply to it (a cookie path that does not match).
	create(h *headers.Request) *session
}

// session is one request's session state (Envoy's SessionState).
type session struct {
	// address is the host the request names ("" for none).
	address string
	// update writes the chosen host into the response when it differs.
	update func(host string, h *headers.Response)
}

// sessionConfig is a compiled StatefulSession (also the body of a
// per-route override).
type sessionConfig struct {
	factory        sessionFactory // nil: no session_state, the filter does nothing
	strict         bool
	notFoundStatus int
	routed         *stats.Counter // nil without stat_prefix (and per route)
	failedOpen     *stats.Counter
	failedClosed   *stats.Counter
}

// RouteConfig is a compiled StatefulSessionPerRoute.
type RouteConfig struct {
	disabled bool
	cfg      *sessionConfig
}

func compileSession(ctx *httpfilter.Context, c *ssv3.StatefulSession, path string, withStats bool) (*sessionConfig, error) {
	if err := config.CheckFields(c, path, "session_state", "strict", "stat_prefix", "status_on_strict_destination_not_found"); err != nil {
		return nil, err
	}
	out := &sessionConfig{strict: c.GetStrict()}
	if s := c.GetStatusOnStrictDestinationNotFound(); c.GetStrict() && s != 0 {
		out.notFoundStatus = int(s)
	}
	if withStats && c.GetStatPrefix() != "" && ctx != nil && ctx.Stats != nil {
		// Envoy: <hcm prefix>stateful_session.<stat_prefix>.<name>.
		sc := ctx.Scope("stateful_session." + c.GetStatPrefix() + ".")
		out.routed, out.failedOpen, out.failedClosed = sc.Counter("routed"), sc.Counter("failed_open"), sc.Counter("failed_closed")
	}
	ss := c.GetSessionState()
	if ss == nil {
		return out, nil
	}
	p := config.Join(path, "session_state")
	if err := config.CheckFields(ss, p, "name", "typed_config"); err != nil {
		return nil, err
	}
	tp := config.Join(p, "typed_config")
	if ss.GetTypedConfig() == nil {
		return nil, config.Errorf(tp, "typed_config is required (envoy.http.stateful_session.cookie or envoy.http.stateful_session.header)")
	}
	_, msg, err := extension.Unpack(ss.GetTypedConfig(), tp)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *cookiev3.CookieBasedSessionState:
		out.factory, err = compileCookie(m, tp)
	case *headerv3.HeaderBasedSessionState:
		out.factory, err = compileHeader(m, tp)
	default:
		return nil, config.Unsupported(tp, fmt.Sprintf("session state %s", proto.MessageName(msg)),
			"envoy.http.stateful_session.cookie", "envoy.http.stateful_session.header")
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	sc, err := compileSession(ctx, msg.(*ssv3.StatefulSession), path, true)
	if err != nil {
		return nil, err
	}
	return &filterConfig{sessionConfig: sc}, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	c := msg.(*ssv3.StatefulSessionPerRoute)
	if err := config.CheckFields(c, path, "disabled", "stateful_session"); err != nil {
		return nil, err
	}
	if _, ok := c.GetOverride().(*ssv3.StatefulSessionPerRoute_Disabled); ok {
		return &RouteConfig{disabled: true}, nil
	}
	// As Envoy, per-route configs never have stats.
	sc, err := compileSession(ctx, c.GetStatefulSession(), config.Join(path, "stateful_session"), false)
	if err != nil {
		return nil, err
	}
	return &RouteConfig{cfg: sc}, nil
}

type filterConfig struct{ *sessionConfig }

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c.sessionConfig, cb: cb}
}

type filter struct {
	cfg     *sessionConfig
	cb      httpfilter.Callbacks
	session *session
}

// DecodeHeaders reads the session and asks for its host.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	if rc, ok := f.cb.PerRouteConfig().(*RouteConfig); ok && rc != nil {
		if rc.disabled {
			return httpfilter.Continue
		}
		f.cfg = rc.cfg
	}
	if f.cfg.factory == nil {
		return httpfilter.Continue
	}
	f.session = f.cfg.factory.create(h)
	if f.session == nil || f.session.address == "" {
		return httpfilter.Continue
	}
	f.cb.StreamInfo().UpstreamOverrideHost = &streaminfo.OverrideHost{
		Address: f.session.address, Strict: f.cfg.strict, NotFoundStatus: f.cfg.notFoundStatus}
	return httpfilter.Continue
}

// EncodeHeaders tells the client the host that served it, when it is not
// the one it asked for, and counts the outcome.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if f.session == nil {
		return httpfilter.Continue
	}
	info := f.cb.StreamInfo()
	attempted := f.session.address != ""
	if host := info.UpstreamHost; host != "" {
		changed := host != f.session.address
		f.session.update(host, h)
		if attempted {
			if !changed {
				inc(f.cfg.routed)
			} else if !f.cfg.strict {
				// The named host could not be used: the load balancer picked.
				inc(f.cfg.failedOpen)
			}
		}
		return httpfilter.Continue
	}
	if attempted && f.cfg.strict && info.ResponseFlags.Has(streaminfo.NoHealthyUpstream) {
		inc(f.cfg.failedClosed)
	}
	return httpfilter.Continue
}

func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// decodeBase64 is Envoy's Base64::decode: standard alphabet with padding;
// anything invalid decodes to "" (no session).
func decodeBase64(s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return ""
	}
	return string(b)
}
