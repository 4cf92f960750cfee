package listener

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/legateproxy/legate/internal/userspace"
)

func TestCompileAddress(t *testing.T) {
	withRegistry := &Context{Sockets: &Sockets{Internal: userspace.NewRegistry(0)}}
	internal := &listenerv3.Listener{Name: "inner", ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}}}
	pipe := func(path string, mode uint32) *listenerv3.Listener {
		return &listenerv3.Listener{Name: "p", Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path, Mode: mode}}}}
	}
	for _, tc := range []struct {
		name    string
		pl      *listenerv3.Listener
		d       *Context
		want    listenAddr
		wantErr string
	}{
		{name: "internal", pl: internal, d: withRegistry,
			want: listenAddr{network: "internal", address: "inner", display: "envoy://inner/", statPrefix: "envoy_internal_inner"}},
		{name: "internal without the registry", pl: internal, d: &Context{Sockets: &Sockets{}},
			wantErr: "InternalListener bootstrap extension is mandatory"},
		{name: "internal with TCP backlog", pl: func() *listenerv3.Listener {
			c := proto.Clone(internal).(*listenerv3.Listener)
			c.TcpBacklogSize = wrapperspb.UInt32(5)
			return c
		}(), d: withRegistry, wantErr: "has unsupported tcp listener feature"},
		{name: "pipe", pl: pipe("/run/x.sock", 0o660),
			want: listenAddr{network: "unix", address: "/run/x.sock", mode: 0o660, display: "/run/x.sock", statPrefix: "/run/x.sock"}},
		{name: "abstract pipe", pl: pipe("@x", 0), want: listenAddr{network: "unix", address: "@x", display: "@x", statPrefix: "@x"}},
		{name: "abstract pipe with a mode", pl: pipe("@x", 0o600), wantErr: "Cannot set mode for Abstract AF_UNIX sockets"},
		{name: "mode beyond permissions", pl: pipe("/run/x.sock", 0o4777), wantErr: "is not a permission mode"},
		{name: "no address", pl: &listenerv3.Listener{Name: "n"}, wantErr: "a listener needs an address"},
		{name: "ipv6 compat", pl: &listenerv3.Listener{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "::", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 80}, Ipv4Compat: true}}}},
			want: listenAddr{network: "tcp", address: "[::]:80", display: "[::]:80", statPrefix: "[::]:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := compileAddress(tc.pl, "l", tc.d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestSocketsInternalAndPipe: internal listeners and pipes are shared by
// name and path like TCP sockets, and the last release unregisters or
// unbinds them.
func TestSocketsInternalAndPipe(t *testing.T) {
	reg := userspace.NewRegistry(0)
	ss := &Sockets{Internal: reg}
	a, err := ss.Acquire("internal", "inner")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ss.Acquire("internal", "inner")
	if err != nil || b != a {
		t.Fatalf("second acquire of an internal listener: %v, %v (want the same socket)", b, err)
	}
	if a.Addr().String() != "envoy://inner/" {
		t.Errorf("internal socket address %q", a.Addr())
	}
	a.Release()
	if !reg.Has("inner") {
		t.Fatal("released while still referenced")
	}
	b.Release()
	if reg.Has("inner") {
		t.Fatal("last release left the internal listener registered")
	}
	if _, err := reg.Dial(context.Background(), userspace.Addr{Listener: "inner"}, nil); !errors.Is(err, userspace.ErrNoListener) {
		t.Fatalf("dial after the last release: %v", err)
	}
	if _, err := (&Sockets{}).Acquire("internal", "inner"); err == nil {
		t.Fatal("an internal listener bound without a registry")
	}

	path := filepath.Join(t.TempDir(), "p.sock")
	s, err := ss.acquire("unix", path, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("pipe mode: %v, %v", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Release()
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("the pipe still accepts after the last release")
	}
	// A regular file at the path is never removed: the bind fails.
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Acquire("unix", path); err == nil {
		t.Fatal("bound over a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Fatal("the regular file was removed")
	}
}
