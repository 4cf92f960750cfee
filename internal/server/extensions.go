package server

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/proxy"
	"github.com/legateproxy/legate/internal/route"
)

// accessLogCompiler returns the access-log compiler the proxy uses.
func accessLogCompiler(s *Server) func([]*accesslogv3.AccessLog, string) ([]proxy.AccessLogger, error) {
	return func(logs []*accesslogv3.AccessLog, path string) ([]proxy.AccessLogger, error) {
		ls, err := accesslog.Compile(logs, path, s.logFiles)
		if err != nil {
			return nil, err
		}
		out := make([]proxy.AccessLogger, len(ls))
		for i, l := range ls {
			out[i] = l
		}
		return out, nil
	}
}

// headerValueCompiler returns the header-value formatter (%VARIABLE%
// substitutions in request_headers_to_add and friends).
func headerValueCompiler() func(string) (route.Value, error) {
	return func(text string) (route.Value, error) {
		f, err := format.CompileHeaderValue(text)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
}

// ReopenAccessLogs reopens every access log file (SIGUSR1).
func (s *Server) ReopenAccessLogs() {
	if s.logFiles != nil {
		s.logFiles.Reopen()
	}
}

// upstreamFilters compiles a cluster's upstream HTTP filters against the
// server's services (the same compile context as the connection
// managers' filters).
func (s *Server) upstreamFilters(cluster string, fs []*hcmv3.HttpFilter, path string) (any, error) {
	return proxy.CompileUpstreamFilters(s.deps, cluster, fs, path)
}
