package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
)

// ContourConfigurationGVR names the resource for dynamic clients.
var ContourConfigurationGVR = GroupVersion.WithResource("contourconfigurations")

// ContourConfiguration is the configuration of a controller, read once
// at start-up by `legate controller --contour-config-name NAME` (Contour:
// `contour serve --contour-config-name`). Its schema is Contour 1.33's, so
// every field Contour knows is kept by the API server and a field Legate
// does not implement is refused by name instead of silently pruned.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,path=contourconfigurations,shortName=contourconfig,singular=contourconfiguration
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ContourConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ContourConfigurationSpec `json:"spec"`
	// +optional
	Status ContourConfigurationStatus `json:"status,omitempty"`
}

// ContourConfigurationList is a list of ContourConfigurations.
//
// +kubebuilder:object:root=true
type ContourConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ContourConfiguration `json:"items"`
}

// ContourConfigurationStatus has the Valid condition the controller
// writes when it reads the object (other controllers' conditions are
// kept).
type ContourConfigurationStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []contourv1.DetailedCondition `json:"conditions,omitempty"`
}

// ContourConfigurationSpec is Contour's configuration: the settings of
// its configuration file and of most of its flags.
type ContourConfigurationSpec struct {
	// XDSServer is where the controller serves xDS.
	// +optional
	XDSServer *XDSServerConfig `json:"xdsServer,omitempty"`
	// Ingress selects Ingresses by class and sets their status address.
	// +optional
	Ingress *IngressConfig `json:"ingress,omitempty"`
	// Debug is Contour's debug endpoint.
	// +optional
	Debug *DebugConfig `json:"debug,omitempty"`
	// Health is where the controller serves health checks.
	// +optional
	Health *HealthConfig `json:"health,omitempty"`
	// Envoy configures the proxies.
	// +optional
	Envoy *EnvoyConfig `json:"envoy,omitempty"`
	// Gateway names the Gateway this controller serves.
	// +optional
	Gateway *GatewayConfig `json:"gateway,omitempty"`
	// HTTPProxy holds HTTPProxy settings.
	// +optional
	HTTPProxy *HTTPProxyConfig `json:"httpproxy,omitempty"`
	// EnableExternalNameService allows routes to ExternalName Services.
	// +optional
	EnableExternalNameService *bool `json:"enableExternalNameService,omitempty"`
	// GlobalExternalAuthorization is external authorization for every
	// virtual host.
	// +optional
	GlobalExternalAuthorization *contourv1.AuthorizationServer `json:"globalExtAuth,omitempty"`
	// RateLimitService is the global Rate Limit Service.
	// +optional
	RateLimitService *RateLimitServiceConfig `json:"rateLimitService,omitempty"`
	// Policy sets and removes headers on every route.
	// +optional
	Policy *PolicyConfig `json:"policy,omitempty"`
	// Metrics is where the controller serves metrics.
	// +optional
	Metrics *MetricsConfig `json:"metrics,omitempty"`
	// Tracing exports traces to OpenTelemetry.
	// +optional
	Tracing *TracingConfig `json:"tracing,omitempty"`
	// FeatureFlags toggles Contour features.
	// +optional
	FeatureFlags FeatureFlags `json:"featureFlags,omitempty"`
}

// FeatureFlags are Contour feature flags.
type FeatureFlags []string

// XDSServerConfig is the xDS server's address and TLS files.
type XDSServerConfig struct {
	// +kubebuilder:validation:MinLength=1
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Port int `json:"port,omitempty"`
	// +optional
	TLS *TLS `json:"tls,omitempty"`
}

// GatewayConfig names a Gateway.
type GatewayConfig struct {
	GatewayRef NamespacedName `json:"gatewayRef"`
}

// TLS are the xDS server's certificate files.
type TLS struct {
	// +optional
	CAFile string `json:"caFile,omitempty"`
	// +optional
	CertFile string `json:"certFile,omitempty"`
	// +optional
	KeyFile string `json:"keyFile,omitempty"`
	// Insecure serves xDS without TLS.
	// +optional
	Insecure *bool `json:"insecure,omitempty"`
}

// IngressConfig selects Ingresses by class and sets their status address.
type IngressConfig struct {
	// +optional
	ClassNames []string `json:"classNames,omitempty"`
	// +optional
	StatusAddress string `json:"statusAddress,omitempty"`
}

// HealthConfig is a health endpoint.
type HealthConfig struct {
	// +kubebuilder:validation:MinLength=1
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Port int `json:"port,omitempty"`
}

// MetricsConfig is a metrics endpoint.
type MetricsConfig struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Port int `json:"port,omitempty"`
	// TLS serves metrics over HTTPS.
	// +optional
	TLS *MetricsTLS `json:"tls,omitempty"`
}

// MetricsTLS are the metrics endpoint's certificate files.
type MetricsTLS struct {
	// +optional
	CAFile string `json:"caFile,omitempty"`
	// +optional
	CertFile string `json:"certFile,omitempty"`
	// +optional
	KeyFile string `json:"keyFile,omitempty"`
}

// HTTPVersionType is HTTP/1.1 or HTTP/2.
type HTTPVersionType string

// EnvoyConfig configures the proxies.
type EnvoyConfig struct {
	// +optional
	Listener *EnvoyListenerConfig `json:"listener,omitempty"`
	// Service is the Envoy Service whose address goes to Ingress status.
	// +optional
	Service *NamespacedName `json:"service,omitempty"`
	// +optional
	HTTPListener *EnvoyListener `json:"http,omitempty"`
	// +optional
	HTTPSListener *EnvoyListener `json:"https,omitempty"`
	// +optional
	Health *HealthConfig `json:"health,omitempty"`
	// +optional
	Metrics *MetricsConfig `json:"metrics,omitempty"`
	// ClientCertificate is the proxies' client certificate to upstreams.
	// +optional
	ClientCertificate *NamespacedName `json:"clientCertificate,omitempty"`
	// +optional
	Logging *EnvoyLogging `json:"logging,omitempty"`
	// +optional
	DefaultHTTPVersions []HTTPVersionType `json:"defaultHTTPVersions,omitempty"`
	// +optional
	Timeouts *TimeoutParameters `json:"timeouts,omitempty"`
	// +optional
	Cluster *ClusterParameters `json:"cluster,omitempty"`
	// +optional
	Network *NetworkParameters `json:"network,omitempty"`
	// +optional
	OMEnforcedHealth *HealthConfig `json:"omEnforcedHealth,omitempty"`
}

// DebugConfig is Contour's debug endpoint.
type DebugConfig struct {
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Port int `json:"port,omitempty"`
}

// EnvoyListenerConfig configures the proxies' listeners.
type EnvoyListenerConfig struct {
	// +optional
	UseProxyProto *bool `json:"useProxyProtocol,omitempty"`
	// +optional
	Compression *EnvoyCompression `json:"compression,omitempty"`
	// +optional
	DisableAllowChunkedLength *bool `json:"disableAllowChunkedLength,omitempty"`
	// +optional
	DisableMergeSlashes *bool `json:"disableMergeSlashes,omitempty"`
	// +optional
	ServerHeaderTransformation ServerHeaderTransformationType `json:"serverHeaderTransformation,omitempty"`
	// +optional
	ConnectionBalancer string `json:"connectionBalancer,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxRequestsPerConnection *uint32 `json:"maxRequestsPerConnection,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	PerConnectionBufferLimitBytes *uint32 `json:"per-connection-buffer-limit-bytes,omitempty"`
	// +optional
	TLS *EnvoyTLS `json:"tls,omitempty"`
	// +optional
	SocketOptions *SocketOptions `json:"socketOptions,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxRequestsPerIOCycle *uint32 `json:"maxRequestsPerIOCycle,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	HTTP2MaxConcurrentStreams *uint32 `json:"httpMaxConcurrentStreams,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxConnectionsPerListener *uint32 `json:"maxConnectionsPerListener,omitempty"`
}

// EnvoyCompression is the response compression of the listeners.
type EnvoyCompression struct {
	// +kubebuilder:validation:Enum="gzip";"brotli";"zstd";"disabled"
	// +optional
	Algorithm string `json:"algorithm,omitempty"`
}

// SocketOptions are the listeners' IP TOS and traffic class.
type SocketOptions struct {
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	TOS int32 `json:"tos,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	TrafficClass int32 `json:"trafficClass,omitempty"`
}

// EnvoyTLS are TLS versions and TLS 1.2 cipher suites.
type EnvoyTLS struct {
	// +optional
	MinimumProtocolVersion string `json:"minimumProtocolVersion,omitempty"`
	// +optional
	MaximumProtocolVersion string `json:"maximumProtocolVersion,omitempty"`
	// +optional
	CipherSuites []string `json:"cipherSuites,omitempty"`
}

// EnvoyListener is a proxy listener's address, port and access log file.
type EnvoyListener struct {
	// +kubebuilder:validation:MinLength=1
	// +optional
	Address string `json:"address,omitempty"`
	// +optional
	Port int `json:"port,omitempty"`
	// +optional
	AccessLog string `json:"accessLog,omitempty"`
}

// EnvoyLogging is the access log's format and level.
type EnvoyLogging struct {
	// +optional
	AccessLogFormat string `json:"accessLogFormat,omitempty"`
	// +optional
	AccessLogFormatString string `json:"accessLogFormatString,omitempty"`
	// +optional
	AccessLogJSONFields []string `json:"accessLogJSONFields,omitempty"`
	// +optional
	AccessLogLevel string `json:"accessLogLevel,omitempty"`
}

// TimeoutParameters are Contour's timeouts: Go durations or infinity.
type TimeoutParameters struct {
	// +optional
	RequestTimeout *string `json:"requestTimeout,omitempty"`
	// +optional
	ConnectionIdleTimeout *string `json:"connectionIdleTimeout,omitempty"`
	// +optional
	StreamIdleTimeout *string `json:"streamIdleTimeout,omitempty"`
	// +optional
	MaxConnectionDuration *string `json:"maxConnectionDuration,omitempty"`
	// +optional
	DelayedCloseTimeout *string `json:"delayedCloseTimeout,omitempty"`
	// +optional
	ConnectionShutdownGracePeriod *string `json:"connectionShutdownGracePeriod,omitempty"`
	// +optional
	ConnectTimeout *string `json:"connectTimeout,omitempty"`
}

// ClusterDNSFamilyType is auto, v4, v6 or all.
type ClusterDNSFamilyType string

// ServerHeaderTransformationType is overwrite, append_if_absent or
// pass_through.
type ServerHeaderTransformationType string

// ClusterParameters configure the upstream clusters.
type ClusterParameters struct {
	// +optional
	DNSLookupFamily ClusterDNSFamilyType `json:"dnsLookupFamily,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxRequestsPerConnection *uint32 `json:"maxRequestsPerConnection,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +optional
	PerConnectionBufferLimitBytes *uint32 `json:"per-connection-buffer-limit-bytes,omitempty"`
	// +optional
	GlobalCircuitBreakerDefaults *CircuitBreakers `json:"circuitBreakers,omitempty"`
	// +optional
	UpstreamTLS *EnvoyTLS `json:"upstreamTLS,omitempty"`
}

// HTTPProxyConfig holds HTTPProxy settings.
type HTTPProxyConfig struct {
	// +optional
	DisablePermitInsecure *bool `json:"disablePermitInsecure,omitempty"`
	// +optional
	RootNamespaces []string `json:"rootNamespaces,omitempty"`
	// +optional
	FallbackCertificate *NamespacedName `json:"fallbackCertificate,omitempty"`
}

// NetworkParameters are the proxies' network settings.
type NetworkParameters struct {
	// +optional
	XffNumTrustedHops *uint32 `json:"numTrustedHops,omitempty"`
	// +optional
	EnvoyAdminPort *int `json:"adminPort,omitempty"`
	// +optional
	EnvoyStripTrailingHostDot *bool `json:"stripTrailingHostDot,omitempty"`
}

// RateLimitServiceConfig is the global Rate Limit Service.
type RateLimitServiceConfig struct {
	ExtensionService NamespacedName `json:"extensionService"`
	// +optional
	Domain string `json:"domain,omitempty"`
	// +optional
	FailOpen *bool `json:"failOpen,omitempty"`
	// +optional
	EnableXRateLimitHeaders *bool `json:"enableXRateLimitHeaders,omitempty"`
	// +optional
	EnableResourceExhaustedCode *bool `json:"enableResourceExhaustedCode,omitempty"`
	// +optional
	DefaultGlobalRateLimitPolicy *contourv1.GlobalRateLimitPolicy `json:"defaultGlobalRateLimitPolicy,omitempty"`
}

// TracingConfig exports traces to OpenTelemetry.
type TracingConfig struct {
	// +optional
	IncludePodDetail *bool `json:"includePodDetail,omitempty"`
	// +optional
	ServiceName *string `json:"serviceName,omitempty"`
	// +optional
	OverallSampling *string `json:"overallSampling,omitempty"`
	// +optional
	MaxPathTagLength *uint32 `json:"maxPathTagLength,omitempty"`
	// +optional
	CustomTags       []*CustomTag    `json:"customTags,omitempty"`
	ExtensionService *NamespacedName `json:"extensionService"`
}

// CustomTag is a span tag.
type CustomTag struct {
	TagName string `json:"tagName"`
	// +optional
	Literal string `json:"literal,omitempty"`
	// +optional
	RequestHeaderName string `json:"requestHeaderName,omitempty"`
}

// PolicyConfig sets and removes headers on every route.
type PolicyConfig struct {
	// +optional
	RequestHeadersPolicy *HeadersPolicy `json:"requestHeaders,omitempty"`
	// +optional
	ResponseHeadersPolicy *HeadersPolicy `json:"responseHeaders,omitempty"`
	// +optional
	ApplyToIngress *bool `json:"applyToIngress,omitempty"`
}

// HeadersPolicy sets and removes headers.
type HeadersPolicy struct {
	// +optional
	Set map[string]string `json:"set,omitempty"`
	// +optional
	Remove []string `json:"remove,omitempty"`
}

// NamespacedName names an object.
type NamespacedName struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}
