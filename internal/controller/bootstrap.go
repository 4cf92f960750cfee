package controller

import "fmt"

// Bootstrap returns a proxy bootstrap (YAML) whose ADS points at a
// controller, as `contour bootstrap` writes for Envoy.
func Bootstrap(xdsHost string, xdsPort int, adminHost string, adminPort int, nodeID, cluster string) string {
	return fmt.Sprintf(`# Bootstrap for legate proxy (or Envoy) fed by legate controller.
node:
  id: %q
  cluster: %q
admin:
  address:
    socket_address: { address: %q, port_value: %d }
dynamic_resources:
  ads_config:
    api_type: GRPC
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
    load_assignment:
      cluster_name: legate-controller
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: %q, port_value: %d }
`, nodeID, cluster, adminHost, adminPort, xdsHost, xdsPort)
}
