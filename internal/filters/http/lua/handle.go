package lua

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

// handle is the stream handle a callback gets.
type handle struct {
	f        *filter
	co       *coroutine
	req      *headers.Request
	resp     *headers.Response
	end      bool
	body     *httpfilter.Buffer
	trailers *headers.Map
	// reqHeadersChanged is set when the script changes the request
	// headers; the coroutine then clears the route cache once.
	reqHeadersChanged bool
}

// errResponded ends a script after respond().
var errResponded = errors.New("legate: respond() ended the script")

const (
	tHandle  = "envoy.handle"
	tHeaders = "envoy.headers"
	tBuffer  = "envoy.buffer"
	tInfo    = "envoy.streaminfo"
	tMeta    = "envoy.dynamicmetadata"
	tConn    = "envoy.connection"
	tSSL     = "envoy.ssl"
)

func check[T any](L *glua.LState, tname string) T {
	ud := L.CheckUserData(1)
	v, ok := ud.Value.(T)
	if !ok {
		L.ArgError(1, tname+" expected")
	}
	return v
}

func methods(L *glua.LState, name string, fns map[string]glua.LGFunction) {
	mt := L.NewTypeMetatable(name)
	L.SetField(mt, "__index", L.SetFuncs(L.NewTable(), fns))
}

func (h *handle) userdata(L *glua.LState) glua.LValue {
	ud := L.NewUserData()
	ud.Value = h
	L.SetMetatable(ud, L.GetTypeMetatable(tHandle))
	return ud
}

func (h *handle) bodyUserdata(L *glua.LState) glua.LValue {
	if h.body == nil {
		return glua.LNil
	}
	ud := L.NewUserData()
	ud.Value = h.body
	L.SetMetatable(ud, L.GetTypeMetatable(tBuffer))
	return ud
}

type headerObj struct {
	req  *headers.Request
	resp *headers.Response
	// h is the handle whose request headers these are (nil for trailers
	// and responses): changing them may change the route.
	h *handle
	// trailers is set for a trailers object: the stream's own map, so
	// what the script adds or removes reaches the stream.
	trailers *headers.Map
}

// changed records a request header change for clear_route_cache.
func (o *headerObj) changed() {
	if o.h != nil && o.req != nil {
		o.h.reqHeadersChanged = true
	}
}

func (o *headerObj) m() *headers.Map {
	if o.trailers != nil {
		return o.trailers
	}
	if o.req != nil {
		return &o.req.Map
	}
	return &o.resp.Map
}

func (o *headerObj) values(k string) []string {
	if o.trailers != nil {
		return o.trailers.Values(k)
	}
	if o.req != nil {
		if v, ok := o.req.Lookup(k); ok && (strings.HasPrefix(k, ":") || k == "host") {
			return []string{v}
		}
		return o.req.Map.Values(k)
	}
	if k == ":status" {
		return []string{strconv.Itoa(o.resp.Status)}
	}
	return o.resp.Map.Values(k)
}

func (o *headerObj) set(k, v string) bool {
	if o.trailers != nil {
		return false
	}
	if o.req != nil {
		switch k {
		case ":path":
			o.req.Path = v
		case ":method":
			o.req.Method = v
		case ":authority", "host":
			o.req.Authority = v
		case ":scheme":
			o.req.Scheme = v
		default:
			return false
		}
		return true
	}
	if k == ":status" {
		if n, err := strconv.Atoi(v); err == nil {
			o.resp.Status = n
		}
		return true
	}
	return false
}

// fields lists every header (pseudo-headers first), for pairs().
func (o *headerObj) fields() [][2]string {
	var out [][2]string
	switch {
	case o.trailers != nil:
	case o.req != nil:
		out = append(out, [2]string{":authority", o.req.Authority}, [2]string{":path", o.req.Path}, [2]string{":method", o.req.Method})
		if o.req.Scheme != "" {
			out = append(out, [2]string{":scheme", o.req.Scheme})
		}
	default:
		out = append(out, [2]string{":status", strconv.Itoa(o.resp.Status)})
	}
	for _, f := range o.m().Fields() {
		out = append(out, [2]string{f.Name, f.Value})
	}
	return out
}

// setHeader is headers:add / headers:replace: pseudo-headers set the
// request or response field, others go through put.
func setHeader(put func(*headers.Map, string, string)) glua.LGFunction {
	return func(L *glua.LState) int {
		o := check[*headerObj](L, tHeaders)
		k, v := strings.ToLower(L.CheckString(2)), L.CheckString(3)
		if !o.set(k, v) {
			put(o.m(), k, v)
		}
		o.changed()
		return 0
	}
}

func newHeaders(L *glua.LState, o *headerObj) glua.LValue {
	ud := L.NewUserData()
	ud.Value = o
	L.SetMetatable(ud, L.GetTypeMetatable(tHeaders))
	return ud
}

// registerTypes installs the handle's types and a pairs() that iterates
// header maps (gopher-lua has no __pairs).
func registerTypes(L *glua.LState) {
	logAt := func(level string) glua.LGFunction {
		return func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			msg := L.CheckString(2)
			log := h.f.cb.Log()
			switch level {
			case "trace", "debug":
				log.Debug("script log: " + msg)
			case "info":
				log.Info("script log: " + msg)
			case "warn":
				log.Warn("script log: " + msg)
			default:
				log.Error("script log: " + msg)
			}
			return 0
		}
	}
	methods(L, tHandle, map[string]glua.LGFunction{
		"headers": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			L.Push(newHeaders(L, &headerObj{req: h.req, resp: h.resp, h: h}))
			return 1
		},
		"body": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			if h.body != nil {
				L.Push(h.bodyUserdata(L))
				return 1
			}
			if h.end {
				L.Push(glua.LNil) // no body
				return 1
			}
			return L.Yield(errYieldBody)
		},
		"bodyChunks": func(L *glua.LState) int {
			// The body is buffered, then handed out as one chunk.
			h := check[*handle](L, tHandle)
			if h.body == nil && !h.end {
				return L.Yield(errYieldBody)
			}
			given := false
			L.Push(L.NewFunction(func(L *glua.LState) int {
				if given || h.body == nil {
					L.Push(glua.LNil)
					return 1
				}
				given = true
				L.Push(h.bodyUserdata(L))
				return 1
			}))
			return 1
		},
		"trailers": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			if h.trailers == nil {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(newHeaders(L, &headerObj{trailers: h.trailers}))
			return 1
		},
		"streamInfo": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			ud := L.NewUserData()
			ud.Value = h
			L.SetMetatable(ud, L.GetTypeMetatable(tInfo))
			L.Push(ud)
			return 1
		},
		"metadata": func(L *glua.LState) int {
			// Route metadata (filter_metadata under the filter's name) is
			// not kept by routes yet: an empty object.
			t := L.NewTable()
			L.SetField(t, "get", L.NewFunction(func(L *glua.LState) int { L.Push(glua.LNil); return 1 }))
			L.Push(t)
			return 1
		},
		"connection": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			ud := L.NewUserData()
			ud.Value = h
			L.SetMetatable(ud, L.GetTypeMetatable(tConn))
			L.Push(ud)
			return 1
		},
		"logTrace": logAt("trace"), "logDebug": logAt("debug"), "logInfo": logAt("info"),
		"logWarn": logAt("warn"), "logErr": logAt("err"), "logCritical": logAt("critical"),
		"respond": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			if h.req == nil {
				L.RaiseError("respond() is not allowed in envoy_on_response")
			}
			hdrs := L.CheckTable(2)
			body := L.OptString(3, "")
			status := 200
			var hv []httpfilter.HeaderValue
			hdrs.ForEach(func(k, v glua.LValue) {
				ks := strings.ToLower(k.String())
				if ks == ":status" {
					status, _ = strconv.Atoi(v.String())
					return
				}
				hv = append(hv, httpfilter.HeaderValue{Key: ks, Value: v.String(), Append: true})
			})
			h.f.cb.SendLocalReply(status, body, httpfilter.LocalReply{Details: "lua_response", Headers: hv})
			L.RaiseError("%s", errResponded.Error())
			return 0
		},
		"httpCall": func(L *glua.LState) int {
			h := check[*handle](L, tHandle)
			return h.httpCall(L)
		},
		"base64Escape": func(L *glua.LState) int {
			L.Push(glua.LString(base64.StdEncoding.EncodeToString([]byte(L.CheckString(2)))))
			return 1
		},
		"timestamp": func(L *glua.LState) int {
			L.Push(glua.LNumber(time.Now().UnixMilli()))
			return 1
		},
		"timestampString": func(L *glua.LState) int {
			L.Push(glua.LString(strconv.FormatInt(time.Now().UnixMilli(), 10)))
			return 1
		},
	})
	methods(L, tHeaders, map[string]glua.LGFunction{
		"get": func(L *glua.LState) int {
			o := check[*headerObj](L, tHeaders)
			vs := o.values(strings.ToLower(L.CheckString(2)))
			if len(vs) == 0 {
				L.Push(glua.LNil)
			} else {
				L.Push(glua.LString(strings.Join(vs, ",")))
			}
			return 1
		},
		"getAtIndex": func(L *glua.LState) int {
			o := check[*headerObj](L, tHeaders)
			vs := o.values(strings.ToLower(L.CheckString(2)))
			i := L.CheckInt(3)
			if i < 0 || i >= len(vs) {
				L.Push(glua.LNil)
			} else {
				L.Push(glua.LString(vs[i]))
			}
			return 1
		},
		"getNumValues": func(L *glua.LState) int {
			o := check[*headerObj](L, tHeaders)
			L.Push(glua.LNumber(len(o.values(strings.ToLower(L.CheckString(2))))))
			return 1
		},
		"add":     setHeader((*headers.Map).Add),
		"replace": setHeader((*headers.Map).Set),
		"remove": func(L *glua.LState) int {
			o := check[*headerObj](L, tHeaders)
			o.m().Del(strings.ToLower(L.CheckString(2)))
			o.changed()
			return 0
		},
		"setHttp1ReasonPhrase": func(L *glua.LState) int { return 0 },
	})
	methods(L, tBuffer, map[string]glua.LGFunction{
		"length": func(L *glua.LState) int {
			b := check[*httpfilter.Buffer](L, tBuffer)
			L.Push(glua.LNumber(b.Len()))
			return 1
		},
		"getBytes": func(L *glua.LState) int {
			b := check[*httpfilter.Buffer](L, tBuffer)
			data := b.Bytes()
			i, j := L.OptInt(2, 0), L.OptInt(3, len(data))
			if i < 0 || i > len(data) || j < i {
				L.ArgError(2, "index out of range")
			}
			L.Push(glua.LString(data[i:min(j, len(data))]))
			return 1
		},
		"setBytes": func(L *glua.LState) int {
			b := check[*httpfilter.Buffer](L, tBuffer)
			b.Set([]byte(L.CheckString(2)))
			return 0
		},
	})
	methods(L, tInfo, map[string]glua.LGFunction{
		"protocol": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().Protocol))
			return 1
		},
		"downstreamLocalAddress": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().DownstreamLocal.String()))
			return 1
		},
		"downstreamDirectRemoteAddress": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().DownstreamDirectRemote.String()))
			return 1
		},
		"downstreamRemoteAddress": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().DownstreamRemote.String()))
			return 1
		},
		"requestedServerName": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().RequestedServerName))
			return 1
		},
		"routeName": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tInfo).f.cb.StreamInfo().RouteName))
			return 1
		},
		"dynamicMetadata": func(L *glua.LState) int {
			h := check[*handle](L, tInfo)
			ud := L.NewUserData()
			ud.Value = h
			L.SetMetatable(ud, L.GetTypeMetatable(tMeta))
			L.Push(ud)
			return 1
		},
	})
	methods(L, tMeta, map[string]glua.LGFunction{
		"get": func(L *glua.LState) int {
			h := check[*handle](L, tMeta)
			st := h.f.cb.StreamInfo().DynamicMetadata[L.CheckString(2)]
			if st == nil {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(toLua(L, structpb.NewStructValue(st)))
			return 1
		},
		"set": func(L *glua.LState) int {
			h := check[*handle](L, tMeta)
			ns, key := L.CheckString(2), L.CheckString(3)
			v, err := structpb.NewValue(fromLua(L.CheckAny(4)))
			if err != nil {
				L.ArgError(4, err.Error())
			}
			h.f.cb.StreamInfo().SetDynamicMetadata(ns, map[string]*structpb.Value{key: v})
			return 0
		},
	})
	methods(L, tConn, map[string]glua.LGFunction{
		"ssl": func(L *glua.LState) int {
			h := check[*handle](L, tConn)
			t := h.f.cb.StreamInfo().DownstreamTLS
			if t == nil {
				L.Push(glua.LNil)
				return 1
			}
			ud := L.NewUserData()
			ud.Value = h
			L.SetMetatable(ud, L.GetTypeMetatable(tSSL))
			L.Push(ud)
			return 1
		},
	})
	methods(L, tSSL, map[string]glua.LGFunction{
		"peerCertificatePresented": func(L *glua.LState) int {
			h := check[*handle](L, tSSL)
			L.Push(glua.LBool(h.f.cb.StreamInfo().DownstreamTLS.PeerCert != nil))
			return 1
		},
		"uriSanPeerCertificate": func(L *glua.LState) int {
			h := check[*handle](L, tSSL)
			t := L.NewTable()
			for _, s := range h.f.cb.StreamInfo().DownstreamTLS.PeerURISAN {
				t.Append(glua.LString(s))
			}
			L.Push(t)
			return 1
		},
		"dnsSansPeerCertificate": func(L *glua.LState) int {
			h := check[*handle](L, tSSL)
			t := L.NewTable()
			for _, s := range h.f.cb.StreamInfo().DownstreamTLS.PeerDNSSAN {
				t.Append(glua.LString(s))
			}
			L.Push(t)
			return 1
		},
		"subjectPeerCertificate": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tSSL).f.cb.StreamInfo().DownstreamTLS.PeerSubject))
			return 1
		},
		"tlsVersion": func(L *glua.LState) int {
			L.Push(glua.LString(check[*handle](L, tSSL).f.cb.StreamInfo().DownstreamTLS.Version))
			return 1
		},
	})
	basePairs := L.GetGlobal("pairs")
	L.SetGlobal("pairs", L.NewFunction(func(L *glua.LState) int {
		if ud, ok := L.Get(1).(*glua.LUserData); ok {
			if o, ok := ud.Value.(*headerObj); ok {
				fs := o.fields()
				i := 0
				L.Push(L.NewFunction(func(L *glua.LState) int {
					if i >= len(fs) {
						L.Push(glua.LNil)
						return 1
					}
					f := fs[i]
					i++
					L.Push(glua.LString(f[0]))
					L.Push(glua.LString(f[1]))
					return 2
				}))
				return 1
			}
		}
		L.Push(basePairs)
		L.Push(L.Get(1))
		L.Call(1, 3)
		return 3
	}))
}

// httpCall is handle:httpCall(cluster, headers, body, timeout_ms
// [, asynchronous]): a request through the cluster manager, returning the
// response headers (a table) and body.
func (h *handle) httpCall(L *glua.LState) int {
	cluster := L.CheckString(2)
	hdrs := L.CheckTable(3)
	body := L.OptString(4, "")
	timeout := time.Duration(L.OptInt(5, 0)) * time.Millisecond
	async := L.OptBool(6, false)
	if timeout <= 0 {
		timeout = callbackTimeout
	}
	method, path, authority := "GET", "/", cluster
	hv := map[string]string{}
	hdrs.ForEach(func(k, v glua.LValue) {
		switch ks := strings.ToLower(k.String()); ks {
		case ":method":
			method = v.String()
		case ":path":
			path = v.String()
		case ":authority":
			authority = v.String()
		default:
			hv[ks] = v.String()
		}
	})
	call := func() (*http.Response, []byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+authority+path, strings.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Host = authority
		for k, v := range hv {
			req.Header.Set(k, v)
		}
		resp, err := h.f.cfg.async.Do(ctx, cluster, req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp, b, err
	}
	if async {
		go call()
		return 0
	}
	resp, b, err := call()
	if err != nil {
		L.RaiseError("http call to %s failed: %v", cluster, err)
	}
	t := L.NewTable()
	L.SetField(t, ":status", glua.LString(strconv.Itoa(resp.StatusCode)))
	for k, vs := range resp.Header {
		L.SetField(t, strings.ToLower(k), glua.LString(strings.Join(vs, ",")))
	}
	L.Push(t)
	L.Push(glua.LString(b))
	return 2
}

// toLua converts a protobuf Value to Lua.
func toLua(L *glua.LState, v *structpb.Value) glua.LValue {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return glua.LString(x.StringValue)
	case *structpb.Value_NumberValue:
		return glua.LNumber(x.NumberValue)
	case *structpb.Value_BoolValue:
		return glua.LBool(x.BoolValue)
	case *structpb.Value_StructValue:
		t := L.NewTable()
		for k, e := range x.StructValue.GetFields() {
			L.SetField(t, k, toLua(L, e))
		}
		return t
	case *structpb.Value_ListValue:
		t := L.NewTable()
		for _, e := range x.ListValue.GetValues() {
			t.Append(toLua(L, e))
		}
		return t
	}
	return glua.LNil
}

// fromLua converts a Lua value to what structpb.NewValue takes.
func fromLua(v glua.LValue) any {
	switch x := v.(type) {
	case glua.LString:
		return string(x)
	case glua.LNumber:
		return float64(x)
	case glua.LBool:
		return bool(x)
	case *glua.LTable:
		if x.MaxN() > 0 {
			var l []any
			x.ForEach(func(_, e glua.LValue) { l = append(l, fromLua(e)) })
			return l
		}
		m := map[string]any{}
		x.ForEach(func(k, e glua.LValue) { m[k.String()] = fromLua(e) })
		return m
	}
	return nil
}
