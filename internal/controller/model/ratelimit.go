package model

import (
	"errors"
	"fmt"
	"slices"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	"github.com/legateproxy/legate/internal/http1"
	"k8s.io/apimachinery/pkg/types"
)

// RateLimitServiceConfig is the rateLimitService block of Contour's
// configuration file: the global Rate Limit Service every HTTP connection
// manager asks (envoy.filters.http.ratelimit) and the default policy of
// the virtual hosts.
type RateLimitServiceConfig struct {
	// ExtensionService is the ExtensionService of the service.
	ExtensionService types.NamespacedName
	// Domain is the rate limit domain sent with every request.
	Domain string
	// FailOpen lets requests through when the service fails to answer.
	FailOpen bool
	// EnableXRateLimitHeaders adds draft-03 X-RateLimit-* headers.
	EnableXRateLimitHeaders bool
	// EnableResourceExhaustedCode answers gRPC requests over the limit
	// with RESOURCE_EXHAUSTED instead of UNAVAILABLE.
	EnableResourceExhaustedCode bool
	// DefaultPolicy is defaultGlobalRateLimitPolicy: the global policy of
	// every virtual host that neither sets its own nor opts out.
	DefaultPolicy *contourv1.GlobalRateLimitPolicy
}

// GlobalRateLimitService is the rate limit filter of every HTTP connection
// manager, as Contour's GlobalRateLimitFilter renders it.
type GlobalRateLimitService struct {
	// ExtensionService is the service's ExtensionService; Cluster its
	// cluster, nil while the ExtensionService is missing or invalid.
	ExtensionService types.NamespacedName
	Cluster          *Cluster
	Domain           string
	FailOpen         bool
	// Timeout is the ExtensionService's timeoutPolicy.response: nil
	// leaves the filter's default (Envoy's 20ms), 0 is none.
	Timeout                     *time.Duration
	EnableXRateLimitHeaders     bool
	EnableResourceExhaustedCode bool
}

// ClusterName is the ExtensionService's cluster name, whether or not the
// ExtensionService is valid.
func (g *GlobalRateLimitService) ClusterName() string {
	return ExtensionClusterName(g.ExtensionService)
}

// RateLimitDescriptor is one descriptor sent to the global Rate Limit
// Service: an Envoy RateLimit with one action per entry.
type RateLimitDescriptor struct {
	Entries []RateLimitEntry
}

// RateLimitEntry is one descriptor entry; exactly one field is set.
type RateLimitEntry struct {
	// GenericKey is a static key (default "generic_key") and value.
	GenericKey *GenericKeyEntry
	// RequestHeader takes the value of a request header under a key;
	// without the header the descriptor is not sent (Envoy).
	RequestHeader *RequestHeaderEntry
	// HeaderValueMatch is ("header_match", Value) when the headers match
	// (or, with ExpectMatch false, when they do not).
	HeaderValueMatch *HeaderValueMatchEntry
	// RemoteAddress is ("remote_address", the client address).
	RemoteAddress bool
}

// GenericKeyEntry is a genericKey descriptor entry.
type GenericKeyEntry struct{ Key, Value string }

// RequestHeaderEntry is a requestHeader descriptor entry.
type RequestHeaderEntry struct{ HeaderName, DescriptorKey string }

// HeaderValueMatchEntry is a requestHeaderValueMatch descriptor entry.
type HeaderValueMatchEntry struct {
	Headers     []HeaderMatch
	ExpectMatch bool
	Value       string
}

// rateLimitService resolves the configuration file's rate limit service
// against this build's ExtensionServices.
func (b *builder) rateLimitService() {
	c := b.opt.Config.RateLimitService
	if c == nil {
		return
	}
	g := &GlobalRateLimitService{ExtensionService: c.ExtensionService, Domain: c.Domain, FailOpen: c.FailOpen,
		EnableXRateLimitHeaders: c.EnableXRateLimitHeaders, EnableResourceExhaustedCode: c.EnableResourceExhaustedCode}
	if g.Domain == "" {
		g.Domain = DefaultRateLimitDomain
	}
	if ext := b.extensions[c.ExtensionService]; ext != nil {
		g.Cluster, g.Timeout = ext.cluster, ext.response
	}
	b.m.RateLimit = g
}

// DefaultRateLimitDomain is the domain when rateLimitService.domain is
// not set, as Contour documents it (Envoy requires one).
const DefaultRateLimitDomain = "contour"

// errEntryFields is Contour's error for a descriptor entry with none or
// more than one of its fields set.
var errEntryFields = errors.New("rate limit descriptor entry must have exactly one field set")

// globalRateLimitPolicy validates a rateLimitPolicy.global as Contour's
// globalRateLimitPolicy (its error text for an entry with not exactly one
// field), plus what Contour's CRD schema refuses and Envoy would reject
// (a manifests folder has no schema): a descriptor without entries, an
// empty genericKey.value, requestHeader fields or requestHeaderValueMatch
// value or headers. nil for no policy or a disabled one.
func globalRateLimitPolicy(in *contourv1.GlobalRateLimitPolicy) ([]RateLimitDescriptor, error) {
	if in == nil || in.Disabled {
		return nil, nil
	}
	var out []RateLimitDescriptor
	for i, d := range in.Descriptors {
		if len(d.Entries) == 0 {
			return nil, fmt.Errorf("rate limit descriptor %d must have at least one entry", i)
		}
		var rd RateLimitDescriptor
		for _, e := range d.Entries {
			set := 0
			var re RateLimitEntry
			if g := e.GenericKey; g != nil {
				set++
				if g.Value == "" {
					return nil, errors.New("rate limit descriptor entry genericKey must have a value")
				}
				re.GenericKey = &GenericKeyEntry{Key: g.Key, Value: g.Value}
			}
			if h := e.RequestHeader; h != nil {
				set++
				if h.HeaderName == "" || h.DescriptorKey == "" {
					return nil, errors.New("rate limit descriptor entry requestHeader must have a headerName and a descriptorKey")
				}
				if !http1.IsToken(h.HeaderName) {
					return nil, fmt.Errorf("rate limit descriptor entry requestHeader: %q is not a valid header name", h.HeaderName)
				}
				re.RequestHeader = &RequestHeaderEntry{HeaderName: h.HeaderName, DescriptorKey: h.DescriptorKey}
			}
			if m := e.RequestHeaderValueMatch; m != nil {
				set++
				if m.Value == "" || len(m.Headers) == 0 {
					return nil, errors.New("rate limit descriptor entry requestHeaderValueMatch must have a value and at least one header")
				}
				hv := &HeaderValueMatchEntry{Value: m.Value, ExpectMatch: m.ExpectMatch == nil || *m.ExpectMatch}
				for i := range m.Headers {
					h := &m.Headers[i]
					if err := validHeaderCondition(h); err != nil {
						return nil, fmt.Errorf("rate limit descriptor entry requestHeaderValueMatch: %w", err)
					}
					hv.Headers = append(hv.Headers, headerMatch(h))
				}
				re.HeaderValueMatch = hv
			}
			if e.RemoteAddress != nil {
				set++
				re.RemoteAddress = true
			}
			if set != 1 {
				return nil, errEntryFields
			}
			rd.Entries = append(rd.Entries, re)
		}
		out = append(out, rd)
	}
	return out, nil
}

// ValidateGlobalRateLimitPolicy checks a global policy as an HTTPProxy's
// (for the configuration file's defaultGlobalRateLimitPolicy).
func ValidateGlobalRateLimitPolicy(p *contourv1.GlobalRateLimitPolicy) ([]RateLimitDescriptor, error) {
	return globalRateLimitPolicy(p)
}

// vhostGlobalRateLimits is a root's global rate limit descriptors, as
// Contour's computeVirtualHostRateLimitPolicy: its own, else the
// configuration file's default policy unless global.disabled opts out.
// Problems go to st (Contour's reasons and texts); an error makes the
// root invalid.
func (b *builder) vhostGlobalRateLimits(vh *contourv1.VirtualHost, st *ProxyStatus) []RateLimitDescriptor {
	var g *contourv1.GlobalRateLimitPolicy
	if vh.RateLimitPolicy != nil {
		g = vh.RateLimitPolicy.Global
	}
	ds, err := globalRateLimitPolicy(g)
	if err != nil {
		st.errorf(ErrVirtualHost, "RateLimitPolicyNotValid", "Spec.VirtualHost.RateLimitPolicy is invalid: %s", err)
		return nil
	}
	field := "Spec.VirtualHost.RateLimitPolicy.Global"
	if len(ds) == 0 && !(g != nil && g.Disabled) {
		if rls := b.opt.Config.RateLimitService; rls != nil && rls.DefaultPolicy != nil {
			if ds, err = globalRateLimitPolicy(rls.DefaultPolicy); err != nil {
				st.errorf(ErrVirtualHost, "RateLimitPolicyNotValid", "Default Global RateLimit Policy is invalid: %s", err)
				return nil
			}
			// Warnings name what the user wrote: the file's policy.
			field = "rateLimitService.defaultGlobalRateLimitPolicy"
		}
	}
	if len(ds) > 0 {
		b.rateLimitWarnings(st, field)
	}
	return ds
}

// rateLimitWarnings warns, once per proxy and field, of global rate limits
// the proxies cannot apply as written. Contour emits the rate_limits
// without the filter when no rate limit service is configured (Envoy then
// ignores them) and refuses to start without the ExtensionService; Legate
// serves the same xDS and says so in the status.
func (b *builder) rateLimitWarnings(st *ProxyStatus, field string) {
	rls := b.opt.Config.RateLimitService
	warn := func(reason, format string, args ...any) {
		p := Problem{ErrSpec, reason, fmt.Sprintf(format, args...)}
		if !slices.Contains(st.Warnings, p) {
			st.Warnings = append(st.Warnings, p)
		}
	}
	switch {
	case rls == nil:
		warn("IgnoredField", "%s is ignored: no global rate limit service is configured (rateLimitService.extensionService in Contour's configuration file)", field)
	case b.extensions[rls.ExtensionService] == nil:
		what := "answered 500 (rateLimitService.failOpen is false)"
		if rls.FailOpen {
			what = "not limited (rateLimitService.failOpen is true)"
		}
		warn("RateLimitServiceNotFound", "%s: the rate limit service's ExtensionService %q is missing or invalid, so requests it limits are %s", field, rls.ExtensionService.String(), what)
	}
}
