package model

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TracingConfig is the tracing block of Contour's configuration file:
// every HTTP connection manager traces its requests with Envoy's
// OpenTelemetry tracer, exporting to an ExtensionService (an OTLP/gRPC
// collector).
type TracingConfig struct {
	// ExtensionService is the collector's ExtensionService.
	ExtensionService types.NamespacedName
	// ServiceName is the spans' service.name (Contour's default
	// "contour").
	ServiceName string
	// OverallSampling is the percentage of requests traced (0-100).
	OverallSampling float64
	// MaxPathTagLength truncates the http.url tag (Contour's 256).
	MaxPathTagLength uint32
	// CustomTags are added to every span.
	CustomTags []TracingTag
}

// TracingTag is one custom tag: exactly one of Literal, Environment
// (the proxy's environment variable) and RequestHeader is set.
type TracingTag struct {
	Name, Literal, Environment, RequestHeader string
}

// Tracing is the tracing of every HTTP connection manager, with the
// collector's cluster resolved.
type Tracing struct {
	TracingConfig
	// Cluster is the ExtensionService's cluster, nil while it is missing
	// or invalid (spans then go nowhere, as Envoy's tracer without a
	// collector); Timeout is its timeoutPolicy.response.
	Cluster *Cluster
	Timeout *time.Duration
}

// ClusterName is the collector's cluster name, whether or not its
// ExtensionService is valid.
func (t *Tracing) ClusterName() string { return ExtensionClusterName(t.ExtensionService) }

// tracing resolves the configuration file's tracing against this build's
// ExtensionServices.
func (b *builder) tracing() {
	c := b.opt.Config.Tracing
	if c == nil {
		return
	}
	t := &Tracing{TracingConfig: *c}
	if ext := b.extensions[c.ExtensionService]; ext != nil {
		t.Cluster, t.Timeout = ext.cluster, ext.response
	}
	b.m.Tracing = t
}
