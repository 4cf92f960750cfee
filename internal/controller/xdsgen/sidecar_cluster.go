package xdsgen

import (
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/mesh"
)

func nsName(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func wrapBool(b bool) *wrapperspb.BoolValue    { return wrapperspb.Bool(b) }
func wrapU32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func structOf(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

func previousHosts() *previoushostsv3.PreviousHostsPredicate {
	return &previoushostsv3.PreviousHostsPredicate{}
}

// sdsConfig is the sidecar's SDS source as Istio writes it: the
// bootstrap's sds-grpc cluster (the local agent over a Unix socket),
// with no initial fetch timeout (a listener or cluster waits for its
// certificate rather than serving without one).
func sdsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:  corev3.ApiVersion_V3,
		InitialFetchTimeout: dur(0),
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:                   corev3.ApiConfigSource_GRPC,
			SetNodeOnFirstMessageOnly: true,
			TransportApiVersion:       corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: mesh.SDSCluster}}}},
		}},
	}
}

// meshTLSContext is the common context of mesh mTLS, both directions:
// the workload certificate and the roots from the sidecar's SDS, and
// the peer identities to accept (none: any the roots signed).
func meshTLSContext(sans []string, alpn []string) *tlsv3.CommonTlsContext {
	dvc := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		dvc.MatchTypedSubjectAltNames = append(dvc.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: mesh.SecretWorkload, SdsConfig: sdsConfig()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         dvc,
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: mesh.SecretRoots, SdsConfig: sdsConfig()},
		}},
		AlpnProtocols: alpn,
	}
}

// outboundCluster is a Service port's EDS cluster, with Istio's auto
// mTLS: mTLS to endpoints in the mesh (SNI outbound_.<port>_._.<host>,
// the ServiceAccounts of the meshed endpoints' pods as accepted
// identities — pods), plaintext to the others. When some endpoints are in
// the mesh, that is Istio's transport_socket_matches (tlsMode=istio →
// mTLS, else raw_buffer); when all are, the mTLS socket is the cluster's
// transport_socket (the same behaviour in one socket); when none are, the
// cluster is plaintext.
func (w *sidecarWorld) outboundCluster(name, host string, port int32, proto protocol, pods []*corev1.Pod, mode meshMode) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       dur(sidecarConnectTimeout),
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads(), ServiceName: name},
	}
	if proto == protoHTTP2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	}
	if mode == meshNone {
		return c
	}
	seen := map[string]bool{}
	var sans []string
	for _, p := range pods {
		id := mesh.SPIFFEID(w.opt.TrustDomain, p.Namespace, serviceAccount(p))
		if !seen[id] {
			seen[id] = true
			sans = append(sans, id)
		}
	}
	sort.Strings(sans)
	alpn := []string{mesh.ALPNMesh}
	if proto == protoHTTP2 {
		alpn = append(alpn, "h2")
	}
	up := &tlsv3.UpstreamTlsContext{
		CommonTlsContext: meshTLSContext(sans, alpn),
		Sni:              "outbound_." + itoa(int(port)) + "_._." + host,
	}
	mtls := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(up)}}
	if mode == meshAll {
		c.TransportSocket = mtls
		return c
	}
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: structOf(map[string]any{"tlsMode": "istio"}), TransportSocket: mtls},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: rawBuffer()},
	}
	return c
}

func rawBuffer() *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbufferv3.RawBuffer{})}}
}

// passthroughCluster sends a connection on to where it was going
// (ALLOW_ANY's destination for unknown traffic).
func passthroughCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 PassthroughCluster,
		ConnectTimeout:       dur(sidecarConnectTimeout),
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
	}
}

// blackHoleCluster has no endpoints: what is sent to it fails
// (REGISTRY_ONLY's destination, and loops back into the sidecar).
func blackHoleCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 BlackHoleCluster,
		ConnectTimeout:       dur(sidecarConnectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: BlackHoleCluster},
	}
}

// inboundPassthroughCluster delivers inbound connections to ports no
// Service names to the application at their original destination, from
// 127.0.0.6 so that iptables does not intercept them again.
func inboundPassthroughCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 InboundPassthroughCluster,
		ConnectTimeout:       dur(sidecarConnectTimeout),
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		UpstreamBindConfig: &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{
			Address: mesh.InboundPassthroughBind, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}},
	}
}

// inboundCluster reaches the local application on port.
func inboundCluster(port int32, proto protocol) *clusterv3.Cluster {
	name := InboundClusterName(port)
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       dur(sidecarConnectTimeout),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: sockAddr("127.0.0.1", uint32(port))}}}}}}},
	}
	if proto == protoHTTP2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}}}})}
	}
	return c
}
