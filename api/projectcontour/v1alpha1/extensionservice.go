package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
)

// ExtensionProtocolVersion is the version of the gRPC protocol the proxy
// speaks to an extension; Contour only has "v3".
type ExtensionProtocolVersion string

// SupportProtocolVersion3 is the only protocol version, Envoy's v3 API.
const SupportProtocolVersion3 ExtensionProtocolVersion = "v3"

// ExtensionService binds Kubernetes Services of its namespace as the gRPC
// server of a proxy extension, such as an HTTPProxy's external
// authorization server. The controller renders it as one cluster named
// extension/<namespace>/<name>, as Contour does.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,path=extensionservices,shortName=extensionservice;extensionservices,singular=extensionservice
type ExtensionService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ExtensionServiceSpec `json:"spec,omitempty"`
	// +optional
	Status ExtensionServiceStatus `json:"status,omitempty"`
}

// ExtensionServiceList is a list of ExtensionServices.
//
// +kubebuilder:object:root=true
type ExtensionServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ExtensionService `json:"items"`
}

// ExtensionServiceSpec is the set of Services that serve the extension
// and how the proxy reaches them.
type ExtensionServiceSpec struct {
	// Services receive the extension's gRPC requests, in proportion to
	// their weights (evenly when no weight is set). They must be in the
	// ExtensionService's namespace.
	// +kubebuilder:validation:MinItems=1
	Services []ExtensionServiceTarget `json:"services"`
	// UpstreamValidation verifies the servers' certificates (protocol h2).
	// +optional
	UpstreamValidation *contourv1.UpstreamValidation `json:"validation,omitempty"`
	// Protocol is h2 (HTTP/2 over TLS, the default) or h2c (cleartext).
	// +optional
	// +kubebuilder:validation:Enum=h2;h2c
	Protocol *string `json:"protocol,omitempty"`
	// LoadBalancerPolicy balances requests over the endpoints (Cookie and
	// RequestHash do not apply to an extension and are ignored).
	// +optional
	LoadBalancerPolicy *contourv1.LoadBalancerPolicy `json:"loadBalancerPolicy,omitempty"`
	// TimeoutPolicy: response is the default of the users' response
	// timeouts (an HTTPProxy's authorization.responseTimeout);
	// idleConnection closes idle connections; idle is ignored.
	// +optional
	TimeoutPolicy *contourv1.TimeoutPolicy `json:"timeoutPolicy,omitempty"`
	// ProtocolVersion of the extension's gRPC API: only "v3".
	// +optional
	// +kubebuilder:validation:Enum=v3
	ProtocolVersion ExtensionProtocolVersion `json:"protocolVersion,omitempty"`
	// CircuitBreakerPolicy limits the proxy's connections and requests to
	// the extension.
	// +optional
	CircuitBreakerPolicy *CircuitBreakers `json:"circuitBreakerPolicy,omitempty"`
}

// ExtensionServiceTarget is one Service port of an ExtensionService.
type ExtensionServiceTarget struct {
	// Name of a Service in the ExtensionService's namespace.
	Name string `json:"name"`
	// Port of the Service.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int `json:"port"`
	// Weight is this Service's share of the requests.
	// +optional
	Weight uint32 `json:"weight,omitempty"`
}

// CircuitBreakers are the thresholds of a cluster's circuit breakers (0:
// the proxy's default, 1024 connections, pending and active requests, 3
// retries).
type CircuitBreakers struct {
	// +optional
	MaxConnections uint32 `json:"maxConnections,omitempty"`
	// +optional
	MaxPendingRequests uint32 `json:"maxPendingRequests,omitempty"`
	// +optional
	MaxRequests uint32 `json:"maxRequests,omitempty"`
	// +optional
	MaxRetries uint32 `json:"maxRetries,omitempty"`
	// PerHostMaxConnections limits the connections to each endpoint.
	// +optional
	PerHostMaxConnections uint32 `json:"perHostMaxConnections,omitempty"`
}

// ExtensionServiceStatus reports the ExtensionService's Valid condition,
// as Contour writes it (other controllers' conditions are kept).
type ExtensionServiceStatus struct {
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []contourv1.DetailedCondition `json:"conditions,omitempty"`
}
