package redis_proxy

import (
	"encoding/binary"
	"strings"
)

// murmur2 is Envoy's MurmurHash::murmurHash2 (the 64-bit MurmurHash2 of
// libstdc++'s _Hash_bytes, seed 0xc70f6907), the hash Envoy's redis
// connection pool gives the cluster's load balancer for a key, so a
// ring_hash or maglev cluster sends each key to the host Envoy would.
func murmur2(key string) uint64 {
	const mul = 0xc6a4a7935bd1e995
	const seed = 0xc70f6907
	shiftMix := func(v uint64) uint64 { return v ^ (v >> 47) }
	n := len(key)
	hash := uint64(seed) ^ (uint64(n) * mul)
	aligned := n &^ 7
	for i := 0; i < aligned; i += 8 {
		data := shiftMix(binary.LittleEndian.Uint64([]byte(key[i:i+8]))*mul) * mul
		hash ^= data
		hash *= mul
	}
	if rest := n & 7; rest != 0 {
		// load_bytes: the tail's bytes, the last one most significant.
		var data uint64
		for i := n - 1; i >= aligned; i-- {
			data = data<<8 + uint64(key[i])
		}
		hash ^= data
		hash *= mul
	}
	hash = shiftMix(hash) * mul
	return shiftMix(hash)
}

// hashtag returns the part of key that is hashed: with enable_hashtagging,
// the text between the first '{' and the next '}' when it is not empty
// (Redis Cluster's hash tags), else the whole key.
func hashtag(key string, enabled bool) string {
	if !enabled {
		return key
	}
	start := strings.IndexByte(key, '{')
	if start < 0 {
		return key
	}
	end := strings.IndexByte(key[start+1:], '}')
	if end <= 0 {
		return key
	}
	return key[start+1 : start+1+end]
}
