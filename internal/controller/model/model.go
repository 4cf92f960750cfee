// Package model turns the Kubernetes objects the controller reads into a
// proxy-neutral model — virtual hosts, routes, clusters and secrets —
// with Contour's HTTPProxy and Ingress semantics, plus the status of every
// HTTPProxy and Ingress. It knows nothing of xDS: package xdsgen renders
// the model as Envoy resources.
package model

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Model is the result of one build.
type Model struct {
	// Insecure virtual hosts, served on the HTTP listener, by fqdn ("*"
	// for Ingress rules without a host and default backends).
	Insecure map[string]*VirtualHost
	// Secure virtual hosts, served on the HTTPS listener by SNI.
	Secure map[string]*SecureVirtualHost
	// Clusters by name.
	Clusters map[string]*Cluster
	// Secrets referenced by secure virtual hosts and clusters, by SDS name.
	Secrets map[string]*Secret
	// ServicePorts lists every Service port, for proxyless gRPC listeners.
	ServicePorts []*ServicePort
	// Status of each HTTPProxy and Ingress.
	Proxies   map[types.NamespacedName]*ProxyStatus
	Ingresses map[types.NamespacedName]*IngressStatus
	// Extensions is the status of each ExtensionService.
	Extensions map[types.NamespacedName]*ExtensionStatus
	// RateLimit is the global rate limit service of every HTTP connection
	// manager (Contour's rateLimitService); nil when none is configured.
	RateLimit *GlobalRateLimitService
	// Tracing is the tracing of every HTTP connection manager (the
	// configuration file's tracing), nil for none.
	Tracing *Tracing
	// Listeners are the Gateway API listeners, by xDS listener name
	// (Insecure and Secure are those of HTTPProxies and Ingresses).
	Listeners map[string]*Listener
	// Status of the managed GatewayClasses (by name), Gateways and routes.
	GatewayClasses map[string]*GatewayClassStatus
	Gateways       map[types.NamespacedName]*GatewayStatus
	// ListenerSets are the ListenerSets whose parentRef names a managed
	// Gateway.
	ListenerSets map[types.NamespacedName]*ListenerSetStatus
	Routes       map[RouteKey]*RouteStatus
	// BackendTLSPolicies is the status of each BackendTLSPolicy a route
	// of a managed Gateway uses.
	BackendTLSPolicies map[types.NamespacedName]*BackendTLSPolicyStatus
}

// RouteKey names a Gateway API route: its kind, namespace and name.
type RouteKey struct {
	Kind string
	types.NamespacedName
}

// VirtualHost is a set of routes for one domain.
type VirtualHost struct {
	Name   string
	Routes []*Route
	// CORS is the virtual host's corsPolicy.
	CORS *CORSPolicy
	// JWTProviders verify tokens on a TLS virtual host (HTTPS only).
	JWTProviders []JWTProvider
	// IPFilter is the virtual host's ipAllowPolicy or ipDenyPolicy; a
	// route's own replaces it.
	IPFilter *IPFilter
	// LocalRateLimit is the virtual host's rateLimitPolicy.local.
	LocalRateLimit *LocalRateLimit
	// GlobalRateLimits are the descriptors of the virtual host's
	// rateLimitPolicy.global (or of the configuration file's default
	// policy), sent to the global rate limit service for the routes that
	// have none of their own (Envoy's vh_rate_limits OVERRIDE).
	GlobalRateLimits []RateLimitDescriptor
}

// SecureVirtualHost is a TLS virtual host: terminated (Secret set, with
// routes or a TCP proxy) or passed through (TCPProxy set, Secret nil).
type SecureVirtualHost struct {
	VirtualHost
	Secret      *Secret
	MinVersion  string // "1.2" or "1.3"
	MaxVersion  string
	Passthrough bool
	TCPProxy    *TCPProxy
	// Client certificate validation.
	ClientCA             *Secret
	ClientCRL            *Secret
	SkipClientValidation bool
	OptionalClientCert   bool
	CRLOnlyLeaf          bool
	FallbackCertificate  bool
	// ForwardClientCert sets x-forwarded-client-cert from the verified
	// client certificate (clientValidation.forwardClientCertificate).
	ForwardClientCert *ClientCertDetails
	// Authorization is the virtual host's external authorization server
	// (spec.virtualhost.authorization), checked on HTTPS only.
	Authorization *ExternalAuthorization
}

// ClientCertDetails selects the x-forwarded-client-cert fields.
type ClientCertDetails struct {
	Subject, Cert, Chain, DNS, URI bool
}

// TCPProxy forwards connections to weighted clusters.
type TCPProxy struct {
	Clusters []WeightedCluster
}

// PathMatch is how a route matches the path.
type PathMatch struct {
	Kind  string // "prefix", "segment" (prefix on / boundaries), "exact" or "regex"
	Value string
}

// HeaderMatch matches a header as Contour's header conditions do.
type HeaderMatch struct {
	Name                string
	Kind                string // "present", "exact", "contains", "regex"
	Value               string
	Invert              bool
	IgnoreCase          bool
	TreatMissingAsEmpty bool
}

// QueryMatch matches a query parameter.
type QueryMatch struct {
	Name       string
	Kind       string // "present", "exact", "prefix", "suffix", "contains", "regex"
	Value      string
	IgnoreCase bool
}

// WeightedCluster is a cluster with a weight and per-service header policy.
type WeightedCluster struct {
	Cluster         *Cluster
	Weight          uint32
	RequestHeaders  *HeadersPolicy
	ResponseHeaders *HeadersPolicy
	// CookieRewrites are the service's cookieRewritePolicies.
	CookieRewrites []CookieRewrite
}

// HeadersPolicy sets, adds (appends to) and removes headers.
type HeadersPolicy struct {
	Set    []KV
	Add    []KV
	Remove []string
	// HostRewrite is a "Host" entry of Set, applied as a host rewrite.
	HostRewrite string
}

// KV is a header name and value.
type KV struct{ Name, Value string }

// Retry is a route's retry policy.
type Retry struct {
	NumRetries    uint32
	PerTryTimeout time.Duration
	RetryOn       string
	StatusCodes   []uint32
}

// Redirect is a route that answers with a redirect.
type Redirect struct {
	Scheme, Host, Path, Prefix string
	// PathRegex and PathSubst rewrite the path as Envoy's regex_rewrite.
	PathRegex, PathSubst string
	Port                 uint32
	Code                 int // 301, 302, 303, 307 or 308
	// gateway marks a Gateway API redirect whose port is settled per
	// listener (listenerRedirect).
	gateway bool
}

// Direct is a route that answers with a fixed response.
type Direct struct {
	Status int
	Body   string
}

// HashPolicy is one input of a hashing load balancer.
type HashPolicy struct {
	Header   string
	Query    string
	SourceIP bool
	Cookie   string // Contour's Cookie strategy: X-Contour-Session-Affinity
	Terminal bool
}

// Mirror is a cluster a route's requests are copied to: PerMillion of
// them (Contour's mirror weight, Gateway API's requestMirror percent or
// fraction; 1,000,000 for all).
type Mirror struct {
	Cluster    *Cluster
	PerMillion uint32
}

// Route is one route of a virtual host.
type Route struct {
	Path          PathMatch
	Headers       []HeaderMatch
	Query         []QueryMatch
	Clusters      []WeightedCluster
	Mirrors       []Mirror
	Websocket     bool
	HTTPSRedirect bool // on the insecure listener, for a TLS vhost
	Timeout       *time.Duration
	IdleTimeout   *time.Duration
	Retry         *Retry
	HashPolicies  []HashPolicy
	PrefixRewrite string
	// RegexRewrite and RegexSubst rewrite the path as Envoy's
	// regex_rewrite (Gateway API's URLRewrite).
	RegexRewrite, RegexSubst string
	RequestHeaders           *HeadersPolicy
	ResponseHeaders          *HeadersPolicy
	Redirect                 *Redirect
	Direct                   *Direct
	// IPFilter is the route's ipAllowPolicy or ipDenyPolicy.
	IPFilter *IPFilter
	// CORS is the route's own CORS policy (an HTTPRoute CORS filter);
	// it replaces the virtual host's.
	CORS *CORSPolicy
	// LocalRateLimit is the route's rateLimitPolicy.local; it replaces the
	// virtual host's.
	LocalRateLimit *LocalRateLimit
	// GlobalRateLimits are the route's rateLimitPolicy.global descriptors;
	// IgnoreVhostRateLimits is its global.disabled, which opts the route
	// out of the virtual host's.
	GlobalRateLimits      []RateLimitDescriptor
	IgnoreVhostRateLimits bool
	// JWTProvider is the provider whose token the route requires (HTTPS
	// only); "" for none.
	JWTProvider string
	// CookieRewrites are the route's cookieRewritePolicies (a service's
	// own, for the same cookie, win field by field).
	CookieRewrites []CookieRewrite
	// AuthDisabled skips the virtual host's external authorization on
	// this route; AuthContext are the context_extensions of its check
	// requests (the virtual host's authPolicy.context under the route's).
	// Both are only set under a root with authorization.
	AuthDisabled bool
	AuthContext  map[string]string
	// InternalRedirect is the route's internalRedirectPolicy: the
	// upstream's 3xx answers the proxy follows itself.
	InternalRedirect *InternalRedirect
	// InvalidBackend500 answers requests for a weighted cluster that does
	// not exist (InvalidBackendCluster) with 500, not 503.
	InvalidBackend500 bool
	// order ranks Gateway API routes of one virtual host (see
	// sortGatewayRoutes).
	order routeOrder
}

// InternalRedirect is a route's internalRedirectPolicy, as Contour's
// dag.InternalRedirectPolicy.
type InternalRedirect struct {
	// MaxRedirects is how many redirects one downstream request may
	// follow; 0 leaves Envoy's default (1).
	MaxRedirects uint32
	// Codes are the response codes followed; none means 302 only.
	Codes []uint32
	// CrossScheme is "never", "safeOnly" or "always".
	CrossScheme string
	// DenyRepeatedRoute refuses a target route a previous redirect of
	// the request already went through.
	DenyRepeatedRoute bool
}

// Cluster is an upstream: a Service port with the policies that shape it.
type Cluster struct {
	Name        string
	Service     types.NamespacedName
	Port        corev1.ServicePort
	EDSName     string // namespace/service/port-name
	Protocol    string // "", "h2", "h2c", "tls"
	LBPolicy    string // ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH
	HealthCheck *HealthCheck
	// Upstream TLS validation.
	UpstreamCA   *Secret
	SubjectNames []string // DNS subject alternative names
	SNI          string
	// SystemCA validates the upstream's certificate against the system's
	// trust store (a BackendTLSPolicy's wellKnownCACertificates: System);
	// SubjectURIs are URI subject alternative names to match.
	SystemCA    bool
	SubjectURIs []string
	// ClientCertificate is the certificate the proxy presents to the
	// upstream (a Gateway's spec.tls.backend.clientCertificateRef, on
	// the BackendTLSPolicy clusters of its routes); nil for none.
	ClientCertificate *Secret
	// IdleConnTimeout closes idle upstream connections (timeoutPolicy.idleConnection).
	IdleConnTimeout time.Duration
	// ExternalName is the DNS name of a type ExternalName Service.
	ExternalName string
	// SlowStart ramps new endpoints up (round robin, least request).
	SlowStart *SlowStart
	// HealthPort is the Service port active health checks go to, when it
	// is not Port (a Contour service's healthPort); its endpoints carry
	// the health port's target as health_check_config.port_value.
	HealthPort *corev1.ServicePort
	// DNSLookupFamily of an ExternalName (DNS) cluster: "" (the proxy's
	// default), "auto", "v4", "v6" or "all".
	DNSLookupFamily string
	// Extension lists the weighted Service ports of an ExtensionService's
	// cluster (extension/<namespace>/<name>), whose one load assignment
	// has a locality per Service; empty for other clusters.
	Extension []ExtensionTarget
	// CircuitBreakers are the cluster's thresholds (nil: the proxy's).
	CircuitBreakers *CircuitBreakers
}

// SlowStart is a slow_start_config.
type SlowStart struct {
	Window           time.Duration
	Aggression       float64
	MinWeightPercent float64
}

// HealthCheck is an active HTTP or TCP health check.
type HealthCheck struct {
	HTTP               bool
	Path, Host         string
	Interval, Timeout  time.Duration
	Unhealthy, Healthy uint32
	ExpectedStatuses   [][2]int64
}

// Secret is a certificate and key, or a CA bundle (and CRL).
type Secret struct {
	Name   string // SDS name: namespace/name/kind
	Object types.NamespacedName
	Cert   []byte
	Key    []byte
	CA     []byte
	CRL    []byte
}

// ServicePort is one port of a Service, for proxyless gRPC clients.
type ServicePort struct {
	Service types.NamespacedName
	Port    corev1.ServicePort
	Cluster *Cluster
}
