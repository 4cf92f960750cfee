// Package all links every extension Legate implements outside the core
// packages: importing it registers them. Adding an HTTP filter means a
// folder under internal/filters/http (network filters: internal/filters/
// network) and one import here.
package all

import (
	// HTTP filters.
	_ "github.com/legateproxy/legate/internal/filters/http/admission_control"
	_ "github.com/legateproxy/legate/internal/filters/http/api_key_auth"
	_ "github.com/legateproxy/legate/internal/filters/http/aws_lambda"
	_ "github.com/legateproxy/legate/internal/filters/http/aws_request_signing"
	_ "github.com/legateproxy/legate/internal/filters/http/bandwidth_limit"
	_ "github.com/legateproxy/legate/internal/filters/http/basic_auth"
	_ "github.com/legateproxy/legate/internal/filters/http/buffer"
	_ "github.com/legateproxy/legate/internal/filters/http/cache"
	_ "github.com/legateproxy/legate/internal/filters/http/cdn_loop"
	_ "github.com/legateproxy/legate/internal/filters/http/composite"
	_ "github.com/legateproxy/legate/internal/filters/http/compressor"
	_ "github.com/legateproxy/legate/internal/filters/http/cors"
	_ "github.com/legateproxy/legate/internal/filters/http/credential_injector"
	_ "github.com/legateproxy/legate/internal/filters/http/csrf"
	_ "github.com/legateproxy/legate/internal/filters/http/custom_response"
	_ "github.com/legateproxy/legate/internal/filters/http/decompressor"
	_ "github.com/legateproxy/legate/internal/filters/http/dynamic_forward_proxy"
	_ "github.com/legateproxy/legate/internal/filters/http/ext_authz"
	_ "github.com/legateproxy/legate/internal/filters/http/ext_proc"
	_ "github.com/legateproxy/legate/internal/filters/http/fault"
	_ "github.com/legateproxy/legate/internal/filters/http/grpc_http1_bridge"
	_ "github.com/legateproxy/legate/internal/filters/http/grpc_http1_reverse_bridge"
	_ "github.com/legateproxy/legate/internal/filters/http/grpc_json_transcoder"
	_ "github.com/legateproxy/legate/internal/filters/http/grpc_stats"
	_ "github.com/legateproxy/legate/internal/filters/http/grpc_web"
	_ "github.com/legateproxy/legate/internal/filters/http/header_mutation"
	_ "github.com/legateproxy/legate/internal/filters/http/header_to_metadata"
	_ "github.com/legateproxy/legate/internal/filters/http/health_check"
	_ "github.com/legateproxy/legate/internal/filters/http/json_to_metadata"
	_ "github.com/legateproxy/legate/internal/filters/http/jwt_authn"
	_ "github.com/legateproxy/legate/internal/filters/http/kill_request"
	_ "github.com/legateproxy/legate/internal/filters/http/local_ratelimit"
	_ "github.com/legateproxy/legate/internal/filters/http/lua"
	_ "github.com/legateproxy/legate/internal/filters/http/match_delegate"
	_ "github.com/legateproxy/legate/internal/filters/http/oauth2"
	_ "github.com/legateproxy/legate/internal/filters/http/ratelimit"
	_ "github.com/legateproxy/legate/internal/filters/http/rbac"
	_ "github.com/legateproxy/legate/internal/filters/http/set_filter_state"
	_ "github.com/legateproxy/legate/internal/filters/http/set_metadata"
	_ "github.com/legateproxy/legate/internal/filters/http/stateful_session"

	// Network filters (the HTTP connection manager registers itself in
	// internal/hcm).
	_ "github.com/legateproxy/legate/internal/filters/network/connection_limit"
	_ "github.com/legateproxy/legate/internal/filters/network/direct_response"
	_ "github.com/legateproxy/legate/internal/filters/network/echo"
	_ "github.com/legateproxy/legate/internal/filters/network/ext_authz"
	_ "github.com/legateproxy/legate/internal/filters/network/local_ratelimit"
	_ "github.com/legateproxy/legate/internal/filters/network/ratelimit"
	_ "github.com/legateproxy/legate/internal/filters/network/rbac"
	_ "github.com/legateproxy/legate/internal/filters/network/redis_proxy"
	_ "github.com/legateproxy/legate/internal/filters/network/sni_cluster"
	_ "github.com/legateproxy/legate/internal/filters/network/sni_dynamic_forward_proxy"
	_ "github.com/legateproxy/legate/internal/filters/network/tcp_proxy"

	// Listener filters (tls_inspector, http_inspector and original_dst are
	// built into internal/listener).
	_ "github.com/legateproxy/legate/internal/filters/listener/local_ratelimit"
	_ "github.com/legateproxy/legate/internal/filters/listener/proxy_protocol"
	_ "github.com/legateproxy/legate/internal/filters/udp/udp_proxy"

	// Upstream transport sockets (raw_buffer and tls are in internal/tlsx).
	_ "github.com/legateproxy/legate/internal/filters/transport_sockets/internal_upstream"
	_ "github.com/legateproxy/legate/internal/filters/transport_sockets/upstream_proxy_protocol"
)
