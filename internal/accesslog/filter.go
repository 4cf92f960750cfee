package accesslog

import (
	"math/rand/v2"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// filter decides whether a request is logged.
type filter func(info *streaminfo.Info) bool

func compare(op accesslogv3.ComparisonFilter_Op, v, ref int64) bool {
	switch op {
	case accesslogv3.ComparisonFilter_GE:
		return v >= ref
	case accesslogv3.ComparisonFilter_LE:
		return v <= ref
	case accesslogv3.ComparisonFilter_NE:
		return v != ref
	}
	return v == ref
}

// CompileFilter compiles an AccessLogFilter into a predicate over a
// finished (or locally answered) stream; local_reply_config's mappers use
// the same filters.
// files is the server's set (nil: runtime_key values take their
// defaults), whose runtime the filters read at evaluation.
func CompileFilter(f *accesslogv3.AccessLogFilter, path string, files *Files) (func(*streaminfo.Info) bool, error) {
	return compileFilter(f, path, files)
}

// snapshot is the runtime a filter reads its runtime_key values from at
// log time: the server's, through files (nil: none, the defaults apply).
func snapshot(files *Files) *runtime.Snapshot {
	if files == nil {
		return nil
	}
	return files.services().Runtime.Snapshot()
}

// runtimeUint is a ComparisonFilter's RuntimeUInt32: its runtime_key's
// value when the runtime has one, else default_value.
func runtimeUint(files *Files, key string, def uint32) uint64 {
	if key == "" {
		return uint64(def)
	}
	if snap := snapshot(files); snap != nil {
		return snap.Integer(key, uint64(def))
	}
	return uint64(def)
}

func compileFilter(f *accesslogv3.AccessLogFilter, path string, files *Files) (filter, error) {
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_ExtensionFilter:
		// Extension filters (CEL, …) go through the registry.
		tp := config.Join(path, "extension_filter.typed_config")
		r, err := extension.Lookup(extension.AccessLogFilter, s.ExtensionFilter.GetTypedConfig(), tp)
		if err != nil {
			return nil, err
		}
		return r.Ext.Factory.(filterFactory)(r.Config, tp)
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		c := s.StatusCodeFilter.GetComparison()
		op, key, def := c.GetOp(), c.GetValue().GetRuntimeKey(), c.GetValue().GetDefaultValue()
		return func(i *streaminfo.Info) bool {
			return compare(op, int64(i.ResponseCode), int64(runtimeUint(files, key, def)))
		}, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		c := s.DurationFilter.GetComparison()
		op, key, def := c.GetOp(), c.GetValue().GetRuntimeKey(), c.GetValue().GetDefaultValue()
		return func(i *streaminfo.Info) bool {
			return compare(op, i.Done.Milliseconds(), int64(runtimeUint(files, key, def)))
		}, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		// Requests the health_check filter answered or passed through as
		// health checks are left out.
		return func(i *streaminfo.Info) bool { return !i.HealthCheck }, nil
	case *accesslogv3.AccessLogFilter_ResponseFlagFilter:
		flags := s.ResponseFlagFilter.GetFlags()
		return func(i *streaminfo.Info) bool {
			if len(flags) == 0 {
				return i.ResponseFlags != 0
			}
			have := i.ResponseFlags.String()
			for _, f := range flags {
				for _, h := range strings.Split(have, ",") {
					if h == f {
						return true
					}
				}
			}
			return false
		}, nil
	case *accesslogv3.AccessLogFilter_HeaderFilter:
		hm := s.HeaderFilter.GetHeader()
		m, err := headerMatch(hm, config.Join(path, "header_filter.header"))
		if err != nil {
			return nil, err
		}
		return m, nil
	case *accesslogv3.AccessLogFilter_GrpcStatusFilter:
		statuses := map[int64]bool{}
		for _, st := range s.GrpcStatusFilter.GetStatuses() {
			statuses[int64(st)] = true
		}
		exclude := s.GrpcStatusFilter.GetExclude()
		return func(i *streaminfo.Info) bool {
			code, ok := grpcStatus(i)
			if !ok {
				return exclude // no grpc-status: matches only an exclude filter
			}
			return statuses[code] != exclude
		}, nil
	case *accesslogv3.AccessLogFilter_RuntimeFilter:
		// As Envoy's RuntimeFilter: runtime_key's fractional percent
		// (percent_sampled when the runtime has none, 0% without it); the
		// draw is the request ID's (so every log of a request agrees)
		// unless use_independent_randomness.
		rf := s.RuntimeFilter
		key, def, independent := rf.GetRuntimeKey(), rf.GetPercentSampled(), rf.GetUseIndependentRandomness()
		return func(i *streaminfo.Info) bool {
			num, den := (*runtime.Snapshot)(nil).Fraction("", def)
			if snap := snapshot(files); snap != nil {
				num, den = snap.Fraction(key, def)
			}
			if den == 0 {
				return false
			}
			v := rand.Uint64()
			if !independent {
				if id, ok := requestIDInteger(i); ok {
					v = id
				}
			}
			return v%uint64(den) < uint64(num)
		}, nil
	case *accesslogv3.AccessLogFilter_AndFilter:
		subs, err := compileFilters(s.AndFilter.GetFilters(), config.Join(path, "and_filter.filters"), files)
		if err != nil {
			return nil, err
		}
		return func(i *streaminfo.Info) bool {
			for _, f := range subs {
				if !f(i) {
					return false
				}
			}
			return true
		}, nil
	case *accesslogv3.AccessLogFilter_OrFilter:
		subs, err := compileFilters(s.OrFilter.GetFilters(), config.Join(path, "or_filter.filters"), files)
		if err != nil {
			return nil, err
		}
		return func(i *streaminfo.Info) bool {
			for _, f := range subs {
				if f(i) {
					return true
				}
			}
			return false
		}, nil
	case *accesslogv3.AccessLogFilter_TraceableFilter:
		// Requests the connection manager decided to trace.
		return func(i *streaminfo.Info) bool { return i.Traced }, nil
	}
	return nil, config.Unsupported(path, "this access log filter", "status_code_filter", "duration_filter", "not_health_check_filter",
		"response_flag_filter", "header_filter", "grpc_status_filter", "runtime_filter", "and_filter", "or_filter", "traceable_filter", "extension_filter")
}

func compileFilters(fs []*accesslogv3.AccessLogFilter, path string, files *Files) ([]filter, error) {
	out := make([]filter, 0, len(fs))
	for i, f := range fs {
		c, err := compileFilter(f, config.Index(path, i), files)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func grpcStatus(i *streaminfo.Info) (int64, bool) {
	var v string
	var ok bool
	if i.RespTrailers != nil {
		v, ok = i.RespTrailers.Lookup("grpc-status")
	}
	if !ok && i.Response != nil {
		v, ok = i.Response.Lookup("grpc-status")
	}
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// headerMatch compiles a route HeaderMatcher for the header_filter (the
// route package owns header matching).
func headerMatch(hm *routev3.HeaderMatcher, path string) (filter, error) {
	m, err := route.CompileHeaderMatcher(hm, path)
	if err != nil {
		return nil, err
	}
	return func(i *streaminfo.Info) bool {
		if i.Request == nil {
			return false
		}
		return m(i.Request)
	}, nil
}

// requestIDInteger is Envoy's UUID request ID as an integer (its first
// eight hex digits), which runtime_filter draws from.
func requestIDInteger(i *streaminfo.Info) (uint64, bool) {
	if i.Request == nil {
		return 0, false
	}
	id, ok := i.Request.Lookup("x-request-id")
	if !ok || len(id) < 8 {
		return 0, false
	}
	v, err := strconv.ParseUint(id[:8], 16, 64)
	return v, err == nil
}
