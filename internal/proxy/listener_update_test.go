package proxy

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/upstream"
)

func compileTestListener(t *testing.T, y string) *Listener {
	t.Helper()
	pl := &listenerv3.Listener{}
	if _, err := config.Decode([]byte(y), pl, "listener"); err != nil {
		t.Fatal(err)
	}
	d := &Deps{Stats: stats.NewStore(), Clusters: upstream.NewManager(upstream.Deps{Stats: stats.NewStore(), Log: slog.Default()}),
		Log: slog.Default(), ConnIDs: new(atomic.Uint64), SkipClusterValidation: true}
	l, err := CompileListener(pl, "listener", d)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

const tcpChain = `{name: envoy.filters.network.tcp_proxy, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: t, cluster: c}}`

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
