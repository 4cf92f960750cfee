package xds

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/legateproxy/legate/internal/testutil"
)

// pushListeners sets a snapshot with the world's cluster, endpoints and
// route configuration and exactly the given listeners.
func pushListeners(t *testing.T, cp *controlPlane, version int, endpoints []string, listeners ...*listenerv3.Listener) {
	t.Helper()
	w := &world{version: version - 1, listen: "127.0.0.1:1", endpoints: endpoints}
	snap := w.snapshot(t)
	res := map[resourcev3.Type][]types.Resource{}
	for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType} {
		for _, r := range snap.GetResources(typ) {
			res[typ] = append(res[typ], r)
		}
	}
	for _, l := range listeners {
		res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], l)
	}
	s, err := cachev3.NewSnapshot(fmt.Sprint(version), res)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, s); err != nil {
		t.Fatal(err)
	}
}

// connLoop opens a new connection per request, as fast as it can, and
// counts refused connections apart from other failures.
type connLoop struct {
	stop        chan struct{}
	wg          sync.WaitGroup
	ok, refused atomic.Int64
	failed      atomic.Int64
	mu          sync.Mutex
	errs        []string
}

func startConnLoop(addr string, workers int) *connLoop {
	cl := &connLoop{stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		cl.wg.Add(1)
		go func() {
			defer cl.wg.Done()
			for {
				select {
				case <-cl.stop:
					return
				default:
				}
				cl.once(addr)
			}
		}()
	}
	return cl
}

func (cl *connLoop) once(addr string) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			cl.refused.Add(1)
		} else {
			cl.failed.Add(1)
		}
		cl.note(err.Error())
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		cl.failed.Add(1)
		cl.note(err.Error())
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		cl.failed.Add(1)
		cl.note(resp.Status)
		return
	}
	cl.ok.Add(1)
}

func (cl *connLoop) note(s string) {
	cl.mu.Lock()
	if len(cl.errs) < 10 {
		cl.errs = append(cl.errs, s)
	}
	cl.mu.Unlock()
}

func (cl *connLoop) finish() { close(cl.stop); cl.wg.Wait() }

// TestListenerRenameKeepsSocket: an LDS update that renames a listener but
// keeps its address (the old name removed, a new one added) hands the
// socket to the new listener, as Envoy does: a client that keeps
// connecting is never refused and no request fails.
func TestListenerRenameKeepsSocket(t *testing.T) {
	backends := upstreams(t, 1)
	cp := startControlPlane(t, "")
	addr := freeAddr(t)
	pushListeners(t, cp, 1, backends, listener("l1", addr, "local"))
	p := testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := getQuiet("http://" + addr + "/"); return c == 200 }, "listener never served")
	cl := startConnLoop(addr, 3)
	const renames = 20
	for i := 2; i <= renames+1; i++ {
		name := fmt.Sprintf("l%d", i)
		before := cl.ok.Load()
		pushListeners(t, cp, i, backends, listener(name, addr, "local"))
		testutil.Eventually(t, 10*time.Second, func() bool {
			as := p.Srv.ListenerAddresses()
			_, renamed := as[name]
			return renamed && len(as) == 1
		}, "listener %s never replaced l%d", name, i-1)
		// Some requests go through each generation.
		testutil.Eventually(t, 10*time.Second, func() bool { return cl.ok.Load() > before+5 }, "no requests completed after rename %d", i)
	}
	cl.finish()
	t.Logf("%d requests over %d renames, %d refused, %d failed", cl.ok.Load(), renames, cl.refused.Load(), cl.failed.Load())
	if n := cl.refused.Load(); n != 0 {
		t.Errorf("%d connections were refused while the listener was renamed (%v)", n, cl.errs)
	}
	if n := cl.failed.Load(); n != 0 {
		t.Errorf("%d requests failed while the listener was renamed (%v)", n, cl.errs)
	}
	if got := p.Srv.ListenerAddresses()[fmt.Sprintf("l%d", renames+1)]; got != addr {
		t.Errorf("BoundAddress after the renames = %q, want %q", got, addr)
	}
}

// TestListenerLevelUpdateApplies: an LDS update that changes only
// listener-level settings (stat_prefix, ignore_global_conn_limit) — not
// the filter chains — takes effect: Envoy replaces the whole listener.
// Before, only the filter chains were swapped and these were ignored.
func TestListenerLevelUpdateApplies(t *testing.T) {
	backends := upstreams(t, 1)
	cp := startControlPlane(t, "")
	mainAddr, otherAddr := freeAddr(t), freeAddr(t)
	main := func(prefix string, ignoreGlobal bool) *listenerv3.Listener {
		l := listener("main", mainAddr, "local")
		l.StatPrefix, l.IgnoreGlobalConnLimit = prefix, ignoreGlobal
		return l
	}
	other := listener("other", otherAddr, "local")
	pushListeners(t, cp, 1, backends, main("v1", false), other)
	// One downstream connection in all (the runtime's global limit).
	b := bootstrap(cp.addr, false) + `
layered_runtime:
  layers:
  - name: static
    static_layer: {overload.global_downstream_max_connections: 1}
`
	p := testutil.StartProxy(t, b, nil)
	testutil.Eventually(t, 10*time.Second, func() bool { return getOnce("http://"+otherAddr+"/") == 200 }, "listener other never served")
	// A keep-alive connection to "other" holds the one global slot (once
	// the probes' connections are gone).
	var hold net.Conn
	var br *bufio.Reader
	roundTrip := func() error {
		fmt.Fprintf(hold, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		hold.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return errors.New(resp.Status)
		}
		return nil
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", otherAddr)
		if err != nil {
			return false
		}
		hold, br = c, bufio.NewReader(c)
		if roundTrip() != nil {
			c.Close()
			return false
		}
		return true
	}, "no connection to other was kept")
	defer hold.Close()
	if getOnce("http://"+mainAddr+"/") == 200 {
		t.Fatal("main served a connection over the global limit")
	}
	if n := p.Stat(t, "listener.v1.downstream_cx_overflow"); n < 1 {
		t.Fatalf("listener.v1.downstream_cx_overflow = %d", n)
	}
	// Only listener-level settings change.
	pushListeners(t, cp, 2, backends, main("v2", true), other)
	testutil.Eventually(t, 10*time.Second, func() bool { return getOnce("http://"+mainAddr+"/") == 200 },
		"ignore_global_conn_limit: true did not apply: main still refuses connections over the global limit")
	if n := p.Stat(t, "listener.v2.downstream_cx_total"); n < 1 {
		t.Errorf("stat_prefix v2 did not apply: listener.v2.downstream_cx_total = %d", n)
	}
	// The unchanged listener's connection was not disturbed.
	if err := roundTrip(); err != nil {
		t.Errorf("the unchanged listener's connection: %v", err)
	}
	// /config_dump shows the new listener config.
	_, _, body := testutil.Get(t, testutil.Client(), "http://"+p.Admin+"/config_dump?resource=dynamic_listeners")
	if !strings.Contains(body, `"stat_prefix": "v2"`) {
		t.Errorf("config_dump does not show the update:\n%s", body)
	}
}

// getOnce makes one request on a connection of its own, closed after it
// (no idle connection lingers to count against a connection limit).
func getOnce(url string) int {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
