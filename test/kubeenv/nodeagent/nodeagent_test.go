package nodeagent

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "B": "two"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for in, want := range map[string]string{
		"plain":        "plain",
		"$(A)":         "1",
		"x$(A)y$(B)z":  "x1ytwoz",
		"$(MISSING)":   "$(MISSING)",
		"$$(A)":        "$(A)",
		"$$":           "$",
		"$(A":          "$(A",
		"a$b":          "a$b",
		"end$":         "end$",
		"$()":          "$()",
		"$(A)$(B)$(A)": "1two1",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestImageRepository(t *testing.T) {
	for in, want := range map[string]string{
		"registry.k8s.io/gateway-api/echo-basic:v1.5.1":    "registry.k8s.io/gateway-api/echo-basic",
		"registry.k8s.io/gateway-api/echo-basic":           "registry.k8s.io/gateway-api/echo-basic",
		"localhost:5000/echo":                              "localhost:5000/echo",
		"localhost:5000/echo:1":                            "localhost:5000/echo",
		"busybox@sha256:abcd":                              "busybox",
		"registry.k8s.io/coredns/coredns:v1.12.2@sha256:0": "registry.k8s.io/coredns/coredns",
	} {
		if got := ImageRepository(in); got != want {
			t.Errorf("ImageRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestArgv(t *testing.T) {
	img := Image{Path: "/opt/bin/coredns", Entrypoint: []string{"/coredns"}, Args: []string{"-conf", "/etc/Corefile"}}
	env := map[string]string{"PORT": "53"}
	for _, tc := range []struct {
		cmd, args []string
		want      []string
		err       string
	}{
		{want: []string{"/opt/bin/coredns", "-conf", "/etc/Corefile"}},
		{args: []string{"-conf", "/root/Corefile"}, want: []string{"/opt/bin/coredns", "-conf", "/root/Corefile"}},
		{cmd: []string{"/coredns", "-dns.port=$(PORT)"}, want: []string{"/opt/bin/coredns", "-dns.port=53"}},
		{cmd: []string{"coredns"}, args: []string{"-x"}, want: []string{"/opt/bin/coredns", "-x"}},
		{cmd: []string{"/bin/sh", "-c", "x"}, err: "is not the entrypoint"},
	} {
		got, err := argv(img, &corev1.Container{Image: "registry.k8s.io/coredns/coredns:v1", Command: tc.cmd, Args: tc.args}, env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("argv(%q, %q): error %v, want %q", tc.cmd, tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("argv(%q, %q) = %q, %v; want %q", tc.cmd, tc.args, got, err, tc.want)
		}
	}
}

// TestIPPool: addresses go round robin, skip the node and the broadcast
// address, and run out.
func TestIPPool(t *testing.T) {
	p, err := newIPPool(netip.MustParsePrefix("203.0.113.0/29"))
	if err != nil {
		t.Fatal(err)
	}
	if p.node.String() != "203.0.113.1" {
		t.Fatalf("node %s", p.node)
	}
	var got []string
	for i := 0; i < 5; i++ {
		a, err := p.get()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	want := []string{"203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5", "203.0.113.6"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if a, err := p.get(); err == nil {
		t.Fatalf("a sixth address %s out of a /29", a)
	}
	p.put(netip.MustParseAddr("203.0.113.3"))
	p.put(netip.MustParseAddr("203.0.113.5"))
	if a, _ := p.get(); a.String() != "203.0.113.3" {
		t.Fatalf("after a wrap got %s, want 203.0.113.3", a)
	}
	if a, _ := p.get(); a.String() != "203.0.113.5" {
		t.Fatalf("got %s, want 203.0.113.5", a)
	}
	for _, bad := range []string{"10.0.0.0/8", "203.0.113.0/30", "2001:db8::/64"} {
		if _, err := newIPPool(netip.MustParsePrefix(bad)); err == nil {
			t.Errorf("pod CIDR %s accepted", bad)
		}
	}
}
