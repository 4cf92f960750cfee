package cache

import (
	"container/list"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/headers"
)

// This file is the in-memory storage (Envoy's SimpleHttpCache): stored
// responses by key, a Vary marker at a resource's own key pointing at its
// variants (as Envoy's varyInsert), and — where Envoy's simple cache grows
// without bound — a byte budget with least-recently-used eviction.

// Bounds of the in-memory store. Envoy's simple cache has none (it is
// documented as an example); these keep the proxy's memory bounded.
const (
	// defaultMaxBytes is the store's budget: stored bodies, headers and
	// trailers, plus entryOverhead per entry.
	defaultMaxBytes = 128 << 20
	// maxEntryDivisor: one entry may use at most 1/maxEntryDivisor of the
	// budget, so that one large body cannot flush everything else.
	maxEntryDivisor = 4
	// entryOverhead is what an entry costs besides its fields.
	entryOverhead = 256
)

// entry is one stored response. It is never changed once stored (a 304's
// update stores a new entry sharing the body), so a stream serves it
// without holding the lock.
type entry struct {
	key    string
	status int
	head   headers.Map
	body   []byte
	// trailers are nil for a response without any.
	trailers *headers.Map
	// responseTime is when the response was received (or last
	// validated): RFC 9111 §4.2.3's response_time.
	responseTime time.Time
	// vary, on a marker entry (no response), is what the resource's
	// responses vary on: its variants are stored at variantKey.
	vary []string
	size int64
	elem *list.Element
}

func (e *entry) marker() bool { return e.vary != nil }

func fieldsSize(m *headers.Map) int64 {
	if m == nil {
		return 0
	}
	n := int64(0)
	for _, f := range m.Fields() {
		n += int64(len(f.Name) + len(f.Value) + 32)
	}
	return n
}

func (e *entry) computeSize() {
	e.size = entryOverhead + int64(len(e.key)+len(e.body)) + fieldsSize(&e.head) + fieldsSize(e.trailers)
	for _, v := range e.vary {
		e.size += int64(len(v))
	}
}

// store is the in-memory cache: a map under one mutex and an LRU list.
type store struct {
	mu       sync.Mutex
	maxBytes int64
	size     int64
	m        map[string]*entry
	lru      list.List // front: most recently used
}

func newStore(maxBytes int64) *store {
	return &store{maxBytes: maxBytes, m: map[string]*entry{}}
}

// maxEntry is the largest entry the store takes.
func (s *store) maxEntry() int64 { return s.maxBytes / maxEntryDivisor }

// variantKey is the key of one variant of a resource that varies.
func variantKey(key, varyID string) string { return key + "\x00" + varyID }

// lookup returns the stored response for key that matches req's Vary
// headers, or nil.
func (s *store) lookup(key string, req *headers.Request, allow *varyAllowList) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[key]
	if e == nil {
		return nil
	}
	if e.marker() {
		id, ok := varyIdentifier(allow, e.vary, req)
		if !ok {
			return nil
		}
		// The marker is used with its variant: kept as recent, so a hot
		// resource's variants do not become unreachable.
		s.lru.MoveToFront(e.elem)
		e = s.m[variantKey(key, id)]
		if e == nil || e.marker() {
			return nil
		}
	}
	s.lru.MoveToFront(e.elem)
	return e
}

// insert stores e at its key (replacing what was there); a response that
// varies is stored under its variant key with a marker at key, as Envoy's
// varyInsert (the marker records the latest Vary). It reports whether
// the entry was stored.
func (s *store) insert(key string, e *entry, vary []string, varyID string) bool {
	if vary != nil {
		e.key = variantKey(key, varyID)
	} else {
		e.key = key
	}
	e.computeSize()
	if e.size > s.maxEntry() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(e)
	if vary != nil {
		m := &entry{key: key, vary: vary}
		m.computeSize()
		s.put(m)
		// The entry stays the most recently used, then its marker.
		s.lru.MoveToFront(e.elem)
	}
	s.evict()
	return true
}

// replace swaps a stored entry for an updated copy (a validation's new
// headers), if it is still the one stored.
func (s *store) replace(old, e *entry) {
	e.key = old.key
	e.computeSize()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[old.key] != old {
		return
	}
	s.put(e)
	s.evict()
}

func (s *store) put(e *entry) {
	if prev := s.m[e.key]; prev != nil {
		s.lru.Remove(prev.elem)
		s.size -= prev.size
	}
	s.m[e.key] = e
	e.elem = s.lru.PushFront(e)
	s.size += e.size
}

// evict drops least recently used entries until the store fits its budget.
func (s *store) evict() {
	for s.size > s.maxBytes {
		back := s.lru.Back()
		if back == nil {
			return
		}
		e := back.Value.(*entry)
		s.lru.Remove(back)
		delete(s.m, e.key)
		s.size -= e.size
	}
}

// len is the number of entries (markers included).
func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// bytes is the budget in use.
func (s *store) bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}
