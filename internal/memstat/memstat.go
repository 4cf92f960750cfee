// Package memstat reads the process's memory figures in the shape of
// Envoy's: the admin /memory endpoint and the server.memory_* gauges.
// Envoy reports tcmalloc's counters; Legate maps Go's runtime/metrics onto
// them (runtime/metrics needs no stop-the-world, unlike ReadMemStats).
package memstat

import "runtime/metrics"

// Sample is one reading, in bytes.
type Sample struct {
	// Allocated is memory in live heap objects (and objects not yet
	// swept): Envoy's "allocated".
	Allocated uint64
	// HeapSize is the heap's address space mapped from the system,
	// in use, free or returned: Envoy's "heap_size".
	HeapSize uint64
	// PageheapUnmapped is heap memory returned to the system.
	PageheapUnmapped uint64
	// PageheapFree is free heap memory still mapped.
	PageheapFree uint64
	// Physical is everything the runtime has mapped minus what it has
	// returned: Envoy's "total_physical_bytes" (close to RSS).
	Physical uint64
	// Goroutines is the number of live goroutines (Go's own figure).
	Goroutines uint64
}

var names = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/total:bytes",
	"/sched/goroutines:goroutines",
}

// Read takes a sample.
func Read() Sample {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	objects, unused, free, released, total := v(0), v(1), v(2), v(3), v(4)
	return Sample{
		Allocated:        objects,
		HeapSize:         objects + unused + free + released,
		PageheapUnmapped: released,
		PageheapFree:     free,
		Physical:         total - released,
		Goroutines:       v(5),
	}
}
