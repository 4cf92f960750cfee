package accesslog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/grpc/v3"
	otelv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	collogsv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/asyncclient"
	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	register("envoy.access_loggers.open_telemetry", &otelv3.OpenTelemetryAccessLogConfig{}, compileOTel,
		"OTLP logs over envoy_grpc or http_service; no resource_detectors or formatters extensions; no trace context in records")
}

// otelStatPrefix roots the OpenTelemetry logger's stats, then
// stat_prefix (Envoy's GRPC_LOG_STATS_PREFIX of this logger).
const otelStatPrefix = "access_logs.open_telemetry_access_log."

// otelLogger is an envoy.access_loggers.open_telemetry access log.
type otelLogger struct {
	common     *grpcCommon
	body       *anyNode
	attributes []kvNode
	b          *batcher
}

// anyNode is a compiled AnyValue: string values are format strings
// (Envoy's OpenTelemetryFormatter substitutes %-commands in every
// string of the tree), other scalars are kept as they are.
type anyNode struct {
	f      *format.Formatter
	static *commonv1.AnyValue
	list   []*anyNode
	kvs    []kvNode
	isList bool
	isKVs  bool
}

type kvNode struct {
	key string
	v   *anyNode
}

func compileAny(v *commonv1.AnyValue, path string) (*anyNode, error) {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		f, err := format.Compile(x.StringValue)
		if err != nil {
			return nil, config.Errorf(path, "%v", err)
		}
		return &anyNode{f: f}, nil
	case *commonv1.AnyValue_ArrayValue:
		n := &anyNode{isList: true}
		for i, e := range x.ArrayValue.GetValues() {
			c, err := compileAny(e, config.Index(config.Join(path, "array_value.values"), i))
			if err != nil {
				return nil, err
			}
			n.list = append(n.list, c)
		}
		return n, nil
	case *commonv1.AnyValue_KvlistValue:
		kvs, err := compileKVs(x.KvlistValue, config.Join(path, "kvlist_value"))
		return &anyNode{isKVs: true, kvs: kvs}, err
	}
	return &anyNode{static: v}, nil
}

func compileKVs(l *commonv1.KeyValueList, path string) ([]kvNode, error) {
	var out []kvNode
	for i, kv := range l.GetValues() {
		c, err := compileAny(kv.GetValue(), config.Join(config.Index(config.Join(path, "values"), i), "value"))
		if err != nil {
			return nil, err
		}
		out = append(out, kvNode{key: kv.GetKey(), v: c})
	}
	return out, nil
}

func (n *anyNode) render(info *streaminfo.Info) *commonv1.AnyValue {
	switch {
	case n.f != nil:
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: n.f.String(info)}}
	case n.isList:
		l := &commonv1.ArrayValue{}
		for _, c := range n.list {
			l.Values = append(l.Values, c.render(info))
		}
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_ArrayValue{ArrayValue: l}}
	case n.isKVs:
		return &commonv1.AnyValue{Value: &commonv1.AnyValue_KvlistValue{KvlistValue: &commonv1.KeyValueList{Values: renderKVs(n.kvs, info)}}}
	}
	return n.static
}

func renderKVs(kvs []kvNode, info *streaminfo.Info) []*commonv1.KeyValue {
	out := make([]*commonv1.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, &commonv1.KeyValue{Key: kv.key, Value: kv.v.render(info)})
	}
	return out
}

func compileOTel(msg proto.Message, l *Logger, fs *Files, path string) error {
	c := msg.(*otelv3.OpenTelemetryAccessLogConfig)
	// resource_detectors and formatters are extensions not linked here:
	// refused with their path by CheckFields.
	if err := config.CheckFields(c, path, "common_config", "http_service", "grpc_service", "disable_builtin_labels",
		"resource_attributes", "body", "attributes", "stat_prefix", "log_name", "buffer_flush_interval",
		"buffer_size_bytes", "filter_state_objects_to_log", "custom_tags"); err != nil {
		return err
	}
	// The top-level fields win over the deprecated common_config's, as
	// Envoy's getLogName / getGrpcService / getBufferFlushInterval.
	cc := proto.Clone(c.GetCommonConfig()).(*grpcv3.CommonGrpcAccessLogConfig)
	if cc == nil {
		cc = &grpcv3.CommonGrpcAccessLogConfig{}
	}
	if c.GetLogName() != "" {
		cc.LogName = c.GetLogName()
	}
	if c.GetGrpcService() != nil {
		cc.GrpcService = c.GetGrpcService()
	}
	if c.GetBufferFlushInterval() != nil {
		cc.BufferFlushInterval = c.GetBufferFlushInterval()
	}
	if c.GetBufferSizeBytes() != nil {
		cc.BufferSizeBytes = c.GetBufferSizeBytes()
	}
	if len(c.GetFilterStateObjectsToLog()) > 0 {
		cc.FilterStateObjectsToLog = c.GetFilterStateObjectsToLog()
	}
	if len(c.GetCustomTags()) > 0 {
		cc.CustomTags = c.GetCustomTags()
	}
	var exp otelSender
	var gc *grpcCommon
	var err error
	if hs := c.GetHttpService(); hs != nil {
		if cc.GetGrpcService() != nil {
			return config.Errorf(path, "only one of grpc_service and http_service may be set")
		}
		hp, err := compileOTLPHTTP(hs, config.Join(path, "http_service"))
		if err != nil {
			return err
		}
		if gc, err = compileCommon(cc, config.Join(path, "common_config"), false); err != nil {
			return err
		}
		exp = hp
	} else {
		if gc, err = compileCommon(cc, config.Join(path, "common_config"), true); err != nil {
			return err
		}
		exp = &otlpLogsGRPC{target: gc.target}
	}
	o := &otelLogger{common: gc}
	if c.GetBody() != nil && c.GetBody().GetValue() != nil {
		if o.body, err = compileAny(c.GetBody(), config.Join(path, "body")); err != nil {
			return err
		}
	}
	if o.attributes, err = compileKVs(c.GetAttributes(), config.Join(path, "attributes")); err != nil {
		return err
	}
	res := otelResource(c, cc.GetLogName())
	prefix := otelStatPrefix
	if p := c.GetStatPrefix(); p != "" {
		prefix += p + "."
	}
	key := cacheKey("otel", c)
	o.b = fs.grpc.get(key, func() *batcher {
		return newBatcher(fs, "OpenTelemetry access log "+gc.logName, gc.interval, gc.bufferBytes,
			&otelExporter{send: exp, resource: res}, fs.st.Scope(prefix))
	})
	l.sink = o
	return nil
}

// otelResource is the resource of every batch: the built-in labels
// (log_name, zone_name, cluster_name, node_name) unless disabled, then
// resource_attributes, a later key replacing an earlier one in place.
func otelResource(c *otelv3.OpenTelemetryAccessLogConfig, logName string) func(node *corev3.Node) *resourcev1.Resource {
	return func(node *corev3.Node) *resourcev1.Resource {
		var attrs []*commonv1.KeyValue
		idx := map[string]int{}
		add := func(kv *commonv1.KeyValue) {
			if i, ok := idx[kv.GetKey()]; ok {
				attrs[i] = kv
				return
			}
			idx[kv.GetKey()] = len(attrs)
			attrs = append(attrs, kv)
		}
		if !c.GetDisableBuiltinLabels() {
			add(strKV("log_name", logName))
			add(strKV("zone_name", node.GetLocality().GetZone()))
			add(strKV("cluster_name", node.GetCluster()))
			add(strKV("node_name", node.GetId()))
		}
		for _, kv := range c.GetResourceAttributes().GetValues() {
			add(kv)
		}
		return &resourcev1.Resource{Attributes: attrs}
	}
}

func strKV(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// log formats the record on the request path, as Envoy's emitLog: the
// start time, body, attributes, then filter state objects (as JSON
// strings) and custom tags as more attributes.
func (o *otelLogger) log(info *streaminfo.Info) {
	r := &logsv1.LogRecord{Attributes: renderKVs(o.attributes, info)}
	if !info.StartTime.IsZero() {
		r.TimeUnixNano = uint64(info.StartTime.UnixNano())
	}
	if o.body != nil {
		r.Body = o.body.render(info)
	}
	for _, key := range o.common.filterState {
		v, ok := info.FilterState[key]
		if !ok {
			continue
		}
		if m := filterStateProto(v); m != nil {
			if j, err := protojson.Marshal(m); err == nil {
				r.Attributes = append(r.Attributes, strKV(key, string(j)))
			}
		}
	}
	applyTags(o.common.tags, info, func(k, v string) { r.Attributes = append(r.Attributes, strKV(k, v)) })
	o.b.add(r)
}

// otelSender sends one ExportLogsServiceRequest.
type otelSender interface {
	sendLogs(ctx context.Context, svc Services, req *collogsv1.ExportLogsServiceRequest) error
}

// otelExporter batches LogRecords into one ExportLogsServiceRequest
// with one ResourceLogs and one ScopeLogs, as Envoy's
// initOtlpMessageRoot.
type otelExporter struct {
	send     otelSender
	resource func(*corev3.Node) *resourcev1.Resource
}

func (e *otelExporter) export(b *batcher, batch []proto.Message) error {
	svc := b.fs.services()
	if svc.Async == nil {
		return fmt.Errorf("no cluster manager to export through")
	}
	recs := make([]*logsv1.LogRecord, len(batch))
	for i, m := range batch {
		recs[i] = m.(*logsv1.LogRecord)
	}
	req := &collogsv1.ExportLogsServiceRequest{ResourceLogs: []*logsv1.ResourceLogs{{
		Resource:  e.resource(svc.Node),
		ScopeLogs: []*logsv1.ScopeLogs{{LogRecords: recs}},
	}}}
	return e.send.sendLogs(context.Background(), svc, req)
}

func (e *otelExporter) close() {}

// otlpLogsGRPC exports with LogsService.Export (unary) over envoy_grpc.
type otlpLogsGRPC struct{ target *grpcTarget }

func (g *otlpLogsGRPC) sendLogs(parent context.Context, svc Services, req *collogsv1.ExportLogsServiceRequest) error {
	ctx, cancel := g.target.Context(parent)
	defer cancel()
	ctx, cancel2 := context.WithTimeout(ctx, g.target.Timeout)
	defer cancel2()
	cc, err := svc.Async.GRPCTo(g.target.Target)
	if err != nil {
		return err
	}
	_, err = collogsv1.NewLogsServiceClient(cc).Export(ctx, req)
	return err
}

// otlpLogsHTTP POSTs OTLP/HTTP protobuf to an http_service.
type otlpLogsHTTP struct {
	cluster, host, path string
	timeout             time.Duration
	headers             [][2]string
}

func compileOTLPHTTP(hs *corev3.HttpService, path string) (*otlpLogsHTTP, error) {
	if err := config.CheckFields(hs, path, "http_uri", "request_headers_to_add"); err != nil {
		return nil, err
	}
	up := config.Join(path, "http_uri")
	u := hs.GetHttpUri()
	if err := config.CheckFields(u, up, "uri", "cluster", "timeout"); err != nil {
		return nil, err
	}
	if u.GetCluster() == "" {
		return nil, config.Errorf(config.Join(up, "cluster"), "a cluster is required")
	}
	h := &otlpLogsHTTP{cluster: u.GetCluster(), timeout: u.GetTimeout().AsDuration()}
	if h.timeout <= 0 {
		h.timeout = exportTimeout
	}
	h.host, h.path = asyncclient.HostPath(u.GetUri())
	for i, hv := range hs.GetRequestHeadersToAdd() {
		hp := config.Index(config.Join(path, "request_headers_to_add"), i)
		if err := config.CheckFields(hv, hp, "header"); err != nil {
			return nil, err
		}
		name, value, err := asyncclient.ServiceHeader(hv, hp)
		if err != nil {
			return nil, err
		}
		h.headers = append(h.headers, [2]string{name, value})
	}
	return h, nil
}

func (h *otlpLogsHTTP) sendLogs(parent context.Context, svc Services, req *collogsv1.ExportLogsServiceRequest) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode the export: %w", err)
	}
	ctx, cancel := context.WithTimeout(parent, h.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, "POST", "http://"+h.host+h.path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Host = h.host
	hr.Header.Set("Content-Type", "application/x-protobuf")
	// The OTLP exporter spec's User-Agent, as Envoy's getOtlpUserAgentHeader.
	hr.Header.Set("User-Agent", "OTel-OTLP-Exporter-Envoy/legate")
	for _, kv := range h.headers {
		hr.Header.Set(kv[0], kv[1])
	}
	resp, err := svc.Async.Do(ctx, h.cluster, hr)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("the collector answered %d", resp.StatusCode)
	}
	return nil
}
