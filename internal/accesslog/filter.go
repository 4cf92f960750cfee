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

// compileFilter compiles Envoy's AccessLogFilter.
// CompileFilter compiles an AccessLogFilter into a predicate over a
// finished (or locally answered) stream; local_reply_config's mappers use
// the same filters.
func CompileFilter(f *accesslogv3.AccessLogFilter, path string) (func(*streaminfo.Info) bool, error) {
	return compileFilter(f, path)
}

func compileFilter(f *accesslogv3.AccessLogFilter, path string) (filter, error) {
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_ExtensionFilter:
		// Extension filters (CEL, …) go through the registry.
		if _, err := extension.Lookup(extension.AccessLogFilter, s.ExtensionFilter.GetTypedConfig(), config.Join(path, "extension_filter.typed_config")); err != nil {
			return nil, err
		}
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		// There is no runtime layer: a runtime_key's default value applies.
		c := s.StatusCodeFilter.GetComparison()
		op, ref := c.GetOp(), int64(c.GetValue().GetDefaultValue())
		return func(i *streaminfo.Info) bool { return compare(op, int64(i.ResponseCode), ref) }, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		c := s.DurationFilter.GetComparison()
		op, ref := c.GetOp(), int64(c.GetValue().GetDefaultValue())
		return func(i *streaminfo.Info) bool { return compare(op, i.Done.Milliseconds(), ref) }, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		// Legate has no health_check HTTP filter, so no request is a health
		// check request: every request passes.
		return func(*streaminfo.Info) bool { return true }, nil
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
		rf := s.RuntimeFilter
		per := rf.GetPercentSampled()
		if per == nil {
			return nil, config.Unsupported(config.Join(path, "runtime_filter"), "runtime_filter without percent_sampled (there is no runtime layer)")
		}
		n := per.GetNumerator()
		d := uint32(100)
		switch per.GetDenominator().String() {
		case "TEN_THOUSAND":
			d = 10000
		case "MILLION":
			d = 1_000_000
		}
		return func(*streaminfo.Info) bool { return rand.Uint32N(d) < n }, nil
	case *accesslogv3.AccessLogFilter_AndFilter:
		subs, err := compileFilters(s.AndFilter.GetFilters(), config.Join(path, "and_filter.filters"))
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
		subs, err := compileFilters(s.OrFilter.GetFilters(), config.Join(path, "or_filter.filters"))
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
		return nil, config.Unsupported(config.Join(path, "traceable_filter"), "traceable_filter")
	}
	return nil, config.Unsupported(path, "this access log filter", "status_code_filter", "duration_filter", "not_health_check_filter",
		"response_flag_filter", "header_filter", "grpc_status_filter", "runtime_filter", "and_filter", "or_filter")
}

func compileFilters(fs []*accesslogv3.AccessLogFilter, path string) ([]filter, error) {
	out := make([]filter, 0, len(fs))
	for i, f := range fs {
		c, err := compileFilter(f, config.Index(path, i))
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
