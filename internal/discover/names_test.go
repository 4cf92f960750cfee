package discover

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestDiscoverNames(t *testing.T) {
	long63 := "the-really-long-kube-service-name-that-is-exactly-63-characters"
	if len(long63) != 63 {
		t.Fatalf("fixture is %d characters", len(long63))
	}
	for _, c := range []struct {
		backend, name, want string
	}{
		{"nodek8s", "nginx", "nodek8s-nginx"},
		// The example of Gimbal's docs/discovery-naming-conventions.md.
		{"us-east-cluster", long63, "us-east-cluster-the-really-long-kube-serv1feeec"},
		// 62 characters joined: unchanged.
		{"b", strings.Repeat("s", 60), "b-" + strings.Repeat("s", 60)},
		// Exactly 63 joined is shortened too, as Gimbal's hashname does:
		// the service gets 31 characters, the last 6 its hash (sha256sum
		// of the part).
		{"b", strings.Repeat("s", 61), "b-" + strings.Repeat("s", 25) + "204a2a"},
		// Both parts over their budget: the service is cut first, then
		// the backend.
		{strings.Repeat("b", 40), strings.Repeat("s", 40), strings.Repeat("b", 25) + "e26d2d-" + strings.Repeat("s", 25) + "3923fb"},
	} {
		got := DiscoveredName(c.backend, c.name)
		if got != c.want {
			t.Errorf("DiscoveredName(%q, %q) = %q, want %q", c.backend, c.name, got, c.want)
		}
	}
	// Whatever the lengths, a discovered name is a DNS label.
	for b := 1; b <= 63; b += 7 {
		for n := 1; n <= 63; n++ {
			name := DiscoveredName("a"+strings.Repeat("b", b-1), "s"+strings.Repeat("x", n-1))
			if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
				t.Fatalf("DiscoveredName with lengths %d, %d = %q: %v", b, n, name, errs)
			}
		}
	}
}

func TestDiscoverShortenLabelValue(t *testing.T) {
	v63 := strings.Repeat("v", 63)
	if got := ShortenLabelValue(v63); got != v63 {
		t.Errorf("a 63-character value changed: %q", got)
	}
	v64 := strings.Repeat("v", 64)
	got := ShortenLabelValue(v64)
	if len(got) != 63 || !strings.HasPrefix(got, strings.Repeat("v", 57)) || got == v64[:63] {
		t.Errorf("ShortenLabelValue(64 v) = %q", got)
	}
	if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
		t.Errorf("%q: %v", got, errs)
	}
}

func TestDiscoverValidateBackendName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"nodek8s", true},
		{"us-east-1", true},
		{"a", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"1cluster", false}, // must start with a letter
		{"Cluster", false},
		{"east-", false},
		{"east_1", false},
		{"east.1", false},
	} {
		err := ValidateBackendName(c.name)
		if (err == nil) != c.ok {
			t.Errorf("ValidateBackendName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
