package lua

import (
	"context"
	"errors"
	"strings"

	glua "github.com/yuin/gopher-lua"

	"github.com/legateproxy/legate/internal/httpfilter"
)

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// coroutine runs one callback; it yields when the script asks for the
// body before the body has been buffered.
type coroutine struct {
	f       *filter
	th      *glua.LState
	cancel  context.CancelFunc
	h       *handle
	waiting bool // suspended until the end of the body
	done    bool
}

// errYieldBody is what a handle method yields with to wait for the body.
var errYieldBody = glua.LString("legate:wait-body")

func (f *filter) start(name string, h *handle) *coroutine {
	co := &coroutine{f: f, h: h}
	h.co = co
	fn, ok := f.L.GetGlobal(name).(*glua.LFunction)
	if !ok {
		co.done = true
		return co
	}
	th, cancel := f.L.NewThread()
	co.th, co.cancel = th, cancel
	co.resume(fn, h.userdata(f.L))
	return co
}

func (co *coroutine) resume(fn *glua.LFunction, args ...glua.LValue) {
	ctx, cancel := context.WithTimeout(context.Background(), callbackTimeout)
	defer cancel()
	co.th.SetContext(ctx)
	st, err, vals := co.f.L.Resume(co.th, fn, args...)
	if co.h.reqHeadersChanged && co.f.cfg.clearRoute {
		// clear_route_cache, as Envoy: changed request headers re-pick
		// the route (once per run of the script, not per change).
		co.h.reqHeadersChanged = false
		co.f.cb.ClearRouteCache()
	}
	switch {
	case err != nil:
		co.done = true
		if !errors.Is(err, errResponded) && !strings.Contains(err.Error(), errResponded.Error()) {
			co.f.fail(err)
		}
	case st == glua.ResumeYield && len(vals) > 0 && vals[0] == errYieldBody:
		co.waiting = true
	default:
		co.done = true
	}
	if co.done && co.cancel != nil {
		co.cancel()
	}
}

// status is the headers callback's status: held back while the script
// waits for the body.
func (co *coroutine) status(end bool) httpfilter.Status {
	if co == nil || !co.waiting || end {
		return httpfilter.Continue
	}
	return httpfilter.StopIteration
}

// data buffers the body for a waiting script and resumes it at the end.
func (co *coroutine) data(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if co == nil || co.done || !co.waiting {
		return httpfilter.Continue
	}
	if !end {
		return httpfilter.StopAndBuffer
	}
	co.waiting = false
	co.h.body = b
	co.resume(nil, co.h.bodyUserdata(co.f.L))
	return httpfilter.Continue
}
