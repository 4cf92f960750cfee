package accesslog

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	datav3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	grpcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	register("envoy.access_loggers.http_grpc", &grpcv3.HttpGrpcAccessLogConfig{}, compileHTTPGrpc,
		"envoy_grpc only; grpc_stream_retry_policy is not supported")
	register("envoy.access_loggers.tcp_grpc", &grpcv3.TcpGrpcAccessLogConfig{}, compileTCPGrpc,
		"envoy_grpc only; grpc_stream_retry_policy is not supported")
}

func register(name string, cfg proto.Message, f loggerFactory, notes string) {
	extension.Register(extension.Extension{Name: name, Category: extension.AccessLogger, Config: cfg, Factory: f, Notes: notes})
}

// alsStatPrefix roots the gRPC access loggers' stats, as Envoy's
// GRPC_LOG_STATS_PREFIX.
const alsStatPrefix = "access_logs.grpc_access_log."

// grpcCommon is a compiled CommonGrpcAccessLogConfig plus the entry
// options every gRPC logger has.
type grpcCommon struct {
	logName     string
	target      *grpcTarget
	interval    time.Duration
	bufferBytes int
	filterState []string
	tags        []customTag
}

// compileCommon compiles a CommonGrpcAccessLogConfig; withService: its
// grpc_service is the logger's (not so for an OpenTelemetry logger that
// exports over http_service).
func compileCommon(c *grpcv3.CommonGrpcAccessLogConfig, path string, withService bool) (*grpcCommon, error) {
	if c == nil {
		return nil, config.Errorf(path, "common_config is required")
	}
	// transport_api_version: V3 is the only version (AUTO means V3 too,
	// as Envoy's checkTransportVersion says since v2 was removed).
	// grpc_stream_retry_policy changes how a failed stream is retried:
	// refused with its path by CheckFields.
	if err := config.CheckFields(c, path, "log_name", "grpc_service", "transport_api_version", "buffer_flush_interval",
		"buffer_size_bytes", "filter_state_objects_to_log", "custom_tags"); err != nil {
		return nil, err
	}
	if c.GetTransportApiVersion() == corev3.ApiVersion_V2 {
		return nil, config.Errorf(config.Join(path, "transport_api_version"), "V2 is no longer supported; use V3")
	}
	gc := &grpcCommon{logName: c.GetLogName(), interval: defaultFlushInterval, bufferBytes: defaultBufferBytes,
		filterState: c.GetFilterStateObjectsToLog()}
	var err error
	if withService {
		if gc.target, err = compileGRPCService(c.GetGrpcService(), config.Join(path, "grpc_service")); err != nil {
			return nil, err
		}
	}
	if d := c.GetBufferFlushInterval(); d != nil {
		if gc.interval = d.AsDuration(); gc.interval <= 0 {
			return nil, config.Errorf(config.Join(path, "buffer_flush_interval"), "must be greater than 0")
		}
	}
	if v := c.GetBufferSizeBytes(); v != nil {
		gc.bufferBytes = int(v.GetValue())
	}
	if gc.tags, err = compileCustomTags(c.GetCustomTags(), config.Join(path, "custom_tags")); err != nil {
		return nil, err
	}
	return gc, nil
}

// customTag is a compiled envoy.type.tracing.v3.CustomTag.
type customTag struct {
	name, literal, header, def string
	value                      *format.Formatter
}

func compileCustomTags(tags []*tracingv3.CustomTag, path string) ([]customTag, error) {
	out := make([]customTag, 0, len(tags))
	for i, t := range tags {
		p := config.Index(path, i)
		// metadata tags read route or host metadata the access log does
		// not see here: refused by CheckFields with their path.
		if err := config.CheckFields(t, p, "tag", "literal", "environment", "request_header", "value"); err != nil {
			return nil, err
		}
		ct := customTag{name: t.GetTag()}
		switch k := t.GetType().(type) {
		case *tracingv3.CustomTag_Literal_:
			ct.literal = k.Literal.GetValue()
		case *tracingv3.CustomTag_Environment_:
			// Read once, as Envoy's EnvironmentCustomTag does at config time.
			ct.literal = os.Getenv(k.Environment.GetName())
			if ct.literal == "" {
				ct.literal = k.Environment.GetDefaultValue()
			}
		case *tracingv3.CustomTag_RequestHeader:
			ct.header, ct.def = headers.Lower(k.RequestHeader.GetName()), k.RequestHeader.GetDefaultValue()
		case *tracingv3.CustomTag_Value:
			f, err := format.CompileHeaderValue(k.Value)
			if err != nil {
				return nil, config.Errorf(config.Join(p, "value"), "%v", err)
			}
			ct.value = f
		default:
			return nil, config.Errorf(p, "a custom tag needs literal, environment, request_header or value")
		}
		out = append(out, ct)
	}
	return out, nil
}

// apply adds the tags that have a value (a request header tag without
// the header and without a default is not set, as in Envoy).
func applyTags(tags []customTag, info *streaminfo.Info, set func(k, v string)) {
	for _, t := range tags {
		switch {
		case t.header != "":
			v := ""
			if info.Request != nil {
				v = info.Request.Get(t.header)
			}
			if v == "" {
				v = t.def
			}
			if v != "" {
				set(t.name, strings.Clone(v))
			}
		case t.value != nil:
			set(t.name, t.value.String(info))
		default:
			set(t.name, t.literal)
		}
	}
}

// alsLogger is an http_grpc or tcp_grpc access log.
type alsLogger struct {
	common       *grpcCommon
	reqHeaders   []string
	respHeaders  []string
	respTrailers []string
	tcp          bool
	b            *batcher
}

func compileHTTPGrpc(msg proto.Message, l *Logger, fs *Files, path string) error {
	c := msg.(*grpcv3.HttpGrpcAccessLogConfig)
	if err := config.CheckFields(c, path, "common_config", "additional_request_headers_to_log",
		"additional_response_headers_to_log", "additional_response_trailers_to_log"); err != nil {
		return err
	}
	gc, err := compileCommon(c.GetCommonConfig(), config.Join(path, "common_config"), true)
	if err != nil {
		return err
	}
	a := &alsLogger{common: gc, reqHeaders: lowerAll(c.GetAdditionalRequestHeadersToLog()),
		respHeaders: lowerAll(c.GetAdditionalResponseHeadersToLog()), respTrailers: lowerAll(c.GetAdditionalResponseTrailersToLog())}
	a.b = fs.grpc.get(cacheKey("http", c.GetCommonConfig()), func() *batcher {
		return newBatcher(fs, "gRPC access log "+gc.logName, gc.interval, gc.bufferBytes,
			&alsExporter{target: gc.target, logName: gc.logName}, fs.st.Scope(alsStatPrefix))
	})
	l.sink = a
	return nil
}

func compileTCPGrpc(msg proto.Message, l *Logger, fs *Files, path string) error {
	c := msg.(*grpcv3.TcpGrpcAccessLogConfig)
	if err := config.CheckFields(c, path, "common_config"); err != nil {
		return err
	}
	gc, err := compileCommon(c.GetCommonConfig(), config.Join(path, "common_config"), true)
	if err != nil {
		return err
	}
	a := &alsLogger{common: gc, tcp: true}
	a.b = fs.grpc.get(cacheKey("tcp", c.GetCommonConfig()), func() *batcher {
		return newBatcher(fs, "gRPC access log "+gc.logName, gc.interval, gc.bufferBytes,
			&alsExporter{target: gc.target, logName: gc.logName, tcp: true}, fs.st.Scope(alsStatPrefix))
	})
	l.sink = a
	return nil
}

func lowerAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = headers.Lower(n)
	}
	return out
}

// log builds the entry on the request path (the stream info's strings
// point into buffers the next request reuses, so every one is copied)
// and buffers it.
func (a *alsLogger) log(info *streaminfo.Info) {
	common := commonProperties(info, a.common)
	if a.tcp {
		common.AccessLogType = datav3.AccessLogType_TcpConnectionEnd
		a.b.add(&datav3.TCPAccessLogEntry{CommonProperties: common,
			ConnectionProperties: &datav3.ConnectionProperties{ReceivedBytes: info.BytesReceived, SentBytes: info.BytesSent}})
		return
	}
	common.AccessLogType = datav3.AccessLogType_DownstreamEnd
	a.b.add(httpEntry(info, common, a))
}

// commonProperties fills AccessLogCommon from the stream info, as
// Envoy's Utility::extractCommonAccessLogProperties.
func commonProperties(info *streaminfo.Info, gc *grpcCommon) *datav3.AccessLogCommon {
	c := &datav3.AccessLogCommon{
		// Envoy logs every admitted entry: the sample rate is 1.
		SampleRate:                     1,
		DownstreamRemoteAddress:        sockAddr(info.DownstreamRemote),
		DownstreamDirectRemoteAddress:  sockAddr(info.DownstreamDirectRemote),
		DownstreamLocalAddress:         sockAddr(info.DownstreamLocal),
		UpstreamCluster:                strings.Clone(info.UpstreamCluster),
		RouteName:                      strings.Clone(info.RouteName),
		UpstreamTransportFailureReason: strings.Clone(info.UpstreamTransportFailureReason),
		ConnectionTerminationDetails:   strings.Clone(info.ConnTerminationDetails),
		UpstreamRequestAttemptCount:    uint32(info.UpstreamRequestAttemptCount),
		UpstreamWireBytesSent:          info.UpstreamBytesSent,
		UpstreamWireBytesReceived:      info.UpstreamBytesReceived,
		ResponseFlags:                  responseFlags(info.ResponseFlags),
	}
	if !info.StartTime.IsZero() {
		c.StartTime = timestamppb.New(info.StartTime)
	}
	if h, err := netip.ParseAddrPort(info.UpstreamHost); err == nil {
		c.UpstreamRemoteAddress = sockAddr(h)
	}
	if h, err := netip.ParseAddrPort(info.UpstreamLocalAddress); err == nil {
		c.UpstreamLocalAddress = sockAddr(h)
	}
	dur := func(d time.Duration) *durationpb.Duration {
		if d <= 0 {
			return nil
		}
		return durationpb.New(d)
	}
	c.TimeToLastRxByte = dur(info.LastDownstreamRxByte)
	c.TimeToFirstUpstreamTxByte = dur(info.FirstUpstreamTxByte)
	c.TimeToLastUpstreamTxByte = dur(info.LastUpstreamTxByte)
	c.TimeToFirstUpstreamRxByte = dur(info.FirstUpstreamRxByte)
	c.TimeToLastUpstreamRxByte = dur(info.LastUpstreamRxByte)
	c.TimeToFirstDownstreamTxByte = dur(info.FirstDownstreamTxByte)
	c.TimeToLastDownstreamTxByte = dur(info.LastDownstreamTxByte)
	c.Duration = dur(info.Done)
	if info.Request != nil {
		c.StreamId = strings.Clone(info.Request.Get("x-request-id"))
	}
	if t := info.DownstreamTLS; t != nil {
		c.TlsProperties = tlsProperties(t, info.RequestedServerName)
	}
	if len(info.DynamicMetadata) > 0 {
		md := &corev3.Metadata{FilterMetadata: make(map[string]*structpb.Struct, len(info.DynamicMetadata))}
		for ns, s := range info.DynamicMetadata {
			md.FilterMetadata[ns] = proto.Clone(s).(*structpb.Struct)
		}
		c.Metadata = md
	}
	for _, key := range gc.filterState {
		v, ok := info.FilterState[key]
		if !ok {
			continue
		}
		if a := filterStateAny(v); a != nil {
			if c.FilterStateObjects == nil {
				c.FilterStateObjects = map[string]*anypb.Any{}
			}
			c.FilterStateObjects[key] = a
		}
	}
	if len(gc.tags) > 0 {
		c.CustomTags = map[string]string{}
		applyTags(gc.tags, info, func(k, v string) { c.CustomTags[k] = v })
	}
	return c
}

// filterStateProto is a filter-state object's typed form (Envoy's
// serializeAsProto): a string object is a StringValue, a typed one its
// JSON as a Value; nil: the object has none and is not logged.
func filterStateProto(v streaminfo.FilterStateValue) proto.Message {
	switch o := v.(type) {
	case streaminfo.StringObject:
		return wrapperspb.String(string(o))
	case streaminfo.TypedFilterStateValue:
		var x any
		if err := json.Unmarshal(o.AppendJSON(nil), &x); err != nil {
			return nil
		}
		pv, err := structpb.NewValue(x)
		if err != nil {
			return nil
		}
		return pv
	}
	return nil
}

func filterStateAny(v streaminfo.FilterStateValue) *anypb.Any {
	m := filterStateProto(v)
	if m == nil {
		return nil
	}
	a, err := anypb.New(m)
	if err != nil {
		return nil
	}
	return a
}

func sockAddr(ap netip.AddrPort) *corev3.Address {
	if !ap.IsValid() {
		return nil
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ap.Addr().Unmap().String(), PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())}}}}
}

func responseFlags(f streaminfo.Flags) *datav3.ResponseFlags {
	rf := &datav3.ResponseFlags{
		FailedLocalHealthcheck:           f.Has(streaminfo.FailedLocalHealthCheck),
		NoHealthyUpstream:                f.Has(streaminfo.NoHealthyUpstream),
		UpstreamRequestTimeout:           f.Has(streaminfo.UpstreamRequestTimeout),
		LocalReset:                       f.Has(streaminfo.LocalReset),
		UpstreamRemoteReset:              f.Has(streaminfo.UpstreamRemoteReset),
		UpstreamConnectionFailure:        f.Has(streaminfo.UpstreamConnectionFailure),
		UpstreamConnectionTermination:    f.Has(streaminfo.UpstreamConnectionTermination),
		UpstreamOverflow:                 f.Has(streaminfo.UpstreamOverflow),
		NoRouteFound:                     f.Has(streaminfo.NoRouteFound),
		DelayInjected:                    f.Has(streaminfo.DelayInjected),
		FaultInjected:                    f.Has(streaminfo.FaultInjected),
		RateLimited:                      f.Has(streaminfo.RateLimited),
		RateLimitServiceError:            f.Has(streaminfo.RateLimitServiceError),
		DownstreamConnectionTermination:  f.Has(streaminfo.DownstreamConnectionTermination),
		UpstreamRetryLimitExceeded:       f.Has(streaminfo.UpstreamRetryLimitExceeded),
		StreamIdleTimeout:                f.Has(streaminfo.StreamIdleTimeout),
		InvalidEnvoyRequestHeaders:       f.Has(streaminfo.InvalidEnvoyRequestHeaders),
		DownstreamProtocolError:          f.Has(streaminfo.DownstreamProtocolError),
		UpstreamMaxStreamDurationReached: f.Has(streaminfo.UpstreamMaxStreamDurationReached),
		ResponseFromCacheFilter:          f.Has(streaminfo.ResponseFromCacheFilter),
		NoFilterConfigFound:              f.Has(streaminfo.NoFilterConfigFound),
		DurationTimeout:                  f.Has(streaminfo.DurationTimeout),
		UpstreamProtocolError:            f.Has(streaminfo.UpstreamProtocolError),
		NoClusterFound:                   f.Has(streaminfo.NoClusterFound),
		OverloadManager:                  f.Has(streaminfo.OverloadManager),
		DnsResolutionFailure:             f.Has(streaminfo.DNSResolutionFailed),
		DownstreamRemoteReset:            f.Has(streaminfo.DownstreamRemoteReset),
	}
	if f.Has(streaminfo.UnauthorizedExternalService) {
		rf.UnauthorizedDetails = &datav3.ResponseFlags_Unauthorized{Reason: datav3.ResponseFlags_Unauthorized_EXTERNAL_SERVICE}
	}
	return rf
}

var tlsVersions = map[string]datav3.TLSProperties_TLSVersion{
	"TLSv1": datav3.TLSProperties_TLSv1, "TLSv1.1": datav3.TLSProperties_TLSv1_1,
	"TLSv1.2": datav3.TLSProperties_TLSv1_2, "TLSv1.3": datav3.TLSProperties_TLSv1_3,
}

// cipherIDs maps cipher suite names (Go's IANA names) to their ids, for
// tls_cipher_suite.
var cipherIDs = sync.OnceValue(func() map[string]uint16 {
	m := map[string]uint16{}
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[cs.Name] = cs.ID
	}
	return m
})

func tlsProperties(t *streaminfo.TLSInfo, sni string) *datav3.TLSProperties {
	p := &datav3.TLSProperties{TlsVersion: tlsVersions[t.Version], TlsSniHostname: strings.Clone(sni), TlsSessionId: strings.Clone(t.SessionID)}
	if id, ok := cipherIDs()[t.Cipher]; ok {
		p.TlsCipherSuite = wrapperspb.UInt32(uint32(id))
	}
	if t.PeerCert != nil || t.PeerSubject != "" {
		cp := &datav3.TLSProperties_CertificateProperties{Subject: strings.Clone(t.PeerSubject)}
		for _, u := range t.PeerURISAN {
			cp.SubjectAltName = append(cp.SubjectAltName, &datav3.TLSProperties_CertificateProperties_SubjectAltName{
				San: &datav3.TLSProperties_CertificateProperties_SubjectAltName_Uri{Uri: strings.Clone(u)}})
		}
		for _, d := range t.PeerDNSSAN {
			cp.SubjectAltName = append(cp.SubjectAltName, &datav3.TLSProperties_CertificateProperties_SubjectAltName{
				San: &datav3.TLSProperties_CertificateProperties_SubjectAltName_Dns{Dns: strings.Clone(d)}})
		}
		p.PeerCertificateProperties = cp
	}
	if t.LocalSubject != "" {
		p.LocalCertificateProperties = &datav3.TLSProperties_CertificateProperties{Subject: strings.Clone(t.LocalSubject)}
	}
	return p
}

var httpVersions = map[string]datav3.HTTPAccessLogEntry_HTTPVersion{
	"HTTP/1.0": datav3.HTTPAccessLogEntry_HTTP10, "HTTP/1.1": datav3.HTTPAccessLogEntry_HTTP11,
	"HTTP/2": datav3.HTTPAccessLogEntry_HTTP2, "HTTP/3": datav3.HTTPAccessLogEntry_HTTP3,
}

// headerBytes is the byte size of a header map as Envoy's
// HeaderMap::byteSize: the sum of names and values.
func headerBytes(m *headers.Map) uint64 {
	var n uint64
	m.Range(func(k, v string) bool { n += uint64(len(k) + len(v)); return true })
	return n
}

// httpEntry fills an HTTPAccessLogEntry as Envoy's HttpGrpcAccessLog.
func httpEntry(info *streaminfo.Info, common *datav3.AccessLogCommon, a *alsLogger) *datav3.HTTPAccessLogEntry {
	e := &datav3.HTTPAccessLogEntry{CommonProperties: common, ProtocolVersion: httpVersions[info.Protocol]}
	req := &datav3.HTTPRequestProperties{RequestBodyBytes: info.BytesReceived}
	if r := info.Request; r != nil {
		req.RequestMethod = corev3.RequestMethod(corev3.RequestMethod_value[r.Method])
		req.Scheme = strings.Clone(r.Scheme)
		req.Authority = strings.Clone(r.Authority)
		req.Path = strings.Clone(r.Path)
		req.UserAgent = strings.Clone(r.Map.Get("user-agent"))
		req.Referer = strings.Clone(r.Map.Get("referer"))
		req.ForwardedFor = strings.Clone(r.Map.Get("x-forwarded-for"))
		req.RequestId = strings.Clone(r.Map.Get("x-request-id"))
		req.OriginalPath = strings.Clone(r.Map.Get("x-envoy-original-path"))
		// Envoy's byteSize counts the pseudo-headers too.
		req.RequestHeadersBytes = headerBytes(&r.Map) + uint64(len(":method")+len(r.Method)+len(":path")+len(r.Path)+
			len(":authority")+len(r.Authority)+len(":scheme")+len(r.Scheme))
		req.RequestHeaders = pickHeaders(func(n string) (string, bool) {
			if strings.HasPrefix(n, ":") || n == "host" {
				return r.Lookup(n)
			}
			return joined(&r.Map, n)
		}, a.reqHeaders)
	}
	e.Request = req
	resp := &datav3.HTTPResponseProperties{ResponseBodyBytes: info.BytesSent, ResponseCodeDetails: strings.Clone(info.ResponseCodeDetails)}
	if info.ResponseCode != 0 {
		resp.ResponseCode = wrapperspb.UInt32(uint32(info.ResponseCode))
	}
	if r := info.Response; r != nil {
		resp.ResponseHeadersBytes = headerBytes(&r.Map)
		if r.Status != 0 {
			resp.ResponseHeadersBytes += uint64(len(":status") + len(fmt.Sprint(r.Status)))
		}
		resp.ResponseHeaders = pickHeaders(func(n string) (string, bool) { return joined(&r.Map, n) }, a.respHeaders)
	}
	if t := info.RespTrailers; t != nil {
		resp.ResponseTrailers = pickHeaders(func(n string) (string, bool) { return joined(t, n) }, a.respTrailers)
	}
	e.Response = resp
	return e
}

// joined is every value of a header joined with "," (Envoy's
// getAllOfHeaderAsString), and whether it is present.
func joined(m *headers.Map, name string) (string, bool) {
	if !m.Has(name) {
		return "", false
	}
	return m.Joined(name), true
}

// pickHeaders copies the named headers that are present.
func pickHeaders(get func(string) (string, bool), names []string) map[string]string {
	if len(names) == 0 {
		return nil
	}
	out := map[string]string{}
	for _, n := range names {
		if v, ok := get(n); ok {
			out[n] = strings.Clone(v)
		}
	}
	return out
}

// alsExporter streams StreamAccessLogsMessages on one
// AccessLogService.StreamAccessLogs stream; the first message of a
// stream carries the identifier (node and log_name), as Envoy's.
type alsExporter struct {
	target  *grpcTarget
	logName string
	tcp     bool

	stream alsv3.AccessLogService_StreamAccessLogsClient
	cancel context.CancelFunc
}

func (e *alsExporter) export(b *batcher, batch []proto.Message) error {
	svc := b.fs.services()
	if svc.Async == nil {
		return fmt.Errorf("no cluster manager to reach cluster %q", e.target.Target)
	}
	msg := &alsv3.StreamAccessLogsMessage{}
	if e.tcp {
		l := &alsv3.StreamAccessLogsMessage_TCPAccessLogEntries{}
		for _, m := range batch {
			l.LogEntry = append(l.LogEntry, m.(*datav3.TCPAccessLogEntry))
		}
		msg.LogEntries = &alsv3.StreamAccessLogsMessage_TcpLogs{TcpLogs: l}
	} else {
		l := &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{}
		for _, m := range batch {
			l.LogEntry = append(l.LogEntry, m.(*datav3.HTTPAccessLogEntry))
		}
		msg.LogEntries = &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: l}
	}
	var ctx context.Context
	if e.stream == nil {
		ctx, e.cancel = e.target.Context(context.Background())
	}
	// A send that takes longer than the timeout (a collector that stops
	// reading, a connection that never comes up) resets the stream.
	watchdog := time.AfterFunc(e.target.Timeout, e.cancel)
	defer watchdog.Stop()
	if e.stream == nil {
		cc, err := svc.Async.GRPCTo(e.target.Target)
		if err != nil {
			e.close()
			return err
		}
		s, err := alsv3.NewAccessLogServiceClient(cc).StreamAccessLogs(ctx)
		if err != nil {
			e.close()
			return err
		}
		e.stream = s
		msg.Identifier = &alsv3.StreamAccessLogsMessage_Identifier{Node: svc.Node, LogName: e.logName}
	}
	if err := e.stream.Send(msg); err != nil {
		e.close()
		return err
	}
	return nil
}

// close ends the stream (the loop went idle or the server shuts down).
// The half-close lets the messages already sent reach the collector;
// the stream is cancelled once the collector answers, or after the
// timeout.
func (e *alsExporter) close() {
	s, cancel := e.stream, e.cancel
	e.stream, e.cancel = nil, nil
	if cancel == nil {
		return
	}
	if s == nil {
		cancel()
		return
	}
	s.CloseSend()
	t := time.AfterFunc(e.target.Timeout, cancel)
	go func() {
		s.RecvMsg(&alsv3.StreamAccessLogsResponse{})
		t.Stop()
		cancel()
	}()
}
