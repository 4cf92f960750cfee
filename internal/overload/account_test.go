package overload

import (
	"sync/atomic"
	"testing"
)

func TestBucketOf(t *testing.T) {
	// minimum_account_to_track_power_of_two 21: Envoy's bitshift is 20,
	// so tracking starts at 1 MiB (as its unit tests configure it).
	tr := NewTracker(21, nil)
	const mib = 1 << 20
	for _, c := range []struct {
		balance int64
		want    int
	}{
		{0, -1}, {2020, -1}, {mib - 1, -1}, {mib, 0}, {2*mib - 1, 0}, {2 * mib, 1},
		{4 * mib, 2}, {64 * mib, 6}, {128 * mib, 7}, {1 << 40, 7},
	} {
		if got := tr.bucketOf(c.balance); got != c.want {
			t.Errorf("bucketOf(%d) = %d, want %d", c.balance, got, c.want)
		}
	}
}

func TestBucketsToReset(t *testing.T) {
	for _, c := range []struct {
		p    float64
		want int
	}{
		{0, 1}, {0.124, 1}, {0.125, 2}, {0.5, 5}, {0.625, 6}, {0.75, 7}, {0.875, 8}, {0.99, 8}, {1, 8}, {2, 8},
	} {
		if got := BucketsToReset(c.p); got != c.want {
			t.Errorf("BucketsToReset(%g) = %d, want %d", c.p, got, c.want)
		}
	}
}

// acct opens an account that counts its resets.
func acct(tr *Tracker, resets *atomic.Int32) *Account {
	return tr.NewAccount(func() { resets.Add(1) })
}

func TestAccountMovesBetweenBuckets(t *testing.T) {
	tr := NewTracker(11, nil) // tracked from 1 KiB
	var n atomic.Int32
	a := acct(tr, &n)
	a.Charge(1000)
	if s := tr.bucketSizes(); s != [8]int{} {
		t.Fatalf("below the minimum: buckets %v", s)
	}
	a.Charge(24) // 1024
	if s := tr.bucketSizes(); s[0] != 1 {
		t.Fatalf("at the minimum: buckets %v", s)
	}
	for i := 1; i < 8; i++ {
		a.Charge(a.Balance()) // doubles
		if s := tr.bucketSizes(); s[i] != 1 || s[i-1] != 0 {
			t.Fatalf("balance %d: buckets %v", a.Balance(), s)
		}
	}
	a.Charge(a.Balance()) // stays in the last bucket
	if s := tr.bucketSizes(); s[7] != 1 {
		t.Fatalf("saturated: buckets %v", s)
	}
	a.Charge(-a.Balance())
	if s := tr.bucketSizes(); s != [8]int{} {
		t.Fatalf("credited: buckets %v", s)
	}
	a.Charge(4096)
	a.Close()
	if s := tr.bucketSizes(); s != [8]int{} {
		t.Fatalf("closed: buckets %v", s)
	}
	a.Charge(1 << 20) // a closed account is no longer tracked
	if s := tr.bucketSizes(); s != [8]int{} || tr.ResetGivenPressure(1) != 0 {
		t.Fatalf("charged after close: buckets %v", s)
	}
}

func TestResetGivenPressure(t *testing.T) {
	// As Envoy's ShouldOnlyResetAllStreamsGreatThanOrEqualToProvidedIndex:
	// at 0.85, seven buckets (1..7) are eligible.
	tr := NewTracker(21, nil)
	const mib = 1 << 20
	var largest, mid, small atomic.Int32
	acct(tr, &largest).Charge(128 * mib)
	acct(tr, &mid).Charge(2 * mib)
	s := acct(tr, &small)
	s.Charge(mib)
	if got := tr.ResetGivenPressure(0.85); got != 2 {
		t.Fatalf("reset %d streams, want 2", got)
	}
	if largest.Load() != 1 || mid.Load() != 1 || small.Load() != 0 {
		t.Fatalf("resets: largest %d, mid %d, small %d", largest.Load(), mid.Load(), small.Load())
	}
	if got := tr.ResetGivenPressure(0.85); got != 0 {
		t.Fatalf("second call reset %d streams", got)
	}
	if s.WasReset() {
		t.Fatal("the small stream was reset")
	}
	if got := tr.ResetGivenPressure(1); got != 1 || small.Load() != 1 || !s.WasReset() {
		t.Fatalf("at 1: reset %d, small %d", got, small.Load())
	}
}

func TestResetOneBucketPerGradation(t *testing.T) {
	// As Envoy's ComputesBucketToResetCorrectly: one account per bucket;
	// each gradation of 1/8 makes one more bucket eligible.
	tr := NewTracker(21, nil)
	var resets [8]atomic.Int32
	bal := int64(1 << 20)
	for i := range resets {
		acct(tr, &resets[i]).Charge(bal)
		bal *= 2
	}
	p := 0.0
	for i := 7; i >= 0; i-- {
		if got := tr.ResetGivenPressure(p); got != 1 || resets[i].Load() != 1 {
			t.Fatalf("pressure %g: reset %d, bucket %d reset %d times", p, got, i, resets[i].Load())
		}
		p += 1.0 / 8
	}
}

func TestResetLimitPerInvocation(t *testing.T) {
	// At most 50 streams per invocation, the largest first.
	tr := NewTracker(21, nil)
	var big, small atomic.Int32
	for range 50 {
		acct(tr, &big).Charge(128 << 20)
		acct(tr, &small).Charge(1 << 20)
	}
	if got := tr.ResetGivenPressure(1); got != 50 || big.Load() != 50 || small.Load() != 0 {
		t.Fatalf("first: reset %d (big %d, small %d)", got, big.Load(), small.Load())
	}
	if got := tr.ResetGivenPressure(1); got != 50 || small.Load() != 50 {
		t.Fatalf("second: reset %d (small %d)", got, small.Load())
	}
}

func TestNilTrackerAndAccount(t *testing.T) {
	var tr *Tracker
	a := tr.NewAccount(func() {})
	a.Charge(1 << 30)
	a.Close()
	if a != nil || a.WasReset() || a.Balance() != 0 || tr.ResetGivenPressure(1) != 0 {
		t.Fatal("nil tracker or account did something")
	}
	var m *Manager
	if m.Tracker() != nil {
		t.Fatal("nil manager has a tracker")
	}
}

// BenchmarkCharge is the per-buffer-change cost with accounting on: one
// atomic add while the account stays in its bucket.
func BenchmarkCharge(b *testing.B) {
	tr := NewTracker(20, nil)
	a := tr.NewAccount(func() {})
	a.Charge(1 << 20)
	for b.Loop() {
		a.Charge(100)
		a.Charge(-100)
	}
}
