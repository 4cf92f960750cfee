package listener

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	echov3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/echo/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

func compileTestListener(t *testing.T, y string) *Listener {
	t.Helper()
	pl := &listenerv3.Listener{}
	if _, err := config.Decode([]byte(y), pl, "listener"); err != nil {
		t.Fatal(err)
	}
	d := &Context{Stats: stats.NewStore(), Clusters: upstream.NewManager(upstream.Deps{Stats: stats.NewStore(), Log: slog.Default()}),
		Log: slog.Default(), ConnIDs: new(atomic.Uint64), SkipClusterValidation: true}
	l, err := Compile(pl, "listener", d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// tcpChain is a chain's terminal filter for these tests: echo, a
// test-only registration (Legate's network filters live in their own
// packages, which import this one).
const tcpChain = `{name: envoy.filters.network.echo, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo}}`

func init() {
	extension.Register(extension.Extension{Name: "envoy.filters.network.echo", Category: extension.NetworkFilter, Config: &echov3.Echo{},
		Factory: NetworkFilterFactory(func(*Context, proto.Message, ChainOptions, string) (NetworkFilter, error) {
			return NetworkFilterFunc(func(c *Conn) { io.Copy(c, c) }), nil
		})})
}

// Regression: an update that adds a server_names chain to a listener that
// had none kept the old listener filters (no TLS inspection), so the new
// chain never matched.
func TestUpdateBringsItsListenerFilters(t *testing.T) {
	l := compileTestListener(t, `{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [{filters: [`+tcpChain+`]}]}`)
	if l.chains.Load().insp.tls {
		t.Fatal("no chain needs the TLS inspector yet")
	}
	next := compileTestListener(t, `{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [
		{filters: [`+tcpChain+`]}, {filter_chain_match: {server_names: [a.example]}, filters: [`+tcpChain+`]}]}`)
	l.Update(next, time.Millisecond)
	if !l.chains.Load().insp.tls {
		t.Fatal("after the update the listener does not inspect TLS: the server_names chain can never match")
	}
}

// Regression: Update wrote Proto while /config_dump and /healthcheck/fail
// read it (a data race -race reports).
func TestUpdateWhileConfigIsRead(t *testing.T) {
	y := `{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [{filters: [` + tcpChain + `]}]}`
	l := compileTestListener(t, y)
	next := compileTestListener(t, y)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if pl, _, _ := l.Current(); pl.GetName() != "l" {
				t.Error("wrong listener config")
			}
		}
	}()
	for i := 0; i < 200; i++ {
		l.Update(next, time.Millisecond)
	}
	wg.Wait()
}
