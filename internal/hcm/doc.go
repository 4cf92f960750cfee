// Package hcm is Envoy's HTTP connection manager for Legate
// (envoy.filters.network.http_connection_manager), the network filter a
// listener's chain ends in for HTTP: the downstream codecs (Legate's own
// HTTP/1.1 codec loop in conn_h1.go; HTTP/2 through x/net/http2 behind a
// flood guard, h2.go and h2guard.go; HTTP/3 on QUIC listeners through
// quic-go's http3 server, http3.go), the request's validation and header
// sanitization as Envoy's connection manager does them (sanitize.go,
// stream.go), route resolution, the HTTP filter manager (filtermanager.go:
// decode and encode callbacks with stop/buffer statuses, per-route
// configs, local replies through the encoders), local_reply_config
// (localreply.go), tracing, stats and access logs.
//
// The terminal filter is the router (internal/router): the connection
// manager hands it each request through the router.Downstream interface
// its stream implements. The listener (internal/listener) hands the
// connection manager each connection through listener.NetworkFilter (a
// QUIC connection through listener.QUICFilter).
package hcm
