package contourconfig

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/model"
)

// Tracing is Contour's tracing block: every HTTP connection manager
// exports spans with OpenTelemetry to the ExtensionService (an OTLP/gRPC
// collector), namespace/name.
type Tracing struct {
	// IncludePodDetail adds the podName and podNamespace tags, from the
	// proxy's HOSTNAME and CONTOUR_NAMESPACE environment (default true).
	IncludePodDetail *bool `yaml:"includePodDetail,omitempty"`
	// ServiceName is the spans' service name (default "contour").
	ServiceName *string `yaml:"serviceName,omitempty"`
	// OverallSampling is the percentage of requests traced, a decimal
	// string (default "100"; 0 or unparsable is 100, as Contour).
	OverallSampling *string `yaml:"overallSampling,omitempty"`
	// MaxPathTagLength truncates the http.url tag (default 256).
	MaxPathTagLength *uint32     `yaml:"maxPathTagLength,omitempty"`
	CustomTags       []CustomTag `yaml:"customTags,omitempty"`
	ExtensionService string      `yaml:"extensionService"`
}

// CustomTag is a tag added to every span: a literal value or a request
// header's.
type CustomTag struct {
	TagName           string `yaml:"tagName"`
	Literal           string `yaml:"literal,omitempty"`
	RequestHeaderName string `yaml:"requestHeaderName,omitempty"`
}

// validate checks the block as Contour's Tracing.Validate (its messages),
// and the extensionService's form.
func (t *Tracing) validate() error {
	if t == nil {
		return nil
	}
	if t.ExtensionService == "" {
		return errors.New("tracing.extensionService must be defined")
	}
	if ns, name, ok := strings.Cut(t.ExtensionService, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("tracing.extensionService %q: use <namespace>/<name> of an ExtensionService", t.ExtensionService)
	}
	seen := map[string]bool{}
	for _, ct := range t.CustomTags {
		if ct.TagName == "" {
			return errors.New("tracing.customTag.tagName must be defined")
		}
		if seen[ct.TagName] {
			return fmt.Errorf("tagName %s is duplicate", ct.TagName)
		}
		seen[ct.TagName] = true
		if (ct.Literal != "") == (ct.RequestHeaderName != "") {
			return errors.New("must set exactly one of Literal or RequestHeaderName")
		}
	}
	return nil
}

// model is the block with Contour's defaults (setupTracingService).
func (t *Tracing) model() *model.TracingConfig {
	if t == nil {
		return nil
	}
	ns, name, _ := strings.Cut(t.ExtensionService, "/")
	out := &model.TracingConfig{ExtensionService: types.NamespacedName{Namespace: ns, Name: name},
		ServiceName: "contour", OverallSampling: 100, MaxPathTagLength: 256}
	if t.ServiceName != nil {
		out.ServiceName = *t.ServiceName
	}
	if t.OverallSampling != nil {
		if v, err := strconv.ParseFloat(*t.OverallSampling, 64); err == nil && v != 0 {
			out.OverallSampling = v
		}
	}
	if t.MaxPathTagLength != nil {
		out.MaxPathTagLength = *t.MaxPathTagLength
	}
	if t.IncludePodDetail == nil || *t.IncludePodDetail {
		out.CustomTags = append(out.CustomTags, model.TracingTag{Name: "podName", Environment: "HOSTNAME"},
			model.TracingTag{Name: "podNamespace", Environment: "CONTOUR_NAMESPACE"})
	}
	for _, ct := range t.CustomTags {
		out.CustomTags = append(out.CustomTags, model.TracingTag{Name: ct.TagName, Literal: ct.Literal, RequestHeader: ct.RequestHeaderName})
	}
	return out
}
