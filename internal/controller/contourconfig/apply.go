package contourconfig

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
)

// Model is the file's model settings. A validated Config (Parse or
// Default) is assumed.
func (c *Config) Model() model.ConfigDefaults {
	return model.ConfigDefaults{
		DisablePermitInsecure:     c.DisablePermitInsecure,
		EnableExternalNameService: c.EnableExternalNameService,
		MinTLSVersion:             c.TLS.MinimumProtocolVersion,
		MaxTLSVersion:             c.TLS.MaximumProtocolVersion,
		DNSLookupFamily:           c.Cluster.DNSLookupFamily,
		RequestHeaders:            headers(c.Policy.RequestHeaders),
		ResponseHeaders:           headers(c.Policy.ResponseHeaders),
		HeadersToIngress:          c.Policy.ApplyToIngress,
		CircuitBreakers:           c.circuitBreakers(),
		RateLimitService:          c.RateLimitService.model(),
		Tracing:                   c.Tracing.model(),
	}
}

func (c *Config) circuitBreakers() *model.CircuitBreakers {
	cb := c.Cluster.CircuitBreakers
	if cb == nil {
		return nil
	}
	return &model.CircuitBreakers{MaxConnections: cb.MaxConnections, MaxPendingRequests: cb.MaxPendingRequests,
		MaxRequests: cb.MaxRequests, MaxRetries: cb.MaxRetries, PerHostMaxConnections: cb.PerHostMaxConnections}
}

func headers(h HeadersPolicy) *model.HeadersPolicy {
	if h.isZero() {
		return nil
	}
	out := &model.HeadersPolicy{Remove: append([]string(nil), h.Remove...)}
	names := make([]string, 0, len(h.Set))
	for k := range h.Set {
		names = append(names, k)
	}
	sort.Strings(names) // deterministic output
	for _, k := range names {
		out.Set = append(out.Set, model.KV{Name: k, Value: h.Set[k]})
	}
	return out
}

// ApplyXDS sets the file's listener and cluster settings on o, keeping
// its addresses, ports, fallback secret and access log paths.
func (c *Config) ApplyXDS(o *xdsgen.Options) {
	o.AccessLog.Format = c.AccessLogFormat
	o.AccessLog.FormatString = c.AccessLogFormatString
	o.AccessLog.Level = c.AccessLogLevel
	o.AccessLog.JSONFields = nil
	if c.AccessLogFormat == "json" {
		o.AccessLog.JSONFields, _ = JSONFieldMap(c.JSONFields) // validated
	}
	t := func(s string) *time.Duration {
		v, _ := ParseTimeout(s) // validated
		if !v.Set {
			return nil
		}
		d := v.D
		return &d
	}
	o.Timeouts = xdsgen.Timeouts{
		Request:                       t(c.Timeouts.RequestTimeout),
		ConnectionIdle:                t(c.Timeouts.ConnectionIdleTimeout),
		StreamIdle:                    t(c.Timeouts.StreamIdleTimeout),
		MaxConnectionDuration:         t(c.Timeouts.MaxConnectionDuration),
		DelayedClose:                  t(c.Timeouts.DelayedCloseTimeout),
		ConnectionShutdownGracePeriod: t(c.Timeouts.ConnectionShutdownGracePeriod),
	}
	o.ConnectTimeout, _ = time.ParseDuration(c.Timeouts.ConnectTimeout)
	o.XffNumTrustedHops = c.Network.XffNumTrustedHops
	o.HTTPVersions = append([]string(nil), c.DefaultHTTPVersions...)
	o.CipherSuites = append([]string(nil), c.TLS.CipherSuites...)
	o.TLSMinVersion, o.TLSMaxVersion = c.TLS.MinimumProtocolVersion, c.TLS.MaximumProtocolVersion
	o.DisableMergeSlashes = c.DisableMergeSlashes
	o.ServerHeaderTransformation = c.ServerHeaderTransformation
	u := func(v *uint32) uint32 {
		if v == nil {
			return 0
		}
		return *v
	}
	o.ClusterMaxRequestsPerConnection = u(c.Cluster.MaxRequestsPerConnection)
	o.ClusterBufferLimit = u(c.Cluster.PerConnectionBufferLimitBytes)
	o.HTTP2MaxConcurrentStreams = u(c.Listener.HTTP2MaxConcurrentStreams)
	o.ListenerBufferLimit = u(c.Listener.PerConnectionBufferLimitBytes)
}

// Flags are the file's values of keys that are also `legate controller`
// flags, by flag name, with FlagValues. As in Contour, a flag given on
// the command line wins over the file.
func (c *Config) Flags() map[string]string {
	f := map[string]string{}
	for k, v := range c.FlagValues {
		f[k] = v
	}
	if c.Kubeconfig != "" && !c.InCluster {
		f["kubeconfig"] = c.Kubeconfig
	}
	if c.IngressStatusAddress != "" {
		f["ingress-status-address"] = c.IngressStatusAddress
	}
	if fc := c.TLS.FallbackCertificate; !fc.IsZero() {
		f["fallback-certificate"] = fc.Namespace + "/" + fc.Name
	}
	if c.Debug {
		f["log-level"] = "debug"
	}
	if m := c.Metrics.Contour; m.Address != "" || m.Port != 0 {
		addr, port := m.Address, m.Port
		if addr == "" {
			addr = "0.0.0.0"
		}
		if port == 0 {
			port = 8000
		}
		f["http-address"] = net.JoinHostPort(addr, strconv.Itoa(port))
	}
	return f
}

// String summarises the settings for the start-up log.
func (c *Config) String() string {
	s := fmt.Sprintf("accesslog=%s/%s tls=%s-%s timeouts=%+v disablePermitInsecure=%t enableExternalNameService=%t",
		c.AccessLogFormat, c.AccessLogLevel, c.TLS.MinimumProtocolVersion, c.TLS.MaximumProtocolVersion, c.Timeouts,
		c.DisablePermitInsecure, c.EnableExternalNameService)
	if r := c.RateLimitService; !r.isZero() {
		s += fmt.Sprintf(" rateLimitService=%s(domain=%q failOpen=%t)", r.ExtensionService, r.Domain, r.FailOpen)
	}
	return s
}
