// Package streaminfo is the record of one HTTP request (or TCP connection)
// as it passes through the proxy: timings, byte counts, the upstream chosen,
// response flags and details. Access logs and header substitutions
// (%UPSTREAM_HOST%, %RESPONSE_FLAGS%, ...) read it; the connection manager
// and router fill it. It mirrors Envoy's StreamInfo.
package streaminfo

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/headers"
)

// Flag is one of Envoy's response flags.
type Flag uint32

// Response flags, in Envoy's order (which is also the order they print in).
const (
	FailedLocalHealthCheck           Flag = 1 << iota // LH
	NoHealthyUpstream                                 // UH
	UpstreamRequestTimeout                            // UT
	LocalReset                                        // LR
	UpstreamRemoteReset                               // UR
	UpstreamConnectionFailure                         // UF
	UpstreamConnectionTermination                     // UC
	UpstreamOverflow                                  // UO
	NoRouteFound                                      // NR
	DelayInjected                                     // DI
	FaultInjected                                     // FI
	RateLimited                                       // RL
	UnauthorizedExternalService                       // UAEX
	RateLimitServiceError                             // RLSE
	DownstreamConnectionTermination                   // DC
	UpstreamRetryLimitExceeded                        // URX
	StreamIdleTimeout                                 // SI
	InvalidEnvoyRequestHeaders                        // IH
	DownstreamProtocolError                           // DPE
	UpstreamMaxStreamDurationReached                  // UMSDR
	ResponseFromCacheFilter                           // RFCF
	NoFilterConfigFound                               // NFCF
	DurationTimeout                                   // DT
	UpstreamProtocolError                             // UPE
	NoClusterFound                                    // NC
	OverloadManager                                   // OM
	DNSResolutionFailed                               // DF
	DropOverload                                      // DO
	DownstreamRemoteReset                             // DR
)

var flagShort = []string{"LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
	"DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR"}

var flagLong = []string{"FailedLocalHealthCheck", "NoHealthyUpstream", "UpstreamRequestTimeout", "LocalReset",
	"UpstreamRemoteReset", "UpstreamConnectionFailure", "UpstreamConnectionTermination", "UpstreamOverflow",
	"NoRouteFound", "DelayInjected", "FaultInjected", "RateLimited", "UnauthorizedExternalService",
	"RateLimitServiceError", "DownstreamConnectionTermination", "UpstreamRetryLimitExceeded", "StreamIdleTimeout",
	"InvalidEnvoyRequestHeaders", "DownstreamProtocolError", "UpstreamMaxStreamDurationReached",
	"ResponseFromCacheFilter", "NoFilterConfigFound", "DurationTimeout", "UpstreamProtocolError", "NoClusterFound",
	"OverloadManager", "DnsResolutionFailed", "DropOverload", "DownstreamRemoteReset"}

// Flags is a set of response flags.
type Flags uint32

// Has reports whether f is set.
func (fs Flags) Has(f Flag) bool { return uint32(fs)&uint32(f) != 0 }

// String renders the flags as %RESPONSE_FLAGS% does: short names joined by
// commas, or "-" when none is set.
func (fs Flags) String() string { return string(fs.AppendShort(nil)) }

// Long renders the flags as %RESPONSE_FLAGS_LONG%.
func (fs Flags) Long() string { return string(fs.AppendLong(nil)) }

// AppendShort appends the %RESPONSE_FLAGS% rendering.
func (fs Flags) AppendShort(dst []byte) []byte { return fs.appendNames(dst, flagShort) }

// AppendLong appends the %RESPONSE_FLAGS_LONG% rendering.
func (fs Flags) AppendLong(dst []byte) []byte { return fs.appendNames(dst, flagLong) }

func (fs Flags) appendNames(dst []byte, names []string) []byte {
	if fs == 0 {
		return append(dst, '-')
	}
	first := true
	for i := range names {
		if uint32(fs)&(1<<i) != 0 {
			if !first {
				dst = append(dst, ',')
			}
			dst = append(dst, names[i]...)
			first = false
		}
	}
	return dst
}

// TLSInfo describes a TLS connection.
type TLSInfo struct {
	Version   string // "TLSv1.3"
	Cipher    string
	SessionID string
	PeerCert  *x509.Certificate
	// PeerChain is the rest of the chain the client presented.
	PeerChain    []*x509.Certificate
	PeerSubject  string
	PeerIssuer   string
	LocalSubject string
	// LocalURISAN are the URI SANs of the certificate this side
	// presented (x-forwarded-client-cert's By).
	LocalURISAN     []string
	PeerURISAN      []string
	PeerDNSSAN      []string
	PeerSerial      string
	PeerFingerprint string
}

// Info is the record of one request.
type Info struct {
	StartTime time.Time // wall clock and monotonic start
	// Durations from StartTime; zero when the event did not happen.
	LastDownstreamRxByte, FirstUpstreamTxByte, LastUpstreamTxByte time.Duration
	FirstUpstreamRxByte, LastUpstreamRxByte                       time.Duration
	FirstDownstreamTxByte, LastDownstreamTxByte                   time.Duration
	// Done is the total duration, set when the request finishes.
	Done time.Duration

	Protocol string // "HTTP/1.1", "HTTP/2", "HTTP/1.0"

	Request      *headers.Request
	Response     *headers.Response
	RespTrailers *headers.Map
	ReqTrailers  *headers.Map

	BytesReceived, BytesSent uint64
	// Wire byte counts (headers included), for %*_WIRE_BYTES_*%.
	UpstreamBytesSent, UpstreamBytesReceived uint64

	// LocalReplyBody is the body of the local reply being formatted
	// (%LOCAL_REPLY_BODY%).
	LocalReplyBody string

	ResponseCode                   int
	ResponseFlags                  Flags
	ResponseCodeDetails            string
	ConnTerminationDetails         string
	UpstreamTransportFailureReason string

	RouteName                   string
	VirtualHostName             string
	UpstreamCluster             string
	UpstreamHost                string // ip:port of the chosen host
	UpstreamHostname            string
	UpstreamLocalAddress        string
	UpstreamRequestAttemptCount int
	// HealthCheck marks a request the health_check filter recognized as a
	// health check (Envoy's StreamInfo::healthCheck).
	HealthCheck bool
	// Traced is the connection manager's tracing decision for the
	// request (sampled, forced or client-requested).
	Traced bool

	DownstreamRemote       netip.AddrPort // after XFF processing
	DownstreamDirectRemote netip.AddrPort // the peer of the socket

	// DownstreamConnRemote is the connection's remote address: a PROXY
	// protocol header's source, else the socket's peer, never
	// x-forwarded-for (RBAC's source_ip); zero: DownstreamDirectRemote.
	DownstreamConnRemote netip.AddrPort

	DownstreamLocal     netip.AddrPort
	ConnectionID        uint64
	RequestedServerName string
	// TransportProtocol and ApplicationProtocols are what the listener
	// filters detected ("tls" or "raw_buffer"; the ALPN offered, or "h2c"
	// and "http/1.1" from http_inspector), for filter chain matching.
	TransportProtocol    string
	ApplicationProtocols []string
	DownstreamTLS        *TLSInfo
	UpstreamTLS          *TLSInfo

	// Hostname is the proxy's host name (%HOSTNAME%).
	Hostname string

	// DynamicMetadata is what filters publish for later filters, the
	// router and access logs (%DYNAMIC_METADATA%), by namespace — by
	// convention the filter's name.
	DynamicMetadata map[string]*structpb.Struct
	// Redirects are the internal redirects the request took so far, each
	// from a route to the route its Location matched (Envoy's
	// num_internal_redirects and previous_routes filter state, which
	// live as long as the request, across redirects).
	Redirects []Redirect
	// frozenMeta names the namespaces whose Struct is shared by every
	// request (SetFrozenDynamicMetadata): a write copies it first.
	frozenMeta [2]string
	// FilterState is data filters share by key (%FILTER_STATE%).
	FilterState map[string]FilterStateValue
	// UpstreamShared holds the FilterState keys whose objects are shared
	// with the upstream connection (set_filter_state's
	// shared_with_upstream): an internal_upstream transport socket hands
	// them to the internal listener.
	UpstreamShared map[string]bool
	// UpstreamOverrideHost is the host a filter asks the load balancer
	// for (Envoy's setUpstreamOverrideHost, set by stateful_session); nil
	// when none. The router hands it to every attempt's host pick.
	UpstreamOverrideHost *OverrideHost
	// Node identity for %ENVOY_NODE%-style operators is not tracked.
}

// OverrideHost is Envoy's LoadBalancerContext::OverrideHost: the address
// ("ip:port", as the cluster's host is keyed) a request should go to.
// The cluster honours it when the host is in its host set with a health
// status its common_lb_config.override_host_status allows; else Strict
// makes the pick fail (503 "no healthy upstream", or NotFoundStatus when
// set and the host is not in the cluster at all) rather than fall back to
// the load balancer.
type OverrideHost struct {
	Address        string
	Strict         bool
	NotFoundStatus int
}

// FilterStateValue is a filter-state object (Envoy's FilterState::Object);
// String is its serialized form (serializeAsString), which
// %FILTER_STATE(KEY:PLAIN)%, filter-state matchers and RBAC read.
type FilterStateValue interface{ String() string }

// TypedFilterStateValue is a filter-state object with a typed form
// (Envoy's serializeAsProto): %FILTER_STATE(KEY)% and
// %FILTER_STATE(KEY:TYPED)% render it as JSON. An object without one
// renders as missing there, as in Envoy.
type TypedFilterStateValue interface {
	FilterStateValue
	// AppendJSON appends the typed form as one JSON value.
	AppendJSON(dst []byte) []byte
}

// FieldFilterStateValue is a filter-state object with named fields
// (Envoy's getField), for %FILTER_STATE(KEY:FIELD:NAME)%.
type FieldFilterStateValue interface {
	FilterStateValue
	// Field returns a field's value, a string or an int64; ok is false
	// when the object has no such field.
	Field(name string) (v any, ok bool)
}

// StringObject is Envoy's generic string filter-state object (the
// envoy.string factory, Router::StringAccessorImpl): its plain form is the
// string, its typed form a google.protobuf.StringValue, which renders as a
// JSON string.
type StringObject string

// String returns the string.
func (s StringObject) String() string { return string(s) }

// AppendJSON appends the string as a JSON string.
func (s StringObject) AppendJSON(dst []byte) []byte { return AppendJSONString(dst, string(s)) }

// AppendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, other characters (UTF-8) as they are.
func AppendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// Redirect is one internal redirect: the names of the route whose
// upstream answered with it and of the route its Location matched.
type Redirect struct{ From, To string }

// SetDynamicMetadata merges fields into a namespace of the dynamic
// metadata, as Envoy's setDynamicMetadata.
func (i *Info) SetDynamicMetadata(ns string, fields map[string]*structpb.Value) {
	if i.DynamicMetadata == nil {
		i.DynamicMetadata = map[string]*structpb.Struct{}
	}
	st := i.writable(ns)
	if st == nil {
		st = &structpb.Struct{Fields: map[string]*structpb.Value{}}
		i.DynamicMetadata[ns] = st
	}
	for k, v := range fields {
		st.Fields[k] = v
	}
}

// SetDynamicMetadataValue sets one field of namespace ns (the
// single-field SetDynamicMetadata without a map to build).
func (i *Info) SetDynamicMetadataValue(ns, key string, v *structpb.Value) {
	if i.DynamicMetadata == nil {
		i.DynamicMetadata = map[string]*structpb.Struct{}
	}
	st := i.writable(ns)
	if st == nil {
		st = &structpb.Struct{Fields: make(map[string]*structpb.Value, 2)}
		i.DynamicMetadata[ns] = st
	}
	st.Fields[key] = v
}

// SetFrozenDynamicMetadata sets namespace ns to st without copying it
// when ns has no metadata yet, and merges st's fields into it otherwise.
// st is shared by every request that gets it (a filter's values built
// once per policy and outcome) and must never change: a later write to
// ns copies it first. This saves a request the Struct and its map.
func (i *Info) SetFrozenDynamicMetadata(ns string, st *structpb.Struct) {
	if i.DynamicMetadata[ns] != nil {
		i.SetDynamicMetadata(ns, st.Fields)
		return
	}
	slot := -1
	for k := range i.frozenMeta {
		if i.frozenMeta[k] == "" {
			slot = k
			break
		}
	}
	if slot < 0 || ns == "" {
		// No room to remember it is shared: a copy of its own.
		i.SetDynamicMetadata(ns, st.Fields)
		return
	}
	if i.DynamicMetadata == nil {
		i.DynamicMetadata = make(map[string]*structpb.Struct, 2)
	}
	i.DynamicMetadata[ns] = st
	i.frozenMeta[slot] = ns
}

// writable is the Struct of namespace ns to write into (nil when there is
// none), a copy of it if it is a shared one.
func (i *Info) writable(ns string) *structpb.Struct {
	st := i.DynamicMetadata[ns]
	if st == nil {
		return nil
	}
	for k := range i.frozenMeta {
		if i.frozenMeta[k] == ns {
			i.frozenMeta[k] = ""
			cp := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(st.Fields)+1)}
			for f, v := range st.Fields {
				cp.Fields[f] = v
			}
			i.DynamicMetadata[ns] = cp
			return cp
		}
	}
	return st
}

// SetFilterState stores a filter-state object.
func (i *Info) SetFilterState(key string, v FilterStateValue) {
	if i.FilterState == nil {
		i.FilterState = map[string]FilterStateValue{}
	}
	i.FilterState[key] = v
}

// ShareWithUpstream marks (or, with false, unmarks) the filter-state
// object under key as shared with the upstream connection.
func (i *Info) ShareWithUpstream(key string, shared bool) {
	if !shared {
		delete(i.UpstreamShared, key)
		return
	}
	if i.UpstreamShared == nil {
		i.UpstreamShared = map[string]bool{}
	}
	i.UpstreamShared[key] = true
}

// UpstreamSharedObjects returns the filter-state objects shared with the
// upstream connection, or nil when there are none.
func (i *Info) UpstreamSharedObjects() map[string]FilterStateValue {
	var out map[string]FilterStateValue
	for k := range i.UpstreamShared {
		if v, ok := i.FilterState[k]; ok && v != nil {
			if out == nil {
				out = map[string]FilterStateValue{}
			}
			out[k] = v
		}
	}
	return out
}

// SetFlag sets a response flag.
func (i *Info) SetFlag(f Flag) { i.ResponseFlags |= Flags(f) }

// Reset clears the record for reuse.
func (i *Info) Reset() { *i = Info{} }

// Since returns the time elapsed since StartTime, at least 1ns so that a
// recorded event is distinguishable from one that did not happen.
func (i *Info) Since() time.Duration {
	d := time.Since(i.StartTime)
	if d <= 0 {
		d = 1
	}
	return d
}

// pemEscaper is Envoy's URL encoding of a PEM certificate
// (urlEncodedPemEncodedPeerCertificate): only newline, space, '+', '/' and
// '=' are escaped — a space is %20, not the '+' of query encoding.
var pemEscaper = strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D")

// URLEncodedPEM renders certificates as concatenated PEM blocks, URL
// encoded as Envoy does for XFCC Cert/Chain and ext_authz's
// source.certificate.
func URLEncodedPEM(certs ...*x509.Certificate) string {
	var p []byte
	for _, c := range certs {
		p = append(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return pemEscaper.Replace(string(p))
}
