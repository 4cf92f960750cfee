//go:build linux

package netx

import (
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testWaker counts its wake-ups and signals each on c.
type testWaker struct {
	n atomic.Int32
	c chan struct{}
}

func newTestWaker() *testWaker { return &testWaker{c: make(chan struct{}, 16)} }

func (w *testWaker) Wake() {
	w.n.Add(1)
	w.c <- struct{}{}
}

// woken waits for a wake-up (a generous bound: only a hang fails).
func (w *testWaker) woken(t *testing.T) {
	t.Helper()
	select {
	case <-w.c:
	case <-time.After(10 * time.Second):
		t.Fatal("not woken")
	}
}

// quiet checks that no wake-up came within a short while.
func (w *testWaker) quiet(t *testing.T) {
	t.Helper()
	select {
	case <-w.c:
		t.Fatal("woken unexpectedly")
	case <-time.After(50 * time.Millisecond):
	}
}

// tcpPair returns the two ends of a loopback TCP connection: the server
// end (what a proxy parks) and the client end.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

func rawConn(t *testing.T, c syscall.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

func newTestParker(t *testing.T) *Parker {
	t.Helper()
	p, err := NewParker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestParkerWakes(t *testing.T) {
	tests := []struct {
		name string
		// before runs before Park (nil: nothing), after once parked.
		before, after func(t *testing.T, p *Parker, e *Parked, server, client *net.TCPConn)
		deadline      time.Duration // 0: none
		// read is what reading the server end returns once woken.
		read    string
		readEOF bool
	}{
		{name: "input", read: "GET",
			after: func(t *testing.T, _ *Parker, _ *Parked, _, c *net.TCPConn) { c.Write([]byte("GET")) }},
		{name: "input already there when parked", read: "x",
			before: func(t *testing.T, _ *Parker, _ *Parked, s, c *net.TCPConn) {
				c.Write([]byte("x"))
				waitInput(t, s)
			}},
		{name: "peer closes", readEOF: true,
			after: func(t *testing.T, _ *Parker, _ *Parked, _, c *net.TCPConn) { c.Close() }},
		{name: "peer half-closes", readEOF: true,
			after: func(t *testing.T, _ *Parker, _ *Parked, _, c *net.TCPConn) { c.CloseWrite() }},
		{name: "deadline", deadline: 30 * time.Millisecond},
		{name: "deadline already past", deadline: -time.Second},
		{name: "Wake", deadline: time.Hour,
			after: func(t *testing.T, p *Parker, e *Parked, _, _ *net.TCPConn) {
				if !p.Wake(e) {
					t.Error("Wake of a parked connection reported false")
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestParker(t)
			s, c := tcpPair(t)
			var e Parked
			w := newTestWaker()
			if tt.before != nil {
				tt.before(t, p, &e, s, c)
			}
			var dl time.Time
			if tt.deadline != 0 {
				dl = time.Now().Add(tt.deadline)
			}
			if err := p.Park(rawConn(t, s), &e, dl, w); err != nil {
				t.Fatal(err)
			}
			if tt.after != nil {
				tt.after(t, p, &e, s, c)
			}
			w.woken(t)
			if n := p.Len(); n != 0 {
				t.Errorf("Len after the wake-up = %d, want 0", n)
			}
			if p.Wake(&e) {
				t.Error("Wake after the wake-up reported true")
			}
			w.quiet(t)
			if got := w.n.Load(); got != 1 {
				t.Errorf("woken %d times, want 1", got)
			}
			s.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			b := make([]byte, 16)
			n, err := s.Read(b)
			switch {
			case tt.readEOF:
				if err != io.EOF {
					t.Errorf("read after the wake-up: %q, %v; want EOF", b[:n], err)
				}
			case tt.read != "":
				if string(b[:n]) != tt.read {
					t.Errorf("read after the wake-up: %q, %v; want %q", b[:n], err, tt.read)
				}
			default:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("read after a wake-up with no input: %q, %v; want a timeout", b[:n], err)
				}
			}
		})
	}
}

// waitInput waits until input is in s's receive buffer (peeked, not
// read), so a Park after it can only learn of it from the registration.
func waitInput(t *testing.T, s *net.TCPConn) {
	t.Helper()
	b := make([]byte, 1)
	err := rawConn(t, s).Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return n > 0 || err != syscall.EAGAIN
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestParkerParkAgain parks the same connection several times: after a
// one-shot event the socket is modified, not added again; after Wake it
// is added again.
func TestParkerParkAgain(t *testing.T) {
	p := newTestParker(t)
	s, c := tcpPair(t)
	rc := rawConn(t, s)
	var e Parked
	b := make([]byte, 16)
	for i, how := range []string{"input", "input", "wake", "input", "wake", "wake", "input"} {
		w := newTestWaker()
		if err := p.Park(rc, &e, time.Time{}, w); err != nil {
			t.Fatalf("park %d: %v", i, err)
		}
		if how == "wake" {
			p.Wake(&e)
			w.woken(t)
			continue
		}
		c.Write([]byte{'a' + byte(i)})
		w.woken(t)
		if n, err := s.Read(b); err != nil || n != 1 || b[0] != 'a'+byte(i) {
			t.Fatalf("park %d: read %q, %v", i, b[:n], err)
		}
	}
}

// TestParkerOthersUndisturbed: waking one connection (by input, Wake or
// deadline) wakes no other, and a woken connection's later input wakes
// nobody.
func TestParkerOthersUndisturbed(t *testing.T) {
	p := newTestParker(t)
	const n = 50
	type pc struct {
		s, c *net.TCPConn
		e    Parked
		w    *testWaker
	}
	conns := make([]*pc, n)
	for i := range conns {
		s, c := tcpPair(t)
		conns[i] = &pc{s: s, c: c, w: newTestWaker()}
		dl := time.Time{}
		if i%5 == 4 {
			dl = time.Now().Add(time.Duration(rand.Intn(40)+10) * time.Millisecond)
		}
		if err := p.Park(rawConn(t, s), &conns[i].e, dl, conns[i].w); err != nil {
			t.Fatal(err)
		}
	}
	for i, x := range conns {
		switch i % 5 {
		case 0, 1:
			x.c.Write([]byte("x"))
		case 2:
			p.Wake(&x.e)
		case 3:
			x.c.Close()
		}
	}
	for _, x := range conns {
		x.w.woken(t)
	}
	// Input after the wake-up, on the sockets still open.
	for i, x := range conns {
		if i%5 != 3 {
			x.c.Write([]byte("y"))
		}
	}
	time.Sleep(50 * time.Millisecond)
	for i, x := range conns {
		if got := x.w.n.Load(); got != 1 {
			t.Errorf("connection %d woken %d times, want 1", i, got)
		}
	}
	if got := p.Len(); got != 0 {
		t.Errorf("Len = %d, want 0", got)
	}
}

func TestParkerErrors(t *testing.T) {
	p := newTestParker(t)
	s, _ := tcpPair(t)
	rc := rawConn(t, s)
	var e Parked
	w := newTestWaker()
	if err := p.Park(rc, &e, time.Time{}, w); err != nil {
		t.Fatal(err)
	}
	if err := p.Park(rc, &e, time.Time{}, w); !errors.Is(err, errParked) {
		t.Errorf("second Park: %v, want errParked", err)
	}
	// Close wakes what is parked and refuses more.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	w.woken(t)
	var e2 Parked
	if err := p.Park(rc, &e2, time.Time{}, newTestWaker()); !errors.Is(err, ErrParkerClosed) {
		t.Errorf("Park after Close: %v, want ErrParkerClosed", err)
	}
	// A closed socket cannot be parked.
	s2, _ := tcpPair(t)
	rc2 := rawConn(t, s2)
	s2.Close()
	p2 := newTestParker(t)
	var e3 Parked
	if err := p2.Park(rc2, &e3, time.Time{}, newTestWaker()); err == nil {
		t.Error("Park of a closed socket succeeded")
	}
	if got := p2.Len(); got != 0 {
		t.Errorf("Len after a failed Park = %d, want 0", got)
	}
}

// TestParkerHeap checks the deadline heap's order and indexes through
// random pushes and removals.
func TestParkerHeap(t *testing.T) {
	p := &Parker{}
	rng := rand.New(rand.NewSource(1))
	var live []*Parked
	check := func() {
		for i, e := range p.timers {
			if int(e.heap) != i {
				t.Fatalf("entry %d has index %d", i, e.heap)
			}
			if i > 0 && p.timers[(i-1)/2].deadline > e.deadline {
				t.Fatalf("heap order broken at %d", i)
			}
		}
	}
	for step := 0; step < 5000; step++ {
		if len(live) == 0 || rng.Intn(3) > 0 {
			e := &Parked{deadline: int64(rng.Intn(1000) + 1)}
			p.push(e)
			live = append(live, e)
		} else {
			k := rng.Intn(len(live))
			p.remove(int(live[k].heap))
			if live[k].heap != -1 {
				t.Fatal("removed entry keeps an index")
			}
			live = append(live[:k], live[k+1:]...)
		}
		check()
	}
	// Popping the root gives the deadlines in order.
	prev := int64(0)
	for len(p.timers) > 0 {
		d := p.timers[0].deadline
		if d < prev {
			t.Fatalf("deadline %d after %d", d, prev)
		}
		prev = d
		p.remove(0)
		check()
	}
}
