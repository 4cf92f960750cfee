package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/mesh"
)

// BootstrapOptions describe a sidecar's bootstrap.
type BootstrapOptions struct {
	// Node and ServiceAccount become the node's Istio metadata (base
	// carries the node id).
	Node           mesh.NodeID
	ServiceAccount string
	// StateDir holds the workload certificate files the xDS connection
	// presents (CertChainFile, KeyFile, RootCertFile).
	StateDir string
	// SDSSocket is the agent's SDS socket (default mesh.SDSSocket).
	SDSSocket string
	// AdminPort (loopback), AgentAddress (the agent's health server,
	// which readiness is routed to), ReadinessPort and StatsPort
	// (all interfaces); defaults are mesh's.
	AdminPort                int
	AgentHost                string
	AgentPort                int
	ReadinessPort, StatsPort int
	Delta                    bool
}

// BaseTLS are the files the xDS connection of o presents and trusts:
// the workload certificate the agent writes, and the roots.
func (o BootstrapOptions) BaseTLS() (ca, cert, key string) {
	return filepath.Join(o.StateDir, RootCertFile), filepath.Join(o.StateDir, CertChainFile), filepath.Join(o.StateDir, KeyFile)
}

// Bootstrap writes a sidecar's bootstrap (YAML): base is the
// controller's bootstrap (controller.Bootstrap, as `legate bootstrap`
// prints it: node, admin, ADS over mTLS with the files of BaseTLS),
// which gets Istio's sidecar pieces — node
// metadata, the sds-grpc cluster to the agent's socket, the readiness
// listener (/healthz/ready, answered by the agent) and the Prometheus
// listener (/stats/prometheus, answered by the admin API).
func Bootstrap(base string, o BootstrapOptions) ([]byte, error) {
	if o.SDSSocket == "" {
		o.SDSSocket = mesh.SDSSocket
	}
	if o.AdminPort == 0 {
		o.AdminPort = mesh.AdminPort
	}
	if o.AgentHost == "" {
		o.AgentHost = "127.0.0.1"
	}
	if o.AgentPort == 0 {
		o.AgentPort = mesh.AgentPort
	}
	if o.ReadinessPort == 0 {
		o.ReadinessPort = mesh.ReadinessPort
	}
	if o.StatsPort == 0 {
		o.StatsPort = mesh.StatsPort
	}
	var bs bootstrapv3.Bootstrap
	if _, err := config.Decode([]byte(base), &bs, "bootstrap"); err != nil {
		return nil, fmt.Errorf("sidecar bootstrap: %w", err)
	}
	var extra bootstrapv3.Bootstrap
	if _, err := config.Decode([]byte(sidecarResources(o)), &extra, "bootstrap"); err != nil {
		return nil, fmt.Errorf("sidecar bootstrap: %w", err)
	}
	proto.Merge(&bs, &extra)
	md, err := structpb.NewStruct(map[string]any{
		// Istio's node metadata names, which istiod and the controller
		// read the workload from.
		"NAMESPACE":       o.Node.Namespace,
		"SERVICE_ACCOUNT": o.ServiceAccount,
		"POD_NAME":        o.Node.Pod,
		"INSTANCE_IPS":    o.Node.IP.String(),
	})
	if err != nil {
		return nil, err
	}
	bs.Node.Metadata = md
	out, err := config.ToYAML(&bs)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return append([]byte("# Bootstrap for legate sidecar, written by `legate sidecar`.\n"), out...), nil
}

func sidecarResources(o BootstrapOptions) string {
	return fmt.Sprintf(`static_resources:
  clusters:
  - name: %[1]s
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: %[1]s
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe: { path: %[2]q }
  - name: agent
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: agent
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: %[3]q, port_value: %[4]d }
  - name: prometheus_stats
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: prometheus_stats
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: "127.0.0.1", port_value: %[5]d }
  listeners:
  - name: readiness
    address:
      socket_address: { address: "0.0.0.0", port_value: %[6]d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: readiness
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: readiness
              domains: ["*"]
              routes:
              - match: { prefix: /healthz/ready }
                route: { cluster: agent }
  - name: prometheus
    address:
      socket_address: { address: "0.0.0.0", port_value: %[7]d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: stats
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: prometheus
              domains: ["*"]
              routes:
              - match: { prefix: /stats/prometheus, headers: [{ name: ":method", string_match: { exact: GET } }] }
                route: { cluster: prometheus_stats }
`, mesh.SDSCluster, o.SDSSocket, o.AgentHost, o.AgentPort, o.AdminPort, o.ReadinessPort, o.StatsPort)
}

// Health serves the agent's /healthz/ready (what the readiness listener
// routes to, as istio-agent's port 15020 does): ready when the workload
// certificate is valid and the proxy's admin /ready says LIVE.
type Health struct {
	Agent *Agent
	// AdminURL is the proxy's admin API (http://127.0.0.1:15000).
	AdminURL string
	// Metrics, when set, is served on /metrics (the agent's own
	// metrics; the proxy's are on the stats port).
	Metrics http.Handler
}

// ServeHTTP implements http.Handler.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" && h.Metrics != nil {
		h.Metrics.ServeHTTP(w, r)
		return
	}
	if r.URL.Path != "/healthz/ready" {
		http.NotFound(w, r)
		return
	}
	if err := h.Agent.Ready(time.Now()); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.AdminURL+"/ready", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, "not ready: proxy admin: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		http.Error(w, "not ready: proxy is "+string(body), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// Serve serves h on l until ctx ends.
func (h *Health) Serve(ctx context.Context, l net.Listener) error {
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	if err := s.Serve(l); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}
