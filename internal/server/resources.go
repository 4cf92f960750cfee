package server

import (
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"gopkg.in/yaml.v3"

	"github.com/legateproxy/legate/internal/accesslog"
	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/hcm"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/tlsx"
	"github.com/legateproxy/legate/internal/upstream"
	"github.com/legateproxy/legate/internal/userspace"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// ValidateResourceFile checks an xDS resource file (a DiscoveryResponse, as
// path_config_source files are) the way the proxy takes it, without side
// effects: every resource goes through its type's decoder
// (internal/xds/resource: a Resource wrapper unwrapped, the type checked,
// the resource named and validated), as the file transport decodes it, then
// through the compile its type gets at run time (dynamic.go): clusters
// upstream.Compile, listeners listener.Compile, route configurations
// route.Compile, endpoints upstream.ValidateLoadAssignment, secrets
// tlsx.Validate. A file carries one type, as a subscription does: that of
// its first resource. What a resource names in other files is not resolved:
// the clusters of routes (inline or RDS), RDS route configurations and
// the config sources they come from. Errors name the resource and the path
// in it, with the file's line; every failing resource is reported.
func ValidateResourceFile(path string, log *slog.Logger) ([]config.Warning, error) {
	dr := &discoveryv3.DiscoveryResponse{}
	warns, lines, err := config.DecodeResourceFileLines(path, dr)
	if err != nil {
		return warns, err
	}
	list := dr.GetResources()
	if len(list) == 0 {
		return warns, fmt.Errorf("%s: no resources", path)
	}
	t := resource.ForURL(resource.TypeURL(list[0]))
	v, err := newFileValidator(log)
	if err != nil {
		return warns, err
	}
	defer v.close()
	var errs config.ErrorList
	for i, a := range list {
		at := config.Index("resources", i)
		// The resource's fields are under resources[i], or under its
		// wrapper's resource field.
		fields := at
		if a.GetTypeUrl() == resource.WrapperURL {
			fields = config.Join(at, "resource")
		}
		d, err := t.Decode(a)
		name := ""
		if err == nil {
			name = d.Name
			err = v.compile(t, d)
		} else if n := resource.FailedNames(err); len(n) > 0 {
			name = n[0]
		}
		if err == nil {
			continue
		}
		if name == "" || !lines.AnnotateAs(err, resource.Path(t, name), fields) {
			// No path in the error (a wrong type, undecodable bytes, no
			// name): it is the entry's.
			err = &config.FieldError{Path: at, Line: lines.Line(at), Message: err.Error()}
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return warns, errs
	}
	return warns, nil
}

// fileValidator compiles resources against a context of their own: no
// bootstrap, no dynamic resources, nothing started.
type fileValidator struct {
	s    *Server
	cm   *upstream.Manager
	deps *listener.Context
}

func newFileValidator(log *slog.Logger) (*fileValidator, error) {
	st := stats.NewStore()
	s := &Server{log: log, Stats: st}
	cm := upstream.NewManager(upstream.Deps{Stats: st, Log: log, Transport: s.clusterTransport, UpstreamFilters: s.upstreamFilters})
	// Inline route configs name clusters of another file; RDS names
	// route configurations of another file.
	deps := &listener.Context{Stats: st, Clusters: cm, Log: log, LogFiles: accesslog.NewFiles(st), Async: asyncclient.New(cm),
		SkipClusterValidation: true, Routes: fileRoutes{},
		// The bootstrap (and its internal listener extension) is not
		// known here: internal listeners are accepted; nothing binds.
		Sockets: &listener.Sockets{Internal: userspace.NewRegistry(0)}}
	s.deps = deps
	s.Bootstrap = &bootstrapv3.Bootstrap{}
	if err := s.setupTLS(); err != nil {
		return nil, err
	}
	return &fileValidator{s: s, cm: cm, deps: deps}, nil
}

func (v *fileValidator) close() { v.s.secrets.Close() }

// compile compiles one decoded resource as its type's handler does.
func (v *fileValidator) compile(t resource.Type, d *resource.Decoded) error {
	p := resource.Path(t, d.Name)
	switch t.URL() {
	case resource.ClusterURL:
		pc, err := resource.As[*clusterv3.Cluster](d)
		if err != nil {
			return err
		}
		if err := checkEDSCluster(pc, p); err != nil {
			return err
		}
		_, err = upstream.Compile(pc, p, v.cm.Deps())
		return err
	case resource.ListenerURL:
		pl, err := resource.As[*listenerv3.Listener](d)
		if err != nil {
			return err
		}
		_, err = listener.Compile(pl, p, v.deps)
		return err
	case resource.RouteURL:
		rc, err := resource.As[*routev3.RouteConfiguration](d)
		if err != nil {
			return err
		}
		// The clusters routes name are another file's (or the
		// bootstrap's): without a cluster manager, validate_clusters
		// checks nothing.
		opts := hcm.RouteOptions(v.deps)
		opts.Clusters = nil
		_, err = route.Compile(rc, p, opts)
		return err
	case resource.EndpointURL:
		la, err := resource.As[*endpointv3.ClusterLoadAssignment](d)
		if err != nil {
			return err
		}
		return upstream.ValidateLoadAssignment(la, p)
	case resource.SecretURL:
		sp, err := resource.As[*tlsv3.Secret](d)
		if err != nil {
			return err
		}
		return tlsx.Validate(sp, p)
	case resource.RuntimeURL:
		rt, err := resource.As[*runtimev3.Runtime](d)
		if err != nil {
			return err
		}
		if _, err := runtime.ParseStruct(rt.GetLayer()); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	}
	return fmt.Errorf("%s: internal error: no compile for %s", p, t.URL())
}

// checkEDSCluster is the CDS handler's check of an EDS cluster's
// eds_cluster_config (dynamic.checkEDSConfig) but the config source, which
// only a bootstrap can resolve.
func checkEDSCluster(pc *clusterv3.Cluster, path string) error {
	if pc.GetType() != clusterv3.Cluster_EDS {
		return nil
	}
	ec := pc.GetEdsClusterConfig()
	p := config.Join(path, "eds_cluster_config")
	if ec == nil || ec.GetEdsConfig() == nil {
		return config.Errorf(config.Join(p, "eds_config"), "an EDS cluster needs eds_cluster_config.eds_config")
	}
	return config.CheckFields(ec, p, "eds_config", "service_name")
}

// fileRoutes is the RDS of a listener validated on its own: the rds
// config is checked as dynamic.RouteTable checks it, but its config
// source, and the route configuration is another file's.
type fileRoutes struct{}

func (fileRoutes) RouteTable(rds *hcmv3.Rds, _, path string) (*atomic.Pointer[route.Table], error) {
	if err := config.CheckFields(rds, path, "config_source", "route_config_name"); err != nil {
		return nil, err
	}
	if rds.GetConfigSource() == nil {
		return nil, config.Errorf(config.Join(path, "config_source"), "rds needs a config_source")
	}
	return &atomic.Pointer[route.Table]{}, nil
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
