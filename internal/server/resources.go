package server

import (
	"fmt"
	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/asyncclient"
	"os"

	"gopkg.in/yaml.v3"
	"log/slog"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

// ValidateResourceFile checks an xDS resource file (a DiscoveryResponse, as
// path_config_source files are) by compiling each resource, without side
// effects. Route configs inside listeners are checked without resolving
// cluster names, which another file provides.
func ValidateResourceFile(path string, log *slog.Logger) ([]config.Warning, error) {
	dr := &discoveryv3.DiscoveryResponse{}
	warns, err := config.DecodeResourceFile(path, dr)
	if err != nil {
		return warns, err
	}
	if err := config.Validate(dr, ""); err != nil {
		return warns, err
	}
	st := stats.NewStore()
	s := &Server{log: log, Stats: st}
	cm := upstream.NewManager(upstream.Deps{Stats: st, Log: log, Transport: s.clusterTransport, UpstreamFilters: s.upstreamFilters})
	deps := &listener.Context{Stats: st, Clusters: cm, Log: log, LogFiles: accesslog.NewFiles(st), Async: asyncclient.New(cm)}
	s.deps = deps
	s.Bootstrap = &bootstrapv3.Bootstrap{}
	if err := s.setupTLS(); err != nil {
		return warns, err
	}
	defer s.secrets.Close()
	for i, a := range dr.GetResources() {
		p := config.Index("resources", i)
		m, err := a.UnmarshalNew()
		if err != nil {
			return warns, config.Errorf(p, "decode %s: %v", a.GetTypeUrl(), err)
		}
		switch r := m.(type) {
		case *clusterv3.Cluster:
			if _, err := upstream.Compile(r, p, cm.Deps()); err != nil {
				return warns, err
			}
		case *listenerv3.Listener:
			deps.SkipClusterValidation = true
			if _, err := listener.Compile(r, p, deps); err != nil {
				return warns, err
			}
		default:
			return warns, config.Errorf(p, "resource type %s is not supported in resource files", a.GetTypeUrl())
		}
	}
	if len(dr.GetResources()) == 0 {
		return warns, fmt.Errorf("%s: no resources", path)
	}
	return warns, nil
}

// IsResourceFile reports whether a config file is an xDS resource file
// (top-level resources: or version_info:) rather than a bootstrap.
func IsResourceFile(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var top map[string]any
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	_, r := top["resources"]
	_, sr := top["static_resources"]
	return r && !sr
}
