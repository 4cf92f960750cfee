package mesh

import (
	"net/netip"
	"testing"
)

func TestNodeID(t *testing.T) {
	n := NodeID{IP: netip.MustParseAddr("10.1.2.3"), Pod: "web-7d4", Namespace: "shop"}
	s := n.String()
	if s != "sidecar~10.1.2.3~web-7d4.shop~shop.svc.cluster.local" {
		t.Fatalf("String: %q", s)
	}
	got, ok := ParseNodeID(s)
	if !ok || got.IP != n.IP || got.Pod != n.Pod || got.Namespace != n.Namespace || got.Domain != "shop.svc.cluster.local" {
		t.Fatalf("ParseNodeID(%q) = %+v, %v", s, got, ok)
	}
	for _, bad := range []string{"", "gateway-1", "router~10.1.2.3~a.b~b.svc", "sidecar~x~a.b~b.svc", "sidecar~10.1.2.3~nodot~b.svc", "sidecar~10.1.2.3~a.b"} {
		if _, ok := ParseNodeID(bad); ok {
			t.Errorf("ParseNodeID(%q) accepted", bad)
		}
	}
}

func TestSPIFFEID(t *testing.T) {
	id := SPIFFEID("", "shop", "web")
	if id != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Fatalf("SPIFFEID: %q", id)
	}
	td, ns, sa, err := ParseSPIFFEID(id)
	if err != nil || td != "cluster.local" || ns != "shop" || sa != "web" {
		t.Fatalf("ParseSPIFFEID: %q %q %q %v", td, ns, sa, err)
	}
	for _, bad := range []string{"https://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/x/a/sa/b"} {
		if _, _, _, err := ParseSPIFFEID(bad); err == nil {
			t.Errorf("ParseSPIFFEID(%q) accepted", bad)
		}
	}
}
