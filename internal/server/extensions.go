package server

import (
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/legateproxy/legate/internal/router"
)

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
	return router.CompileUpstreamFilters(s.deps, cluster, fs, path)
}
