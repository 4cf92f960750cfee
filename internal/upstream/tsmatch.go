package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// transportMatchKey is the endpoint metadata namespace that
// transport_socket_matches are matched against (Envoy's
// "envoy.transport_socket_match"): Istio marks endpoints whose pods run a
// sidecar with {tlsMode: istio} there, so one cluster speaks mTLS to
// meshed endpoints and plaintext to the others during a rollout.
const transportMatchKey = "envoy.transport_socket_match"

// transportMatch is one of a cluster's transport_socket_matches.
type transportMatch struct {
	match *structpb.Struct
	t     TransportSocket
	// count is cluster.<name>.<match name>.total_match_count: the hosts
	// that resolved to this socket, as Envoy counts them.
	count *stats.Counter
}

// transportChoice is a host's resolved transport socket, for the host
// config it was resolved from (an EDS update that changes the metadata
// resolves again).
type transportChoice struct {
	cfg *HostConfig
	t   TransportSocket
}

// compileTransportMatches compiles transport_socket_matches; each socket
// gets the ALPN the cluster's protocol asks for, as the default one.
func (c *Cluster) compileTransportMatches(pc *clusterv3.Cluster, path string, deps Deps, alpn []string, scope stats.Scope) error {
	ms := pc.GetTransportSocketMatches()
	if len(ms) == 0 {
		return nil
	}
	if deps.Transport == nil {
		return config.Unsupported(config.Join(path, "transport_socket_matches"), "transport_socket_matches")
	}
	for i, m := range ms {
		mp := config.Index(config.Join(path, "transport_socket_matches"), i)
		if err := config.CheckFields(m, mp, "name", "match", "transport_socket"); err != nil {
			return err
		}
		if m.GetName() == "" {
			return config.Errorf(config.Join(mp, "name"), "a transport socket match needs a name (its stats are cluster.<name>.<match name>.total_match_count)")
		}
		if m.GetTransportSocket() == nil {
			return config.Errorf(config.Join(mp, "transport_socket"), "a transport socket match needs a transport_socket")
		}
		t, err := deps.Transport(m.GetTransportSocket(), config.Join(mp, "transport_socket"), pc, alpn)
		if err != nil {
			return err
		}
		// A socket whose connections depend on the downstream (PROXY
		// protocol, passed-through filter state) keys the whole cluster's
		// pools; per endpoint it would split what the cluster decides.
		if pp, ok := t.(ProxyProtocolSender); ok && pp.SendsProxyProtocol() {
			return config.Unsupported(config.Join(mp, "transport_socket"), "upstream_proxy_protocol in transport_socket_matches", "the cluster's transport_socket")
		}
		if _, ok := t.(FilterStatePoolKeyer); ok {
			return config.Unsupported(config.Join(mp, "transport_socket"), "an internal_upstream socket passing filter state in transport_socket_matches", "the cluster's transport_socket")
		}
		if v, ok := t.(interface{ SetSANValidation(bool) }); ok {
			v.SetSANValidation(c.autoSANValidation)
		}
		c.tsMatches = append(c.tsMatches, transportMatch{match: m.GetMatch(), t: t,
			count: scope.Counter(stats.SanitizeName(m.GetName()) + ".total_match_count")})
	}
	c.tsDefaultCount = scope.Counter("default.total_match_count")
	return nil
}

// transportFor is the transport socket for connections to h: the first
// of transport_socket_matches whose match is a subset of h's
// envoy.transport_socket_match metadata, else the cluster's
// transport_socket (nil: plaintext). The choice is kept per host until
// its metadata changes.
func (c *Cluster) transportFor(h *Host) TransportSocket {
	if len(c.tsMatches) == 0 || h == nil {
		return c.transport
	}
	cfg := h.cfg.Load()
	if ch := h.transport.Load(); ch != nil && ch.cfg == cfg {
		return ch.t
	}
	t := c.transport
	matched := false
	var md *structpb.Struct
	if cfg != nil && cfg.Metadata != nil {
		md = cfg.Metadata.GetFilterMetadata()[transportMatchKey]
	}
	for _, m := range c.tsMatches {
		if structSubset(m.match, md) {
			t, matched = m.t, true
			m.count.Inc()
			break
		}
	}
	if !matched {
		c.tsDefaultCount.Inc()
	}
	h.transport.Store(&transportChoice{cfg: cfg, t: t})
	return t
}

// structSubset reports whether every field of sub is in md with an equal
// value (an empty match matches every endpoint, as Envoy's).
func structSubset(sub, md *structpb.Struct) bool {
	for k, v := range sub.GetFields() {
		got, ok := md.GetFields()[k]
		if !ok || !proto.Equal(v, got) {
			return false
		}
	}
	return true
}
