package mesh

// What the injector puts into a pod that `legate sidecar` reads: where
// its credentials are mounted, and the labels and annotations Istio's
// injector adds too.
const (
	// TokenDir holds TokenFile, the projected ServiceAccount token
	// (audience TokenAudience) the sidecar presents to the CA.
	TokenDir  = "/var/run/secrets/tokens"
	TokenFile = "legate-token"
	// RootCertDir is where RootCertConfigMap is mounted: the sidecar
	// reads RootCertDir/RootCertKey to trust the controller and peers.
	RootCertDir = "/var/run/secrets/legate"
	// WorkloadSocketDir is the emptyDir that holds SDSSocket.
	WorkloadSocketDir = "/var/run/secrets/workload-spiffe-uds"
	// TLSModeLabel on a pod, value TLSModeIstio, says its sidecar speaks
	// mesh mTLS (Istio's security.istio.io/tlsMode).
	TLSModeLabel = "security.istio.io/tlsMode"
	TLSModeIstio = "istio"
	// CanonicalNameLabel and CanonicalRevisionLabel name the workload
	// in telemetry, Istio's labels.
	CanonicalNameLabel     = "service.istio.io/canonical-name"
	CanonicalRevisionLabel = "service.istio.io/canonical-revision"
	// IstioStatusAnnotation marks a pod Istio's injector has already
	// injected: Legate leaves it alone.
	IstioStatusAnnotation = "sidecar.istio.io/status"
	// InjectorName is the MutatingWebhookConfiguration the controller
	// writes its CA into.
	InjectorName = "legate-sidecar-injector"
	// InjectorPort is where the controller serves the webhook (istiod's).
	InjectorPort = 15017
)
