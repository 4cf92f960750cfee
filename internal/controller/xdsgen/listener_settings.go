package xdsgen

import (
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	proxyprotocolv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/proxy_protocol/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// AccessLog is the access log of the generated HTTP and HTTPS listeners
// (Contour's --envoy-http-access-log, --envoy-https-access-log and the
// configuration file's accesslog-* keys). The zero value is Contour's
// default: Envoy's default format, every request, to /dev/stdout.
type AccessLog struct {
	// HTTPPath and HTTPSPath are the files of the HTTP and the HTTPS
	// listener (default /dev/stdout).
	HTTPPath, HTTPSPath string
	// Format is "envoy" (default) or "json".
	Format string
	// FormatString is the envoy format's line; empty is Envoy's default.
	FormatString string
	// JSONFields are the json format's fields (name → command operator).
	JSONFields map[string]string
	// Level is info (default: every request), error (status >= 300 or a
	// response flag), critical (>= 500 or a response flag) or disabled.
	Level string
}

// Timeouts of the generated HTTP connection managers, as Contour's
// configuration file's timeouts block: nil keeps Envoy's default, a
// pointer to 0 disables the timeout ("infinity").
type Timeouts struct {
	Request, ConnectionIdle, StreamIdle, MaxConnectionDuration, DelayedClose, ConnectionShutdownGracePeriod *time.Duration
}

func pdur(d *time.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return dur(*d)
}

// accessLogs is the access_log of a listener writing to path, as
// Contour's FileAccessLogEnvoy / FileAccessLogJSON.
func (o Options) accessLogs(path string) []*accesslogv3.AccessLog {
	a := o.AccessLog
	if a.Level == "disabled" {
		return nil
	}
	if path == "" {
		path = "/dev/stdout"
	}
	fl := &filelogv3.FileAccessLog{Path: path}
	switch {
	case a.Format == "json":
		s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
		for k, v := range a.JSONFields {
			s.Fields[k] = structpb.NewStringValue(v)
		}
		fl.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}, OmitEmptyValues: true}}
	case a.FormatString != "":
		fl.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: a.FormatString}}}}}
	}
	al := &accesslogv3.AccessLog{Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(fl)}}
	switch a.Level {
	case "error":
		al.Filter = onlyErrors(300)
	case "critical":
		al.Filter = onlyErrors(500)
	}
	return []*accesslogv3.AccessLog{al}
}

// onlyErrors logs responses of at least min, or with any response flag
// (every flag is a failure), as Contour's error and critical levels.
func onlyErrors(min uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
		Filters: []*accesslogv3.AccessLogFilter{
			{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
				Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE,
					Value: &corev3.RuntimeUInt32{DefaultValue: min, RuntimeKey: "contour.accesslog.filter.status_code"}}}}},
			{FilterSpecifier: &accesslogv3.AccessLogFilter_ResponseFlagFilter{ResponseFlagFilter: &accesslogv3.ResponseFlagFilter{}}},
		}}}}
}

// codec is the HCM codec for the default HTTP versions: one version
// forces it, none or both detect it (Contour's default-http-versions).
func (o Options) codec() hcmv3.HttpConnectionManager_CodecType {
	h1, h2 := o.httpVersions()
	switch {
	case h1 && !h2:
		return hcmv3.HttpConnectionManager_HTTP1
	case h2 && !h1:
		return hcmv3.HttpConnectionManager_HTTP2
	}
	return hcmv3.HttpConnectionManager_AUTO
}

// alpn is what TLS listeners offer for the default HTTP versions.
func (o Options) alpn() []string {
	h1, h2 := o.httpVersions()
	switch {
	case h1 && !h2:
		return []string{"http/1.1"}
	case h2 && !h1:
		return []string{"h2"}
	}
	return []string{"h2", "http/1.1"}
}

func (o Options) httpVersions() (h1, h2 bool) {
	for _, v := range o.HTTPVersions {
		switch v {
		case "http/1.1":
			h1 = true
		case "http/2":
			h2 = true
		}
	}
	if !h1 && !h2 {
		return true, true
	}
	return h1, h2
}

var serverHeaders = map[string]hcmv3.HttpConnectionManager_ServerHeaderTransformation{
	"overwrite":        hcmv3.HttpConnectionManager_OVERWRITE,
	"append_if_absent": hcmv3.HttpConnectionManager_APPEND_IF_ABSENT,
	"pass_through":     hcmv3.HttpConnectionManager_PASS_THROUGH,
}

// applyHCM sets what Contour sets on every HTTP connection manager from
// its configuration: access log, timeouts, trusted hops, codec, HTTP/1
// options, slash merging and the Server header.
func (o Options) applyHCM(hcm *hcmv3.HttpConnectionManager, accessLogPath string) {
	hcm.AccessLog = o.accessLogs(accessLogPath)
	hcm.CodecType = o.codec()
	hcm.XffNumTrustedHops = o.XffNumTrustedHops
	// Contour merges slashes unless disableMergeSlashes and accepts
	// HTTP/1.0 with a Host header (its #537). Contour also sets
	// allow_chunked_length unless disableAllowChunkedLength; Legate's
	// proxy does not implement it and always rejects a request with both
	// Content-Length and chunked encoding (Envoy's behaviour without it).
	hcm.MergeSlashes = !o.DisableMergeSlashes
	hcm.HttpProtocolOptions = &corev3.Http1ProtocolOptions{AcceptHttp_10: true}
	hcm.ServerHeaderTransformation = serverHeaders[o.ServerHeaderTransformation]
	t := o.Timeouts
	hcm.RequestTimeout = pdur(t.Request)
	hcm.StreamIdleTimeout = pdur(t.StreamIdle)
	hcm.DelayedCloseTimeout = pdur(t.DelayedClose)
	hcm.DrainTimeout = pdur(t.ConnectionShutdownGracePeriod)
	if o.HTTP2MaxConcurrentStreams > 0 {
		hcm.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{MaxConcurrentStreams: u32OrNil(o.HTTP2MaxConcurrentStreams)}
	}
	if t.ConnectionIdle != nil || t.MaxConnectionDuration != nil {
		hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: pdur(t.ConnectionIdle), MaxConnectionDuration: pdur(t.MaxConnectionDuration)}
	}
}

// proxyProtocol puts the proxy_protocol listener filter before the
// others when UseProxyProto is set (Contour's --use-proxy-protocol): the
// TLS inspector must read the ClientHello after the PROXY header.
func (o Options) proxyProtocol(filters []*listenerv3.ListenerFilter) []*listenerv3.ListenerFilter {
	if !o.UseProxyProto {
		return filters
	}
	pp := &listenerv3.ListenerFilter{Name: "envoy.filters.listener.proxy_protocol",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&proxyprotocolv3.ProxyProtocol{})}}
	return append([]*listenerv3.ListenerFilter{pp}, filters...)
}
