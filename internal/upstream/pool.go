package upstream

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/netx"
)

// ClientConn is one HTTP/1.1 connection to an upstream host, owned by one
// request at a time.
type ClientConn struct {
	Conn net.Conn
	R    *http1.Reader
	// W is a reusable write buffer for serializing requests.
	W []byte

	host     *Host
	cluster  *Cluster
	pool     *pool
	requests uint32
	// opts are what the connection was made with (a waiter that takes
	// over a closed connection's turn dials with the same).
	opts      ConnOptions
	idleSince time.Time
	reused    bool
}

// Host returns the host the connection goes to.
func (c *ClientConn) Host() *Host { return c.host }

// Reused reports whether the connection served a request before this one.
func (c *ClientConn) Reused() bool { return c.reused }

// pool keeps a host's idle HTTP/1.1 connections.
type pool struct {
	mu      sync.Mutex
	idle    []*ClientConn
	waiters []chan *ClientConn
	// dead marks a per-downstream pool the sweep removed from its host
	// (prunePools): it takes no connections back.
	dead bool
}

// Errors from Acquire.
var (
	ErrOverflow       = errors.New("upstream: circuit breaker open (max connections and pending requests reached)")
	ErrConnectTimeout = errors.New("upstream: connect timeout")
)

// ConnectError wraps a failure to connect to a host.
type ConnectError struct{ Err error }

func (e *ConnectError) Error() string { return "upstream connect error: " + e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// idleCheckAfter is how long a pooled connection may sit before it is
// probed for a close by the upstream before reuse.
const idleCheckAfter = 500 * time.Millisecond

// Acquire returns a connection to h: an idle one if there is, a new one if
// the cluster's max_connections allows, or else it waits as a pending
// request (bounded by max_pending_requests) until one is released or ctx
// ends.
//
// sni selects the pool of connections made with that TLS server name
// (auto_sni); "" is the host's default pool.
func (c *Cluster) Acquire(deadline time.Time, h *Host, sni string) (*ClientConn, error) {
	return c.AcquireWith(deadline, h, ConnOptions{SNI: sni})
}

// AcquireWith is Acquire of a connection made with o: the pool is the one
// of o's SNI and, when the cluster sends PROXY protocol headers, of o's
// downstream connection.
func (c *Cluster) AcquireWith(deadline time.Time, h *Host, o ConnOptions) (*ClientConn, error) {
	key := c.poolKey(o)
	p := h.poolFor(key)
	for {
		p.mu.Lock()
		if p.dead {
			p.mu.Unlock()
			p = h.poolFor(key)
			continue
		}
		n := len(p.idle)
		if n == 0 {
			break
		}
		cc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if time.Since(cc.idleSince) > idleCheckAfter && !alive(cc.Conn) {
			c.closeConn(cc, false)
			continue
		}
		cc.reused = true
		return cc, nil
	}
	if c.canCreateConnection(h) {
		p.mu.Unlock()
		return c.dial(deadline, h, p, o)
	}
	if c.cx.Load() >= int64(c.breakers.maxConnections) {
		setOpen(c.breakers.gauges.cxOpen, true)
	}
	// Pending: wait for a connection to come back.
	if c.rqPending.Value() >= int64(c.breakers.maxPending) {
		p.mu.Unlock()
		c.Stats.rqPendingOverflow.Inc()
		setOpen(c.breakers.gauges.pendingOpen, true)
		return nil, ErrOverflow
	}
	ch := make(chan *ClientConn, 1)
	p.waiters = append(p.waiters, ch)
	p.mu.Unlock()
	c.Stats.cxOverflow.Inc()
	c.Stats.rqPendingTotal.Inc()
	c.rqPending.Inc()
	defer func() {
		c.rqPending.Dec()
		setOpen(c.breakers.gauges.pendingOpen, c.rqPending.Value() >= int64(c.breakers.maxPending))
	}()
	var expire <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expire = t.C
	}
	select {
	case cc, ok := <-ch:
		if !ok {
			return nil, &ConnectError{Err: errors.New("connection to upstream failed while pending")}
		}
		cc.reused = true
		return cc, nil
	case <-expire:
		p.mu.Lock()
		for i, w := range p.waiters {
			if w == ch {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		select { // a release (or a failure: closed) may have raced with the cancellation
		case cc, ok := <-ch:
			if ok {
				c.Release(cc, true)
			}
		default:
		}
		return nil, context.DeadlineExceeded
	}
}

func (c *Cluster) dial(deadline time.Time, h *Host, p *pool, o ConnOptions) (*ClientConn, error) {
	if n := c.cx.Add(1); c.breakers.trackRemaining {
		c.breakers.gauges.remainingCx.Set(int64(c.breakers.maxConnections) - n)
	}
	start := time.Now()
	conn, err := c.dialDeadline(deadline, h, o)
	if err != nil {
		c.cxDone()
		c.Stats.cxConnectFail.Inc()
		h.stats.CxConnectFail.Add(1)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.Stats.cxConnectTimeout.Inc()
			return nil, &ConnectError{Err: ErrConnectTimeout}
		}
		return nil, &ConnectError{Err: err}
	}
	conn = netx.Wrap(conn)
	if t := c.transportFor(h); t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.connectTimeout)
		ctx = WithDialInfo(ctx, &DialInfo{Host: h, ProxyProtocol: o.ProxyProtocol})
		conn, err = t.Client(ctx, conn, o.SNI)
		cancel()
		if err != nil {
			c.cxDone()
			c.Stats.cxConnectFail.Inc()
			h.stats.CxConnectFail.Add(1)
			return nil, &ConnectError{Err: err}
		}
	}
	c.Stats.cxConnectMs.Record(float64(time.Since(start).Microseconds()) / 1000)
	c.Stats.cxTotal.Inc()
	c.Stats.cxHTTP1Total.Inc()
	c.Stats.cxActive.Inc()
	h.stats.CxTotal.Add(1)
	h.stats.CxActive.Add(1)
	return &ClientConn{Conn: conn, R: http1.NewReader(conn), host: h, cluster: c, pool: p, opts: o}, nil
}

// Release returns a connection after a request. reusable says the exchange
// ended cleanly with keep-alive; otherwise the connection is closed.
func (c *Cluster) Release(cc *ClientConn, reusable bool) {
	cc.requests++
	if reusable && c.maxRequestsPerConn > 0 && cc.requests >= c.maxRequestsPerConn {
		c.Stats.cxMaxRequests.Inc()
		reusable = false
	}
	if !reusable || cc.R.Buffered() > 0 || c.closed() || cc.host.removed.Load() || (c.closeOnHCFail && !cc.host.Healthy()) {
		c.closeConn(cc, true)
		// A waiter can now dial.
		c.wakeWaiterToDial(cc)
		return
	}
	cc.R.EndMessage()
	cc.R.Release()
	cc.idleSince = time.Now()
	p := cc.pool
	p.mu.Lock()
	if p.dead {
		p.mu.Unlock()
		c.closeConn(cc, true)
		return
	}
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.mu.Unlock()
		ch <- cc
		return
	}
	p.idle = append(p.idle, cc)
	p.mu.Unlock()
}

// wakeWaiterToDial lets the first pending request dial a connection of its
// own after one closed.
func (c *Cluster) wakeWaiterToDial(old *ClientConn) {
	p, h := old.pool, old.host
	p.mu.Lock()
	if len(p.waiters) == 0 {
		p.mu.Unlock()
		return
	}
	ch := p.waiters[0]
	p.waiters = p.waiters[1:]
	p.mu.Unlock()
	go func() {
		cc, err := c.dial(time.Time{}, h, p, old.opts)
		if err != nil {
			close(ch)
			return
		}
		ch <- cc
	}()
}

func (c *Cluster) closeConn(cc *ClientConn, local bool) {
	cc.Conn.Close()
	c.cxDone()
	c.Stats.cxActive.Dec()
	c.Stats.cxDestroy.Inc()
	if local {
		c.Stats.cxDestroyLocal.Inc()
	} else {
		c.Stats.cxDestroyRemote.Inc()
	}
	cc.host.stats.CxActive.Add(-1)
}

// removeHost closes a removed host's idle connections and fails its
// pending requests (they wait for a connection of this host, which no
// longer comes; failed, they are retried on the hosts that remain).
func (c *Cluster) removeHost(h *Host) {
	h.removed.Store(true)
	c.closeIdle(h, 0)
	for _, p := range h.allPools() {
		p.mu.Lock()
		ws := p.waiters
		p.waiters = nil
		p.mu.Unlock()
		for _, ch := range ws {
			close(ch)
		}
	}
}

// closeIdle closes every idle connection of h (host removal, shutdown).
func (c *Cluster) closeIdle(h *Host, olderThan time.Duration) {
	for _, p := range h.allPools() {
		c.closeIdlePool(p, olderThan)
	}
}

func (c *Cluster) closeIdlePool(p *pool, olderThan time.Duration) {
	p.mu.Lock()
	keep := p.idle[:0]
	var drop []*ClientConn
	for _, cc := range p.idle {
		if olderThan > 0 && time.Since(cc.idleSince) < olderThan {
			keep = append(keep, cc)
		} else {
			drop = append(drop, cc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.mu.Unlock()
	for _, cc := range drop {
		c.closeConn(cc, true)
	}
}

// alive probes an idle connection without blocking: a readable EOF or
// stray bytes mean the upstream closed it or broke HTTP framing.
func alive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = true
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if n >= 0 && err == nil { // data or EOF on an idle connection
			ok = false
		} else if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, os.ErrDeadlineExceeded) {
			ok = false
		}
		return true
	})
	return ok
}

// poolFor returns the host's pool for a TLS server name.
func (h *Host) poolFor(sni string) *pool {
	if sni == "" {
		return h.pool
	}
	if p, ok := h.sniPools.Load(sni); ok {
		return p.(*pool)
	}
	p, _ := h.sniPools.LoadOrStore(sni, &pool{})
	return p.(*pool)
}

// prunePools removes the host's per-downstream pools (PROXY protocol
// clusters: one per downstream address pair; internal_upstream clusters
// passing filter state: one per set of values) that hold nothing, so that
// they do not pile up over the downstream connections' lifetimes. A
// removed pool is marked dead under its lock: one being acquired from
// is looked up again, a connection released to it is closed.
func (h *Host) prunePools() {
	h.sniPools.Range(func(k, v any) bool {
		if !strings.Contains(k.(string), "\x00proxy:") && !strings.Contains(k.(string), "\x00fs:") {
			return true
		}
		p := v.(*pool)
		p.mu.Lock()
		if len(p.idle) == 0 && len(p.waiters) == 0 {
			p.dead = true
			h.sniPools.Delete(k)
		}
		p.mu.Unlock()
		return true
	})
}

func (h *Host) allPools() []*pool {
	out := []*pool{h.pool}
	h.sniPools.Range(func(_, v any) bool {
		out = append(out, v.(*pool))
		return true
	})
	return out
}

// canCreateConnection is Envoy's HostImpl::canCreateConnection for the
// default priority: the cluster is under max_connections and h under the
// per-host max_connections, when there is one.
func (c *Cluster) canCreateConnection(h *Host) bool {
	if m := c.maxConnectionsPerHost; m > 0 && h.stats.CxActive.Load() >= int64(m) {
		return false
	}
	return c.cx.Load() < int64(c.breakers.maxConnections)
}

// cxDone counts a closed upstream connection.
func (c *Cluster) cxDone() {
	n := c.cx.Add(-1)
	if n == int64(c.breakers.maxConnections)-1 {
		setOpen(c.breakers.gauges.cxOpen, false)
	}
	if c.breakers.trackRemaining {
		c.breakers.gauges.remainingCx.Set(int64(c.breakers.maxConnections) - n)
	}
}
