package netx

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// pair returns a wrapped server-side connection and its client peer, on
// loopback.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	x, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatal("Wrap did not wrap a TCP connection")
	}
	t.Cleanup(func() { x.Close(); peer.Close() })
	return x, peer
}

// TestLazyDeadlines checks the deadline rules of the package comment on
// real sockets: an armed deadline the caller no longer wants, or one
// earlier than wanted, never fails an I/O call; a wanted one that has
// passed always does.
func TestLazyDeadlines(t *testing.T) {
	cases := []struct {
		name string
		// set runs before the read; peerAfter is when the peer writes
		// (0: never).
		set       func(c *Conn)
		peerAfter time.Duration
		wantErr   bool
	}{
		{"cleared deadline left armed", func(c *Conn) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			c.SetReadDeadline(time.Time{})
			time.Sleep(60 * time.Millisecond) // the armed one expires
		}, 50 * time.Millisecond, false},
		{"later deadline over an earlier armed one", func(c *Conn) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
		}, 150 * time.Millisecond, false},
		{"earlier deadline over a later armed one", func(c *Conn) {
			c.SetReadDeadline(time.Now().Add(time.Hour))
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		}, 0, true},
		{"deadline in the past", func(c *Conn) {
			c.SetReadDeadline(time.Now().Add(time.Hour))
			c.SetReadDeadline(time.Now().Add(-time.Second))
		}, 0, true},
		{"SetDeadline then clear both", func(c *Conn) {
			c.SetDeadline(time.Now().Add(10 * time.Millisecond))
			c.SetDeadline(time.Time{})
			time.Sleep(30 * time.Millisecond)
		}, 30 * time.Millisecond, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, peer := pair(t)
			tc.set(c)
			if tc.peerAfter > 0 {
				time.AfterFunc(tc.peerAfter, func() { peer.Write([]byte("x")) })
			}
			done := make(chan error, 1)
			go func() {
				var b [8]byte
				_, err := c.Read(b[:])
				done <- err
			}()
			select {
			case err := <-done:
				if tc.wantErr != (err != nil) {
					t.Fatalf("Read: err %v, want error %v", err, tc.wantErr)
				}
				if tc.wantErr && !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("Read: %v, want os.ErrDeadlineExceeded", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Read neither returned data nor timed out")
			}
		})
	}
}

// TestLazyWriteDeadline: a write deadline that expired after the caller
// cleared it does not fail the next write.
func TestLazyWriteDeadline(t *testing.T) {
	c, peer := pair(t)
	c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	c.SetWriteDeadline(time.Time{})
	time.Sleep(30 * time.Millisecond)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatalf("Write after a cleared deadline expired: %v", err)
	}
	var b [5]byte
	if _, err := peer.Read(b[:]); err != nil || string(b[:]) != "hello" {
		t.Fatalf("peer read %q, %v", b, err)
	}
}

// TestDeadlineInterruptsRead: a deadline set from another goroutine wakes
// a blocked read, as net.Conn's does (drains and cancellations rely on it).
func TestDeadlineInterruptsRead(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(time.Hour))
	done := make(chan error, 1)
	go func() {
		var b [8]byte
		_, err := c.Read(b[:])
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read: %v, want os.ErrDeadlineExceeded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a past deadline did not interrupt the read")
	}
}

// TestDeadlineOnClosedConn: setting a deadline that needs no poller update
// still fails once the connection is closed (callers probe with it).
func TestDeadlineOnClosedConn(t *testing.T) {
	c, _ := pair(t)
	c.Conn.Close() // closed underneath, as a listener drain does
	if err := c.SetReadDeadline(time.Time{}); err == nil {
		t.Fatal("SetReadDeadline on a closed connection: no error")
	}
}

// TestSyscallConnSyncsDeadlines: raw readers (liveness probes) see the
// wanted deadlines, not an expired leftover.
func TestSyscallConnSyncsDeadlines(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	c.SetReadDeadline(time.Time{})
	time.Sleep(20 * time.Millisecond)
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	called := false
	if err := rc.Read(func(uintptr) bool { called = true; return true }); err != nil || !called {
		t.Fatalf("raw read after sync: err %v, called %v", err, called)
	}
}

// BenchmarkDeadlines is one proxied request's deadline changes on a
// connection: idle, stream idle on both directions, cleared at the end.
func BenchmarkDeadlines(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	peer, _ := net.Dial("tcp", ln.Addr().String())
	defer peer.Close()
	raw, _ := ln.Accept()
	defer raw.Close()
	for _, bc := range []struct {
		name string
		c    net.Conn
	}{{"net.Conn", raw}, {"netx.Conn", Wrap(raw)}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				now := time.Now()
				bc.c.SetReadDeadline(now.Add(time.Hour))
				bc.c.SetDeadline(now.Add(5 * time.Minute))
				bc.c.SetDeadline(time.Time{})
			}
		})
	}
}
