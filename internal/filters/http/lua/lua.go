// Package lua is envoy.filters.http.lua: Envoy's Lua API —
// envoy_on_request / envoy_on_response with a stream handle (headers,
// body and body chunks, trailers, stream info with dynamic metadata,
// connection, logging, httpCall through a cluster, respond, base64Escape,
// timestamp, filterContext) — on gopher-lua, an embedded Lua 5.1 VM
// written in Go. A script that needs the body is suspended (a coroutine)
// until the body has been buffered. A script error is logged and counted
// (lua.errors) and the stream goes on, as in Envoy; every callback is
// bounded in time, and the VM's call stack and registry in size.
package lua

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	httpfilter.Register("envoy.filters.http.lua", []string{"envoy.lua"}, &luav3.Lua{}, &luav3.LuaPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"Lua 5.1 (gopher-lua); verifySignature, importPublicKey and shared_vm_id are not implemented")
}

// callbackTimeout bounds one callback (a script that loops is stopped).
const callbackTimeout = 5 * time.Second

// script is a compiled Lua chunk with a pool of VMs that ran it.
type script struct {
	name  string
	proto *glua.FunctionProto
	pool  sync.Pool
	hasRq bool
	hasRs bool
}

func compileScript(ds *corev3.DataSource, inline, name, path string) (*script, error) {
	src := inline
	if ds.GetSpecifier() != nil {
		b, _, err := config.ReadDataSource(ds, path)
		if err != nil {
			return nil, err
		}
		src = string(b)
	}
	chunk, err := parse.Parse(stringsReader(src), name)
	if err != nil {
		return nil, config.Errorf(path, "Lua syntax error: %v", err)
	}
	fp, err := glua.Compile(chunk, name)
	if err != nil {
		return nil, config.Errorf(path, "Lua: %v", err)
	}
	s := &script{name: name, proto: fp}
	// Run it once now: errors in its top level (a missing module) are
	// config errors, as Envoy's, and we learn which callbacks it has.
	L, err := s.newState()
	if err != nil {
		return nil, config.Errorf(path, "Lua: %v", err)
	}
	_, s.hasRq = L.GetGlobal("envoy_on_request").(*glua.LFunction)
	_, s.hasRs = L.GetGlobal("envoy_on_response").(*glua.LFunction)
	s.pool.Put(L)
	return s, nil
}

func (s *script) newState() (*glua.LState, error) {
	L := glua.NewState(glua.Options{CallStackSize: 200, RegistrySize: 1024 * 4, RegistryMaxSize: 1024 * 256, MinimizeStackMemory: true})
	registerTypes(L)
	L.Push(L.NewFunctionFromProto(s.proto))
	if err := L.PCall(0, 0, nil); err != nil {
		L.Close()
		return nil, err
	}
	return L, nil
}

func (s *script) get() (*glua.LState, error) {
	if L, ok := s.pool.Get().(*glua.LState); ok {
		return L, nil
	}
	return s.newState()
}

type filterConfig struct {
	def        *script
	named      map[string]*script
	async      *asyncclient.Client
	errors     *stats.Counter
	clearRoute bool
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*luav3.Lua)
	if err := config.CheckFields(c, path, "inline_code", "default_source_code", "source_codes", "stat_prefix", "clear_route_cache"); err != nil {
		return nil, err
	}
	f := &filterConfig{named: map[string]*script{}, async: ctx.Async, clearRoute: c.GetClearRouteCache() == nil || c.GetClearRouteCache().GetValue()}
	if c.GetDefaultSourceCode() != nil || c.GetInlineCode() != "" {
		s, err := compileScript(c.GetDefaultSourceCode(), c.GetInlineCode(), "default", config.Join(path, "default_source_code"))
		if err != nil {
			return nil, err
		}
		f.def = s
	}
	for n, ds := range c.GetSourceCodes() {
		s, err := compileScript(ds, "", n, fmt.Sprintf("%s.source_codes[%q]", path, n))
		if err != nil {
			return nil, err
		}
		f.named[n] = s
	}
	name := "lua."
	if p := c.GetStatPrefix(); p != "" {
		name = "lua." + p + "."
	}
	f.errors = ctx.Scope(name).Counter("errors")
	return f, nil
}

type perRoute struct {
	disabled bool
	name     string
	inline   *script
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	p := msg.(*luav3.LuaPerRoute)
	out := &perRoute{disabled: p.GetDisabled(), name: p.GetName()}
	if p.GetSourceCode() != nil {
		s, err := compileScript(p.GetSourceCode(), "", "route", config.Join(path, "source_code"))
		if err != nil {
			return nil, err
		}
		out.inline = s
	}
	if p.GetFilterContext() != nil {
		return nil, config.Unsupported(config.Join(path, "filter_context"), "filter_context")
	}
	return out, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg    *filterConfig
	cb     httpfilter.Callbacks
	s      *script
	L      *glua.LState
	req    *coroutine
	resp   *coroutine
	picked bool
}

// pick chooses the script for the stream (per-route name or inline code
// over the default) and takes a VM.
func (f *filter) pick() bool {
	if f.picked {
		return f.L != nil
	}
	f.picked = true
	s := f.cfg.def
	if pr, ok := f.cb.PerRouteConfig().(*perRoute); ok {
		switch {
		case pr.disabled:
			return false
		case pr.inline != nil:
			s = pr.inline
		case pr.name != "":
			s = f.cfg.named[pr.name]
		}
	}
	if s == nil {
		return false
	}
	L, err := s.get()
	if err != nil {
		f.fail(err)
		return false
	}
	f.s, f.L = s, L
	return true
}

func (f *filter) fail(err error) {
	f.cfg.errors.Inc()
	f.cb.Log().Error("Lua script error; the stream continues", "error", err)
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	if !f.pick() || !f.s.hasRq {
		return httpfilter.Continue
	}
	f.req = f.start("envoy_on_request", &handle{f: f, req: h, end: end})
	return f.req.status(end)
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	return f.req.data(b, end)
}

func (f *filter) DecodeTrailers(t *headers.Map) httpfilter.Status {
	if f.req != nil {
		f.req.h.trailers = t
	}
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	if !f.pick() || !f.s.hasRs || f.cb.StreamInfo().ResponseCodeDetails == "lua_response" {
		return httpfilter.Continue
	}
	f.resp = f.start("envoy_on_response", &handle{f: f, resp: h, end: end})
	return f.resp.status(end)
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	return f.resp.data(b, end)
}

func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if f.resp != nil {
		f.resp.h.trailers = t
	}
	return httpfilter.Continue
}

// OnDestroy returns the VM to its pool.
func (f *filter) OnDestroy() {
	if f.L != nil {
		f.L.SetContext(context.Background())
		f.s.pool.Put(f.L)
		f.L = nil
	}
}
