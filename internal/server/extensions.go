package server

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/proxy"
	"github.com/legateproxy/legate/internal/route"
)

// accessLogCompiler returns the access-log compiler the proxy uses.
func accessLogCompiler(s *Server) func([]*accesslogv3.AccessLog, string) ([]proxy.AccessLogger, error) {
	return func(logs []*accesslogv3.AccessLog, path string) ([]proxy.AccessLogger, error) {
		return nil, config.Unsupported(path, "access logs (not wired yet)")
	}
}

// headerValueCompiler returns the header-value formatter.
func headerValueCompiler() func(string) (route.Value, error) { return nil }

func closeAccessLogs() {}

// ReopenAccessLogs reopens every access log file (SIGUSR1).
func ReopenAccessLogs() {}
