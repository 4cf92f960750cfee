// Package kill_request is envoy.filters.http.kill_request, a fault
// injection tool that ends the proxy process on purpose, to test what
// runs around it (restarts, health checking, retries elsewhere). A
// request (direction REQUEST, the default) or a response (RESPONSE) whose
// kill header — x-envoy-kill-request unless kill_request_header names
// another — is true ("true", "t", "yes", "y" or "1", in any case; the
// first value only), when the probability draws it, makes the process
// log "KillRequestFilter is crashing Envoy!!!" and exit at once with
// status 134 (128 + SIGABRT: Envoy aborts on a failed RELEASE_ASSERT),
// without draining, as a crash would. The per-route config (a KillRequest
// too) replaces the probability and the request-side direction, as
// Envoy's kill_request_filter.cc.
package kill_request

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"

	killv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/kill_request/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

// Name is the filter's name.
const Name = "envoy.filters.http.kill_request"

// DefaultHeader is Envoy's default kill header.
const DefaultHeader = "x-envoy-kill-request"

// ExitCode is the process's exit status when the filter kills it.
const ExitCode = 134

// Message is logged before the process exits (Envoy's RELEASE_ASSERT
// details).
const Message = "KillRequestFilter is crashing Envoy!!!"

func init() {
	httpfilter.Register(Name, nil, &killv3.KillRequest{}, &killv3.KillRequest{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"the process logs Envoy's assert message and exits with status 134 (Envoy aborts)")
}

// crash ends the process; tests replace it.
var crash = func(log *slog.Logger) {
	log.Error("assert failure: false. Details: " + Message)
	os.Exit(ExitCode)
}

// settings is a compiled KillRequest.
type settings struct {
	num, den  uint32 // the probability, num/den
	header    string // lower case
	direction killv3.KillRequest_Direction
}

func compileSettings(c *killv3.KillRequest, path string) (*settings, error) {
	if err := config.CheckFields(c, path, "probability", "kill_request_header", "direction"); err != nil {
		return nil, err
	}
	s := &settings{header: DefaultHeader, direction: c.GetDirection()}
	if h := c.GetKillRequestHeader(); h != "" {
		s.header = headers.Lower(h)
	}
	// An unset probability is 0/100: never, as Envoy's default
	// FractionalPercent.
	p := c.GetProbability()
	s.num = p.GetNumerator()
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		s.den = 10000
	case typev3.FractionalPercent_MILLION:
		s.den = 1000000
	default:
		s.den = 100
	}
	return s, nil
}

func compile(_ *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	s, err := compileSettings(msg.(*killv3.KillRequest), path)
	if err != nil {
		return nil, err
	}
	return &filterConfig{s: s}, nil
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return compileSettings(msg.(*killv3.KillRequest), path)
}

type filterConfig struct{ s *settings }

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c.s, num: c.s.num, den: c.s.den, cb: cb}
}

type filter struct {
	cfg *settings
	// num/den is the stream's probability: the filter's, or the route's
	// once a kill request saw a per-route config (Envoy copies it into the
	// filter's config, so it applies to the response too).
	num, den uint32
	cb       httpfilter.Callbacks
	// roll draws a number for the probability; nil is math/rand.
	roll func(den uint32) uint32
}

// truthy is absl::SimpleAtob's true.
func truthy(v string) bool {
	switch strings.ToLower(v) {
	case "true", "t", "yes", "y", "1":
		return true
	}
	return false
}

func (f *filter) isKill(m *headers.Map) bool {
	v, ok := m.Lookup(f.cfg.header) // the first value only: an untrusted header
	return ok && truthy(v)
}

// draw is Envoy's evaluateFractionalPercent: random % den < num.
func (f *filter) draw() bool {
	if f.num == 0 {
		return false
	}
	if f.num >= f.den {
		return true
	}
	r := f.roll
	if r == nil {
		r = rand.Uint32N
	}
	return r(f.den) < f.num
}

// killOnRequest decides the request side.
func (f *filter) killOnRequest(h *headers.Request) bool {
	if !f.isKill(&h.Map) {
		return false
	}
	dir := f.cfg.direction
	if rs, _ := f.cb.PerRouteConfig().(*settings); rs != nil {
		dir = rs.direction
		f.num, f.den = rs.num, rs.den
	}
	return dir == killv3.KillRequest_REQUEST && f.draw()
}

// killOnResponse decides the response side: as Envoy, only the filter's
// own direction decides whether responses are looked at.
func (f *filter) killOnResponse(h *headers.Response) bool {
	if f.cfg.direction == killv3.KillRequest_REQUEST {
		return false
	}
	return f.isKill(&h.Map) && f.draw()
}

// DecodeHeaders may kill the process on a kill request.
func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	if f.killOnRequest(h) {
		crash(f.cb.Log())
	}
	return httpfilter.Continue
}

// EncodeHeaders may kill the process on a kill response.
func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	if f.killOnResponse(h) {
		crash(f.cb.Log())
	}
	return httpfilter.Continue
}
