// Package router is Envoy's router filter for Legate, the terminal HTTP
// filter of a connection manager: it sends a request to the cluster its
// route picked — timeouts (route, per try, x-envoy-upstream-rq-timeout-ms,
// grpc-timeout), retries with Envoy's back-off and retry conditions,
// hash policies, header rewrites and mutations, request mirrors, upgrades
// (WebSocket), CONNECT proxied or terminated and TCP upstreams
// (connect.go) — through one upstream.Exchange per attempt, wrapped in the
// cluster's upstream HTTP filters, and relays the response through the
// connection manager's encoder filters. Failures become Envoy's local
// replies and response flags.
//
// The connection manager owns the downstream side; it hands the router a
// Downstream for each request and keeps one Stream per downstream stream.
package router

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// Downstream is the connection manager's side of one request, as the
// router uses it: the request body through the decoder filters, the
// response through the encoder filters, local replies, and the
// connection.
type Downstream interface {
	// ReadBody reads the request body (after the decoder filters).
	ReadBody(p []byte) (int, error)
	// BodyLength is the request body's length (-1: unknown yet).
	BodyLength() int64
	// RequestTrailers are the request trailers once the body was read.
	RequestTrailers() *headers.Map
	// BodyConsumed tells the connection manager the router reads (or
	// read) the body, so it does not drain it.
	BodyConsumed()
	// DrainRequestBody discards what is left of the request body.
	DrainRequestBody()
	// EncodeHead starts the response (the Response's status and headers)
	// through the encoder filters: length is the body length or -1, end
	// says there is no body. ErrReplaced means a local reply replaced it.
	EncodeHead(length int64, end bool) error
	EncodeBody(p []byte) error
	EncodeFlush() error
	EncodeFinish(trailers *headers.Map) error
	// FinalizeResponseHeaders adds the headers every response gets
	// (server, date, x-request-id).
	FinalizeResponseHeaders()
	// ResponseStarted marks the response as begun.
	ResponseStarted()
	// LocalReply answers the request from the proxy (Envoy's
	// sendLocalReply), through the encoder filters.
	LocalReply(status int, body, details string, flag streaminfo.Flag)
	// SendLocalReply is LocalReply with a filter's extra headers and gRPC
	// status.
	SendLocalReply(status int, body string, r httpfilter.LocalReply)
	// CloseConnection asks the codec to close the connection after this
	// response.
	CloseConnection()
	// Context is done when the client has gone.
	Context() context.Context
	// WatchClose calls gone (from another goroutine) if the client closes
	// its connection while the request waits; stop ends the watch.
	WatchClose(gone func()) (stop func())
	// WriteHead and Flush write to the codec directly (a 101 response).
	WriteHead(status int, h *headers.Map, length int64, end bool) error
	Flush() error
	// Hijack takes the connection after a 101 (HTTP/1 only).
	Hijack() (net.Conn, []byte, bool)
	// StartTunnel tells the codec the request's payload is a tunnel from
	// now on (CONNECT, or a POST relayed as TCP): its request deadlines
	// stop (the router's idle timeout bounds the tunnel) and an HTTP/1.1
	// connection closes after it.
	StartTunnel()
	// AbortRead cuts the client's side of a tunnel: a ReadBody blocked in
	// another goroutine returns and later ones fail (over HTTP/1.1, a
	// blocked write to a client that does not read fails too).
	AbortRead()
	// ClientGone reports whether the client's connection (HTTP/2: its
	// stream) is gone, probed while a tunnel waits on its upstream.
	ClientGone() bool
	// ConnectionState is a value kept per downstream connection.
	ConnectionState(key any, create func() any) any
}

// Errors the Downstream's methods report.
var (
	// ErrReplaced: a local reply from an encoder filter replaced the
	// response being relayed.
	ErrReplaced = errors.New("the response was replaced by a local reply")
	// ErrRequestTimeout: request_timeout expired while the body was read.
	ErrRequestTimeout = errors.New("request timeout")
)

// Stats are the connection manager's statistics the router counts in
// (http.<stat_prefix>.*).
type Stats struct {
	NoCluster, RqIdleTimeout, RqReset, RqRxReset, CxDestroyRemoteActiveRq *stats.Counter
	RqTooLarge, RsTooLarge, CxUpgradesTotal                               *stats.Counter
	CxUpgradesActive                                                      *stats.Gauge
	RqStatus                                                              *stats.StatusCounters
	// Internal redirects passed to the client, by reason (Envoy's
	// passthrough_internal_redirect_*); nil counters count nothing.
	RedirectBadLocation, RedirectUnsafeScheme, RedirectTooMany, RedirectNoRoute, RedirectPredicate *stats.Counter
}

// Config is the router of one connection manager.
type Config struct {
	Stats *Stats
	// SuppressEnvoyHeaders is the router's suppress_envoy_headers.
	SuppressEnvoyHeaders bool
	// NoDynamicStats is the router's dynamic_stats false: the cluster's
	// upstream_rq_<code>, upstream_rq_<class>xx and upstream_rq_time are
	// not recorded (Envoy's chargeUpstreamCode and upstream timing).
	NoDynamicStats bool
	// RespectExpectedRqTimeout is the router's respect_expected_rq_timeout:
	// an x-envoy-expected-rq-timeout-ms a trusted (egress) Envoy set is
	// the request's timeout.
	RespectExpectedRqTimeout bool
	// SchemeMatchUpstream is scheme_header_transformation.match_upstream:
	// an HTTP/2 request's :scheme is https over TLS, http otherwise.
	SchemeMatchUpstream bool
	// StreamIdleTimeout is the connection manager's stream_idle_timeout.
	StreamIdleTimeout time.Duration
	Clusters          *upstream.Manager
	Log               *slog.Logger
}

// Stream is the router's state for one downstream stream, reused from
// request to request (Reset keeps its storage). The connection manager
// sets the request's fields before Forward.
type Stream struct {
	Req  *headers.Request
	Resp *headers.Response
	Info *streaminfo.Info
	// Route and the cluster it picked (a weighted cluster is chosen when
	// the route is resolved, as Envoy).
	Route    *route.Route
	WC       *route.WeightedCluster
	PickRef  *upstream.Ref
	PickName string
	Table    *route.Table
	// Upgrade is the accepted upgrade type (websocket), lower case.
	Upgrade string
	IsGRPC  bool
	// Local is the connection's (restored) destination.
	Local netip.AddrPort
	// OriginalDst is Local when the original_dst listener filter restored
	// it (Envoy's localAddressRestored), else zero: ORIGINAL_DST clusters
	// connect only to a restored destination, never to the proxy's own
	// listener.
	OriginalDst netip.AddrPort
	// Redirected is set when Forward followed an internal redirect
	// instead of answering: Req now holds the redirected request, which
	// the connection manager runs again (route, filters, router), as
	// Envoy's recreateStream.
	Redirected bool
	// Attempts, when set, hears of each upstream request the stream makes
	// (its tracing: Envoy's router spans every upstream request,
	// retries included).
	Attempts AttemptObserver

	ds      Downstream
	cfg     *Config
	scratch []byte
	// newCookie is a Set-Cookie generated by a cookie hash policy (ttl
	// set), added to the upstream response.
	newCookie string
	at        attempt
	// goneFn is s.downstreamGone, made once (the close watcher's
	// callback; a method value per request would be an allocation).
	goneFn func()
}

// AttemptObserver hears of each upstream request of a stream.
type AttemptObserver interface {
	// StartAttempt is called before an upstream request is sent; it may
	// add headers to the request.
	StartAttempt()
	// EndAttempt is called when an attempt is given up for a retry, with
	// the status the upstream answered (0: no response). The last
	// attempt's end is the stream's.
	EndAttempt(status int)
}

// Reset clears the stream for the next request, keeping its storage.
func (s *Stream) Reset() {
	head := s.at.head
	head.Reset()
	exclude := s.at.lb.Exclude[:0]
	scratch := s.scratch[:0]
	gone := s.goneFn
	// Cleared in place, then the kept storage put back: a literal with
	// those fields would be built aside and copied over, a second pass.
	*s = Stream{}
	s.scratch, s.goneFn = scratch, gone
	s.at.head = head
	s.at.lb.Exclude = exclude
}

// Forward sends the request upstream, with retries, and relays the
// response (or answers with the failure's local reply).
func (s *Stream) Forward(cfg *Config, ds Downstream) {
	s.cfg, s.ds = cfg, ds
	s.forward()
}
