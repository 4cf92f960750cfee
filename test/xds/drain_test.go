package xds

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/legateproxy/legate/internal/testutil"
)

// TestListenerChangesDrain checks that a changed listener keeps its socket
// and drains in-flight requests, that an unchanged listener keeps its
// connections, and that a removed listener stops accepting.
func TestListenerChangesDrain(t *testing.T) {
	release := make(chan struct{})
	slow := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Write([]byte("done"))
	}))
	cp := startControlPlane(t, "")
	mainAddr, otherAddr := freeAddr(t), freeAddr(t)
	push := func(version int, mainStatPrefix string, withOther bool) {
		w := &world{version: version - 1, listen: mainAddr, endpoints: []string{slow.Addr}}
		snap := w.snapshot(t)
		res := map[resourcev3.Type][]types.Resource{}
		for _, typ := range []resourcev3.Type{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.RouteType} {
			for _, r := range snap.GetResources(typ) {
				res[typ] = append(res[typ], r)
			}
		}
		l := listener("main", mainAddr, "local")
		// A listener-level change (its stat prefix): a new listener takes
		// over the socket and the old one drains.
		l.StatPrefix = mainStatPrefix
		res[resourcev3.ListenerType] = []types.Resource{l}
		if withOther {
			res[resourcev3.ListenerType] = append(res[resourcev3.ListenerType], listener("other", otherAddr, "local"))
		}
		s, err := cachev3.NewSnapshot(fmt.Sprint(version), res)
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.cache.SetSnapshot(context.Background(), nodeID, s); err != nil {
			t.Fatal(err)
		}
	}
	push(1, "main", true)
	testutil.StartProxy(t, bootstrap(cp.addr, false), nil)
	for _, a := range []string{mainAddr, otherAddr} {
		a := a
		testutil.Eventually(t, 10*time.Second, func() bool { c, _, _ := getQuiet("http://" + a + "/"); return c == 200 }, "listener %s not serving", a)
	}
	// A keep-alive connection to "other" that must survive changes to "main".
	otherConn, err := net.Dial("tcp", otherAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer otherConn.Close()
	roundTrip := func(c net.Conn) (string, error) {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	if _, err := roundTrip(otherConn); err != nil {
		t.Fatal(err)
	}
	// A slow request in flight on "main" while "main" changes.
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + mainAddr + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- fmt.Sprintf("%d %s close=%v", resp.StatusCode, b, resp.Close)
	}()
	time.Sleep(200 * time.Millisecond)
	push(2, "main-v2", true)
	time.Sleep(300 * time.Millisecond)
	// The socket stayed: new connections to main are served at once.
	if c, _, err := getQuiet("http://" + mainAddr + "/"); c != 200 {
		t.Fatalf("main after an in-place update: %d %v", c, err)
	}
	if out, err := roundTrip(otherConn); err != nil || len(out) == 0 {
		t.Fatalf("an unchanged listener's connection was disturbed: %v", err)
	}
	close(release)
	if got := <-result; got != "200 done close=true" {
		t.Fatalf("in-flight request across the listener change: %s", got)
	}
	// Remove "other": its in-flight request finishes, then it stops accepting.
	push(3, "main-v2", false)
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := net.DialTimeout("tcp", otherAddr, 200*time.Millisecond)
		return err != nil
	}, "removed listener still accepts")
}
