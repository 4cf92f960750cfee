package contourconfig

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
)

// EnvoyDefaultConnectionIdleTimeout is the proxies' idle timeout when a
// ContourConfiguration leaves envoy.timeouts.connectionIdleTimeout unset:
// Contour's CRD has no default there (unlike its file's 60s), so Envoy's
// own 1h applies.
const EnvoyDefaultConnectionIdleTimeout = "1h"

// FromSpec converts a ContourConfiguration's spec (what `contour serve
// --contour-config-name` reads) into the configuration file's Config,
// with the defaults of Contour's CRD and the file's validation. Fields
// that are `legate controller` flags (listener ports and addresses,
// access log files, the xDS address and files, ingress class, root
// namespaces, the metrics address) go to FlagValues. A field that Contour
// honours and Legate does not implement is an error naming its path
// (spec.envoy.listener.socketOptions, ...), never ignored; so is a
// validation error, with the field's path instead of the file's key.
func FromSpec(s *contourv1alpha1.ContourConfigurationSpec) (*Config, error) {
	c := &Config{FlagValues: map[string]string{}}
	var errs []error
	refuse := func(set bool, path, why string) {
		if set {
			errs = append(errs, fmt.Errorf("%s: not implemented by Legate (%s); remove the field", path, why))
		}
	}
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	flag := func(name, v string) {
		if v != "" {
			c.FlagValues[name] = v
		}
	}
	b := func(p *bool) bool { return p != nil && *p }

	if g := s.Gateway; g != nil {
		// Contour's static provisioning: the one Gateway served.
		c.Gateway.GatewayRef = NamespacedName{Namespace: g.GatewayRef.Namespace, Name: g.GatewayRef.Name}
	}
	refuse(s.GlobalExternalAuthorization != nil, "spec.globalExtAuth", "global external authorization; set spec.virtualhost.authorization on each HTTPProxy")
	if tr := s.Tracing; tr != nil {
		t := &Tracing{IncludePodDetail: tr.IncludePodDetail, ServiceName: tr.ServiceName, OverallSampling: tr.OverallSampling, MaxPathTagLength: tr.MaxPathTagLength}
		if tr.ExtensionService != nil && tr.ExtensionService.Name != "" {
			t.ExtensionService = tr.ExtensionService.Namespace + "/" + tr.ExtensionService.Name
		}
		for _, ct := range tr.CustomTags {
			if ct != nil {
				t.CustomTags = append(t.CustomTags, CustomTag{TagName: ct.TagName, Literal: ct.Literal, RequestHeaderName: ct.RequestHeaderName})
			}
		}
		c.Tracing = t // validated with the rest
	}
	refuse(len(s.FeatureFlags) > 0, "spec.featureFlags", "no Contour feature flags are implemented")
	refuse(s.Debug != nil && (s.Debug.Address != "" || s.Debug.Port != 0), "spec.debug", "the debug endpoints are served on --http-address")

	if x := s.XDSServer; x != nil {
		if x.Address != "" || x.Port != 0 {
			addr, port := x.Address, x.Port
			if addr == "" {
				addr = "0.0.0.0"
			}
			if port == 0 {
				port = 8001
			}
			flag("xds-address", net.JoinHostPort(addr, strconv.Itoa(port)))
		}
		if t := x.TLS; t != nil {
			flag("xds-ca-file", t.CAFile)
			flag("xds-cert-file", t.CertFile)
			flag("xds-key-file", t.KeyFile)
			if b(t.Insecure) {
				flag("insecure", "true")
			}
		}
	}
	if in := s.Ingress; in != nil {
		switch len(in.ClassNames) {
		case 0:
		case 1:
			flag("ingress-class", in.ClassNames[0])
		default:
			bad("spec.ingress.classNames %q: Legate serves one ingress class (--ingress-class); give one name", in.ClassNames)
		}
		c.IngressStatusAddress = in.StatusAddress
	}
	// Legate serves health and metrics on one address (--http-address).
	endpoint := func(addr string, port int) string {
		if addr == "" {
			addr = "0.0.0.0"
		}
		if port == 0 {
			port = 8000
		}
		return net.JoinHostPort(addr, strconv.Itoa(port))
	}
	var health, metrics string
	if h := s.Health; h != nil && (h.Address != "" || h.Port != 0) {
		health = endpoint(h.Address, h.Port)
	}
	if m := s.Metrics; m != nil {
		refuse(m.TLS != nil, "spec.metrics.tls", "metrics over HTTPS")
		if m.Address != "" || m.Port != 0 {
			metrics = endpoint(m.Address, m.Port)
		}
	}
	if health != "" && metrics != "" && health != metrics {
		bad("spec.health %s and spec.metrics %s: Legate serves health and metrics on one address (--http-address); give both the same address and port", health, metrics)
	}
	if metrics != "" {
		flag("http-address", metrics)
	} else {
		flag("http-address", health)
	}
	if h := s.HTTPProxy; h != nil {
		c.DisablePermitInsecure = b(h.DisablePermitInsecure)
		flag("root-namespaces", strings.Join(h.RootNamespaces, ","))
		if fc := h.FallbackCertificate; fc != nil {
			c.TLS.FallbackCertificate = NamespacedName{Name: fc.Name, Namespace: fc.Namespace}
		}
	}
	c.EnableExternalNameService = b(s.EnableExternalNameService)
	if p := s.Policy; p != nil {
		c.Policy.RequestHeaders = headersFromSpec(p.RequestHeadersPolicy)
		c.Policy.ResponseHeaders = headersFromSpec(p.ResponseHeadersPolicy)
		c.Policy.ApplyToIngress = b(p.ApplyToIngress)
	}
	if r := s.RateLimitService; r != nil {
		c.RateLimitService = RateLimitService{Domain: r.Domain, FailOpen: b(r.FailOpen),
			EnableXRateLimitHeaders: b(r.EnableXRateLimitHeaders), EnableResourceExhaustedCode: b(r.EnableResourceExhaustedCode),
			DefaultGlobalRateLimitPolicy: rateLimitPolicyFromAPI(r.DefaultGlobalRateLimitPolicy)}
		if n := r.ExtensionService; n.Namespace != "" || n.Name != "" {
			c.RateLimitService.ExtensionService = n.Namespace + "/" + n.Name
		}
	}

	c.Timeouts.ConnectionIdleTimeout = EnvoyDefaultConnectionIdleTimeout
	if e := s.Envoy; e != nil {
		c.envoyFromSpec(e, refuse, bad, flag)
	}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		errs = append(errs, crdPaths(err)...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// envoyFromSpec converts spec.envoy; refuse, bad and flag are FromSpec's.
func (c *Config) envoyFromSpec(e *contourv1alpha1.EnvoyConfig, refuse func(bool, string, string), bad func(string, ...any), flag func(string, string)) {
	b := func(p *bool) bool { return p != nil && *p }
	refuse(e.Service != nil, "spec.envoy.service", "status from the Envoy Service; use spec.ingress.statusAddress or --ingress-status-address")
	refuse(e.Health != nil, "spec.envoy.health", "the proxies' health listener is set by `legate bootstrap --health-address`")
	refuse(e.Metrics != nil, "spec.envoy.metrics", "the proxies' stats listener is set by `legate bootstrap --health-address`")
	refuse(e.ClientCertificate != nil, "spec.envoy.clientCertificate", "client certificates to upstreams")
	refuse(e.OMEnforcedHealth != nil, "spec.envoy.omEnforcedHealth", "overload manager health listener")

	var addr string
	for _, l := range []struct {
		path, port, log string
		l               *contourv1alpha1.EnvoyListener
	}{{"spec.envoy.http", "http-port", "envoy-http-access-log", e.HTTPListener}, {"spec.envoy.https", "https-port", "envoy-https-access-log", e.HTTPSListener}} {
		if l.l == nil {
			continue
		}
		if l.l.Address != "" {
			if addr != "" && addr != l.l.Address {
				bad("spec.envoy.http.address %q and spec.envoy.https.address %q: Legate's listeners bind one address (--envoy-listen-address); give both the same", addr, l.l.Address)
			}
			addr = l.l.Address
		}
		if l.l.Port < 0 || l.l.Port > 65535 {
			bad("%s.port %d: use 1-65535", l.path, l.l.Port)
		} else if l.l.Port != 0 {
			flag(l.port, strconv.Itoa(l.l.Port))
		}
		flag(l.log, l.l.AccessLog)
	}
	flag("envoy-listen-address", addr)

	if l := e.Listener; l != nil {
		if b(l.UseProxyProto) {
			flag("use-proxy-protocol", "true")
		}
		if cm := l.Compression; cm != nil && cm.Algorithm != "" && cm.Algorithm != "disabled" {
			refuse(true, "spec.envoy.listener.compression.algorithm", "response compression; Legate's proxy does not compress (only disabled is accepted)")
		}
		c.DisableAllowChunkedLength = b(l.DisableAllowChunkedLength)
		c.DisableMergeSlashes = b(l.DisableMergeSlashes)
		c.ServerHeaderTransformation = string(l.ServerHeaderTransformation)
		if l.ConnectionBalancer == "exact" {
			refuse(true, "spec.envoy.listener.connectionBalancer", "connection balancing between worker threads")
		} else {
			c.Listener.ConnectionBalancer = l.ConnectionBalancer // validated
		}
		refuse(l.MaxRequestsPerConnection != nil, "spec.envoy.listener.maxRequestsPerConnection", "downstream request limits")
		refuse(l.SocketOptions != nil && (l.SocketOptions.TOS != 0 || l.SocketOptions.TrafficClass != 0), "spec.envoy.listener.socketOptions", "TOS and traffic class")
		refuse(l.MaxRequestsPerIOCycle != nil, "spec.envoy.listener.maxRequestsPerIOCycle", "an Envoy event-loop setting")
		refuse(l.MaxConnectionsPerListener != nil, "spec.envoy.listener.maxConnectionsPerListener", "listener connection limits")
		c.Listener.PerConnectionBufferLimitBytes = l.PerConnectionBufferLimitBytes
		c.Listener.HTTP2MaxConcurrentStreams = l.HTTP2MaxConcurrentStreams
		if t := l.TLS; t != nil {
			c.TLS.MinimumProtocolVersion = t.MinimumProtocolVersion
			c.TLS.MaximumProtocolVersion = t.MaximumProtocolVersion
			c.TLS.CipherSuites = dedup(t.CipherSuites) // as Contour's SanitizedCipherSuites
		}
	}
	if lg := e.Logging; lg != nil {
		c.AccessLogFormat = lg.AccessLogFormat
		c.AccessLogFormatString = lg.AccessLogFormatString
		c.JSONFields = append([]string(nil), lg.AccessLogJSONFields...)
		c.AccessLogLevel = lg.AccessLogLevel
	}
	for _, v := range e.DefaultHTTPVersions {
		c.DefaultHTTPVersions = append(c.DefaultHTTPVersions, string(v))
	}
	if t := e.Timeouts; t != nil {
		s := func(dst *string, p *string) {
			if p != nil {
				*dst = *p
			}
		}
		s(&c.Timeouts.RequestTimeout, t.RequestTimeout)
		s(&c.Timeouts.ConnectionIdleTimeout, t.ConnectionIdleTimeout)
		s(&c.Timeouts.StreamIdleTimeout, t.StreamIdleTimeout)
		s(&c.Timeouts.MaxConnectionDuration, t.MaxConnectionDuration)
		s(&c.Timeouts.DelayedCloseTimeout, t.DelayedCloseTimeout)
		s(&c.Timeouts.ConnectionShutdownGracePeriod, t.ConnectionShutdownGracePeriod)
		s(&c.Timeouts.ConnectTimeout, t.ConnectTimeout)
	}
	if cl := e.Cluster; cl != nil {
		c.Cluster.DNSLookupFamily = string(cl.DNSLookupFamily)
		c.Cluster.MaxRequestsPerConnection = cl.MaxRequestsPerConnection
		c.Cluster.PerConnectionBufferLimitBytes = cl.PerConnectionBufferLimitBytes
		if cb := cl.GlobalCircuitBreakerDefaults; cb != nil {
			c.Cluster.CircuitBreakers = &CircuitBreakers{MaxConnections: cb.MaxConnections, MaxPendingRequests: cb.MaxPendingRequests,
				MaxRequests: cb.MaxRequests, MaxRetries: cb.MaxRetries, PerHostMaxConnections: cb.PerHostMaxConnections}
		}
		refuse(cl.UpstreamTLS != nil, "spec.envoy.cluster.upstreamTLS", "upstream TLS protocol settings")
	}
	if n := e.Network; n != nil {
		if n.XffNumTrustedHops != nil {
			c.Network.XffNumTrustedHops = *n.XffNumTrustedHops
		}
		if p := n.EnvoyAdminPort; p != nil && *p != 9001 {
			bad("spec.envoy.network.adminPort %d: the proxies' admin address is set by `legate bootstrap --admin-address`; remove the field (only Contour's default 9001 is accepted)", *p)
		}
		refuse(b(n.EnvoyStripTrailingHostDot), "spec.envoy.network.stripTrailingHostDot", "removing the trailing dot of the host")
	}
}

func headersFromSpec(h *contourv1alpha1.HeadersPolicy) HeadersPolicy {
	if h == nil {
		return HeadersPolicy{}
	}
	out := HeadersPolicy{Remove: append([]string(nil), h.Remove...)}
	if len(h.Set) > 0 {
		out.Set = map[string]string{}
		for k, v := range h.Set {
			out.Set[k] = v
		}
	}
	return out
}

// rateLimitPolicyFromAPI is the inverse of GlobalRateLimitPolicy.api. An
// unset expectMatch is the CRD's default, true.
func rateLimitPolicyFromAPI(p *contourv1.GlobalRateLimitPolicy) *GlobalRateLimitPolicy {
	if p == nil {
		return nil
	}
	out := &GlobalRateLimitPolicy{Disabled: p.Disabled}
	for _, d := range p.Descriptors {
		var rd RateLimitDescriptor
		for _, e := range d.Entries {
			var re RateLimitDescriptorEntry
			if g := e.GenericKey; g != nil {
				re.GenericKey = &GenericKeyDescriptor{Key: g.Key, Value: g.Value}
			}
			if h := e.RequestHeader; h != nil {
				re.RequestHeader = &RequestHeaderDescriptor{HeaderName: h.HeaderName, DescriptorKey: h.DescriptorKey}
			}
			if m := e.RequestHeaderValueMatch; m != nil {
				expect := true
				if m.ExpectMatch != nil {
					expect = *m.ExpectMatch
				}
				hv := &RequestHeaderValueMatchDescriptor{ExpectMatch: &expect, Value: m.Value}
				for _, h := range m.Headers {
					hv.Headers = append(hv.Headers, HeaderMatchCondition(h))
				}
				re.RequestHeaderValueMatch = hv
			}
			if e.RemoteAddress != nil {
				re.RemoteAddress = &struct{}{}
			}
			rd.Entries = append(rd.Entries, re)
		}
		out.Descriptors = append(out.Descriptors, rd)
	}
	return out
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// crdFields are the file's keys that Validate names and the
// ContourConfiguration fields they come from.
var crdFields = map[string]string{
	"tracing.extensionService":                      "spec.tracing.extensionService",
	"tracing.customTag.tagName":                     "spec.tracing.customTags.tagName",
	"gateway.gatewayRef":                            "spec.gateway.gatewayRef",
	"accesslog-format":                              "spec.envoy.logging.accessLogFormat",
	"accesslog-format-string":                       "spec.envoy.logging.accessLogFormatString",
	"json-fields":                                   "spec.envoy.logging.accessLogJSONFields",
	"accesslog-level":                               "spec.envoy.logging.accessLogLevel",
	"tls.minimum-protocol-version":                  "spec.envoy.listener.tls.minimumProtocolVersion",
	"tls.maximum-protocol-version":                  "spec.envoy.listener.tls.maximumProtocolVersion",
	"tls.cipher-suites":                             "spec.envoy.listener.tls.cipherSuites",
	"tls.fallback-certificate":                      "spec.httpproxy.fallbackCertificate",
	"timeouts.request-timeout":                      "spec.envoy.timeouts.requestTimeout",
	"timeouts.connection-idle-timeout":              "spec.envoy.timeouts.connectionIdleTimeout",
	"timeouts.stream-idle-timeout":                  "spec.envoy.timeouts.streamIdleTimeout",
	"timeouts.max-connection-duration":              "spec.envoy.timeouts.maxConnectionDuration",
	"timeouts.delayed-close-timeout":                "spec.envoy.timeouts.delayedCloseTimeout",
	"timeouts.connection-shutdown-grace-period":     "spec.envoy.timeouts.connectionShutdownGracePeriod",
	"timeouts.connect-timeout":                      "spec.envoy.timeouts.connectTimeout",
	"default-http-versions":                         "spec.envoy.defaultHTTPVersions",
	"cluster.dns-lookup-family":                     "spec.envoy.cluster.dnsLookupFamily",
	"serverHeaderTransformation":                    "spec.envoy.listener.serverHeaderTransformation",
	"listener.connection-balancer":                  "spec.envoy.listener.connectionBalancer",
	"policy.request-headers.set":                    "spec.policy.requestHeaders.set",
	"policy.request-headers.remove":                 "spec.policy.requestHeaders.remove",
	"policy.response-headers.set":                   "spec.policy.responseHeaders.set",
	"policy.response-headers.remove":                "spec.policy.responseHeaders.remove",
	"rateLimitService.extensionService":             "spec.rateLimitService.extensionService",
	"rateLimitService.defaultGlobalRateLimitPolicy": "spec.rateLimitService.defaultGlobalRateLimitPolicy",
	"metrics.contour.port":                          "spec.metrics.port",
}

var keyToken = regexp.MustCompile(`[A-Za-z][A-Za-z0-9.-]*[A-Za-z]`)

// crdPaths rewrites the file keys in Validate's errors as the fields'
// paths, one error per problem.
func crdPaths(err error) []error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		msg := keyToken.ReplaceAllStringFunc(e.Error(), func(tok string) string {
			if p, ok := crdFields[tok]; ok {
				return p
			}
			return tok
		})
		out = append(out, errors.New(msg))
	}
	return out
}
