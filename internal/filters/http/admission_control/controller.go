package admission_control

import (
	"sync"
	"time"
)

// granularity is the width of one sample bucket (Envoy's hard-coded
// defaultHistoryGranularity).
const granularity = time.Second

type bucket struct {
	start               time.Time
	requests, successes uint64
}

// controller is Envoy's ThreadLocalControllerImpl, shared by every
// stream: request and success counts over the sliding window, in
// 1-second buckets, oldest first.
type controller struct {
	window time.Duration
	now    func() time.Time

	mu                  sync.Mutex
	buckets             []bucket
	requests, successes uint64 // sums over buckets
}

// update drops buckets that fell out of the window and opens a new one
// when there is none or the newest is a second old (maybeUpdateHistoricalData).
func (c *controller) update(now time.Time) {
	for len(c.buckets) > 0 && now.Sub(c.buckets[0].start) >= c.window {
		c.requests -= c.buckets[0].requests
		c.successes -= c.buckets[0].successes
		c.buckets = c.buckets[1:]
	}
	if len(c.buckets) == 0 || now.Sub(c.buckets[len(c.buckets)-1].start) >= granularity {
		c.buckets = append(c.buckets, bucket{start: now})
	}
}

// record samples one response.
func (c *controller) record(success bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.update(c.now())
	b := &c.buckets[len(c.buckets)-1]
	b.requests++
	c.requests++
	if success {
		b.successes++
		c.successes++
	}
}

// counts returns the window's requests and successes.
func (c *controller) counts() (requests, successes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.update(c.now())
	return c.requests, c.successes
}

// averageRPS is the window's requests per second: over the window, or
// over the age of the oldest sample when that is longer (Envoy's
// averageRps, in whole seconds).
func (c *controller) averageRPS() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buckets) == 0 || c.requests == 0 {
		return 0
	}
	secs := max(int64(c.window/time.Second), int64(c.now().Sub(c.buckets[0].start)/time.Second))
	if secs < 1 {
		// A window under a second would divide by zero in Envoy.
		secs = 1
	}
	return uint32(c.requests / uint64(secs))
}
