package contourconfig

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/controller/model"
)

// RateLimitService is Contour's rateLimitService block: the global Rate
// Limit Service (an ExtensionService) that every HTTP connection manager
// asks, and the default global policy of the virtual hosts.
type RateLimitService struct {
	// ExtensionService is <namespace>/<name> of the ExtensionService.
	ExtensionService string `yaml:"extensionService,omitempty"`
	// Domain is the rate limit domain (default "contour").
	Domain string `yaml:"domain,omitempty"`
	// FailOpen lets requests through when the service fails to answer.
	FailOpen bool `yaml:"failOpen,omitempty"`
	// EnableXRateLimitHeaders adds the draft-03 X-RateLimit-* headers.
	EnableXRateLimitHeaders bool `yaml:"enableXRateLimitHeaders,omitempty"`
	// EnableResourceExhaustedCode answers limited gRPC requests with
	// RESOURCE_EXHAUSTED instead of UNAVAILABLE.
	EnableResourceExhaustedCode bool `yaml:"enableResourceExhaustedCode,omitempty"`
	// DefaultGlobalRateLimitPolicy applies to every virtual host that
	// neither sets its own global policy nor disables it.
	DefaultGlobalRateLimitPolicy *GlobalRateLimitPolicy `yaml:"defaultGlobalRateLimitPolicy,omitempty"`
}

// GlobalRateLimitPolicy is an HTTPProxy GlobalRateLimitPolicy with the
// keys Contour's configuration file decoder gives it (gopkg.in/yaml.v3 on
// Contour's API types: camelCase where they have yaml tags, the
// lower-cased field name where not, as in a header condition's
// notpresent or ignorecase).
type GlobalRateLimitPolicy struct {
	Disabled    bool                  `yaml:"disabled,omitempty"`
	Descriptors []RateLimitDescriptor `yaml:"descriptors,omitempty"`
}

// RateLimitDescriptor is a list of descriptor entries.
type RateLimitDescriptor struct {
	Entries []RateLimitDescriptorEntry `yaml:"entries,omitempty"`
}

// RateLimitDescriptorEntry is one descriptor entry: exactly one field.
type RateLimitDescriptorEntry struct {
	GenericKey              *GenericKeyDescriptor              `yaml:"genericKey,omitempty"`
	RequestHeader           *RequestHeaderDescriptor           `yaml:"requestHeader,omitempty"`
	RequestHeaderValueMatch *RequestHeaderValueMatchDescriptor `yaml:"requestHeaderValueMatch,omitempty"`
	RemoteAddress           *struct{}                          `yaml:"remoteAddress,omitempty"`
}

// GenericKeyDescriptor is a static key and value.
type GenericKeyDescriptor struct {
	Key   string `yaml:"key,omitempty"`
	Value string `yaml:"value,omitempty"`
}

// RequestHeaderDescriptor takes the value of a request header.
type RequestHeaderDescriptor struct {
	HeaderName    string `yaml:"headerName,omitempty"`
	DescriptorKey string `yaml:"descriptorKey,omitempty"`
}

// RequestHeaderValueMatchDescriptor is a value sent when headers match.
type RequestHeaderValueMatchDescriptor struct {
	Headers []HeaderMatchCondition `yaml:"headers,omitempty"`
	// ExpectMatch must be given: see validate.
	ExpectMatch *bool  `yaml:"expectMatch,omitempty"`
	Value       string `yaml:"value,omitempty"`
}

// HeaderMatchCondition is a header condition, with Contour's keys in
// this file (Contour's type has no yaml tags).
type HeaderMatchCondition struct {
	Name                string `yaml:"name"`
	Present             bool   `yaml:"present,omitempty"`
	NotPresent          bool   `yaml:"notpresent,omitempty"`
	Contains            string `yaml:"contains,omitempty"`
	NotContains         string `yaml:"notcontains,omitempty"`
	IgnoreCase          bool   `yaml:"ignorecase,omitempty"`
	Exact               string `yaml:"exact,omitempty"`
	NotExact            string `yaml:"notexact,omitempty"`
	Regex               string `yaml:"regex,omitempty"`
	TreatMissingAsEmpty bool   `yaml:"treatmissingasempty,omitempty"`
}

func (r RateLimitService) isZero() bool {
	return r.ExtensionService == "" && r.Domain == "" && !r.FailOpen && !r.EnableXRateLimitHeaders &&
		!r.EnableResourceExhaustedCode && r.DefaultGlobalRateLimitPolicy == nil
}

// extensionService parses extensionService (validated).
func (r RateLimitService) extensionService() types.NamespacedName {
	ns, name, _ := strings.Cut(r.ExtensionService, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}

// validate checks the block. Contour ignores the whole block without an
// extensionService; Legate refuses it, since its settings would not apply.
func (r RateLimitService) validate() error {
	if r.isZero() {
		return nil
	}
	ns, name, ok := strings.Cut(r.ExtensionService, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("rateLimitService.extensionService %q: use <namespace>/<name> of the rate limit service's ExtensionService", r.ExtensionService)
	}
	if p := r.DefaultGlobalRateLimitPolicy; p != nil {
		for _, d := range p.Descriptors {
			for _, e := range d.Entries {
				if m := e.RequestHeaderValueMatch; m != nil && m.ExpectMatch == nil {
					// Contour documents true as the default (its CRD's),
					// but its file decoder leaves the bool false: say it.
					return errors.New("rateLimitService.defaultGlobalRateLimitPolicy: requestHeaderValueMatch.expectMatch must be given (true or false): Contour's documentation says it defaults to true, while Contour's configuration file leaves it false")
				}
			}
		}
		// The rest as an HTTPProxy's policy, with Contour's error texts.
		if _, err := model.ValidateGlobalRateLimitPolicy(p.api()); err != nil {
			return fmt.Errorf("rateLimitService.defaultGlobalRateLimitPolicy: %w", err)
		}
	}
	return nil
}

// api is the policy as an HTTPProxy's.
func (p *GlobalRateLimitPolicy) api() *contourv1.GlobalRateLimitPolicy {
	out := &contourv1.GlobalRateLimitPolicy{Disabled: p.Disabled}
	for _, d := range p.Descriptors {
		var rd contourv1.RateLimitDescriptor
		for _, e := range d.Entries {
			var re contourv1.RateLimitDescriptorEntry
			if g := e.GenericKey; g != nil {
				re.GenericKey = &contourv1.GenericKeyDescriptor{Key: g.Key, Value: g.Value}
			}
			if h := e.RequestHeader; h != nil {
				re.RequestHeader = &contourv1.RequestHeaderDescriptor{HeaderName: h.HeaderName, DescriptorKey: h.DescriptorKey}
			}
			if m := e.RequestHeaderValueMatch; m != nil {
				hv := &contourv1.RequestHeaderValueMatchDescriptor{ExpectMatch: m.ExpectMatch, Value: m.Value}
				for _, h := range m.Headers {
					hv.Headers = append(hv.Headers, contourv1.HeaderMatchCondition(h))
				}
				re.RequestHeaderValueMatch = hv
			}
			if e.RemoteAddress != nil {
				re.RemoteAddress = &contourv1.RemoteAddressDescriptor{}
			}
			rd.Entries = append(rd.Entries, re)
		}
		out.Descriptors = append(out.Descriptors, rd)
	}
	return out
}

// rateLimitService is the block for the model (nil when not set).
func (r RateLimitService) model() *model.RateLimitServiceConfig {
	if r.isZero() {
		return nil
	}
	out := &model.RateLimitServiceConfig{ExtensionService: r.extensionService(), Domain: r.Domain, FailOpen: r.FailOpen,
		EnableXRateLimitHeaders: r.EnableXRateLimitHeaders, EnableResourceExhaustedCode: r.EnableResourceExhaustedCode}
	if r.DefaultGlobalRateLimitPolicy != nil {
		out.DefaultPolicy = r.DefaultGlobalRateLimitPolicy.api()
	}
	return out
}
