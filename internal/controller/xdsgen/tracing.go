package xdsgen

import (
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/controller/model"
)

// hcmTracing is a connection manager's tracing, as Contour's
// TracingConfig renders the configuration file's tracing: Envoy's
// OpenTelemetry tracer exporting over gRPC to the ExtensionService's
// cluster, the sampling percentage, the http.url tag length, the custom
// tags, and a span per upstream request (spawn_upstream_span).
func hcmTracing(t *model.Tracing) *hcmv3.HttpConnectionManager_Tracing {
	if t == nil {
		return nil
	}
	gs := extensionGrpcService(t.ClusterName(), t.Cluster, t.Timeout)
	out := &hcmv3.HttpConnectionManager_Tracing{
		OverallSampling:  &typev3.Percent{Value: t.OverallSampling},
		MaxPathTagLength: wrapperspb.UInt32(t.MaxPathTagLength),
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
				GrpcService: gs, ServiceName: t.ServiceName})}},
		SpawnUpstreamSpan: wrapperspb.Bool(true),
	}
	for _, tag := range t.CustomTags {
		ct := &tracingv3.CustomTag{Tag: tag.Name}
		switch {
		case tag.Literal != "":
			ct.Type = &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: tag.Literal}}
		case tag.Environment != "":
			ct.Type = &tracingv3.CustomTag_Environment_{Environment: &tracingv3.CustomTag_Environment{Name: tag.Environment}}
		case tag.RequestHeader != "":
			ct.Type = &tracingv3.CustomTag_RequestHeader{RequestHeader: &tracingv3.CustomTag_Header{Name: tag.RequestHeader}}
		default:
			continue
		}
		out.CustomTags = append(out.CustomTags, ct)
	}
	return out
}
