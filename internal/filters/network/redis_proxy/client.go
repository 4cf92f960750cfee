package redis_proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/filters/network/redis_proxy/resp"
	"github.com/legateproxy/legate/internal/upstream"
)

// errUpstream is a failed upstream request: the connection could not be
// made, broke, or op_timeout passed without a reply. Envoy answers the
// client "upstream failure".
var errUpstream = errors.New("upstream failure")

// errDone ends a connection that is no longer needed (a transaction's, or
// the pool's when its last user left).
var errDone = errors.New("redis connection no longer used")

// pool holds the upstream connections of one compiled filter: one
// pipelined connection per (cluster, host), as Envoy's per-worker redis
// connection pool, shared by the filter's downstream connections. It
// holds connections only while it has users (downstream connections):
// when the last one ends — the filter's config was replaced and its
// connections drained, or traffic stopped — every upstream connection
// closes, so nothing outlives the config.
type pool struct {
	cfg     *proxyConfig
	mu      sync.Mutex
	users   int
	clients map[clientKey]*client
}

type clientKey struct{ cluster, host string }

// acquire counts a downstream connection as a user.
func (p *pool) acquire() {
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
}

// release ends a user; the last one closes every upstream connection.
func (p *pool) release() {
	p.mu.Lock()
	p.users--
	var closing []*client
	if p.users == 0 {
		for k, c := range p.clients {
			closing = append(closing, c)
			delete(p.clients, k)
		}
	}
	p.mu.Unlock()
	for _, c := range closing {
		c.fail(errDone)
	}
}

// client returns the connection to h of cl, making one (dialed in the
// background) when there is none or the last one failed.
func (p *pool) client(cl *upstream.Cluster, h *upstream.Host) *client {
	k := clientKey{cl.Name, h.Address}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.clients[k]; c != nil {
		return c
	}
	if p.clients == nil {
		p.clients = map[clientKey]*client{}
	}
	c := p.newClient(cl, h)
	p.clients[k] = c
	go c.run()
	return c
}

// dedicated returns a new connection to h of cl that only its caller
// uses (a transaction's), which the caller ends with fail.
func (p *pool) dedicated(cl *upstream.Cluster, h *upstream.Host) *client {
	c := p.newClient(cl, h)
	go c.run()
	return c
}

func (p *pool) newClient(cl *upstream.Cluster, h *upstream.Host) *client {
	k := clientKey{cl.Name, h.Address}
	c := &client{pool: p, key: k, cl: cl, host: h, wake: make(chan struct{}, 1), done: make(chan struct{}), log: p.cfg.log}
	// The cluster's RedisProtocolOptions: the first request on the new
	// connection is AUTH, whose reply is dropped, as Envoy's client does;
	// a wrong password shows in the replies that follow (NOAUTH …).
	if o, _ := cl.ProtocolOptions(optionsName).(*protocolOptions); o != nil {
		if cred := o.credential(h); cred.password != "" {
			auth := resp.Command("AUTH", cred.password)
			if cred.username != "" {
				auth = resp.Command("AUTH", cred.username, cred.password)
			}
			c.buf = resp.Append(c.buf, auth)
			c.queue = append(c.queue, func(v resp.Value, err error) {
				if err == nil && v.Type == resp.Error {
					c.log.Warn("redis upstream rejected AUTH", "cluster", cl.Name, "host", h.Address, "error", v.Str)
				}
			})
		}
	}
	return c
}

// client is one pipelined connection to a redis server: requests are
// written in order and their replies, which redis sends in the same
// order, complete them one by one.
type client struct {
	pool *pool
	key  clientKey
	cl   *upstream.Cluster
	host *upstream.Host
	log  *slog.Logger
	wake chan struct{} // the writer has bytes to send
	done chan struct{} // closed when the connection failed

	mu      sync.Mutex
	conn    net.Conn // nil until connected
	buf     []byte   // encoded requests not yet written
	queue   []func(resp.Value, error)
	err     error // set once the connection failed
	flushAt *time.Timer
}

// send queues req; done runs with its reply (from the connection's
// reader) or with errUpstream.
func (c *client) send(req resp.Value, done func(resp.Value, error)) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		done(resp.Value{}, errUpstream)
		return
	}
	c.buf = resp.Append(c.buf, req)
	c.queue = append(c.queue, done)
	if c.conn != nil && len(c.queue) == 1 {
		// Envoy's op_timeout runs while requests wait for replies.
		c.conn.SetReadDeadline(time.Now().Add(c.pool.cfg.opTimeout))
	}
	max := c.pool.cfg.maxBuffer
	switch {
	case max == 0 || len(c.buf) >= max:
		c.signal()
	case c.flushAt == nil:
		// max_buffer_size_before_flush: requests wait for more to come,
		// at most buffer_flush_timeout.
		c.flushAt = time.AfterFunc(c.pool.cfg.flushTimeout, func() {
			c.mu.Lock()
			c.flushAt = nil
			c.mu.Unlock()
			c.signal()
		})
	}
	c.mu.Unlock()
}

func (c *client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run connects, then writes what is queued until the connection fails.
func (c *client) run() {
	// Bounded by op_timeout, as Envoy's client bounds connecting: a full
	// max_connections breaker must not park the requests forever.
	cc, err := c.cl.AcquireWith(time.Now().Add(c.pool.cfg.opTimeout), c.host, upstream.ConnOptions{})
	if err != nil {
		c.pool.cfg.log.Info("redis upstream connect failed", "cluster", c.cl.Name, "host", c.host.Address, "error", err)
		c.fail(fmt.Errorf("%w: %w", errUpstream, err))
		return
	}
	c.host.HostStarted()
	defer func() {
		c.mu.Lock()
		ok := errors.Is(c.err, errDone)
		c.mu.Unlock()
		c.host.HostFinished(ok, false)
		c.cl.Release(cc, false)
	}()
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.conn = cc.Conn
	if len(c.queue) > 0 {
		c.conn.SetReadDeadline(time.Now().Add(c.pool.cfg.opTimeout))
	}
	c.mu.Unlock()
	c.signal()
	go c.read(cc.Conn)
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		b := c.buf
		c.buf = nil
		c.mu.Unlock()
		if len(b) == 0 {
			continue
		}
		if _, err := cc.Conn.Write(b); err != nil {
			c.fail(fmt.Errorf("%w: write: %w", errUpstream, err))
			return
		}
	}
}

// read completes queued requests with the replies.
func (c *client) read(conn net.Conn) {
	r := resp.NewReader(conn)
	for {
		v, err := r.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.log.Info("redis upstream op_timeout", "cluster", c.cl.Name, "host", c.host.Address)
			}
			c.fail(fmt.Errorf("%w: read: %w", errUpstream, err))
			return
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.mu.Unlock()
			c.fail(fmt.Errorf("%w: a reply with no request", errUpstream))
			return
		}
		done := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		if len(c.queue) > 0 {
			conn.SetReadDeadline(time.Now().Add(c.pool.cfg.opTimeout))
		} else {
			conn.SetReadDeadline(time.Time{})
		}
		c.mu.Unlock()
		done(v, nil)
	}
}

// fail ends the connection: every waiting request fails, and the pool
// makes a new connection for the next one.
func (c *client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	queue := c.queue
	c.queue, c.buf = nil, nil
	if c.conn != nil {
		c.conn.Close()
	}
	if c.flushAt != nil {
		c.flushAt.Stop()
	}
	c.mu.Unlock()
	close(c.done)
	p := c.pool
	p.mu.Lock()
	if p.clients[c.key] == c {
		delete(p.clients, c.key)
	}
	p.mu.Unlock()
	for _, done := range queue {
		done(resp.Value{}, err)
	}
}
