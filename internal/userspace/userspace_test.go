package userspace

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/netx"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func TestDialMissingListenerFails(t *testing.T) {
	r := NewRegistry(0)
	_, err := r.Dial(context.Background(), Addr{Listener: "nope"}, nil)
	if !errors.Is(err, ErrNoListener) {
		t.Fatalf("dial to a missing listener: %v, want ErrNoListener", err)
	}
}

func TestConnectionBothWaysWithHalfCloseAndDeadlines(t *testing.T) {
	r := NewRegistry(64 * 1024)
	ln, err := r.Listen("inner")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := r.Listen("inner"); err == nil {
		t.Fatal("a second listener took the same name")
	}
	pt := &Passthrough{FilterState: map[string]streaminfo.FilterStateValue{"k": streaminfo.StringObject("v")}}
	client, err := r.Dial(context.Background(), Addr{Listener: "inner", Endpoint: "ep1"}, pt)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server := sc.(*Conn)
	defer server.Close()
	if got := server.Passthrough(); got != pt {
		t.Fatalf("server passthrough = %v, want the dialled one", got)
	}
	if got := server.LocalAddr().String(); got != "envoy://inner/ep1" {
		t.Errorf("server local address = %q", got)
	}
	if got := client.RemoteAddr().String(); got != "envoy://inner/ep1" {
		t.Errorf("client remote address = %q", got)
	}
	if got := server.RemoteAddr().String(); got != "envoy://internal_client_address/" {
		t.Errorf("server remote address = %q", got)
	}
	// The raw-syscall wrapper applies: the connection is a plain socket.
	if _, ok := netx.Wrap(server).(*netx.Conn); !ok {
		t.Error("netx.Wrap did not take the internal connection")
	}
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v; want ping then EOF", got, err)
	}
	// Half-closed: the other direction still works.
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
	client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := client.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a deadline error", err)
	}
}

func TestCloseUnregistersAndResetsBacklog(t *testing.T) {
	r := NewRegistry(0)
	ln, err := r.Listen("inner")
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := r.Dial(context.Background(), Addr{Listener: "inner"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if r.Has("inner") {
		t.Fatal("closed listener still registered")
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v, want net.ErrClosed", err)
	}
	waiting.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := waiting.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a connection left in the backlog read %v, want EOF (closed)", err)
	}
	if _, err := r.Dial(context.Background(), Addr{Listener: "inner"}, nil); !errors.Is(err, ErrNoListener) {
		t.Fatalf("dial after close: %v, want ErrNoListener", err)
	}
	// The name is free again (an LDS update re-adding the listener).
	ln2, err := r.Listen("inner")
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
}

func TestDialWaitsForFullBacklogUntilContextEnds(t *testing.T) {
	r := NewRegistry(0)
	ln, err := r.Listen("inner")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := 0; i < backlog; i++ {
		c, err := r.Dial(context.Background(), Addr{Listener: "inner"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := r.Dial(ctx, Addr{Listener: "inner"}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial into a full backlog: %v, want the context's deadline", err)
	}
}
