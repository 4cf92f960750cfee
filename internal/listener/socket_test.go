package listener

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// freeLoopbackAddr returns 127.0.0.1:<a port free now>.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// refused reports whether a connection to addr is refused (nothing listens).
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// TestSocketsRefcount: sockets are shared by network and address and
// closed when the last reference goes; port 0 is never shared.
func TestSocketsRefcount(t *testing.T) {
	type step struct {
		op   string // acquire, acquire0, acquire6, release
		slot int    // which handle (acquire stores, release drops)
		// after the step:
		same     int  // for acquire: the handle it must equal (-1: a new socket)
		refs     int  // references of the slot's socket
		open     bool // whether the address accepts connections
		tableLen int  // shared sockets in the table
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"one listener", []step{
			{op: "acquire", slot: 0, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
		}},
		{"second reference shares, last release closes", []step{
			{op: "acquire", slot: 0, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "acquire", slot: 1, same: 0, refs: 2, open: true, tableLen: 1},
			{op: "release", slot: 0, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 1, refs: 0, open: false, tableLen: 0},
		}},
		{"a release after close is ignored", []step{
			{op: "acquire", slot: 0, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
			{op: "acquire", slot: 1, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 0, refs: 0, open: true, tableLen: 1}, // the old socket: the new one stays open
			{op: "release", slot: 1, refs: 0, open: false, tableLen: 0},
		}},
		{"re-acquired after close binds anew", []step{
			{op: "acquire", slot: 0, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
			{op: "acquire", slot: 1, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "release", slot: 1, refs: 0, open: false, tableLen: 0},
		}},
		{"port 0 never shared", []step{
			{op: "acquire0", slot: 0, same: -1, refs: 1, open: true, tableLen: 0},
			{op: "acquire0", slot: 1, same: -1, refs: 1, open: true, tableLen: 0},
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
			{op: "release", slot: 1, refs: 0, open: false, tableLen: 0},
		}},
		{"another network is another socket", []step{
			{op: "acquire", slot: 0, same: -1, refs: 1, open: true, tableLen: 1},
			{op: "acquire6", slot: 1, same: -1, refs: 0, open: true, tableLen: 1}, // tcp4 and tcp4+6 on one address: the second bind fails
			{op: "release", slot: 0, refs: 0, open: false, tableLen: 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tab := NewSockets(nil)
			addr := freeLoopbackAddr(t)
			handles := map[int]*Socket{}
			for i, st := range tc.steps {
				where := fmt.Sprintf("step %d (%s %d)", i, st.op, st.slot)
				switch st.op {
				case "acquire", "acquire0", "acquire6":
					network, a := "tcp4", addr
					if st.op == "acquire0" {
						a = "127.0.0.1:0"
					}
					if st.op == "acquire6" {
						network = "tcp"
					}
					s, err := tab.Acquire(network, a)
					if st.op == "acquire6" {
						// A different key binds its own socket: here the
						// kernel refuses the second bind of the port.
						if err == nil {
							s.Release()
							t.Fatalf("%s: %s bound an address the tcp4 socket holds", where, network)
						}
						continue
					}
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					if st.same >= 0 && s != handles[st.same] {
						t.Fatalf("%s: a new socket, want the one of handle %d", where, st.same)
					}
					for j, h := range handles {
						if st.same < 0 && h == s {
							t.Fatalf("%s: shared handle %d's socket, want a new one", where, j)
						}
					}
					handles[st.slot] = s
				case "release":
					handles[st.slot].Release()
				}
				s := handles[st.slot]
				if got := s.Refs(); got != st.refs {
					t.Errorf("%s: refs = %d, want %d", where, got, st.refs)
				}
				if got := !refused(s.Addr().String()); got != st.open {
					t.Errorf("%s: accepting = %v, want %v", where, got, st.open)
				}
				if got := tab.Len(); got != st.tableLen {
					t.Errorf("%s: table holds %d sockets, want %d", where, got, st.tableLen)
				}
			}
		})
	}
}

// handledBy connects to addr and waits until one of the listeners counts
// the connection; it returns that listener's index.
func handledBy(t *testing.T, addr string, ls ...*Listener) int {
	t.Helper()
	before := make([]uint64, len(ls))
	for i, l := range ls {
		before[i] = l.stats.cxTotal.Value()
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for i, l := range ls {
			if l.stats.cxTotal.Value() > before[i] {
				return i
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no listener took the connection to %s", addr)
	return -1
}

// TestListenerTakesOverSocket: a listener that replaces another takes its
// socket (port 0 included: same port) and, once started, every new
// connection; the old one drains without closing the socket. With no
// listener attached a connection waits (it is not refused) for the next.
func TestListenerTakesOverSocket(t *testing.T) {
	tab := NewSockets(nil)
	mk := func(prefix string) *Listener {
		l := compileTestListener(t, `{name: l, stat_prefix: `+prefix+`, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [{filters: [`+tcpChain+`]}]}`)
		l.deps.Sockets = tab
		return l
	}
	l1 := mk("one")
	if err := l1.Bind(); err != nil {
		t.Fatal(err)
	}
	go l1.Serve()
	addr := l1.BoundAddress()
	if got := handledBy(t, addr, l1); got != 0 {
		t.Fatal("l1 did not serve")
	}
	l2 := mk("two")
	if err := l2.BindReplacing(l1); err != nil {
		t.Fatal(err)
	}
	if l2.BoundAddress() != addr {
		t.Fatalf("the replacing listener bound %s, want the socket of %s", l2.BoundAddress(), addr)
	}
	if got := handledBy(t, addr, l1, l2); got != 0 {
		t.Fatal("a connection went to l2 before it started")
	}
	if !l2.Start() {
		t.Fatal("l2 did not start")
	}
	if got := handledBy(t, addr, l1, l2); got != 1 {
		t.Fatal("after l2 started, l1 still took new connections")
	}
	l1.Drain(time.Second)
	if refused(addr) {
		t.Fatal("draining the old listener closed the shared socket")
	}
	if got := handledBy(t, addr, l1, l2); got != 1 {
		t.Fatal("l2 lost the socket")
	}
	// l2 stops, l3 (not started yet) holds the socket: a connection waits.
	l3 := mk("three")
	if err := l3.BindReplacing(l2); err != nil {
		t.Fatal(err)
	}
	l2.Drain(time.Second)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("with the next listener warming, a connection was refused: %v", err)
	}
	defer c.Close()
	if !l3.Start() {
		t.Fatal("l3 did not start")
	}
	deadline := time.Now().Add(5 * time.Second)
	for l3.stats.cxTotal.Value() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if l3.stats.cxTotal.Value() == 0 {
		t.Fatal("the waiting connection never reached l3")
	}
	l3.Drain(time.Second)
	if !refused(addr) {
		t.Fatal("the socket stayed open after its last listener drained")
	}
	if l3.Start() {
		t.Fatal("a drained listener started again")
	}
}

// Regression: an in-place update drained the connections of every chain,
// changed or not; Envoy keeps a chain whose config did not change.
func TestUpdateKeepsUnchangedChains(t *testing.T) {
	a := `{filter_chain_match: {destination_port: 1}, filters: [` + tcpChain + `]}`
	b := `{filter_chain_match: {destination_port: 2}, filters: [` + tcpChain + `]}`
	b2 := `{filter_chain_match: {destination_port: 2}, name: renamed, filters: [` + tcpChain + `]}`
	mk := func(chains string) *Listener {
		return compileTestListener(t, `{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [`+chains+`]}`)
	}
	l := mk(a + `, ` + b)
	old := l.chains.Load()
	l.Update(mk(a+`, `+b2), time.Millisecond)
	cs := l.chains.Load()
	if cs.chains[0] != old.chains[0] {
		t.Error("the unchanged chain was replaced (its connections would drain)")
	}
	if cs.chains[1] == old.chains[1] || cs.chains[1].name != "renamed" {
		t.Error("the changed chain was not replaced")
	}
	// A listener-level change is not applied in place: nothing is kept.
	next := compileTestListener(t, `{name: l, per_connection_buffer_limit_bytes: 1024, address: {socket_address: {address: 127.0.0.1, port_value: 0}}, filter_chains: [`+a+`, `+b2+`]}`)
	if FilterChainOnlyChange(l.Proto, next.Proto) {
		t.Error("per_connection_buffer_limit_bytes is a listener-level change")
	}
	cur, _, _ := l.Current()
	if !FilterChainOnlyChange(cur, mk(b).Proto) {
		t.Error("a change of the chains alone is a filter-chain-only change")
	}
}
