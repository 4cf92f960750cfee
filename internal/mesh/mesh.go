// Package mesh holds what the parts of Legate's sidecar mesh agree on:
// the ports, user id, labels, annotations, secret names and identity
// formats that `legate iptables`, the injector, the controller's sidecar
// configuration, the certificate authority and `legate sidecar` share.
// Where Istio defines one, the value is Istio's, so that users' rules,
// probes and dashboards carry over.
package mesh

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Ports and ids of a sidecar, as Istio's.
const (
	// ProxyUID and ProxyGID are the sidecar's user and group: iptables
	// lets their traffic out without interception.
	ProxyUID = 1337
	ProxyGID = 1337
	// OutboundPort is the virtualOutbound listener that outbound TCP is
	// redirected to; InboundPort is virtualInbound's.
	OutboundPort = 15001
	InboundPort  = 15006
	// AgentPort, ReadinessPort and StatsPort are never intercepted:
	// the agent, the readiness probe (/healthz/ready) and Prometheus
	// stats (/stats/prometheus).
	AgentPort     = 15020
	ReadinessPort = 15021
	StatsPort     = 15090
	// AdminPort is the sidecar's admin API, on loopback only.
	AdminPort = 15000
	// CAPort is where the controller serves workload certificates
	// (istiod's port for it).
	CAPort = 15012
	// InboundPassthroughBind is the source address of the sidecar's
	// connections to the local application for ports no Service names;
	// iptables returns traffic from it on lo without interception.
	InboundPassthroughBind = "127.0.0.6"
)

// Injection controls.
const (
	// InjectLabel on a namespace, with value "enabled", turns injection
	// on for its pods; IstioInjectLabel is accepted too.
	InjectLabel      = "legate-injection"
	IstioInjectLabel = "istio-injection"
	// InjectAnnotation (and IstioInjectAnnotation) on a pod, "false",
	// leaves it alone; "true" injects it even outside labelled
	// namespaces when the webhook sees it.
	InjectAnnotation      = "sidecar.legate.io/inject"
	IstioInjectAnnotation = "sidecar.istio.io/inject"
	// StatusAnnotation records, on an injected pod, what was added: a
	// pod carrying it is in the mesh (its endpoints get mTLS).
	StatusAnnotation = "sidecar.legate.io/status"
	// ProxyContainer and InitContainer are the injected containers'
	// names.
	ProxyContainer = "legate-proxy"
	InitContainer  = "legate-init"
)

// Traffic interception annotations, Istio's names.
const (
	IncludeOutboundIPRanges = "traffic.sidecar.istio.io/includeOutboundIPRanges"
	ExcludeOutboundIPRanges = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
	IncludeInboundPorts     = "traffic.sidecar.istio.io/includeInboundPorts"
	ExcludeInboundPorts     = "traffic.sidecar.istio.io/excludeInboundPorts"
	ExcludeOutboundPorts    = "traffic.sidecar.istio.io/excludeOutboundPorts"
	HoldApplication         = "proxy.istio.io/holdApplicationUntilProxyStarts"
)

// Secrets the sidecar's SDS server serves, Istio's names: the workload
// certificate and key, and the roots that verify peers.
const (
	SecretWorkload = "default"
	SecretRoots    = "ROOTCA"
	// SDSSocket is the Unix socket the sidecar serves SDS on.
	SDSSocket = "/var/run/secrets/workload-spiffe-uds/socket"
	// SDSCluster is the bootstrap cluster that reaches SDSSocket.
	SDSCluster = "sds-grpc"
	// RootCertConfigMap, written by the controller into every meshed
	// namespace, holds RootCertKey: the CA that signs workload and
	// controller certificates, which the sidecar trusts.
	RootCertConfigMap = "legate-ca-root-cert"
	RootCertKey       = "root-cert.pem"
	// TokenAudience is the audience of the projected ServiceAccount
	// token a sidecar presents to the CA.
	TokenAudience = "legate-ca"
	// ALPN the sidecars speak mTLS with (Istio's), so an inbound filter
	// chain tells mesh mTLS from an application's own TLS.
	ALPNMesh = "istio"
)

// DefaultTrustDomain is the SPIFFE trust domain when none is set.
const DefaultTrustDomain = "cluster.local"

// NodeID is a sidecar's xDS node id, Istio's form:
// "sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local".
type NodeID struct {
	IP        netip.Addr
	Pod       string
	Namespace string
	// Domain is the DNS suffix (default "<namespace>.svc.cluster.local").
	Domain string
}

// String renders n as the node id.
func (n NodeID) String() string {
	d := n.Domain
	if d == "" {
		d = n.Namespace + ".svc.cluster.local"
	}
	return fmt.Sprintf("sidecar~%s~%s.%s~%s", n.IP, n.Pod, n.Namespace, d)
}

// ParseNodeID reads a sidecar node id; ok is false for any other id
// (gateways and plain proxies).
func ParseNodeID(id string) (n NodeID, ok bool) {
	parts := strings.Split(id, "~")
	if len(parts) != 4 || parts[0] != "sidecar" {
		return NodeID{}, false
	}
	ip, err := netip.ParseAddr(parts[1])
	if err != nil {
		return NodeID{}, false
	}
	pod, ns, found := strings.Cut(parts[2], ".")
	if !found || pod == "" || ns == "" {
		return NodeID{}, false
	}
	return NodeID{IP: ip, Pod: pod, Namespace: ns, Domain: parts[3]}, true
}

// SPIFFEID is a workload's identity: spiffe://<trust domain>/ns/<ns>/sa/<sa>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	if trustDomain == "" {
		trustDomain = DefaultTrustDomain
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// ParseSPIFFEID reads an identity SPIFFEID writes.
func ParseSPIFFEID(id string) (trustDomain, namespace, serviceAccount string, err error) {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return "", "", "", fmt.Errorf("%q is not a SPIFFE id (spiffe://<trust domain>/ns/<namespace>/sa/<service account>)", id)
	}
	p := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(p) != 4 || p[0] != "ns" || p[2] != "sa" || p[1] == "" || p[3] == "" {
		return "", "", "", fmt.Errorf("%q is not a workload id (spiffe://%s/ns/<namespace>/sa/<service account>)", id, u.Host)
	}
	return u.Host, p[1], p[3], nil
}
