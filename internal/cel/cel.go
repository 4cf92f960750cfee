// Package cel evaluates Envoy's Common Expression Language expressions
// (google.api.expr) over a request's attributes: the parsed or checked
// ASTs of RBAC policy conditions and the source text of CEL access-log
// filters, with Envoy's attribute vocabulary (request, response, source,
// destination, connection, upstream, metadata, filter_state, xds), as
// Envoy's source/extensions/filters/common/expr. Expressions are compiled
// once, at config time, into programs that are safe to run concurrently.
package cel

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/google/cel-go/interpreter"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// env is the environment every expression runs in: CEL's standard
// library and its string extension (Envoy's cel_config string functions).
// Expressions are not type-checked against declarations (Envoy
// evaluates parsed expressions as they are), so identifiers resolve at run
// time from the attributes.
var env, envErr = cel.NewEnv(ext.Strings())

// costLimit is the most cost (CEL's unit: roughly one per operation, per
// byte for string functions) one evaluation may spend.
const costLimit = 100_000

// Program is a compiled expression.
type Program struct {
	prg cel.Program
}

func program(ast *cel.Ast, path string) (*Program, error) {
	if envErr != nil {
		return nil, config.Errorf(path, "CEL environment: %v", envErr)
	}
	// OptOptimize compiles constant regular expressions once; the cost
	// limit bounds what one evaluation may do (string functions over large
	// headers), after which it fails — and a failing expression does not
	// match.
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize, cel.OptTrackCost), cel.CostLimit(costLimit))
	if err != nil {
		return nil, config.Errorf(path, "CEL expression does not compile: %v", err)
	}
	return &Program{prg: prg}, nil
}

// CompileParsed compiles a parsed expression (RBAC's Policy.condition).
func CompileParsed(e *exprpb.Expr, path string) (*Program, error) {
	if e == nil || e.GetExprKind() == nil {
		return nil, config.Errorf(path, "empty CEL expression")
	}
	return program(cel.ParsedExprToAst(&exprpb.ParsedExpr{Expr: e}), path)
}

// CompileChecked compiles a type-checked expression (RBAC's
// Policy.checked_condition).
func CompileChecked(c *exprpb.CheckedExpr, path string) (*Program, error) {
	if c.GetExpr().GetExprKind() == nil {
		return nil, config.Errorf(path, "empty CEL expression")
	}
	return program(cel.CheckedExprToAst(c), path)
}

// CompileText parses and compiles CEL source text.
func CompileText(src, path string) (*Program, error) {
	if envErr != nil {
		return nil, config.Errorf(path, "CEL environment: %v", envErr)
	}
	ast, iss := env.Parse(src)
	if iss != nil && iss.Err() != nil {
		return nil, config.Errorf(path, "CEL expression %q does not parse: %v", src, iss.Err())
	}
	return program(ast, path)
}

// Eval evaluates the expression over a request (nil for a connection)
// and its stream record.
func (p *Program) Eval(req *headers.Request, info *streaminfo.Info) (any, error) {
	v, _, err := p.prg.Eval(&activation{req: req, info: info})
	if err != nil {
		return nil, err
	}
	return v.Value(), nil
}

// Matches reports whether the expression evaluates to true. An error (a
// missing attribute, a type mismatch) or a value that is not a boolean is
// false, as Envoy's Expr::matches.
func (p *Program) Matches(req *headers.Request, info *streaminfo.Info) bool {
	v, _, err := p.prg.Eval(&activation{req: req, info: info})
	if err != nil {
		return false
	}
	b, ok := v.(types.Bool)
	return ok && bool(b)
}

// activation resolves the top-level attributes, each built when an
// expression first names it.
type activation struct {
	req  *headers.Request
	info *streaminfo.Info
}

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) ResolveName(name string) (any, bool) {
	info := a.info
	if info == nil {
		info = &streaminfo.Info{}
	}
	switch name {
	case "request":
		return a.request(info), true
	case "response":
		return response(info), true
	case "source":
		return endpoint(info.DownstreamRemote), true
	case "destination":
		return endpoint(info.DownstreamLocal), true
	case "connection":
		return connection(info), true
	case "upstream":
		return upstream(info), true
	case "metadata":
		return map[string]any{"filter_metadata": structs(info.DynamicMetadata)}, true
	case "filter_state":
		fs := make(map[string]any, len(info.FilterState))
		for k, v := range info.FilterState {
			fs[k] = []byte(v.String())
		}
		return fs, true
	case "xds":
		return map[string]any{"cluster_name": info.UpstreamCluster, "route_name": info.RouteName, "virtual_host_name": info.VirtualHostName}, true
	}
	return nil, false
}

// headerMap is a header map as CEL sees it in Envoy: lower-case names,
// the values of a repeated header joined with ",".
func headerMap(m *headers.Map) map[string]any {
	out := map[string]any{}
	if m == nil {
		return out
	}
	for _, f := range m.Fields() {
		if prev, ok := out[f.Name]; ok {
			out[f.Name] = prev.(string) + "," + f.Value
		} else {
			out[f.Name] = f.Value
		}
	}
	return out
}

func (a *activation) request(info *streaminfo.Info) map[string]any {
	m := map[string]any{}
	req := a.req
	if req == nil {
		req = info.Request
	}
	if !info.StartTime.IsZero() {
		m["time"] = info.StartTime
	}
	if info.Done > 0 {
		m["duration"] = info.Done
	}
	if info.Protocol != "" {
		m["protocol"] = info.Protocol
	}
	m["total_size"] = int64(info.BytesReceived)
	if req == nil {
		return m
	}
	h := headerMap(&req.Map)
	// Envoy's header map holds the pseudo-headers too.
	h[":method"], h[":path"], h[":authority"], h[":scheme"] = req.Method, req.Path, req.Authority, req.Scheme
	path, query, _ := strings.Cut(req.Path, "?")
	m["path"], m["url_path"], m["query"] = req.Path, path, query
	m["host"], m["scheme"], m["method"] = req.Authority, req.Scheme, req.Method
	m["headers"] = h
	if v, ok := req.Lookup("referer"); ok {
		m["referer"] = v
	}
	if v, ok := req.Lookup("user-agent"); ok {
		m["useragent"] = v
	}
	if v, ok := req.Lookup("x-request-id"); ok {
		m["id"] = v
	}
	// The body size: content-length when given, else what was read.
	size := int64(info.BytesReceived)
	if v, ok := req.Lookup("content-length"); ok {
		if n, err := parseInt(v); err == nil {
			size = n
		}
	}
	m["size"] = size
	return m
}

func parseInt(s string) (int64, error) {
	var n int64
	_, err := fmt.Sscan(s, &n)
	return n, err
}

func response(info *streaminfo.Info) map[string]any {
	m := map[string]any{"size": int64(info.BytesSent), "total_size": int64(info.BytesSent), "flags": int64(info.ResponseFlags)}
	if info.ResponseCode != 0 {
		m["code"] = int64(info.ResponseCode)
	}
	if info.ResponseCodeDetails != "" {
		m["code_details"] = info.ResponseCodeDetails
	}
	if info.Response != nil {
		m["headers"] = headerMap(&info.Response.Map)
		if v, ok := info.Response.Lookup("grpc-status"); ok {
			if n, err := parseInt(v); err == nil {
				m["grpc_status"] = n
			}
		}
	}
	if info.RespTrailers != nil {
		m["trailers"] = headerMap(info.RespTrailers)
		if v, ok := info.RespTrailers.Lookup("grpc-status"); ok {
			if n, err := parseInt(v); err == nil {
				m["grpc_status"] = n
			}
		}
	}
	if info.FirstUpstreamRxByte > 0 && info.FirstUpstreamTxByte > 0 {
		m["backend_latency"] = info.FirstUpstreamRxByte - info.FirstUpstreamTxByte
	}
	return m
}

// endpoint is source or destination: the address as "ip:port", as Envoy's
// Address::asString, and the port.
func endpoint(ap netip.AddrPort) map[string]any {
	if !ap.IsValid() {
		return map[string]any{}
	}
	return map[string]any{"address": ap.String(), "port": int64(ap.Port())}
}

func connection(info *streaminfo.Info) map[string]any {
	m := map[string]any{"id": info.ConnectionID, "mtls": false}
	if info.RequestedServerName != "" {
		m["requested_server_name"] = info.RequestedServerName
	}
	if info.ConnTerminationDetails != "" {
		m["termination_details"] = info.ConnTerminationDetails
	}
	if t := info.DownstreamTLS; t != nil {
		tlsAttributes(m, t)
	}
	return m
}

func tlsAttributes(m map[string]any, t *streaminfo.TLSInfo) {
	m["tls_version"] = t.Version
	m["mtls"] = t.PeerCert != nil
	if t.LocalSubject != "" {
		m["subject_local_certificate"] = t.LocalSubject
	}
	if t.PeerCert != nil {
		m["subject_peer_certificate"] = t.PeerSubject
		m["sha256_peer_certificate_digest"] = t.PeerFingerprint
		if len(t.PeerDNSSAN) > 0 {
			m["dns_san_peer_certificate"] = t.PeerDNSSAN[0]
		}
		if len(t.PeerURISAN) > 0 {
			m["uri_san_peer_certificate"] = t.PeerURISAN[0]
		}
	}
}

func upstream(info *streaminfo.Info) map[string]any {
	m := map[string]any{}
	if info.UpstreamHost != "" {
		m["address"] = info.UpstreamHost
		if ap, err := netip.ParseAddrPort(info.UpstreamHost); err == nil {
			m["port"] = int64(ap.Port())
		}
	}
	if info.UpstreamLocalAddress != "" {
		m["local_address"] = info.UpstreamLocalAddress
	}
	if info.UpstreamTransportFailureReason != "" {
		m["transport_failure_reason"] = info.UpstreamTransportFailureReason
	}
	if info.UpstreamRequestAttemptCount > 0 {
		m["request_attempt_count"] = uint64(info.UpstreamRequestAttemptCount)
	}
	if t := info.UpstreamTLS; t != nil {
		tlsAttributes(m, t)
	}
	return m
}

func structs(md map[string]*structpb.Struct) map[string]any {
	out := make(map[string]any, len(md))
	for k, s := range md {
		out[k] = s.AsMap()
	}
	return out
}
