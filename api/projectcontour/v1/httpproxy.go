package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// HTTPProxy is Contour's ingress resource: a root (with spec.virtualhost)
// serves a fully qualified domain name; other HTTPProxies are included by
// roots to delegate paths across namespaces.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,path=httpproxies,shortName=proxy;proxies,singular=httpproxy
// +kubebuilder:printcolumn:name="FQDN",type="string",JSONPath=".spec.virtualhost.fqdn",description="Fully qualified domain name"
// +kubebuilder:printcolumn:name="TLS Secret",type="string",JSONPath=".spec.virtualhost.tls.secretName",description="Secret with TLS credentials"
// +kubebuilder:printcolumn:name="Status",type="string",JSONPath=".status.currentStatus",description="The current status of the HTTPProxy"
// +kubebuilder:printcolumn:name="Status Description",type="string",JSONPath=".status.description",description="Description of the current status"
type HTTPProxy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec HTTPProxySpec `json:"spec"`
	// +optional
	Status HTTPProxyStatus `json:"status,omitempty"`
}

// HTTPProxyList is a list of HTTPProxies.
//
// +kubebuilder:object:root=true
type HTTPProxyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HTTPProxy `json:"items"`
}

// HTTPProxySpec is what an HTTPProxy asks for.
type HTTPProxySpec struct {
	// VirtualHost makes this HTTPProxy a root for its fqdn.
	// +optional
	VirtualHost *VirtualHost `json:"virtualhost,omitempty"`
	// Routes are matched in order of specificity, as Envoy routes are.
	// +optional
	Routes []Route `json:"routes,omitempty"`
	// TCPProxy proxies whole TCP connections (with TLS passthrough or
	// termination on the virtual host). When present, Routes are ignored.
	// +optional
	TCPProxy *TCPProxy `json:"tcpproxy,omitempty"`
	// Includes delegate routing to other HTTPProxies, with conditions
	// prepended to the included routes.
	// +optional
	Includes []Include `json:"includes,omitempty"`
	// IngressClassName selects the controller that serves this HTTPProxy.
	// +optional
	IngressClassName string `json:"ingressClassName,omitempty"`
}

// Include names an HTTPProxy whose routes are added under conditions.
type Include struct {
	// Name of the included HTTPProxy.
	Name string `json:"name"`
	// Namespace of the included HTTPProxy; defaults to this one's.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// Conditions prepended to every included route.
	// +optional
	Conditions []MatchCondition `json:"conditions,omitempty"`
}

// MatchCondition is one request-matching condition. Only one of its
// fields may be set.
type MatchCondition struct {
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Regex string `json:"regex,omitempty"`
	// +optional
	Header *HeaderMatchCondition `json:"header,omitempty"`
	// +optional
	QueryParameter *QueryParameterMatchCondition `json:"queryParameter,omitempty"`
}

// HeaderMatchCondition matches a request header.
type HeaderMatchCondition struct {
	// Name of the header, case-insensitive.
	Name string `json:"name"`
	// +optional
	Present bool `json:"present,omitempty"`
	// +optional
	NotPresent bool `json:"notpresent,omitempty"`
	// +optional
	Contains string `json:"contains,omitempty"`
	// +optional
	NotContains string `json:"notcontains,omitempty"`
	// +optional
	IgnoreCase bool `json:"ignoreCase,omitempty"`
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	NotExact string `json:"notexact,omitempty"`
	// +optional
	Regex string `json:"regex,omitempty"`
	// +optional
	TreatMissingAsEmpty bool `json:"treatMissingAsEmpty,omitempty"`
}

// QueryParameterMatchCondition matches a query parameter.
type QueryParameterMatchCondition struct {
	// Name of the query parameter, case-sensitive.
	Name string `json:"name"`
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +optional
	Suffix string `json:"suffix,omitempty"`
	// +optional
	Regex string `json:"regex,omitempty"`
	// +optional
	Contains string `json:"contains,omitempty"`
	// +optional
	IgnoreCase bool `json:"ignoreCase,omitempty"`
	// +optional
	Present bool `json:"present,omitempty"`
}

// VirtualHost is the domain a root HTTPProxy serves.
type VirtualHost struct {
	// Fqdn is the fully qualified domain name (a leading "*." is a wildcard).
	// +kubebuilder:validation:Pattern=`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Fqdn string `json:"fqdn"`
	// TLS serves the fqdn over HTTPS (or passes TLS through).
	// +optional
	TLS *TLS `json:"tls,omitempty"`
	// Authorization configures an external authorization server.
	// +optional
	Authorization *AuthorizationServer `json:"authorization,omitempty"`
	// CORSPolicy answers cross-origin requests.
	// +optional
	CORSPolicy *CORSPolicy `json:"corsPolicy,omitempty"`
	// RateLimitPolicy limits requests to this virtual host.
	// +optional
	RateLimitPolicy *RateLimitPolicy `json:"rateLimitPolicy,omitempty"`
	// JWTProviders verify JSON Web Tokens.
	// +optional
	JWTProviders []JWTProvider `json:"jwtProviders,omitempty"`
	// IPAllowFilterPolicy admits only these source ranges.
	// +optional
	IPAllowFilterPolicy []IPFilterPolicy `json:"ipAllowPolicy,omitempty"`
	// IPDenyFilterPolicy refuses these source ranges.
	// +optional
	IPDenyFilterPolicy []IPFilterPolicy `json:"ipDenyPolicy,omitempty"`
}

// TLS configures HTTPS for a virtual host.
type TLS struct {
	// SecretName is a kubernetes.io/tls Secret, "name" or "namespace/name"
	// (the latter needs a TLSCertificateDelegation).
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// MinimumProtocolVersion: "1.2" (default) or "1.3".
	// +optional
	MinimumProtocolVersion string `json:"minimumProtocolVersion,omitempty"`
	// MaximumProtocolVersion: "1.2" or "1.3" (default).
	// +optional
	MaximumProtocolVersion string `json:"maximumProtocolVersion,omitempty"`
	// Passthrough forwards the TLS stream to the service by SNI.
	// +optional
	Passthrough bool `json:"passthrough,omitempty"`
	// ClientValidation requires and verifies client certificates.
	// +optional
	ClientValidation *DownstreamValidation `json:"clientValidation,omitempty"`
	// EnableFallbackCertificate serves the controller's fallback
	// certificate to clients that send no SNI.
	// +optional
	EnableFallbackCertificate bool `json:"enableFallbackCertificate,omitempty"`
}

// DownstreamValidation verifies client certificates.
type DownstreamValidation struct {
	// CACertificate is a Secret with ca.crt.
	// +optional
	CACertificate string `json:"caSecret,omitempty"`
	// +optional
	SkipClientCertValidation bool `json:"skipClientCertValidation,omitempty"`
	// +optional
	ForwardClientCertificate *ClientCertificateDetails `json:"forwardClientCertificate,omitempty"`
	// +optional
	CertificateRevocationList string `json:"crlSecret,omitempty"`
	// +optional
	OnlyVerifyLeafCertCrl bool `json:"crlOnlyVerifyLeafCert,omitempty"`
	// +optional
	OptionalClientCertificate bool `json:"optionalClientCertificate,omitempty"`
}

// ClientCertificateDetails selects what x-forwarded-client-cert carries.
type ClientCertificateDetails struct {
	// +optional
	Subject bool `json:"subject,omitempty"`
	// +optional
	Cert bool `json:"cert,omitempty"`
	// +optional
	Chain bool `json:"chain,omitempty"`
	// +optional
	DNS bool `json:"dns,omitempty"`
	// +optional
	URI bool `json:"uri,omitempty"`
}

// ExtensionServiceReference names an ExtensionService.
type ExtensionServiceReference struct {
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
}

// AuthorizationServer configures external authorization.
type AuthorizationServer struct {
	// +optional
	ExtensionServiceRef ExtensionServiceReference `json:"extensionRef,omitempty"`
	// +optional
	ServiceType string `json:"serviceType,omitempty"`
	// +optional
	HTTPServerSettings *HTTPAuthorizationServerSettings `json:"httpSettings,omitempty"`
	// +optional
	AuthPolicy *AuthorizationPolicy `json:"authPolicy,omitempty"`
	// +optional
	ResponseTimeout string `json:"responseTimeout,omitempty"`
	// +optional
	FailOpen bool `json:"failOpen,omitempty"`
	// +optional
	WithRequestBody *AuthorizationServerBufferSettings `json:"withRequestBody,omitempty"`
}

// HTTPAuthorizationServerSettings configures an HTTP authorization server.
type HTTPAuthorizationServerSettings struct {
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
	// +optional
	AllowedAuthorizationHeaders []HTTPAuthorizationServerAllowedHeaders `json:"allowedAuthorizationHeaders,omitempty"`
	// +optional
	AllowedUpstreamHeaders []HTTPAuthorizationServerAllowedHeaders `json:"allowedUpstreamHeaders,omitempty"`
}

// HTTPAuthorizationServerAllowedHeaders matches header names.
type HTTPAuthorizationServerAllowedHeaders struct {
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +optional
	Suffix string `json:"suffix,omitempty"`
	// +optional
	Contains string `json:"contains,omitempty"`
	// +optional
	IgnoreCase bool `json:"ignoreCase,omitempty"`
}

// AuthorizationServerBufferSettings buffers the request body for authorization.
type AuthorizationServerBufferSettings struct {
	// +optional
	MaxRequestBytes uint32 `json:"maxRequestBytes,omitempty"`
	// +optional
	AllowPartialMessage bool `json:"allowPartialMessage,omitempty"`
	// +optional
	PackAsBytes bool `json:"packAsBytes,omitempty"`
}

// AuthorizationPolicy modifies authorization per route.
type AuthorizationPolicy struct {
	// +optional
	Disabled bool `json:"disabled,omitempty"`
	// +optional
	Context map[string]string `json:"context,omitempty"`
}

// JWTProvider verifies JSON Web Tokens.
type JWTProvider struct {
	Name string `json:"name"`
	// +optional
	Default bool `json:"default,omitempty"`
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// +optional
	Audiences []string `json:"audiences,omitempty"`
	// +optional
	RemoteJWKS RemoteJWKS `json:"remoteJWKS,omitzero"`
	// +optional
	LocalJWKS LocalJWKS `json:"localJWKS,omitzero"`
	// +optional
	ForwardJWT bool `json:"forwardJWT,omitempty"`
}

// LocalJWKS reads a JSON Web Key Set from a Secret.
type LocalJWKS struct {
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// +optional
	Key string `json:"key,omitempty"`
}

// RemoteJWKS fetches a JSON Web Key Set.
type RemoteJWKS struct {
	// +optional
	URI string `json:"uri,omitempty"`
	// +optional
	UpstreamValidation *UpstreamValidation `json:"validation,omitempty"`
	// +optional
	Timeout string `json:"timeout,omitempty"`
	// +optional
	CacheDuration string `json:"cacheDuration,omitempty"`
	// +optional
	DNSLookupFamily string `json:"dnsLookupFamily,omitempty"`
}

// CORSPolicy answers cross-origin requests.
type CORSPolicy struct {
	// +optional
	AllowCredentials bool     `json:"allowCredentials,omitempty"`
	AllowOrigin      []string `json:"allowOrigin"`
	AllowMethods     []string `json:"allowMethods"`
	// +optional
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// +optional
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// +optional
	MaxAge string `json:"maxAge,omitempty"`
	// +optional
	AllowPrivateNetwork bool `json:"allowPrivateNetwork,omitempty"`
}

// Route is a set of conditions and where matching requests go.
type Route struct {
	// +optional
	Conditions []MatchCondition `json:"conditions,omitempty"`
	// +optional
	Services []Service `json:"services,omitempty"`
	// +optional
	EnableWebsockets bool `json:"enableWebsockets,omitempty"`
	// PermitInsecure serves this route over plain HTTP on a TLS virtual host
	// instead of redirecting to HTTPS.
	// +optional
	PermitInsecure bool `json:"permitInsecure,omitempty"`
	// +optional
	AuthPolicy *AuthorizationPolicy `json:"authPolicy,omitempty"`
	// +optional
	TimeoutPolicy *TimeoutPolicy `json:"timeoutPolicy,omitempty"`
	// +optional
	RetryPolicy *RetryPolicy `json:"retryPolicy,omitempty"`
	// +optional
	HealthCheckPolicy *HTTPHealthCheckPolicy `json:"healthCheckPolicy,omitempty"`
	// +optional
	LoadBalancerPolicy *LoadBalancerPolicy `json:"loadBalancerPolicy,omitempty"`
	// +optional
	PathRewritePolicy *PathRewritePolicy `json:"pathRewritePolicy,omitempty"`
	// +optional
	RequestHeadersPolicy *HeadersPolicy `json:"requestHeadersPolicy,omitempty"`
	// +optional
	ResponseHeadersPolicy *HeadersPolicy `json:"responseHeadersPolicy,omitempty"`
	// +optional
	CookieRewritePolicies []CookieRewritePolicy `json:"cookieRewritePolicies,omitempty"`
	// +optional
	RateLimitPolicy *RateLimitPolicy `json:"rateLimitPolicy,omitempty"`
	// +optional
	RequestRedirectPolicy *HTTPRequestRedirectPolicy `json:"requestRedirectPolicy,omitempty"`
	// +optional
	DirectResponsePolicy *HTTPDirectResponsePolicy `json:"directResponsePolicy,omitempty"`
	// +optional
	InternalRedirectPolicy *HTTPInternalRedirectPolicy `json:"internalRedirectPolicy,omitempty"`
	// +optional
	JWTVerificationPolicy *JWTVerificationPolicy `json:"jwtVerificationPolicy,omitempty"`
	// +optional
	IPAllowFilterPolicy []IPFilterPolicy `json:"ipAllowPolicy,omitempty"`
	// +optional
	IPDenyFilterPolicy []IPFilterPolicy `json:"ipDenyPolicy,omitempty"`
}

// JWTVerificationPolicy selects the JWT provider of a route.
type JWTVerificationPolicy struct {
	// +optional
	Require string `json:"require,omitempty"`
	// +optional
	Disabled bool `json:"disabled,omitempty"`
}

// IPFilterPolicy is one source range of an allow or deny list.
type IPFilterPolicy struct {
	// +kubebuilder:validation:Enum=Peer;Remote
	Source string `json:"source"`
	CIDR   string `json:"cidr"`
}

// HTTPDirectResponsePolicy answers requests without an upstream.
type HTTPDirectResponsePolicy struct {
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	StatusCode int `json:"statusCode"`
	// +optional
	Body string `json:"body,omitempty"`
}

// HTTPRequestRedirectPolicy answers requests with a redirect.
type HTTPRequestRedirectPolicy struct {
	// +kubebuilder:validation:Enum=http;https
	// +optional
	Scheme *string `json:"scheme,omitempty"`
	// +optional
	Hostname *string `json:"hostname,omitempty"`
	// +optional
	Port *int32 `json:"port,omitempty"`
	// +kubebuilder:validation:Enum=301;302
	// +optional
	StatusCode *int `json:"statusCode,omitempty"`
	// +optional
	Path *string `json:"path,omitempty"`
	// +optional
	Prefix *string `json:"prefix,omitempty"`
}

// HTTPInternalRedirectPolicy follows upstream redirects inside the proxy.
type HTTPInternalRedirectPolicy struct {
	// +optional
	MaxInternalRedirects uint32 `json:"maxInternalRedirects,omitempty"`
	// +optional
	RedirectResponseCodes []uint32 `json:"redirectResponseCodes,omitempty"`
	// +optional
	AllowCrossSchemeRedirect string `json:"allowCrossSchemeRedirect,omitempty"`
	// +optional
	DenyRepeatedRouteRedirect bool `json:"denyRepeatedRouteRedirect,omitempty"`
}

// CookieRewritePolicy rewrites Set-Cookie attributes.
type CookieRewritePolicy struct {
	Name string `json:"name"`
	// +optional
	PathRewrite *CookiePathRewrite `json:"pathRewrite,omitempty"`
	// +optional
	DomainRewrite *CookieDomainRewrite `json:"domainRewrite,omitempty"`
	// +optional
	Secure *bool `json:"secure,omitempty"`
	// +optional
	SameSite *string `json:"sameSite,omitempty"`
}

// CookiePathRewrite is a new cookie Path.
type CookiePathRewrite struct {
	Value string `json:"value"`
}

// CookieDomainRewrite is a new cookie Domain.
type CookieDomainRewrite struct {
	Value string `json:"value"`
}

// RateLimitPolicy limits request rates.
type RateLimitPolicy struct {
	// +optional
	Local *LocalRateLimitPolicy `json:"local,omitempty"`
	// +optional
	Global *GlobalRateLimitPolicy `json:"global,omitempty"`
}

// LocalRateLimitPolicy is a token bucket in each proxy.
type LocalRateLimitPolicy struct {
	Requests uint32 `json:"requests"`
	// +kubebuilder:validation:Enum=second;minute;hour
	Unit string `json:"unit"`
	// +optional
	Burst uint32 `json:"burst,omitempty"`
	// +optional
	ResponseStatusCode uint32 `json:"responseStatusCode,omitempty"`
	// +optional
	ResponseHeadersToAdd []HeaderValue `json:"responseHeadersToAdd,omitempty"`
}

// GlobalRateLimitPolicy asks a rate limit service.
type GlobalRateLimitPolicy struct {
	// +optional
	Disabled bool `json:"disabled,omitempty"`
	// +optional
	Descriptors []RateLimitDescriptor `json:"descriptors,omitempty"`
}

// RateLimitDescriptor is a list of descriptor entries.
type RateLimitDescriptor struct {
	// +optional
	Entries []RateLimitDescriptorEntry `json:"entries,omitempty"`
}

// RateLimitDescriptorEntry is one descriptor entry.
type RateLimitDescriptorEntry struct {
	// +optional
	GenericKey *GenericKeyDescriptor `json:"genericKey,omitempty"`
	// +optional
	RequestHeader *RequestHeaderDescriptor `json:"requestHeader,omitempty"`
	// +optional
	RequestHeaderValueMatch *RequestHeaderValueMatchDescriptor `json:"requestHeaderValueMatch,omitempty"`
	// +optional
	RemoteAddress *RemoteAddressDescriptor `json:"remoteAddress,omitempty"`
}

// GenericKeyDescriptor is a static key/value entry.
type GenericKeyDescriptor struct {
	// +optional
	Key string `json:"key,omitempty"`
	// +optional
	Value string `json:"value,omitempty"`
}

// RequestHeaderDescriptor takes an entry's value from a header.
type RequestHeaderDescriptor struct {
	// +optional
	HeaderName string `json:"headerName,omitempty"`
	// +optional
	DescriptorKey string `json:"descriptorKey,omitempty"`
}

// RequestHeaderValueMatchDescriptor emits a value when headers match.
type RequestHeaderValueMatchDescriptor struct {
	// +optional
	Headers []HeaderMatchCondition `json:"headers,omitempty"`
	// ExpectMatch: the entry is sent when the headers match (true, the
	// default, as Contour's) or when they do not (false).
	// +optional
	// +kubebuilder:default=true
	ExpectMatch *bool `json:"expectMatch,omitempty"`
	// +optional
	Value string `json:"value,omitempty"`
}

// RemoteAddressDescriptor takes an entry's value from the client address.
type RemoteAddressDescriptor struct{}

// TCPProxy proxies TCP connections to services.
type TCPProxy struct {
	// +optional
	LoadBalancerPolicy *LoadBalancerPolicy `json:"loadBalancerPolicy,omitempty"`
	// +optional
	Services []Service `json:"services,omitempty"`
	// +optional
	Include *TCPProxyInclude `json:"include,omitempty"`
	// IncludesDeprecated is the plural spelling Contour still accepts.
	// +optional
	IncludesDeprecated *TCPProxyInclude `json:"includes,omitempty"`
	// +optional
	HealthCheckPolicy *TCPHealthCheckPolicy `json:"healthCheckPolicy,omitempty"`
}

// TCPProxyInclude delegates the tcpproxy to another HTTPProxy.
type TCPProxyInclude struct {
	Name string `json:"name"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Service is a Kubernetes Service port that receives traffic.
type Service struct {
	// Name of the Service in the HTTPProxy's namespace.
	Name string `json:"name"`
	// Port is the Service port number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int `json:"port"`
	// +optional
	HealthPort int `json:"healthPort,omitempty"`
	// Protocol to the upstream: h2, h2c or tls; otherwise from the Service's
	// projectcontour.io/upstream-protocol.* annotations.
	// +kubebuilder:validation:Enum=h2;h2c;tls
	// +optional
	Protocol *string `json:"protocol,omitempty"`
	// Weight of this service among the route's services.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Weight int64 `json:"weight,omitempty"`
	// +optional
	UpstreamValidation *UpstreamValidation `json:"validation,omitempty"`
	// Mirror receives a copy of the route's requests.
	// +optional
	Mirror bool `json:"mirror,omitempty"`
	// +optional
	RequestHeadersPolicy *HeadersPolicy `json:"requestHeadersPolicy,omitempty"`
	// +optional
	ResponseHeadersPolicy *HeadersPolicy `json:"responseHeadersPolicy,omitempty"`
	// +optional
	CookieRewritePolicies []CookieRewritePolicy `json:"cookieRewritePolicies,omitempty"`
	// +optional
	SlowStartPolicy *SlowStartPolicy `json:"slowStartPolicy,omitempty"`
}

// HTTPHealthCheckPolicy is an active HTTP health check of the route's services.
type HTTPHealthCheckPolicy struct {
	Path string `json:"path"`
	// +optional
	Host string `json:"host,omitempty"`
	// +optional
	IntervalSeconds int64 `json:"intervalSeconds,omitempty"`
	// +optional
	TimeoutSeconds int64 `json:"timeoutSeconds,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +optional
	UnhealthyThresholdCount int64 `json:"unhealthyThresholdCount,omitempty"`
	// +kubebuilder:validation:Minimum=0
	// +optional
	HealthyThresholdCount int64 `json:"healthyThresholdCount,omitempty"`
	// +optional
	ExpectedStatuses []HTTPStatusRange `json:"expectedStatuses,omitempty"`
}

// HTTPStatusRange is [Start, End).
type HTTPStatusRange struct {
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	Start int64 `json:"start"`
	// +kubebuilder:validation:Minimum=101
	// +kubebuilder:validation:Maximum=600
	End int64 `json:"end"`
}

// TCPHealthCheckPolicy is an active TCP health check.
type TCPHealthCheckPolicy struct {
	// +optional
	IntervalSeconds int64 `json:"intervalSeconds,omitempty"`
	// +optional
	TimeoutSeconds int64 `json:"timeoutSeconds,omitempty"`
	// +optional
	UnhealthyThresholdCount uint32 `json:"unhealthyThresholdCount,omitempty"`
	// +optional
	HealthyThresholdCount uint32 `json:"healthyThresholdCount,omitempty"`
}

// TimeoutPolicy holds route timeouts as Go durations or "infinity".
type TimeoutPolicy struct {
	// +optional
	Response string `json:"response,omitempty"`
	// +optional
	Idle string `json:"idle,omitempty"`
	// +optional
	IdleConnection string `json:"idleConnection,omitempty"`
}

// RetryPolicy retries failed requests.
type RetryPolicy struct {
	// NumRetries is the number of retries (default 1; -1 disables).
	// +optional
	NumRetries int64 `json:"count,omitempty"`
	// +optional
	PerTryTimeout string `json:"perTryTimeout,omitempty"`
	// RetryOn lists Envoy retry conditions (default 5xx).
	// +optional
	RetryOn []string `json:"retryOn,omitempty"`
	// +optional
	RetriableStatusCodes []uint32 `json:"retriableStatusCodes,omitempty"`
}

// ReplacePrefix replaces a matched path prefix.
type ReplacePrefix struct {
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Replacement string `json:"replacement"`
}

// PathRewritePolicy rewrites the path sent upstream.
type PathRewritePolicy struct {
	// +optional
	ReplacePrefix []ReplacePrefix `json:"replacePrefix,omitempty"`
}

// HeaderHashOptions hashes on a header.
type HeaderHashOptions struct {
	// +optional
	HeaderName string `json:"headerName,omitempty"`
}

// QueryParameterHashOptions hashes on a query parameter.
type QueryParameterHashOptions struct {
	// +optional
	ParameterName string `json:"parameterName,omitempty"`
}

// RequestHashPolicy is one input of the RequestHash strategy.
type RequestHashPolicy struct {
	// +optional
	Terminal bool `json:"terminal,omitempty"`
	// +optional
	HeaderHashOptions *HeaderHashOptions `json:"headerHashOptions,omitempty"`
	// +optional
	QueryParameterHashOptions *QueryParameterHashOptions `json:"queryParameterHashOptions,omitempty"`
	// +optional
	HashSourceIP bool `json:"hashSourceIP,omitempty"`
}

// LoadBalancerPolicy picks the load-balancing strategy: RoundRobin,
// WeightedLeastRequest, Random, Cookie or RequestHash.
type LoadBalancerPolicy struct {
	// +optional
	Strategy string `json:"strategy,omitempty"`
	// +optional
	RequestHashPolicies []RequestHashPolicy `json:"requestHashPolicies,omitempty"`
}

// HeadersPolicy sets and removes headers.
type HeadersPolicy struct {
	// +optional
	Set []HeaderValue `json:"set,omitempty"`
	// +optional
	Remove []string `json:"remove,omitempty"`
}

// HeaderValue is a header name and value.
type HeaderValue struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	Value string `json:"value"`
}

// UpstreamValidation verifies an upstream's certificate.
type UpstreamValidation struct {
	// CACertificate is a Secret with ca.crt.
	CACertificate string `json:"caSecret"`
	// +optional
	SubjectName string `json:"subjectName,omitempty"`
	// +optional
	SubjectNames []string `json:"subjectNames,omitempty"`
}

// SlowStartPolicy ramps traffic to new endpoints.
type SlowStartPolicy struct {
	Window string `json:"window"`
	// +optional
	Aggression string `json:"aggression,omitempty"`
	// +optional
	MinimumWeightPercent uint32 `json:"minWeightPercent,omitempty"`
}

// HTTPProxyStatus is what the controller reports about an HTTPProxy.
type HTTPProxyStatus struct {
	// CurrentStatus is "valid", "invalid" or "orphaned".
	// +optional
	CurrentStatus string `json:"currentStatus,omitempty"`
	// +optional
	Description string `json:"description,omitempty"`
	// +optional
	LoadBalancer corev1.LoadBalancerStatus `json:"loadBalancer,omitempty"`
	// +optional
	Conditions []DetailedCondition `json:"conditions,omitempty"`
}

// DetailedCondition is a metav1.Condition with the errors and warnings
// that led to it, as Contour reports them.
type DetailedCondition struct {
	metav1.Condition `json:",inline"`
	// +optional
	Errors []SubCondition `json:"errors,omitempty"`
	// +optional
	Warnings []SubCondition `json:"warnings,omitempty"`
}

// SubCondition is one error or warning of a DetailedCondition.
type SubCondition struct {
	Type    string                 `json:"type"`
	Status  metav1.ConditionStatus `json:"status"`
	Reason  string                 `json:"reason"`
	Message string                 `json:"message"`
}

// TLSCertificateDelegation lets HTTPProxies in other namespaces use
// Secrets of this one.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,path=tlscertificatedelegations,shortName=tlscerts,singular=tlscertificatedelegation
type TLSCertificateDelegation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TLSCertificateDelegationSpec `json:"spec"`
	// +optional
	Status TLSCertificateDelegationStatus `json:"status,omitempty"`
}

// TLSCertificateDelegationList is a list of TLSCertificateDelegations.
//
// +kubebuilder:object:root=true
type TLSCertificateDelegationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TLSCertificateDelegation `json:"items"`
}

// TLSCertificateDelegationSpec lists delegated Secrets.
type TLSCertificateDelegationSpec struct {
	Delegations []CertificateDelegation `json:"delegations"`
}

// CertificateDelegation delegates one Secret to namespaces ("*" for all).
type CertificateDelegation struct {
	SecretName       string   `json:"secretName"`
	TargetNamespaces []string `json:"targetNamespaces"`
}

// TLSCertificateDelegationStatus reports the delegation's conditions.
type TLSCertificateDelegationStatus struct {
	// +optional
	Conditions []DetailedCondition `json:"conditions,omitempty"`
}
