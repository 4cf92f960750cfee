package hcm

import (
	"testing"
	"time"
)

func TestParkAt(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name  string
		now   time.Time
		delay time.Duration
		want  time.Time
	}{
		{"on a boundary", base, time.Second, base.Add(time.Second)},
		{"rounded up to a quarter", base.Add(10 * time.Millisecond), time.Second, base.Add(1250 * time.Millisecond)},
		{"just past a boundary", base.Add(250*time.Millisecond + 1), time.Second, base.Add(1500 * time.Millisecond)},
		{"short delay", base.Add(3 * time.Millisecond), 20 * time.Millisecond, base.Add(25 * time.Millisecond)},
		{"a delay too short to round", base.Add(1), 3, base.Add(4)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parkAt(tt.now, tt.delay)
			if !got.Equal(tt.want) {
				t.Errorf("parkAt(%v, %v) = %v, want %v", tt.now, tt.delay, got, tt.want)
			}
			if got.Before(tt.now.Add(tt.delay)) {
				t.Errorf("parkAt(%v, %v) = %v parks before the delay", tt.now, tt.delay, got)
			}
		})
	}
	// Connections going idle within one quarter park at the same moment.
	a, b := parkAt(base.Add(260*time.Millisecond), time.Second), parkAt(base.Add(490*time.Millisecond), time.Second)
	if !a.Equal(b) {
		t.Errorf("waits 230 ms apart park at %v and %v, want together", a, b)
	}
}

func TestIdleParkDelay(t *testing.T) {
	tests := []struct {
		env  string
		want time.Duration
	}{
		{"", defaultParkDelay},
		{"off", 0},
		{"25ms", 25 * time.Millisecond},
		{"nonsense", defaultParkDelay},
		{"-1s", defaultParkDelay},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(parkDelayEnv, tt.env)
			if got := idleParkDelay(); got != tt.want {
				t.Errorf("%s=%q: %v, want %v", parkDelayEnv, tt.env, got, tt.want)
			}
		})
	}
}

func TestParkDelayAdapts(t *testing.T) {
	cfg := &hcmConfig{parkDelay: 20 * time.Millisecond}
	w := &h1idle{cfg: cfg}
	wake := func(after time.Duration) {
		w.parkedAt = time.Since(monoEpoch) - after
		w.woken()
	}
	steps := []struct {
		name      string
		parkedFor time.Duration
		wantDelay time.Duration
	}{
		{"woken soon: not idle after all", 30 * time.Millisecond, 40 * time.Millisecond},
		{"again", 10 * time.Millisecond, 80 * time.Millisecond},
		{"again", 10 * time.Millisecond, 160 * time.Millisecond},
		{"again", 500 * time.Millisecond, 320 * time.Millisecond},
		{"again", time.Millisecond, 640 * time.Millisecond},
		{"capped", time.Millisecond, maxParkDelay},
		{"stays capped", time.Millisecond, maxParkDelay},
		{"idle for long: short again", 2 * maxParkDelay, 20 * time.Millisecond},
	}
	if got := w.parkDelay(); got != 20*time.Millisecond {
		t.Fatalf("initial delay %v", got)
	}
	for i, s := range steps {
		wake(s.parkedFor)
		if got := w.parkDelay(); got != s.wantDelay {
			t.Fatalf("step %d (%s, parked %v): delay %v, want %v", i, s.name, s.parkedFor, got, s.wantDelay)
		}
	}
}
