package upstream

import (
	"math"
	"sort"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// hashTable is a consistent-hash lookup structure: Envoy's ketama ring
// (RING_HASH) or Maglev table, built with xxHash64 exactly as Envoy builds
// them, so the same keys land on the same hosts.
type hashTable struct {
	ring   []ringEntry // RING_HASH, sorted by hash
	maglev []*Host     // MAGLEV
}

type ringEntry struct {
	hash uint64
	host *Host
}

func newHashTable(hosts []*Host, cfg *lbConfig) hashTable {
	if len(hosts) == 0 {
		return hashTable{}
	}
	if cfg.policy == Maglev {
		return hashTable{maglev: buildMaglev(hosts, cfg.maglevSize)}
	}
	return hashTable{ring: buildRing(hosts, cfg.ringMin, cfg.ringMax)}
}

func normalizedWeights(hosts []*Host) ([]float64, float64, float64) {
	var sum float64
	for _, h := range hosts {
		sum += float64(max(h.Weight(), 1))
	}
	ws := make([]float64, len(hosts))
	minW, maxW := 1.0, 0.0
	for i, h := range hosts {
		ws[i] = float64(max(h.Weight(), 1)) / sum
		minW = math.Min(minW, ws[i])
		maxW = math.Max(maxW, ws[i])
	}
	return ws, minW, maxW
}

func buildRing(hosts []*Host, minSize, maxSize uint64) []ringEntry {
	ws, minW, _ := normalizedWeights(hosts)
	// Scale so the least-weighted host gets a whole number of entries,
	// capped at the maximum ring size (Envoy's ring_hash_lb.cc).
	scale := math.Min(math.Ceil(minW*float64(minSize))/minW, float64(maxSize))
	ring := make([]ringEntry, 0, int(scale)+len(hosts))
	current, target := 0.0, 0.0
	buf := make([]byte, 0, 64)
	for i, h := range hosts {
		target += scale * ws[i]
		for n := 0; current < target; n++ {
			buf = append(buf[:0], h.Address...)
			buf = append(buf, '_')
			buf = strconv.AppendInt(buf, int64(n), 10)
			ring = append(ring, ringEntry{hash: xxhash.Sum64(buf), host: h})
			current++
		}
	}
	sort.Slice(ring, func(i, j int) bool { return ring[i].hash < ring[j].hash })
	return ring
}

func buildMaglev(hosts []*Host, size uint64) []*Host {
	if size == 0 {
		size = 65537
	}
	ws, _, maxW := normalizedWeights(hosts)
	type entry struct {
		h                    *Host
		offset, skip, next   uint64
		weight, targetWeight float64
	}
	entries := make([]entry, len(hosts))
	for i, h := range hosts {
		d := xxhash.NewWithSeed(1)
		d.WriteString(h.Address)
		entries[i] = entry{h: h, offset: xxhash.Sum64String(h.Address) % size, skip: d.Sum64()%(size-1) + 1, weight: ws[i]}
	}
	table := make([]*Host, size)
	filled := uint64(0)
	for iter := uint64(0); filled < size; iter++ {
		for i := range entries {
			if filled >= size {
				break
			}
			e := &entries[i]
			if float64(iter)*e.weight < e.targetWeight {
				continue
			}
			e.targetWeight += maxW
			c := (e.offset + e.skip*e.next) % size
			for table[c] != nil {
				e.next++
				c = (e.offset + e.skip*e.next) % size
			}
			table[c] = e.h
			e.next++
			filled++
		}
	}
	return table
}

// lookup returns the host for a hash key; attempt > 0 walks on for retries.
func (t *hashTable) lookup(key, attempt uint64) *Host {
	if t.maglev != nil {
		return t.maglev[(key+attempt)%uint64(len(t.maglev))]
	}
	if len(t.ring) == 0 {
		return nil
	}
	i := sort.Search(len(t.ring), func(i int) bool { return t.ring[i].hash >= key })
	return t.ring[(uint64(i)+attempt)%uint64(len(t.ring))].host
}
