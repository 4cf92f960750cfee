// Package admin serves Envoy's admin API (the `admin:` block of the
// bootstrap): /ready, /server_info, /stats (text, JSON, Prometheus),
// /clusters, /config_dump (resource=, mask=, name_regex=, include_eds),
// /init_dump, /hot_restart_version, /runtime, /runtime_modify, /listeners,
// /healthcheck/fail|ok, /drain_listeners, /quitquitquit, /logging,
// /reset_counters and the index.
// Endpoints that change state require POST, as in Envoy.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/applog"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/memstat"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Server is what the admin API reads and controls.
type Server interface {
	// State is LIVE, DRAINING, PRE_INITIALIZING or INITIALIZING.
	State() string
	ServerInfo() proto.Message
	// ConfigDump returns the whole config dump (an *adminv3.ConfigDump,
	// redacted; with the endpoints when includeEDS); the handler selects
	// resource=, mask= and name_regex= from it.
	ConfigDump(includeEDS bool) (proto.Message, error)
	// WriteClusters renders /clusters (text or JSON).
	WriteClusters(w io.Writer, jsonFormat bool) error
	// Listeners returns name → bound address.
	Listeners() [][2]string
	SetHealthCheckFailed(failed bool)
	DrainListeners(inboundOnly, graceful bool)
	Quit()
	LogLevel() *slog.LevelVar
	Certs() proto.Message
	// RuntimeDump renders /runtime; RuntimeModify sets admin-layer keys.
	RuntimeDump() map[string]any
	RuntimeModify(kv map[string]string) error
}

// Admin is the running admin HTTP server.
type Admin struct {
	srv       Server
	stats     *stats.Store
	hs        *http.Server
	ln        net.Listener
	log       *slog.Logger
	mux       *http.ServeMux
	index     []endpoint
	accessLog io.Writer
	// loggers are admin.access_log's access loggers.
	loggers []Logger
	// allow is admin.allow_paths (nil: every path).
	allow func(path string) bool
}

type endpoint struct {
	path, help string
	mutates    bool
}

// New returns an admin server for srv.
// pprof adds Go's /debug/pprof/ profiles (off unless --enable-pprof: a
// CPU profile or trace on an admin port is a way to load the server).
func New(srv Server, st *stats.Store, log *slog.Logger, accessLog io.Writer, pprofOn bool) *Admin {
	a := &Admin{srv: srv, stats: st, log: log, mux: http.NewServeMux(), accessLog: accessLog}
	a.handle("/", "print the admin endpoints", false, a.handleIndex)
	a.handle("/help", "print the admin endpoints", false, a.handleIndex)
	a.handle("/ready", "print server state, 200 when LIVE", false, a.handleReady)
	a.handle("/server_info", "print server version, state, uptime and options", false, a.handleServerInfo)
	a.handle("/stats", "print server stats (filter=, format=json|prometheus|text, usedonly, type=)", false, a.handleStats)
	a.handle("/stats/prometheus", "print server stats in Prometheus format", false, a.handlePrometheus)
	a.handle("/clusters", "upstream cluster status (format=json)", false, a.handleClusters)
	a.handle("/config_dump", "dump current config (resource=, mask=, name_regex=, include_eds)", false, a.handleConfigDump)
	a.handle("/init_dump", "print the unready targets of the init managers (mask=listener)", false, a.handleInitDump)
	a.handle("/hot_restart_version", "print the hot restart compatibility version", false, a.handleHotRestartVersion)
	a.handle("/memory", "print current allocation/heap usage", false, a.handleMemory)
	a.handle("/listeners", "print listener addresses (format=json)", false, a.handleListeners)
	a.handle("/certs", "print certificates in use", false, a.handleCerts)
	a.handle("/healthcheck/fail", "cause the server to fail health checks", true, a.handleHCFail)
	a.handle("/healthcheck/ok", "cause the server to pass health checks", true, a.handleHCOK)
	a.handle("/drain_listeners", "drain listeners (inboundonly, graceful)", true, a.handleDrain)
	a.handle("/quitquitquit", "exit the server", true, a.handleQuit)
	a.handle("/logging", "query or change log levels (level=, <logger>=, paths=<logger>:<level>,...)", true, a.handleLogging)
	a.handle("/reset_counters", "reset all counters to zero", true, a.handleResetCounters)
	a.handle("/runtime", "print runtime values", false, a.handleRuntime)
	a.handle("/runtime_modify", "set runtime values in the admin layer (key=value; an empty value removes the key)", true, a.handleRuntimeModify)
	// Go's profiler (Envoy's /cpuprofiler and /heapprofiler have no Go
	// equivalent; pprof is what Go operators use), only when asked for.
	if pprofOn {
		a.index = append(a.index, endpoint{path: "/debug/pprof/", help: "Go runtime profiles (pprof; --enable-pprof)"})
		a.mux.HandleFunc("/debug/pprof/", pprof.Index)
		a.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		a.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		a.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	}
	return a
}

func (a *Admin) handle(path, help string, mutates bool, h http.HandlerFunc) {
	a.index = append(a.index, endpoint{path, help, mutates})
	a.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		if path == "/" && r.URL.Path != "/" {
			http.Error(w, "invalid path. admin commands are:\n"+a.indexText(), http.StatusNotFound)
			return
		}
		if mutates && r.Method != http.MethodPost && !(path == "/logging" && r.Method == http.MethodGet && r.URL.RawQuery == "") {
			w.WriteHeader(http.StatusMethodNotAllowed)
			io.WriteString(w, "This endpoint requires POST\n")
			return
		}
		if len(a.loggers) == 0 {
			h(w, r)
		} else {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			start := time.Now()
			h(rec, r)
			a.logRequest(r, rec, start)
		}
		if a.accessLog != nil {
			fmt.Fprintf(a.accessLog, "[%s] \"%s %s %s\" - - - \"%s\"\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), r.Method, r.URL.RequestURI(), r.Proto, r.RemoteAddr)
		}
	})
}

// Logger is an access logger (admin.access_log).
type Logger interface{ Log(*streaminfo.Info) }

// SetAccessLoggers sets admin.access_log's loggers; they see each admin
// request as a stream (method, path, status, bytes, duration, peer).
func (a *Admin) SetAccessLoggers(l []Logger) { a.loggers = l }

// statusRecorder notes a response's status and size.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  uint64
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	n, err := r.ResponseWriter.Write(b)
	r.bytes += uint64(n)
	return n, err
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (a *Admin) logRequest(r *http.Request, rec *statusRecorder, start time.Time) {
	req := &headers.Request{Method: r.Method, Scheme: "http", Authority: r.Host, Path: r.URL.RequestURI()}
	for k, vs := range r.Header {
		for _, v := range vs {
			req.Map.Add(headers.Lower(k), v)
		}
	}
	resp := &headers.Response{Status: rec.status}
	for k, vs := range rec.Header() {
		for _, v := range vs {
			resp.Map.Add(headers.Lower(k), v)
		}
	}
	info := &streaminfo.Info{StartTime: start, Done: time.Since(start), Protocol: r.Proto, Request: req, Response: resp,
		ResponseCode: rec.status, BytesSent: rec.bytes, ResponseCodeDetails: "admin_filter_response"}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		info.DownstreamRemote, info.DownstreamDirectRemote = ap, ap
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil {
			info.DownstreamLocal = ap
		}
	}
	for _, l := range a.loggers {
		l.Log(info)
	}
}

// Listen binds the admin address; Serve then serves it.
func (a *Admin) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin: bind %s: %w", addr, err)
	}
	a.ListenOn(ln)
	return nil
}

// ListenOn makes the admin server serve on ln, a socket bound elsewhere
// (an admin address that is a pipe).
func (a *Admin) ListenOn(ln net.Listener) {
	a.ln = ln
	a.hs = &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
}

// SetAllowPaths restricts the endpoints to the paths allow accepts
// (admin.allow_paths); the others answer 403, as Envoy. allow sees the
// request's path with its query string, as Envoy's matchers do (so
// "/stats?format=json" needs a prefix matcher).
func (a *Admin) SetAllowPaths(allow func(path string) bool) { a.allow = allow }

// Addr returns the bound address.
func (a *Admin) Addr() string { return a.ln.Addr().String() }

// Serve serves until Close.
func (a *Admin) Serve() {
	if err := a.hs.Serve(a.ln); err != nil && err != http.ErrServerClosed {
		a.log.Error("admin server failed", "error", err)
	}
}

// Close stops the admin server.
func (a *Admin) Close() {
	if a.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a.hs.Shutdown(ctx)
	}
}

// Handler returns the admin HTTP handler.
func (a *Admin) Handler() http.Handler {
	if a.allow == nil {
		return a.mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.allow(r.URL.RequestURI()) {
			http.Error(w, "admin path "+r.URL.Path+" is not allowed (admin.allow_paths)", http.StatusForbidden)
			return
		}
		a.mux.ServeHTTP(w, r)
	})
}

func (a *Admin) indexText() string {
	var b strings.Builder
	for _, e := range a.index {
		if e.path == "/help" {
			continue
		}
		fmt.Fprintf(&b, "  %s: %s\n", e.path, e.help)
	}
	return b.String()
}

func (a *Admin) handleIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "text/plain; charset=UTF-8")
	io.WriteString(w, "admin commands are:\n"+a.indexText())
}

func (a *Admin) handleReady(w http.ResponseWriter, r *http.Request) {
	st := a.srv.State()
	w.Header().Set("content-type", "text/plain; charset=UTF-8")
	if st != "LIVE" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, st+"\n")
}

// writeProto renders a message as indented proto JSON (protojson's own
// indentation is deliberately unstable, so it is re-indented here).
func writeProto(w http.ResponseWriter, m proto.Message, emitDefaults bool) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: emitDefaults}.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", " "); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.WriteByte('\n')
	w.Header().Set("content-type", "application/json")
	w.Write(out.Bytes())
}

// handleMemory answers Envoy's /memory (admin.v3.Memory) from Go's
// runtime; total_thread_cache has no Go counterpart and stays 0.
func (a *Admin) handleMemory(w http.ResponseWriter, r *http.Request) {
	m := memstat.Read()
	writeProto(w, &adminv3.Memory{Allocated: m.Allocated, HeapSize: m.HeapSize, PageheapUnmapped: m.PageheapUnmapped,
		PageheapFree: m.PageheapFree, TotalPhysicalBytes: m.Physical}, true)
}

func (a *Admin) handleServerInfo(w http.ResponseWriter, r *http.Request) {
	writeProto(w, a.srv.ServerInfo(), true)
}

func (a *Admin) filter(r *http.Request) (stats.Filter, error) {
	q := r.URL.Query()
	f := stats.Filter{Type: q.Get("type")}
	_, f.UsedOnly = q["usedonly"]
	if v := q.Get("filter"); v != "" {
		re, err := regexp.Compile(v)
		if err != nil {
			return f, fmt.Errorf("invalid regex in filter=: %w", err)
		}
		f.Regex = re
	}
	return f, nil
}

func (a *Admin) handleStats(w http.ResponseWriter, r *http.Request) {
	f, err := a.filter(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch r.URL.Query().Get("format") {
	case "json":
		w.Header().Set("content-type", "application/json")
		a.stats.WriteJSON(w, f)
	case "prometheus":
		w.Header().Set("content-type", "text/plain; version=0.0.4")
		a.stats.WritePrometheus(w, f)
	case "", "text":
		w.Header().Set("content-type", "text/plain; charset=UTF-8")
		a.stats.WriteText(w, f)
	default:
		http.Error(w, "usage: /stats?format=(html|active-html|json|prometheus|text)", http.StatusBadRequest)
	}
}

func (a *Admin) handlePrometheus(w http.ResponseWriter, r *http.Request) {
	f, err := a.filter(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("content-type", "text/plain; version=0.0.4")
	a.stats.WritePrometheus(w, f)
}

func (a *Admin) handleClusters(w http.ResponseWriter, r *http.Request) {
	js := r.URL.Query().Get("format") == "json"
	if js {
		w.Header().Set("content-type", "application/json")
	} else {
		w.Header().Set("content-type", "text/plain; charset=UTF-8")
	}
	a.srv.WriteClusters(w, js)
}

func (a *Admin) handleListeners(w http.ResponseWriter, r *http.Request) {
	ls := a.srv.Listeners()
	if r.URL.Query().Get("format") == "json" {
		type sa struct {
			Address   string `json:"address"`
			PortValue int    `json:"port_value"`
		}
		type ls1 struct {
			Name         string        `json:"name"`
			LocalAddress map[string]sa `json:"local_address"`
		}
		var out struct {
			ListenerStatuses []ls1 `json:"listener_statuses"`
		}
		for _, l := range ls {
			host, port, _ := net.SplitHostPort(l[1])
			var p int
			fmt.Sscan(port, &p)
			out.ListenerStatuses = append(out.ListenerStatuses, ls1{Name: l[0], LocalAddress: map[string]sa{"socket_address": {host, p}}})
		}
		w.Header().Set("content-type", "application/json")
		json.NewEncoder(w).Encode(out)
		return
	}
	w.Header().Set("content-type", "text/plain; charset=UTF-8")
	for _, l := range ls {
		fmt.Fprintf(w, "%s::%s\n", l[0], l[1])
	}
}

func (a *Admin) handleCerts(w http.ResponseWriter, r *http.Request) {
	writeProto(w, a.srv.Certs(), false)
}

func (a *Admin) handleHCFail(w http.ResponseWriter, r *http.Request) {
	a.srv.SetHealthCheckFailed(true)
	io.WriteString(w, "OK\n")
}

func (a *Admin) handleHCOK(w http.ResponseWriter, r *http.Request) {
	a.srv.SetHealthCheckFailed(false)
	io.WriteString(w, "OK\n")
}

func (a *Admin) handleDrain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	_, inbound := q["inboundonly"]
	_, graceful := q["graceful"]
	a.srv.DrainListeners(inbound, graceful)
	io.WriteString(w, "OK\n")
}

func (a *Admin) handleQuit(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "OK\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go a.srv.Quit()
}

// Envoy's log level names.
// ParseLevel converts an Envoy log level name.
func ParseLevel(s string) (slog.Level, bool) {
	l, ok := applog.Levels[strings.ToLower(s)]
	return l, ok
}

// LevelName renders a level with Envoy's names.
func LevelName(l slog.Level) string { return applog.LevelName(l) }

// componentLevels is implemented by a Server that holds the component
// levels itself; otherwise they are the ones registered for its process
// level (applog.RegistryFor), which the proxy's logger filters by.
type componentLevels interface {
	LogComponents() *applog.Registry
}

func (a *Admin) logRegistry() *applog.Registry {
	if c, ok := a.srv.(componentLevels); ok {
		if r := c.LogComponents(); r != nil {
			return r
		}
	}
	return applog.RegistryFor(a.srv.LogLevel())
}

// handleLogging serves /logging as Envoy's LogsHandler: with no
// parameter it lists every logger and its level; level=<level> sets all,
// <name>=<level> one, paths=<name>:<level>,... several (all or none). A bad
// request is a 400 with the error and the usage, then the list.
func (a *Admin) handleLogging(w http.ResponseWriter, r *http.Request) {
	reg := a.logRegistry()
	var out strings.Builder
	code := http.StatusOK
	if q := r.URL.Query(); len(q) > 0 {
		if err := a.changeLogLevel(reg, q); err != nil {
			code = http.StatusBadRequest
			fmt.Fprintf(&out, "error: %v\n\n", err)
			out.WriteString("usage: /logging?<name>=<level> (change single level)\n")
			out.WriteString("usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n")
			out.WriteString("usage: /logging?level=<level> (change all levels)\n")
			out.WriteString("levels: ")
			for _, n := range applog.LevelNames {
				out.WriteString(n + " ")
			}
			out.WriteString("\n")
		}
	}
	out.WriteString("active loggers:\n")
	reg.Each(func(name string, l slog.Level) {
		fmt.Fprintf(&out, "  %s: %s\n", name, LevelName(l))
	})
	out.WriteString("\n")
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.WriteHeader(code)
	io.WriteString(w, out.String())
}

// changeLogLevel applies one /logging parameter, with Envoy's errors.
func (a *Admin) changeLogLevel(reg *applog.Registry, q url.Values) error {
	if len(q) != 1 || len(q[firstKey(q)]) != 1 {
		return fmt.Errorf("invalid number of parameters")
	}
	key := firstKey(q)
	value := q.Get(key)
	if key == "level" {
		l, ok := applog.ParseEnvoyLevel(value)
		if !ok {
			return fmt.Errorf("unknown logger level")
		}
		a.logInfo(fmt.Sprintf("change all log levels: level='%s'", value))
		reg.SetAll(l)
		return nil
	}
	changes := map[string]slog.Level{}
	if key == "paths" {
		for _, nl := range strings.Split(value, ",") {
			if strings.TrimSpace(nl) == "" {
				continue
			}
			name, level, _ := strings.Cut(nl, ":")
			name, level = strings.TrimSpace(name), strings.TrimSpace(level)
			if name == "" || level == "" {
				return fmt.Errorf("empty logger name or empty logger level")
			}
			l, ok := applog.ParseEnvoyLevel(level)
			if !ok {
				return fmt.Errorf("unknown logger level")
			}
			changes[name] = l
		}
	} else {
		l, ok := applog.ParseEnvoyLevel(value)
		if !ok {
			return fmt.Errorf("unknown logger level")
		}
		changes[key] = l
	}
	if err := reg.Set(changes); err != nil {
		return err
	}
	names := make([]string, 0, len(changes))
	for n := range changes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a.logInfo(fmt.Sprintf("change log level: name='%s' level='%s'", n, LevelName(changes[n])))
	}
	return nil
}

// logInfo logs as Envoy's admin logger does.
func (a *Admin) logInfo(msg string) {
	if a.log != nil {
		a.log.Info(msg, applog.ComponentKey, "admin")
	}
}

func firstKey(q url.Values) string {
	for k := range q {
		return k
	}
	return ""
}

func (a *Admin) handleRuntime(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	b, _ := json.MarshalIndent(a.srv.RuntimeDump(), "", "  ")
	w.Write(append(b, '\n'))
}

func (a *Admin) handleRuntimeModify(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	kv := map[string]string{}
	for k, vs := range r.Form {
		kv[k] = vs[len(vs)-1]
	}
	if len(kv) == 0 {
		http.Error(w, "usage: /runtime_modify?key1=value1&key2=value2", http.StatusBadRequest)
		return
	}
	if err := a.srv.RuntimeModify(kv); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "OK\n")
}

func (a *Admin) handleResetCounters(w http.ResponseWriter, r *http.Request) {
	a.stats.ResetCounters()
	io.WriteString(w, "OK\n")
}
