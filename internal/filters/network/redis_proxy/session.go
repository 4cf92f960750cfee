package redis_proxy

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/filters/network/redis_proxy/resp"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/upstream"
)

// Envoy's reply strings (command_splitter.h ResponseValues, proxy_filter.cc).
const (
	replyInvalidRequest   = "invalid request"
	replyNoUpstreamHost   = "no upstream host"
	replyUpstreamFailure  = "upstream failure"
	replyUpstreamProtocol = "upstream protocol error"
	replyAuthRequired     = "NOAUTH Authentication required."
	replyProtocolError    = "downstream protocol error"
	replyFaultError       = "Fault Injected: Error"
)

// pending is one downstream request's reply slot; replies are written in
// request order, whatever order they complete in.
type pending struct {
	ch   chan resp.Value
	quit bool // QUIT: close once this reply is written
}

func (p *pending) complete(v resp.Value) { p.ch <- v }

// session is one downstream connection.
type session struct {
	cfg     *proxyConfig
	allowed bool // authenticated, or no auth configured
	out     chan *pending
	tx      txState
}

// txState is a MULTI transaction (Envoy's Transaction): its commands go
// to the host of its first key, on a connection of its own.
type txState struct {
	active bool
	key    string
	client *client
}

// countingConn counts the bytes a downstream connection reads and writes
// (downstream_cx_rx_bytes_total, downstream_cx_tx_bytes_total).
type countingConn struct {
	net.Conn
	cfg *proxyConfig
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.cfg.st.rxBytes.Add(uint64(n))
	return n, err
}

func (c countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.cfg.st.txBytes.Add(uint64(n))
	return n, err
}

// ServeConn proxies one client connection until it closes or QUITs.
func (c *proxyConfig) ServeConn(tc *listener.Conn) {
	c.st.cxTotal.Inc()
	c.st.cxActive.Inc()
	defer c.st.cxActive.Dec()
	c.pool.acquire()
	defer c.pool.release()
	conn := countingConn{tc.Conn, c}
	s := &session{cfg: c, allowed: len(c.passwords) == 0 && c.username == "", out: make(chan *pending, 256)}
	var draining sync.Once
	drain := make(chan struct{})
	tc.SetDrain(func() { draining.Do(func() { close(drain) }) })
	defer tc.SetDrain(nil)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.write(conn, drain)
	}()
	r := resp.NewReader(conn)
	for {
		v, err := r.Read()
		if err != nil {
			if errors.Is(err, resp.ErrProtocol) {
				// Envoy answers bytes that are not RESP with an error and
				// closes the connection.
				c.st.cxProtocolError.Inc()
				c.log.Debug("redis downstream protocol error", "remote", tc.Remote, "error", err)
				p := s.start()
				p.quit = true
				p.complete(resp.Err(replyProtocolError))
			}
			break
		}
		p := s.start()
		s.handle(v, p)
		if p.quit {
			break
		}
	}
	close(s.out)
	<-writerDone
	if s.tx.client != nil {
		s.tx.client.fail(errDone)
	}
}

// start queues a reply slot for the next request.
func (s *session) start() *pending {
	s.cfg.st.rqTotal.Inc()
	s.cfg.st.rqActive.Inc()
	p := &pending{ch: make(chan resp.Value, 1)}
	s.out <- p
	return p
}

// write sends the replies in order, flushing when no finished reply is
// waiting behind; after QUIT (or a protocol error) it closes the
// connection, and on a drain it closes once no request is outstanding.
func (s *session) write(conn net.Conn, drain <-chan struct{}) {
	var buf []byte
	closed := false
	for p := range s.out {
		v := <-p.ch
		s.cfg.st.rqActive.Dec()
		if closed {
			continue
		}
		buf = resp.Append(buf, v)
		if len(s.out) > 0 && len(buf) < 64<<10 && !p.quit {
			continue
		}
		if _, err := conn.Write(buf); err != nil {
			closed = true
			conn.Close()
		}
		buf = buf[:0]
		if p.quit {
			closed = true
			conn.Close()
			continue
		}
		select {
		case <-drain:
			if len(s.out) == 0 {
				// Envoy's drain close: between requests, once replies are out.
				s.cfg.st.cxDrainClose.Inc()
				closed = true
				conn.Close()
			}
		default:
		}
	}
}

// handle answers or forwards one request (Envoy's InstanceImpl::makeRequest).
func (s *session) handle(v resp.Value, p *pending) {
	cfg := s.cfg
	if v.Type != resp.Array || len(v.Elems) == 0 {
		cfg.st.invalidRequest.Inc()
		p.complete(resp.Err(replyInvalidRequest))
		return
	}
	args := make([]string, len(v.Elems))
	for i, e := range v.Elems {
		if e.Type != resp.BulkString {
			cfg.st.invalidRequest.Inc()
			p.complete(resp.Err(replyInvalidRequest))
			return
		}
		args[i] = e.Str
	}
	name := strings.ToLower(args[0])
	switch name {
	case "auth":
		if len(args) < 2 {
			cfg.st.invalidRequest.Inc()
			p.complete(resp.Err(replyInvalidRequest))
			return
		}
		if len(args) == 3 {
			p.complete(s.authUser(args[1], args[2]))
		} else {
			p.complete(s.auth(args[1]))
		}
		return
	case "hello":
		// Envoy speaks RESP2 and refuses HELLO as redis before 6 would,
		// so clients fall back to RESP2 (and to AUTH).
		p.complete(resp.Err("ERR unknown command 'HELLO'"))
		return
	}
	if !s.allowed {
		p.complete(resp.Err(replyAuthRequired))
		return
	}
	switch name {
	case "ping":
		p.complete(resp.Simple("PONG"))
		return
	case "echo":
		if len(args) != 2 {
			cfg.st.invalidRequest.Inc()
			p.complete(resp.Err(replyInvalidRequest))
			return
		}
		p.complete(resp.Bulk(args[1]))
		return
	case "time":
		now := time.Now()
		p.complete(resp.Arr(resp.Bulk(strconv.FormatInt(now.Unix(), 10)), resp.Bulk(strconv.FormatInt(now.UnixMicro(), 10))))
		return
	case "quit":
		p.quit = true
		p.complete(resp.Simple("OK"))
		return
	}
	// Every other command names at least one key.
	if len(args) < 2 && name != "multi" && name != "exec" && name != "discard" {
		cfg.st.invalidRequest.Inc()
		p.complete(resp.Err(replyInvalidRequest))
		return
	}
	cmd := cfg.commands[name]
	if cmd == nil {
		cfg.st.unsupportedCommand.Inc()
		p.complete(resp.Err(fmt.Sprintf("unsupported command '%s'", args[0])))
		return
	}
	if s.tx.active || cmd.kind == transaction {
		// In a transaction every command is the transaction's, and counts
		// in MULTI's stats, as Envoy's splitter.
		st := &cmd.st
		if s.tx.active {
			st = &cfg.commands["multi"].st
		}
		s.transaction(name, args, p, st)
		return
	}
	cmd.st.total.Inc()
	start := time.Now()
	reply := p.complete
	f := cfg.faults.pick(name)
	if f != nil && f.delay > 0 {
		// A delay fault holds the reply (of the request or of an error
		// fault) for its delay.
		reply = func(v resp.Value) {
			time.AfterFunc(f.delay, func() {
				cmd.st.delayFault.Inc()
				p.complete(v)
			})
		}
	}
	if f != nil && f.isError {
		cmd.st.errors.Inc()
		cmd.st.errorFault.Inc()
		reply(resp.Err(replyFaultError))
		return
	}
	done := func(v resp.Value, ok bool) {
		if ok {
			cmd.st.success.Inc()
		} else {
			cmd.st.errors.Inc()
		}
		d := time.Since(start)
		if cfg.latencyMicros {
			cmd.st.latency.Record(float64(d.Microseconds()))
		} else {
			cmd.st.latency.Record(float64(d.Milliseconds()))
		}
		reply(v)
	}
	switch cmd.kind {
	case simple:
		s.single(name, args, 1, done)
	case eval:
		// EVAL script numkeys key …: hashed on the first key.
		if len(args) < 4 {
			cmd.st.errors.Inc()
			reply(resp.Err(fmt.Sprintf("wrong number of arguments for '%s' command", args[0])))
			return
		}
		s.single(name, args, 3, done)
	case mget:
		s.fanOut(args[1:], 1, func(kv []string) []string { return []string{"get", kv[0]} }, mergeMGET, done)
	case mset:
		if (len(args)-1)%2 != 0 {
			cmd.st.errors.Inc()
			reply(resp.Err(fmt.Sprintf("wrong number of arguments for '%s' command", args[0])))
			return
		}
		s.fanOut(args[1:], 2, func(kv []string) []string { return []string{"set", kv[0], kv[1]} }, mergeMSET, done)
	case sumKeys:
		s.fanOut(args[1:], 1, func(kv []string) []string { return []string{args[0], kv[0]} }, mergeSum, done)
	}
}

// auth is AUTH password (ProxyFilter::onAuth).
func (s *session) auth(password string) resp.Value {
	switch {
	case len(s.cfg.passwords) == 0:
		return resp.Err("ERR Client sent AUTH, but no password is set")
	case s.checkPassword(password):
		s.allowed = true
		return resp.Simple("OK")
	}
	s.allowed = false
	return resp.Err("ERR invalid password")
}

// authUser is AUTH username password, the ACL form.
func (s *session) authUser(user, password string) resp.Value {
	switch {
	case s.cfg.username == "" && len(s.cfg.passwords) == 0:
		return resp.Err("ERR Client sent AUTH, but no username-password pair is set")
	case s.cfg.username == "" && user == "default" && s.checkPassword(password),
		// Redis 6 ACLs: no username and "default" are the same user.
		user == s.cfg.username && s.checkPassword(password):
		s.allowed = true
		return resp.Simple("OK")
	}
	s.allowed = false
	return resp.Err("WRONGPASS invalid username-password pair")
}

func (s *session) checkPassword(pw string) bool {
	for _, p := range s.cfg.passwords {
		if p == pw {
			return true
		}
	}
	return false
}

// single sends a command to the host of its key, args[keyAt].
func (s *session) single(name string, args []string, keyAt int, done func(resp.Value, bool)) {
	rt, key := s.cfg.router.find(args[keyAt])
	if rt == nil {
		done(resp.Err(replyNoUpstreamHost), false)
		return
	}
	if key != args[keyAt] {
		args = append([]string(nil), args...)
		args[keyAt] = key
	}
	s.send(rt, name, key, resp.Command(args...), func(v resp.Value, err error) {
		if err != nil {
			done(resp.Err(errorReply(err)), false)
			return
		}
		done(v, true)
	})
}

func errorReply(err error) string {
	if errors.Is(err, errNoHost) {
		return replyNoUpstreamHost
	}
	return replyUpstreamFailure
}

var errNoHost = errors.New(replyNoUpstreamHost)

// send sends req for key on rt's cluster (read_command_policy's for
// reads) and to its mirrors, whose replies are dropped.
func (s *session) send(rt *route, name, key string, req resp.Value, done func(resp.Value, error)) {
	ref := rt.cluster
	if rt.readCluster != nil && isRead(name) {
		ref = rt.readCluster
	}
	if !s.sendTo(ref, key, req, done) {
		done(resp.Value{}, errNoHost)
		return
	}
	for _, m := range rt.mirrors {
		if m.excludeRead && isRead(name) {
			continue
		}
		if m.fraction != nil && !m.fraction.Roll() {
			continue
		}
		s.sendTo(m.cluster, key, req, func(resp.Value, error) {})
	}
}

// sendTo picks the host of key in the cluster and queues req on its
// connection; false: no cluster or no host.
func (s *session) sendTo(ref *upstream.Ref, key string, req resp.Value, done func(resp.Value, error)) bool {
	cl := ref.Get()
	if cl == nil {
		return false
	}
	h := cl.Pick(&upstream.LBContext{HashKey: murmur2(hashtag(key, s.cfg.hashtagging)), HasHash: true})
	if h == nil {
		return false
	}
	s.cfg.pool.client(cl, h).send(req, done)
	return true
}

// fanOut sends one request per group of `per` arguments (build makes it
// from the group) and merges the replies in order once all are in.
func (s *session) fanOut(args []string, per int, build func([]string) []string, merge func([]resp.Value) (resp.Value, bool), done func(resp.Value, bool)) {
	n := len(args) / per
	replies := make([]resp.Value, n)
	var mu sync.Mutex
	left := n
	for i := range n {
		group := args[i*per : (i+1)*per]
		finish := func(v resp.Value, err error) {
			if err != nil {
				v = resp.Err(errorReply(err))
			}
			mu.Lock()
			replies[i] = v
			left--
			last := left == 0
			mu.Unlock()
			if last {
				done(merge(replies))
			}
		}
		rt, key := s.cfg.router.find(group[0])
		if rt == nil {
			finish(resp.Value{}, errNoHost)
			continue
		}
		req := build(append([]string{key}, group[1:]...))
		s.send(rt, strings.ToLower(req[0]), key, resp.Command(req...), finish)
	}
}

// mergeMGET is MGETRequest::onChildResponse: each GET's bulk string or
// null in place; an error reply stays an error in its slot; any other
// type is an upstream protocol error.
func mergeMGET(rs []resp.Value) (resp.Value, bool) {
	out := resp.Value{Type: resp.Array, Elems: make([]resp.Value, len(rs))}
	ok := true
	for i, r := range rs {
		switch r.Type {
		case resp.BulkString, resp.Null:
			out.Elems[i] = r
		case resp.Error:
			out.Elems[i] = r
			ok = false
		default:
			out.Elems[i] = resp.Err(replyUpstreamProtocol)
			ok = false
		}
	}
	return out, ok
}

// mergeMSET is OK when every SET was, else "finished with N error(s)".
func mergeMSET(rs []resp.Value) (resp.Value, bool) {
	errs := 0
	for _, r := range rs {
		if r.Type != resp.SimpleString || r.Str != "OK" {
			errs++
		}
	}
	if errs > 0 {
		return resp.Err(fmt.Sprintf("finished with %d error(s)", errs)), false
	}
	return resp.Simple("OK"), true
}

// mergeSum adds DEL/EXISTS/TOUCH/UNLINK's integer replies.
func mergeSum(rs []resp.Value) (resp.Value, bool) {
	var total int64
	errs := 0
	for _, r := range rs {
		if r.Type != resp.Integer {
			errs++
			continue
		}
		total += r.Int
	}
	if errs > 0 {
		return resp.Err(fmt.Sprintf("finished with %d error(s)", errs)), false
	}
	return resp.Int(total), true
}

// transaction runs MULTI, EXEC, DISCARD and the commands between them
// (Envoy's TransactionRequest): MULTI is answered locally; the first
// command with a key opens a connection to that key's host and sends
// MULTI there, then every command of the transaction, EXEC or DISCARD
// last, after which the connection closes.
func (s *session) transaction(name string, args []string, p *pending, st *commandStats) {
	cfg := s.cfg
	st.total.Inc()
	if c := cfg.commands[name]; c.kind != simple && c.kind != transaction {
		p.complete(resp.Err(fmt.Sprintf("'%s' command is not supported within transaction", args[0])))
		return
	}
	end := false
	switch name {
	case "multi":
		if s.tx.active {
			p.complete(resp.Err("MULTI calls can not be nested"))
			return
		}
		s.tx.active = true
		p.complete(resp.Simple("OK"))
		return
	case "exec", "discard":
		if !s.tx.active {
			p.complete(resp.Err(strings.ToUpper(name) + " without MULTI"))
			return
		}
		if s.tx.key == "" {
			// Nothing was queued upstream.
			if name == "exec" {
				p.complete(resp.Arr())
			} else {
				p.complete(resp.Simple("OK"))
			}
			s.tx = txState{}
			return
		}
		end = true
	}
	if s.tx.key == "" {
		rt, key := cfg.router.find(args[1])
		var h *upstream.Host
		var cl *upstream.Cluster
		if rt != nil {
			if cl = rt.cluster.Get(); cl != nil {
				h = cl.Pick(&upstream.LBContext{HashKey: murmur2(hashtag(key, cfg.hashtagging)), HasHash: true})
			}
		}
		if h == nil {
			st.errors.Inc()
			p.complete(resp.Err(replyNoUpstreamHost))
			return
		}
		s.tx.key, s.tx.client = key, cfg.pool.dedicated(cl, h)
		s.tx.client.send(resp.Command("MULTI"), func(resp.Value, error) {})
	}
	c := s.tx.client
	c.send(resp.Command(args...), func(v resp.Value, err error) {
		if err != nil {
			st.errors.Inc()
			v = resp.Err(replyUpstreamFailure)
		} else {
			st.success.Inc()
		}
		p.complete(v)
		if end {
			c.fail(errDone) // the transaction's connection is done
		}
	})
	if end {
		s.tx = txState{}
	}
}
