package overload

import (
	"log/slog"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
)

// This file is Envoy's buffer memory accounting (WatermarkBufferFactory
// and BufferMemoryAccountImpl, source/common/buffer/watermark_buffer.cc),
// which the reset_high_memory_stream action works on: each HTTP stream
// has an Account its buffers charge and credit; accounts holding at least
// the tracking minimum sit in one of eight power-of-two buckets; under
// pressure the streams of the highest buckets are reset first.

// numBuckets is Envoy's NUM_MEMORY_CLASSES_ (hard-coded to 8).
const numBuckets = 8

// maxResetsPerInvocation is Envoy's kMaxNumberOfStreamsToResetPerInvocation:
// it bounds the streams one change of the action's state resets.
const maxResetsPerInvocation = 50

// Tracker is a server's set of stream accounts by bucket (Envoy keeps one
// per worker; Legate has one, so the 50-stream bound is per invocation
// for the whole proxy rather than per worker).
type Tracker struct {
	// shift is minimum_account_to_track_power_of_two - 1, as Envoy's
	// bitshift_: an account is tracked once balance >> shift is non-zero,
	// and bucket i holds [2^(shift+i), 2^(shift+i+1)), the last one
	// everything above. (Envoy's documentation describes the first bucket
	// as starting at 2^power; its code, followed here, starts it at
	// 2^(power-1).)
	shift   uint
	mu      sync.Mutex
	buckets [numBuckets]map[*Account]struct{}
	log     *slog.Logger
}

// NewTracker returns a tracker for BufferFactoryConfig's
// minimum_account_to_track_power_of_two (10 to 56, as validated).
func NewTracker(powerOfTwo uint32, log *slog.Logger) *Tracker {
	t := &Tracker{shift: uint(powerOfTwo) - 1, log: log}
	for i := range t.buckets {
		t.buckets[i] = map[*Account]struct{}{}
	}
	return t
}

// Account is the buffer memory one stream holds. Charge and Credit are
// called by the stream's goroutine; Reset by the overload manager's.
type Account struct {
	t       *Tracker
	balance atomic.Int64
	// bucket is 1 + the bucket the account is in (0: not tracked); written
	// under t.mu.
	bucket atomic.Int32
	// mu guards reset, so that Close (the stream ending) and a reset from
	// the overload manager never overlap: a reset never reaches a stream
	// after its account closed (its struct may serve another request).
	mu       sync.Mutex
	reset    func()
	wasReset atomic.Bool
}

// WasReset reports whether the overload manager reset the account's
// stream. Safe on a nil Account.
func (a *Account) WasReset() bool { return a != nil && a.wasReset.Load() }

// NewAccount opens an account for a stream; reset is how the overload
// manager resets it (called at most once, from another goroutine, and
// never after Close returned). Safe on a nil Tracker (nil account).
func (t *Tracker) NewAccount(reset func()) *Account {
	if t == nil {
		return nil
	}
	return &Account{t: t, reset: reset}
}

// bucketOf is the bucket of a balance, -1 below the tracking minimum
// (Envoy's balanceToClassIndex).
func (t *Tracker) bucketOf(balance int64) int {
	if balance <= 0 {
		return -1
	}
	shifted := uint64(balance) >> t.shift
	if shifted == 0 {
		return -1
	}
	return min(bits.Len64(shifted)-1, numBuckets-1)
}

// Charge adds n bytes (negative: credits them). One atomic add, and the
// tracker's lock only when the account changes bucket. Safe on a nil
// Account.
func (a *Account) Charge(n int64) {
	if a == nil || n == 0 {
		return
	}
	b := a.balance.Add(n)
	if cur := a.bucket.Load(); cur >= 0 && int32(a.t.bucketOf(b)+1) != cur {
		a.t.update(a)
	}
}

// Balance is the bytes charged now.
func (a *Account) Balance() int64 {
	if a == nil {
		return 0
	}
	return a.balance.Load()
}

// update moves the account to the bucket of its current balance.
func (t *Tracker) update(a *Account) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a.bucket.Load() < 0 {
		return // closed or reset: no longer tracked
	}
	nb := int32(t.bucketOf(a.balance.Load()) + 1)
	ob := a.bucket.Load()
	if nb == ob {
		return
	}
	if ob > 0 {
		delete(t.buckets[ob-1], a)
	}
	if nb > 0 {
		t.buckets[nb-1][a] = struct{}{}
	}
	a.bucket.Store(nb)
}

// untrack removes the account from its bucket for good (Envoy's
// clearDownstream).
func (t *Tracker) untrack(a *Account) {
	t.mu.Lock()
	if ob := a.bucket.Load(); ob > 0 {
		delete(t.buckets[ob-1], a)
	}
	a.bucket.Store(-1)
	t.mu.Unlock()
}

// Close ends the account with its stream: it leaves the tracker and can
// no longer be reset. Safe on a nil Account.
func (a *Account) Close() {
	if a == nil {
		return
	}
	a.t.untrack(a)
	a.mu.Lock()
	a.reset = nil
	a.mu.Unlock()
	a.balance.Store(0)
}

// resetDownstream resets the account's stream, once.
func (a *Account) resetDownstream() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reset == nil {
		return false
	}
	f := a.reset
	a.reset = nil
	a.wasReset.Store(true)
	f()
	return true
}

// BucketsToReset is how many of the top buckets a pressure (the action's
// scaled value, 0 to 1) makes eligible, as Envoy:
// min(floor(pressure × 8) + 1, 8) — at 0 the last bucket already is. The
// pressure is a float32 first, as Envoy's action state (a UnitFloat): a
// scaled trigger's (0.95-0.9)/(0.98-0.9) is then 0.625, not 0.62499….
func BucketsToReset(pressure float64) int {
	p := float32(math.Max(0, math.Min(1, pressure)))
	return min(int(math.Floor(float64(p*numBuckets)))+1, numBuckets)
}

// ResetGivenPressure resets the streams of the top BucketsToReset(pressure)
// buckets, the largest first, at most 50, and returns how many it reset
// (Envoy's resetAccountsGivenPressure).
func (t *Tracker) ResetGivenPressure(pressure float64) int {
	if t == nil {
		return 0
	}
	clear := BucketsToReset(pressure)
	var picked []*Account
	nonEmpty := 0
	t.mu.Lock()
	for i := 0; i < clear; i++ {
		b := t.buckets[numBuckets-1-i]
		if len(b) == 0 {
			continue
		}
		nonEmpty++
		for a := range b {
			if len(picked) >= maxResetsPerInvocation {
				break
			}
			delete(b, a)
			a.bucket.Store(-1)
			picked = append(picked, a)
		}
	}
	t.mu.Unlock()
	n := 0
	for _, a := range picked {
		if a.resetDownstream() {
			n++
		}
	}
	if nonEmpty > 0 && t.log != nil {
		t.log.Warn("resetting streams using excessive buffer memory", "streams", n, "buckets", nonEmpty, "empty_buckets", clear-nonEmpty)
	}
	return n
}

// bucketSizes reports how many accounts each bucket holds (tests).
func (t *Tracker) bucketSizes() [numBuckets]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out [numBuckets]int
	for i, b := range t.buckets {
		out[i] = len(b)
	}
	return out
}
