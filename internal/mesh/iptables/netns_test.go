package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/legateproxy/legate/internal/testutil"
)

// The test's addresses, TEST-NET only: the pod (this namespace) is
// 192.0.2.1 on a veth whose peer namespace is 192.0.2.2 and 198.51.100.2;
// 203.0.113.5 is an address nobody has (a "service VIP").
const (
	podAddr   = "192.0.2.1"
	peerAddr  = "192.0.2.2"
	peerAddr2 = "198.51.100.2"
	vipAddr   = "203.0.113.5"
	peerPort  = "9000"
	// IPv6: the documentation prefix, 2001:db8::/32.
	podAddr6  = "2001:db8::1"
	peerAddr6 = "2001:db8::2"
	vipAddr6  = "2001:db8:ffff::5"
)

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// originalDst reads SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6), the
// destination a REDIRECTed connection was made to.
func originalDst(c net.Conn) (string, error) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "", err
	}
	var addr string
	var serr error
	if c.LocalAddr().(*net.TCPAddr).IP.To4() == nil {
		err = raw.Control(func(fd uintptr) {
			// The kernel writes a sockaddr_in6; IPv6MTUInfo starts with
			// one (x/sys has no getsockopt for sockaddr_in6 alone).
			m, e := unix.GetsockoptIPv6MTUInfo(int(fd), unix.IPPROTO_IPV6, unix.SO_ORIGINAL_DST)
			if e != nil {
				serr = e
				return
			}
			// sin6_port is in network order.
			port := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, m.Addr.Port))
			addr = netip.AddrPortFrom(netip.AddrFrom16(m.Addr.Addr), port).String()
		})
		if err == nil {
			err = serr
		}
		return addr, err
	}
	err = raw.Control(func(fd uintptr) {
		// The kernel writes a sockaddr_in; IPv6Mreq is a 20-byte buffer
		// that holds it (x/sys has no getsockopt for sockaddr_in).
		m, e := unix.GetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IP, unix.SO_ORIGINAL_DST)
		if e != nil {
			serr = e
			return
		}
		b := m.Multiaddr
		port := binary.BigEndian.Uint16(b[2:4])
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port).String()
	})
	if err == nil {
		err = serr
	}
	return addr, err
}

// serve accepts on l and answers every connection with "<tag> <original
// destination>" (the local address when not redirected).
func serve(t *testing.T, l net.Listener, tag string) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dst, err := originalDst(c)
			if err != nil {
				dst = c.LocalAddr().String()
			}
			fmt.Fprintf(c, "%s %s\n", tag, dst)
			// Half-close and drain, so a client that sent a request
			// (curl) reads the answer rather than a reset.
			_ = c.(*net.TCPConn).CloseWrite()
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
}

// inNamespace runs fn on a thread in the named network namespace, so the
// sockets fn creates live there.
func inNamespace(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread is discarded, not unlocked: it stays in name's namespace
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open netns %s: %v", name, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns %s: %v", name, err)
			return
		}
		fn()
	}()
	<-done
}

// dial connects from this namespace as root, or as uid/gid 1337 (the
// proxy) through setpriv and bash's /dev/tcp, and returns the answer.
func dial(t *testing.T, asProxy bool, host, port string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && cat <&3", host, port)
	args := []string{"bash", "-c", script}
	if asProxy {
		args = append([]string{"setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups"}, args...)
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("error: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out))
}

// dialFromPeer connects from the peer namespace (inbound to the pod).
func dialFromPeer(t *testing.T, peer, addr string) string {
	var answer string
	inNamespace(t, peer, func() {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			answer = "error: " + err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		answer = strings.TrimSpace(string(b))
	})
	return answer
}

// TestCaptureInNetns applies the rules with the real code path (Detect,
// Apply, Cleanup: iptables-nft-restore) in a private network namespace
// and proves where connections land.
func TestCaptureInNetns(t *testing.T) {
	if !testutil.InNetns(t) {
		return
	}
	if os.Getuid() != 0 {
		t.Skip("needs root in the namespace for iptables and ip netns")
	}
	for _, tool := range []string{"ip", "setpriv", "bash", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	ctx := context.Background()
	peer := fmt.Sprintf("legate-ipt-peer-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", peer).CombinedOutput(); err != nil {
		if os.Getenv("LEGATE_REQUIRE_NETNS") == "1" {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		t.Skipf("needs ip netns add (root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", peer).Run() })
	sh(t, "ip", "link", "add", "vpod", "type", "veth", "peer", "name", "vpeer")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", "vpod").Run() })
	sh(t, "ip", "link", "set", "vpeer", "netns", peer)
	sh(t, "ip", "addr", "add", podAddr+"/24", "dev", "vpod")
	sh(t, "ip", "link", "set", "vpod", "up")
	sh(t, "ip", "route", "add", "default", "via", peerAddr)
	sh(t, "ip", "-n", peer, "link", "set", "lo", "up")
	sh(t, "ip", "-n", peer, "addr", "add", peerAddr+"/24", "dev", "vpeer")
	sh(t, "ip", "-n", peer, "addr", "add", peerAddr2+"/24", "dev", "vpeer")
	sh(t, "ip", "-n", peer, "link", "set", "vpeer", "up")
	// nodad: the addresses are usable at once, not tentative.
	sh(t, "ip", "addr", "add", podAddr6+"/64", "dev", "vpod", "nodad")
	sh(t, "ip", "-n", peer, "addr", "add", peerAddr6+"/64", "dev", "vpeer", "nodad")
	sh(t, "ip", "-6", "route", "add", "default", "via", peerAddr6)

	// The pod's listeners: the sidecar's two, an application port and the
	// readiness port; the peer's server answers uncaptured traffic.
	for port, tag := range map[string]string{"15001": "outbound", "15006": "inbound", "8080": "app", "15021": "readiness"} {
		for _, addr := range []string{"0.0.0.0:" + port, "[::]:" + port} {
			l, err := net.Listen(map[bool]string{true: "tcp4", false: "tcp6"}[addr[0] == '0'], addr)
			if err != nil {
				t.Fatal(err)
			}
			serve(t, l, tag)
		}
	}
	inNamespace(t, peer, func() {
		for _, network := range []string{"tcp4", "tcp6"} {
			l, err := net.Listen(network, ":"+peerPort)
			if err != nil {
				t.Errorf("peer listen: %v", err)
				return
			}
			serve(t, l, "peer")
		}
	})
	// Without rules, everything goes where it is sent.
	if got := dial(t, false, peerAddr, peerPort); !strings.HasPrefix(got, "peer") {
		t.Fatalf("before any rules, %s:%s answered %q, want the peer", peerAddr, peerPort, got)
	}

	tools, err := Detect(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if tools.Variant != "nft" {
		t.Errorf("detected variant %q, want nft (Debian's iptables)", tools.Variant)
	}
	opts := Options{Tools: tools, IPv6: true}
	saved := func(fam Family) string {
		s, err := tools.save(ctx, fam)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	cfg := Default()
	cfg.ExcludeOutboundPorts = []string{"7000"}
	cfg.ExcludeOutboundCIDRs = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	if err := Apply(ctx, cfg, opts); err != nil {
		t.Fatal(err)
	}
	// A second run (the init container restarted) replaces, not adds.
	if err := Apply(ctx, cfg, opts); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	if n := strings.Count(saved(IPv4), "-A OUTPUT -j ISTIO_OUTPUT"); n != 1 {
		t.Errorf("after two applies, %d OUTPUT jumps, want 1:\n%s", n, saved(IPv4))
	}
	if !strings.Contains(saved(IPv6), ":ISTIO_OUTPUT") {
		t.Errorf("IPv6 rules missing:\n%s", saved(IPv6))
	}

	t.Run("outbound captured", func(t *testing.T) {
		if got, want := dial(t, false, vipAddr, "80"), "outbound "+vipAddr+":80"; got != want {
			t.Errorf("app to %s:80 answered %q, want %q", vipAddr, got, want)
		}
		if got, want := dial(t, false, peerAddr, peerPort), "outbound "+peerAddr+":"+peerPort; got != want {
			t.Errorf("app to the peer answered %q, want %q", got, want)
		}
	})
	t.Run("proxy uid not captured", func(t *testing.T) {
		if got := dial(t, true, peerAddr, peerPort); got != "peer "+peerAddr+":"+peerPort {
			t.Errorf("uid 1337 to the peer answered %q, want the peer itself", got)
		}
	})
	t.Run("excluded port and cidr bypass", func(t *testing.T) {
		inNamespace(t, peer, func() {
			l, err := net.Listen("tcp", "0.0.0.0:7000")
			if err != nil {
				t.Errorf("peer listen: %v", err)
				return
			}
			serve(t, l, "peer")
		})
		if got := dial(t, false, peerAddr, "7000"); got != "peer "+peerAddr+":7000" {
			t.Errorf("excluded port 7000 answered %q, want the peer", got)
		}
		if got := dial(t, false, peerAddr2, peerPort); got != "peer "+peerAddr2+":"+peerPort {
			t.Errorf("excluded CIDR answered %q, want the peer", got)
		}
	})
	t.Run("proxy to its own pod", func(t *testing.T) {
		// The proxy calling a VIP whose endpoint is this pod: over lo to
		// the pod address, sent to inbound.
		if got, want := dial(t, true, podAddr, "8080"), "inbound "+podAddr+":8080"; got != want {
			t.Errorf("uid 1337 to the pod's own 8080 answered %q, want %q", got, want)
		}
		// The application calling itself by pod address is not captured.
		if got, want := dial(t, false, podAddr, "8080"), "app "+podAddr+":8080"; got != want {
			t.Errorf("app to its own 8080 answered %q, want %q", got, want)
		}
		// The proxy's inbound passthrough, from 127.0.0.6, is not captured.
		if _, err := exec.LookPath("curl"); err != nil {
			t.Skip("needs curl to bind 127.0.0.6")
		}
		out, err := exec.Command("setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups",
			"curl", "-sS", "--http0.9", "--max-time", "10", "--interface", "127.0.0.6", "http://"+podAddr+":8080/").CombinedOutput()
		if got, want := strings.TrimSpace(string(out)), "app "+podAddr+":8080"; err != nil || got != want {
			t.Errorf("uid 1337 from 127.0.0.6 to the pod's 8080 answered %q (%v), want %q", got, err, want)
		}
	})
	t.Run("loopback not captured", func(t *testing.T) {
		if got := dial(t, false, "127.0.0.1", "8080"); got != "app 127.0.0.1:8080" {
			t.Errorf("app to localhost:8080 answered %q, want the app", got)
		}
	})
	t.Run("inbound captured", func(t *testing.T) {
		if got, want := dialFromPeer(t, peer, podAddr+":8080"), "inbound "+podAddr+":8080"; got != want {
			t.Errorf("peer to the pod's 8080 answered %q, want %q", got, want)
		}
		if got, want := dialFromPeer(t, peer, podAddr+":15021"), "readiness "+podAddr+":15021"; got != want {
			t.Errorf("peer to the pod's 15021 answered %q, want %q (excluded)", got, want)
		}
	})
	t.Run("ipv6", func(t *testing.T) {
		if got, want := dial(t, false, vipAddr6, "80"), "outbound ["+vipAddr6+"]:80"; got != want {
			t.Errorf("app to [%s]:80 answered %q, want %q", vipAddr6, got, want)
		}
		if got, want := dial(t, true, peerAddr6, peerPort), "peer ["+peerAddr6+"]:"+peerPort; got != want {
			t.Errorf("uid 1337 to the peer answered %q, want %q", got, want)
		}
		if got, want := dial(t, false, "::1", "8080"), "app [::1]:8080"; got != want {
			t.Errorf("app to [::1]:8080 answered %q, want %q", got, want)
		}
		if got, want := dialFromPeer(t, peer, "["+podAddr6+"]:8080"), "inbound ["+podAddr6+"]:8080"; got != want {
			t.Errorf("peer to the pod's 8080 answered %q, want %q", got, want)
		}
		if got, want := dialFromPeer(t, peer, "["+podAddr6+"]:15021"), "readiness ["+podAddr6+"]:15021"; got != want {
			t.Errorf("peer to the pod's 15021 answered %q, want %q (excluded)", got, want)
		}
	})
	t.Run("failing rule named", func(t *testing.T) {
		bad := Default()
		bad.ExcludeOutboundPorts = []string{"70000"} // past the parser, as a typo in a Config literal would be
		before := saved(IPv4)
		err := Apply(ctx, bad, opts)
		var re *RuleError
		if !errors.As(err, &re) {
			t.Fatalf("got %v, want a RuleError", err)
		}
		t.Logf("the error: %v", err)
		if want := "-A ISTIO_OUTPUT -p tcp --dport 70000 -j RETURN"; re.Rule != want || !strings.Contains(err.Error(), want) {
			t.Errorf("error %q names rule %q, want %q", err, re.Rule, want)
		}
		if after := saved(IPv4); stripComments(after) != stripComments(before) {
			t.Errorf("a failed apply changed the rules:\n%s", after)
		}
	})
	t.Run("cleanup", func(t *testing.T) {
		for range 2 { // a second cleanup has nothing to do and is no error
			if err := Cleanup(ctx, opts); err != nil {
				t.Fatal(err)
			}
		}
		for _, fam := range []Family{IPv4, IPv6} {
			if s := saved(fam); strings.Contains(s, "ISTIO_") {
				t.Errorf("%s after cleanup:\n%s", fam, s)
			}
		}
		if got := dial(t, false, peerAddr, peerPort); got != "peer "+peerAddr+":"+peerPort {
			t.Errorf("after cleanup the peer answered %q, want the peer itself", got)
		}
	})
	t.Run("network namespace path", func(t *testing.T) {
		if _, err := exec.LookPath("nsenter"); err != nil {
			t.Skip("needs nsenter")
		}
		there, err := Detect(ctx, "", "/run/netns/"+peer)
		if err != nil {
			t.Fatal(err)
		}
		popts := Options{Tools: there, IPv6: true}
		if err := Apply(ctx, Default(), popts); err != nil {
			t.Fatal(err)
		}
		if s := sh(t, "ip", "netns", "exec", peer, "iptables-save", "-t", "nat"); !strings.Contains(s, "-A OUTPUT -j ISTIO_OUTPUT") {
			t.Errorf("rules not in the named namespace:\n%s", s)
		}
		if s := saved(IPv4); strings.Contains(s, "ISTIO_") {
			t.Errorf("rules for the named namespace landed here:\n%s", s)
		}
		if err := Cleanup(ctx, popts); err != nil {
			t.Fatal(err)
		}
		if s := sh(t, "ip", "netns", "exec", peer, "iptables-save", "-t", "nat"); strings.Contains(s, "ISTIO_") {
			t.Errorf("after cleanup:\n%s", s)
		}
	})
	t.Run("legacy", func(t *testing.T) {
		legacy, err := Detect(ctx, "legacy", "")
		if err != nil {
			t.Skipf("no iptables-legacy: %v", err)
		}
		lopts := Options{Tools: legacy, IPv6: true}
		if err := Apply(ctx, Default(), lopts); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = Cleanup(ctx, lopts) })
		// With rules only in legacy, detection keeps to legacy.
		if d, err := Detect(ctx, "", ""); err != nil || d.Variant != "legacy" {
			t.Errorf("detected %q (%v) with legacy rules in place, want legacy", d.Variant, err)
		}
		if got, want := dial(t, false, vipAddr, "80"), "outbound "+vipAddr+":80"; got != want {
			t.Errorf("legacy: app to %s:80 answered %q, want %q", vipAddr, got, want)
		}
		if err := Cleanup(ctx, lopts); err != nil {
			t.Fatal(err)
		}
		if s, _ := legacy.save(ctx, IPv4); strings.Contains(s, "ISTIO_") {
			t.Errorf("legacy after cleanup:\n%s", s)
		}
	})
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
