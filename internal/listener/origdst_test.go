package listener

import (
	"net"
	"syscall"
	"testing"
)

func TestNoOriginalDst(t *testing.T) {
	for _, c := range []struct {
		err  error
		none bool
	}{
		{syscall.ENOENT, true},
		{syscall.ENOPROTOOPT, true},
		{syscall.EBADF, false},
		{syscall.ENOTCONN, false},
		{syscall.EINVAL, false},
	} {
		if got := noOriginalDst(c.err); got != c.none {
			t.Errorf("%v: no original destination = %v, want %v", c.err, got, c.none)
		}
	}
}

// TestOriginalDstWithoutNAT: a connection no rule redirected has no
// original destination and no error; a closed one has an error; a pipe
// has none to ask for.
func TestOriginalDstWithoutNAT(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := originalDst(conn); ok || err != nil {
		t.Errorf("not redirected: ok=%v err=%v, want neither", ok, err)
	}
	conn.Close()
	if _, ok, err := originalDst(conn); ok || err == nil {
		t.Errorf("closed: ok=%v err=%v, want an error", ok, err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, ok, err := originalDst(a); ok || err != nil {
		t.Errorf("pipe: ok=%v err=%v, want neither", ok, err)
	}
}
