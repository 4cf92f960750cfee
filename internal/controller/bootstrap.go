package controller

import (
	"fmt"
	"strings"
)

// BootstrapOptions describe the proxy bootstrap `legate bootstrap` prints.
type BootstrapOptions struct {
	XDSHost   string
	XDSPort   int
	AdminHost string
	AdminPort int
	NodeID    string
	Cluster   string
	// HealthPort, when set, adds a static listener on HealthHost:HealthPort
	// that serves the admin API's /ready and /stats (read-only) to kubelet
	// probes and Prometheus, so the admin API itself can stay on loopback
	// (Contour's port 8002).
	HealthHost string
	HealthPort int
	// Delta selects incremental xDS (DELTA_GRPC) instead of state of the world.
	Delta bool
	// TLS secures the xDS connection with the proxy's client certificate
	// (nil: plaintext, for a controller run with --insecure).
	TLS *BootstrapTLS
}

// BootstrapTLS are the files of the proxy's side of xDS mTLS.
type BootstrapTLS struct {
	CAFile, CertFile, KeyFile string
	// ServerName is sent as SNI and must be a DNS name of the
	// controller's certificate.
	ServerName string
}

// Bootstrap returns a proxy bootstrap (YAML) whose ADS points at a
// controller, as `contour bootstrap` writes for Envoy. Legate and Envoy
// both accept it.
func Bootstrap(o BootstrapOptions) string {
	api := "GRPC"
	if o.Delta {
		api = "DELTA_GRPC"
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Bootstrap for legate proxy (or Envoy) fed by legate controller.
node:
  id: %q
  cluster: %q
admin:
  address:
    socket_address: { address: %q, port_value: %d }
dynamic_resources:
  ads_config:
    api_type: %s
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: { cluster_name: legate-controller }
  lds_config: { ads: {}, resource_api_version: V3 }
  cds_config: { ads: {}, resource_api_version: V3 }
static_resources:
  clusters:
  - name: legate-controller
    type: STRICT_DNS
    connect_timeout: 5s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
%s    load_assignment:
      cluster_name: legate-controller
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: %q, port_value: %d }
`, o.NodeID, o.Cluster, o.AdminHost, o.AdminPort, api, transportSocket(o.TLS), o.XDSHost, o.XDSPort)
	if o.HealthPort > 0 {
		admin := o.AdminHost
		if admin == "0.0.0.0" || admin == "" {
			admin = "127.0.0.1"
		}
		host := o.HealthHost
		if host == "" {
			host = "0.0.0.0"
		}
		fmt.Fprintf(&b, `  - name: legate-admin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: legate-admin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: %q, port_value: %d }
  listeners:
  - name: health-and-stats
    address:
      socket_address: { address: %q, port_value: %d }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: health-and-stats
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: admin
              domains: ["*"]
              routes:
              - match: { path: /ready, headers: [{ name: ":method", string_match: { exact: GET } }] }
                route: { cluster: legate-admin }
              - match: { prefix: /stats, headers: [{ name: ":method", string_match: { exact: GET } }] }
                route: { cluster: legate-admin }
`, admin, o.AdminPort, host, o.HealthPort)
	}
	return b.String()
}

// transportSocket is the xDS cluster's mTLS client context, as Contour's
// bootstrap writes it for Envoy: the proxy's certificate, the CA, and
// the controller's name checked in its certificate. The files are
// watched, so a rotated Secret mount takes effect on the next connection.
func transportSocket(t *BootstrapTLS) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf(`    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: %q
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: { filename: %q }
            private_key: { filename: %q }
          validation_context:
            trusted_ca: { filename: %q }
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: { exact: %q }
`, t.ServerName, t.CertFile, t.KeyFile, t.CAFile, t.ServerName)
}
