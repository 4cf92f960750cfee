// Package contourconfig reads Contour's configuration file — the
// contour.yaml that `contour serve --config-path` loads, usually from the
// ConfigMap "contour" — with Contour's key names, defaults and
// validation, and turns it into the controller's model and xDS options.
//
// Contour 1.33 is the reference (pkg/config/parameters.go and the
// "Contour Configuration" reference). Unknown keys are errors, as in
// Contour (its decoder runs with KnownFields). Keys that Legate does not
// implement and that would change behaviour are refused with an error
// naming the key, never ignored: a user migrating from Contour learns at
// start-up, not in production, that a setting is not honoured.
package contourconfig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/format"
	"github.com/legateproxy/legate/internal/http1"
)

// Config is Contour's configuration file. Field names are Contour's YAML
// keys, including its mix of kebab-case and camelCase.
type Config struct {
	Debug                 bool    `yaml:"debug,omitempty"`
	InCluster             bool    `yaml:"incluster,omitempty"`
	Kubeconfig            string  `yaml:"kubeconfig,omitempty"`
	KubernetesClientQPS   float32 `yaml:"kubernetesClientQPS,omitempty"`
	KubernetesClientBurst int     `yaml:"kubernetesClientBurst,omitempty"`
	Server                Server  `yaml:"server,omitempty"`
	// Gateway names the one Gateway this controller serves (Contour's
	// gateway.gatewayRef): that Gateway, whatever its GatewayClass's
	// controllerName, and no other.
	Gateway              GatewayConfig `yaml:"gateway,omitempty"`
	IngressStatusAddress string        `yaml:"ingress-status-address,omitempty"`
	// Access log: format envoy (Envoy's default line, or
	// AccessLogFormatString) or json (JSONFields), filtered by level.
	AccessLogFormat       string   `yaml:"accesslog-format,omitempty"`
	AccessLogFormatString string   `yaml:"accesslog-format-string,omitempty"`
	JSONFields            []string `yaml:"json-fields,omitempty"`
	AccessLogLevel        string   `yaml:"accesslog-level,omitempty"`
	TLS                   TLS      `yaml:"tls,omitempty"`
	// DisablePermitInsecure ignores HTTPProxy routes' permitInsecure.
	DisablePermitInsecure bool `yaml:"disablePermitInsecure,omitempty"`
	// DisableAllowChunkedLength is accepted either way: Legate's proxy
	// always rejects a request with both Content-Length and chunked
	// encoding, which is what true asks of Envoy (with false, Contour's
	// default, Envoy accepts it and drops Content-Length).
	DisableAllowChunkedLength  bool   `yaml:"disableAllowChunkedLength,omitempty"`
	DisableMergeSlashes        bool   `yaml:"disableMergeSlashes,omitempty"`
	ServerHeaderTransformation string `yaml:"serverHeaderTransformation,omitempty"`
	// EnableExternalNameService allows routes to ExternalName Services
	// (off by default in Contour, GHSA-5ph6-qq5x-7jwc).
	EnableExternalNameService bool     `yaml:"enableExternalNameService,omitempty"`
	Timeouts                  Timeouts `yaml:"timeouts,omitempty"`
	Policy                    Policy   `yaml:"policy,omitempty"`
	// The Envoy Service whose load balancer address Contour copies into
	// Ingress status (refused: use ingress-status-address).
	EnvoyServiceNamespace string   `yaml:"envoy-service-namespace,omitempty"`
	EnvoyServiceName      string   `yaml:"envoy-service-name,omitempty"`
	DefaultHTTPVersions   []string `yaml:"default-http-versions,omitempty"`
	Cluster               Cluster  `yaml:"cluster,omitempty"`
	Network               Network  `yaml:"network,omitempty"`
	Listener              Listener `yaml:"listener,omitempty"`
	// RateLimitService is the global Rate Limit Service.
	RateLimitService RateLimitService `yaml:"rateLimitService,omitempty"`
	// Refused blocks: their content is not read.
	GlobalExternalAuthorization Block    `yaml:"globalExtAuth,omitempty"`
	Metrics                     Metrics  `yaml:"metrics,omitempty"`
	Tracing                     *Tracing `yaml:"tracing,omitempty"`
	FeatureFlags                []string `yaml:"featureFlags,omitempty"`
	OMEnforcedHealth            Block    `yaml:"omEnforcedHealth,omitempty"`
	// FlagValues are settings of a ContourConfiguration (FromSpec) that
	// are `legate controller` flags, by flag name; the file has none.
	FlagValues map[string]string `yaml:"-"`
}

// Server is Contour's server block.
type Server struct {
	// XDSServerType is contour or envoy: Contour's two xDS server
	// implementations, which serve the same resources; Legate has one.
	XDSServerType string `yaml:"xds-server-type,omitempty"`
}

// NamespacedName names an object (a Secret, a Gateway).
type NamespacedName struct {
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

// IsZero reports whether neither name nor namespace is set.
func (n NamespacedName) IsZero() bool {
	return strings.TrimSpace(n.Name) == "" && strings.TrimSpace(n.Namespace) == ""
}

// TLS is Contour's tls block: defaults for every TLS virtual host.
type TLS struct {
	MinimumProtocolVersion string         `yaml:"minimum-protocol-version,omitempty"`
	MaximumProtocolVersion string         `yaml:"maximum-protocol-version,omitempty"`
	CipherSuites           []string       `yaml:"cipher-suites,omitempty"`
	FallbackCertificate    NamespacedName `yaml:"fallback-certificate,omitempty"`
	EnvoyClientCertificate NamespacedName `yaml:"envoy-client-certificate,omitempty"`
}

// Timeouts is Contour's timeouts block. Values are Go durations, or
// "infinity" (or "infinite") for none; empty keeps the default.
type Timeouts struct {
	RequestTimeout                string `yaml:"request-timeout,omitempty"`
	ConnectionIdleTimeout         string `yaml:"connection-idle-timeout,omitempty"`
	StreamIdleTimeout             string `yaml:"stream-idle-timeout,omitempty"`
	MaxConnectionDuration         string `yaml:"max-connection-duration,omitempty"`
	DelayedCloseTimeout           string `yaml:"delayed-close-timeout,omitempty"`
	ConnectionShutdownGracePeriod string `yaml:"connection-shutdown-grace-period,omitempty"`
	ConnectTimeout                string `yaml:"connect-timeout,omitempty"`
}

// HeadersPolicy sets and removes headers.
type HeadersPolicy struct {
	Set    map[string]string `yaml:"set,omitempty"`
	Remove []string          `yaml:"remove,omitempty"`
}

func (h HeadersPolicy) isZero() bool { return len(h.Set) == 0 && len(h.Remove) == 0 }

// Policy is Contour's policy block: headers set or removed on every route.
type Policy struct {
	RequestHeaders  HeadersPolicy `yaml:"request-headers,omitempty"`
	ResponseHeaders HeadersPolicy `yaml:"response-headers,omitempty"`
	ApplyToIngress  bool          `yaml:"applyToIngress,omitempty"`
}

// Cluster is Contour's cluster block (upstream clusters).
type Cluster struct {
	DNSLookupFamily               string           `yaml:"dns-lookup-family,omitempty"`
	MaxRequestsPerConnection      *uint32          `yaml:"max-requests-per-connection,omitempty"`
	PerConnectionBufferLimitBytes *uint32          `yaml:"per-connection-buffer-limit-bytes,omitempty"`
	CircuitBreakers               *CircuitBreakers `yaml:"circuit-breakers,omitempty"`
	UpstreamTLS                   Block            `yaml:"upstream-tls,omitempty"`
}

// CircuitBreakers is cluster.circuit-breakers: the thresholds of every
// Service cluster whose annotations leave them unset, and of every
// ExtensionService without a circuitBreakerPolicy (Contour's
// GlobalCircuitBreakerDefaults).
type CircuitBreakers struct {
	MaxConnections        uint32 `yaml:"max-connections,omitempty"`
	MaxPendingRequests    uint32 `yaml:"max-pending-requests,omitempty"`
	MaxRequests           uint32 `yaml:"max-requests,omitempty"`
	MaxRetries            uint32 `yaml:"max-retries,omitempty"`
	PerHostMaxConnections uint32 `yaml:"per-host-max-connections,omitempty"`
}

// Network is Contour's network block.
type Network struct {
	XffNumTrustedHops uint32 `yaml:"num-trusted-hops,omitempty"`
	// EnvoyAdminPort is the proxies' admin port: legate bootstrap
	// --admin-address sets it, so only Contour's 9001 is accepted.
	EnvoyAdminPort *int `yaml:"admin-port,omitempty"`
}

// Listener is Contour's listener block.
type Listener struct {
	ConnectionBalancer            string  `yaml:"connection-balancer,omitempty"`
	MaxRequestsPerConnection      *uint32 `yaml:"max-requests-per-connection,omitempty"`
	PerConnectionBufferLimitBytes *uint32 `yaml:"per-connection-buffer-limit-bytes,omitempty"`
	SocketOptions                 Block   `yaml:"socket-options,omitempty"`
	MaxRequestsPerIOCycle         *uint32 `yaml:"max-requests-per-io-cycle,omitempty"`
	HTTP2MaxConcurrentStreams     *uint32 `yaml:"http2-max-concurrent-streams,omitempty"`
	MaxConnectionsPerListener     *uint32 `yaml:"max-connections-per-listener,omitempty"`
}

// Metrics is Contour's metrics block.
type Metrics struct {
	Contour MetricsServer `yaml:"contour,omitempty"`
	Envoy   MetricsServer `yaml:"envoy,omitempty"`
}

// MetricsServer is where a metrics endpoint listens.
type MetricsServer struct {
	Address    string `yaml:"address,omitempty"`
	Port       int    `yaml:"port,omitempty"`
	ServerCert string `yaml:"server-certificate-path,omitempty"`
	ServerKey  string `yaml:"server-key-path,omitempty"`
	CABundle   string `yaml:"ca-certificate-path,omitempty"`
}

func (m MetricsServer) isZero() bool { return m == MetricsServer{} }

// Contour's defaults (pkg/config Defaults and the configuration reference).
const (
	DefaultAccessLogFormat       = "envoy"
	DefaultAccessLogLevel        = "info"
	DefaultConnectionIdleTimeout = "60s"
	DefaultConnectTimeout        = "2s"
	DefaultTLSMinimumVersion     = "1.2"
	DefaultTLSMaximumVersion     = "1.3"
	DefaultDNSLookupFamily       = "auto"
	DefaultXDSServerType         = "contour"
	DefaultServerHeader          = "overwrite"
)

// DefaultJSONFields are the fields of a json access log when json-fields
// is not given, as Contour.
var DefaultJSONFields = []string{
	"@timestamp", "authority", "bytes_received", "bytes_sent", "downstream_local_address",
	"downstream_remote_address", "duration", "method", "path", "protocol", "request_id",
	"requested_server_name", "response_code", "response_flags", "uber_trace_id", "upstream_cluster",
	"upstream_host", "upstream_local_address", "upstream_service_time", "user_agent", "x_forwarded_for",
	"grpc_status", "grpc_status_number",
}

// DefaultCipherSuites are Contour's TLS 1.2 cipher suites for
// downstream TLS when tls.cipher-suites is not given ("[A|B]" is an
// equal-preference group, as Envoy's BoringSSL lists).
var DefaultCipherSuites = []string{
	"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
	"[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]",
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384",
}

// validCiphers are the names Contour accepts in tls.cipher-suites.
var validCiphers = map[string]bool{
	"ECDHE-ECDSA-CHACHA20-POLY1305": true, "ECDHE-RSA-CHACHA20-POLY1305": true,
	"ECDHE-ECDSA-AES128-GCM-SHA256": true, "ECDHE-RSA-AES128-GCM-SHA256": true,
	"ECDHE-ECDSA-AES128-SHA": true, "ECDHE-RSA-AES128-SHA": true,
	"AES128-GCM-SHA256": true, "AES128-SHA": true,
	"ECDHE-ECDSA-AES256-GCM-SHA384": true, "ECDHE-RSA-AES256-GCM-SHA384": true,
	"ECDHE-ECDSA-AES256-SHA": true, "ECDHE-RSA-AES256-SHA": true,
	"AES256-GCM-SHA384": true, "AES256-SHA": true,
}

// Load reads and validates the file at path (see Parse).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("contour configuration file: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("contour configuration file %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a configuration file, refusing unknown keys as Contour
// does, applies Contour's defaults, validates the values as Contour and
// refuses the keys Legate does not implement. An empty file is Contour's
// defaults.
func Parse(r io.Reader) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w (keys are Contour's: see its Configuration reference)", err)
	}
	refused := c.refuseUnsupported() // before defaults: what the file sets
	c.applyDefaults()
	if err := errors.Join(refused, c.Validate()); err != nil {
		return nil, err
	}
	return c, nil
}

// Default is the configuration without a file: Contour's defaults.
func Default() *Config {
	c := &Config{}
	c.applyDefaults()
	return c
}

func (c *Config) applyDefaults() {
	or := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	or(&c.Server.XDSServerType, DefaultXDSServerType)
	or(&c.AccessLogFormat, DefaultAccessLogFormat)
	or(&c.AccessLogLevel, DefaultAccessLogLevel)
	if len(c.JSONFields) == 0 {
		c.JSONFields = append([]string(nil), DefaultJSONFields...)
	}
	or(&c.TLS.MinimumProtocolVersion, DefaultTLSMinimumVersion)
	or(&c.TLS.MaximumProtocolVersion, DefaultTLSMaximumVersion)
	if len(c.TLS.CipherSuites) == 0 {
		c.TLS.CipherSuites = append([]string(nil), DefaultCipherSuites...)
	}
	or(&c.ServerHeaderTransformation, DefaultServerHeader)
	or(&c.Timeouts.ConnectionIdleTimeout, DefaultConnectionIdleTimeout)
	or(&c.Timeouts.ConnectTimeout, DefaultConnectTimeout)
	or(&c.Cluster.DNSLookupFamily, DefaultDNSLookupFamily)
	for i, v := range c.DefaultHTTPVersions {
		// Contour lower-cases them: "HTTP/2" and "http/2" are the same.
		c.DefaultHTTPVersions[i] = strings.ToLower(strings.TrimSpace(v))
	}
}

// GatewayConfig is the gateway key: gatewayRef names the Gateway to
// serve. (controllerName, which Contour 1.28 removed, is refused with
// what replaces it.)
type GatewayConfig struct {
	GatewayRef     NamespacedName `yaml:"gatewayRef,omitempty"`
	ControllerName string         `yaml:"controllerName,omitempty"`
}

// GatewayRef is the Gateway the configuration names (gateway.gatewayRef),
// nil for none: then every Gateway of the managed GatewayClasses is
// served.
func (c *Config) GatewayRef() *types.NamespacedName {
	r := c.Gateway.GatewayRef
	if r.Name == "" {
		return nil
	}
	return &types.NamespacedName{Namespace: r.Namespace, Name: r.Name}
}

// notImplemented is the error of a key Legate refuses.
func notImplemented(key, why string) error {
	return fmt.Errorf("%s: not implemented by Legate (%s); remove the key", key, why)
}

// Block is the content of a key that is refused, not read: it records
// only whether the file sets it (a null or empty mapping is unset).
type Block struct{ set bool }

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Block) UnmarshalYAML(n *yaml.Node) error {
	b.set = !(n.Kind == yaml.ScalarNode && n.Tag == "!!null") && !(n.Kind == yaml.MappingNode && len(n.Content) == 0)
	return nil
}

// refuseUnsupported reports the first key that changes behaviour in
// Contour and that Legate does not implement. It runs before defaults, so
// it sees what the file sets.
func (c *Config) refuseUnsupported() error {
	var errs []error
	refuse := func(set bool, key, why string) {
		if set {
			errs = append(errs, notImplemented(key, why))
		}
	}
	if c.Gateway.ControllerName != "" {
		errs = append(errs, fmt.Errorf("gateway.controllerName: removed in Contour 1.28; name the Gateway with gateway.gatewayRef, or the GatewayClasses with legate controller --gateway-controller-name"))
	}
	refuse(c.GlobalExternalAuthorization.set, "globalExtAuth", "global external authorization; set spec.virtualhost.authorization on each HTTPProxy")
	refuse(len(c.FeatureFlags) > 0, "featureFlags", "no Contour feature flags are implemented")
	refuse(c.OMEnforcedHealth.set, "omEnforcedHealth", "overload manager health listener")
	refuse(!c.TLS.EnvoyClientCertificate.IsZero(), "tls.envoy-client-certificate", "client certificates to upstreams")
	refuse(c.EnvoyServiceName != "", "envoy-service-name", "status from the Envoy Service; use ingress-status-address or --ingress-status-address")
	refuse(c.EnvoyServiceNamespace != "", "envoy-service-namespace", "status from the Envoy Service; use ingress-status-address or --ingress-status-address")
	refuse(c.Cluster.UpstreamTLS.set, "cluster.upstream-tls", "upstream TLS protocol settings")
	if p := c.Network.EnvoyAdminPort; p != nil && *p != 9001 {
		errs = append(errs, fmt.Errorf("network.admin-port %d: the proxies' admin address is set by `legate bootstrap --admin-address`; remove the key (only Contour's default 9001 is accepted)", *p))
	}
	refuse(c.Listener.ConnectionBalancer != "" && c.Listener.ConnectionBalancer == "exact", "listener.connection-balancer", "connection balancing between worker threads")
	refuse(c.Listener.MaxRequestsPerConnection != nil, "listener.max-requests-per-connection", "downstream request limits")
	refuse(c.Listener.SocketOptions.set, "listener.socket-options", "TOS and traffic class")
	refuse(c.Listener.MaxRequestsPerIOCycle != nil, "listener.max-requests-per-io-cycle", "an Envoy event-loop setting")
	refuse(c.Listener.MaxConnectionsPerListener != nil, "listener.max-connections-per-listener", "listener connection limits")
	refuse(!c.Metrics.Envoy.isZero(), "metrics.envoy", "the proxies' stats listener is set by `legate bootstrap --health-address`")
	m := c.Metrics.Contour
	refuse(m.ServerCert != "" || m.ServerKey != "" || m.CABundle != "", "metrics.contour.server-certificate-path", "metrics over HTTPS")
	return errors.Join(errs...)
}

// Validate checks values as Contour does; errors name the key and say
// what is allowed.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := c.Tracing.validate(); err != nil {
		errs = append(errs, err)
	}
	if r := c.Gateway.GatewayRef; (r.Name == "") != (r.Namespace == "") {
		bad("gateway.gatewayRef: set both namespace and name of the Gateway")
	}
	switch c.Server.XDSServerType {
	case "contour", "envoy":
	default:
		bad("server.xds-server-type %q: use contour or envoy", c.Server.XDSServerType)
	}
	switch c.AccessLogFormat {
	case "envoy", "json":
	default:
		bad("accesslog-format %q: use envoy or json", c.AccessLogFormat)
	}
	switch c.AccessLogLevel {
	case "info", "error", "critical", "disabled":
	default:
		bad("accesslog-level %q: use info, error, critical or disabled", c.AccessLogLevel)
	}
	if s := c.AccessLogFormatString; s != "" {
		if err := checkFormat(s); err != nil {
			bad("accesslog-format-string: %w", err)
		} else if !strings.HasSuffix(s, "\n") {
			bad("accesslog-format-string: must end in a newline (\\n)")
		} else if _, err := format.Compile(s); err != nil {
			// Valid for Contour, but the proxy would refuse the listener.
			bad("accesslog-format-string: not supported by Legate's proxy: %w", err)
		}
	}
	if fields, err := JSONFieldMap(c.JSONFields); err != nil {
		bad("json-fields: %w", err)
	} else {
		for _, name := range sortedKeys(fields) {
			if _, err := format.Compile(fields[name]); err != nil {
				bad("json-fields: %q is not supported by Legate's proxy: %w", name, err)
			}
		}
	}
	versions := map[string]int{"1.2": 2, "1.3": 3}
	minV, okMin := versions[c.TLS.MinimumProtocolVersion]
	maxV, okMax := versions[c.TLS.MaximumProtocolVersion]
	if !okMin {
		bad("tls.minimum-protocol-version %q: use 1.2 or 1.3", c.TLS.MinimumProtocolVersion)
	}
	if !okMax {
		bad("tls.maximum-protocol-version %q: use 1.2 or 1.3", c.TLS.MaximumProtocolVersion)
	}
	if okMin && okMax && minV > maxV {
		bad("tls.minimum-protocol-version %s is above tls.maximum-protocol-version %s", c.TLS.MinimumProtocolVersion, c.TLS.MaximumProtocolVersion)
	}
	for _, cs := range c.TLS.CipherSuites {
		for _, name := range strings.FieldsFunc(strings.TrimSpace(cs), func(r rune) bool { return r == '[' || r == ']' || r == '|' }) {
			if !validCiphers[name] {
				bad("tls.cipher-suites: cipher %q is not supported (use Envoy's TLS 1.2 names, e.g. ECDHE-RSA-AES256-GCM-SHA384, or [A|B] groups)", name)
			}
		}
	}
	if fc := c.TLS.FallbackCertificate; !fc.IsZero() {
		if strings.TrimSpace(fc.Namespace) == "" {
			bad("tls.fallback-certificate: namespace must be defined")
		}
		if strings.TrimSpace(fc.Name) == "" {
			bad("tls.fallback-certificate: name must be defined")
		}
	}
	for _, t := range []struct{ key, val string }{
		{"request-timeout", c.Timeouts.RequestTimeout}, {"connection-idle-timeout", c.Timeouts.ConnectionIdleTimeout},
		{"stream-idle-timeout", c.Timeouts.StreamIdleTimeout}, {"max-connection-duration", c.Timeouts.MaxConnectionDuration},
		{"delayed-close-timeout", c.Timeouts.DelayedCloseTimeout}, {"connection-shutdown-grace-period", c.Timeouts.ConnectionShutdownGracePeriod},
	} {
		if _, err := ParseTimeout(t.val); err != nil {
			bad("timeouts.%s: %w", t.key, err)
		}
	}
	if d, err := time.ParseDuration(c.Timeouts.ConnectTimeout); err != nil || d <= 0 {
		// Contour: a connect timeout cannot be infinite.
		bad("timeouts.connect-timeout %q: use a positive Go duration such as 2s (infinity is not allowed)", c.Timeouts.ConnectTimeout)
	}
	for _, v := range c.DefaultHTTPVersions {
		if v != "http/1.1" && v != "http/2" {
			bad("default-http-versions %q: use HTTP/1.1 or HTTP/2", v)
		}
	}
	switch c.Cluster.DNSLookupFamily {
	case "auto", "v4", "v6", "all":
	default:
		bad("cluster.dns-lookup-family %q: use auto, v4, v6 or all", c.Cluster.DNSLookupFamily)
	}
	switch c.ServerHeaderTransformation {
	case "overwrite", "append_if_absent", "pass_through":
	default:
		bad("serverHeaderTransformation %q: use overwrite, append_if_absent or pass_through", c.ServerHeaderTransformation)
	}
	if b := c.Listener.ConnectionBalancer; b != "" && b != "exact" {
		bad("listener.connection-balancer %q: only exact is supported by Contour", b)
	}
	for _, h := range []struct {
		key string
		p   HeadersPolicy
	}{{"policy.request-headers", c.Policy.RequestHeaders}, {"policy.response-headers", c.Policy.ResponseHeaders}} {
		for k := range h.p.Set {
			if !http1.IsToken(k) {
				bad("%s.set: %q is not a valid HTTP header name", h.key, k)
			}
		}
		for _, k := range h.p.Remove {
			if !http1.IsToken(k) {
				bad("%s.remove: %q is not a valid HTTP header name", h.key, k)
			}
		}
	}
	if err := c.RateLimitService.validate(); err != nil {
		errs = append(errs, err)
	}
	m := c.Metrics.Contour
	if m.Port < 0 || m.Port > 65535 {
		bad("metrics.contour.port %d: use 0-65535", m.Port)
	}
	return errors.Join(errs...)
}

// ParseTimeout parses a Contour timeout: "" (or 0s) keeps the default,
// "infinity"/"infinite" disables it, anything else is a Go duration.
func ParseTimeout(s string) (Timeout, error) {
	switch strings.TrimSpace(s) {
	case "":
		return Timeout{}, nil
	case "infinity", "infinite":
		return Timeout{Set: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Timeout{}, fmt.Errorf("%q is not a duration (use e.g. 30s, 5m or infinity)", s)
	}
	if d < 0 {
		return Timeout{}, fmt.Errorf("%q is negative (use e.g. 30s, 5m or infinity)", s)
	}
	if d == 0 {
		// Contour: 0s no longer disables a timeout; it is the default.
		return Timeout{}, nil
	}
	return Timeout{Set: true, D: d}, nil
}

// Timeout is a parsed Contour timeout: unset (Envoy's default), disabled
// (Set, D 0) or a duration.
type Timeout struct {
	Set bool
	D   time.Duration
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
