package udp_proxy

import (
	"net/netip"

	"github.com/cespare/xxhash/v2"
)

// sessionKey identifies a session. As Envoy: the downstream peer and the
// local address the datagram arrived on (with the cluster the route chose,
// since each cluster keeps its own sessions); with
// use_per_packet_load_balancing also the upstream host, so that one peer
// has a session per host its datagrams were sent to.
type sessionKey struct {
	cluster     string
	local, peer netip.AddrPort
	host        string
}

// sessionTable is a bounded map of sessions: a flood of datagrams from
// new source addresses cannot grow it past max (the cluster's
// max_connections circuit breaker usually bounds it first).
type sessionTable[S any] struct {
	max int
	m   map[sessionKey]S
}

func newSessionTable[S any](max int) *sessionTable[S] {
	return &sessionTable[S]{max: max, m: map[sessionKey]S{}}
}

// get returns the session of k.
func (t *sessionTable[S]) get(k sessionKey) (S, bool) {
	s, ok := t.m[k]
	return s, ok
}

// add stores s under k; false when the table is full.
func (t *sessionTable[S]) add(k sessionKey, s S) bool {
	if _, ok := t.m[k]; !ok && len(t.m) >= t.max {
		return false
	}
	t.m[k] = s
	return true
}

// remove deletes k's entry if it is s (a session replaced meanwhile is
// kept); same compares sessions.
func (t *sessionTable[S]) remove(k sessionKey, same func(S) bool) bool {
	if s, ok := t.m[k]; ok && same(s) {
		delete(t.m, k)
		return true
	}
	return false
}

// drain empties the table and returns what it held.
func (t *sessionTable[S]) drain() []S {
	out := make([]S, 0, len(t.m))
	for k, s := range t.m {
		out = append(out, s)
		delete(t.m, k)
	}
	return out
}

func (t *sessionTable[S]) len() int { return len(t.m) }

// hashPolicy is hash_policies[0]: the hash a hashing load balancer (ring
// hash, Maglev) picks the session's host by. As Envoy's HashPolicyImpl:
// xxHash64 of the peer IP's text (source_ip) or of a fixed key (key).
type hashPolicy struct {
	sourceIP bool
	key      uint64
}

func (h *hashPolicy) hash(peer netip.AddrPort) (uint64, bool) {
	if h == nil {
		return 0, false
	}
	if h.sourceIP {
		return xxhash.Sum64String(peer.Addr().String()), true
	}
	return h.key, true
}
