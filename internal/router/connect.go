package router

import (
	"errors"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/proxyproto"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// This file is CONNECT (RFC 9110 §9.3.6; over HTTP/2 RFC 9113 §8.5) and
// Envoy's TCP upstream of the router. A CONNECT whose route has no
// connect_config is proxied: the request goes to the cluster as a CONNECT
// (HTTP/1.1 or HTTP/2) and, once the upstream answers 2xx, the streams'
// payloads are relayed both ways. With connect_config the proxy
// terminates it: a TCP connection to the host, a synthesized 200, and the
// payload relayed as TCP (so is a POST with allow_post, and every request
// to a cluster whose upstream_config is envoy.upstreams.http.tcp).
//
// A tunnel lasts until both sides ended: HTTP/2 END_STREAM and a TCP FIN
// are half-closes, passed on as such; an HTTP/1.1 CONNECT has no
// half-close, so when either side closes, the tunnel ends (after
// tunnelLinger for the bytes in flight), as Envoy closes the connection.
// The route timeout bounds only the wait for the tunnel to be established
// (a tunnel has no end of request for it to run from, Envoy's
// onRequestComplete); the idle timeout (route idle_timeout, else
// stream_idle_timeout) bounds the tunnel itself.

// tunnelLinger is how long the other direction of an HTTP/1.1 CONNECT
// tunnel lives on once one side closed: the connection then closes, as
// Envoy's does, but what was already on its way still arrives (the same
// grace netx.Splice gives upgrades).
const tunnelLinger = 2 * time.Second

// tcpUpstream reports whether the request goes to the cluster as TCP, as
// Envoy's router picks its connection pool: envoy.upstreams.http.tcp
// always, envoy.upstreams.http.http never, and the generic pool for a
// CONNECT (or a POST with allow_post) whose route has a connect_config.
func (s *Stream) tcpUpstream(cl *upstream.Cluster) bool {
	switch cl.UpstreamPool {
	case upstream.PoolTCP:
		return true
	case upstream.PoolHTTP:
		return false
	}
	c := s.Route.Action.Connect
	if c == nil {
		return false
	}
	return s.Req.Method == "CONNECT" || (c.AllowPost && s.Req.Method == "POST")
}

// tunnelError says which side of a tunnel failed.
type tunnelError struct {
	downstream bool // the client's side (a write to it, a read from it)
	err        error
}

func (e *tunnelError) Error() string { return e.err.Error() }
func (e *tunnelError) Unwrap() error { return e.err }

// forwardTunnel opens the tunnel (TCP, or a CONNECT to the cluster) and
// relays it.
func (s *Stream) forwardTunnel(at *attempt, tcp bool) {
	a := s.Route.Action
	s.prepareUpstreamHeaders(at, a)
	s.ds.BodyConsumed()
	s.Info.UpstreamRequestAttemptCount = 1
	s.Info.LastDownstreamRxByte = s.Info.Since()
	h := s.pick(at)
	if h == nil {
		at.cl.Stats.CxNoneHealthy.Inc()
		at.fail = failNoHealthy
		s.finishFailure(at)
		return
	}
	at.host = h
	s.Info.UpstreamHost = h.Address
	s.Info.UpstreamHostname = h.Hostname()
	at.cl.Stats.RqTotal.Inc()
	h.HostStarted()

	// The route timeout bounds establishing the tunnel; the idle timeout
	// too, when it is the nearer (a 408 then, as Envoy's stream idle
	// timeout before the response).
	deadline, idleBound := at.deadline, false
	if idle := s.idleTimeout(); idle > 0 {
		if d := time.Now().Add(idle); deadline.IsZero() || d.Before(deadline) {
			deadline, idleBound = d, true
		}
	}
	opts := upstream.ConnOptions{SNI: s.upstreamSNI(at), ProxyProtocol: s.proxyProtocol(at)}
	at.sentAt = time.Now()
	s.Info.FirstUpstreamTxByte = s.Info.Since()
	var t *upstream.Tunnel
	var err error
	if tcp {
		t, err = at.cl.DialTunnel(h, deadline, opts)
		if err == nil && a.Connect != nil && a.Connect.ProxyProtocol != 0 {
			// connect_config.proxy_protocol_config: the downstream
			// connection's addresses go first, as Envoy's TcpUpstream
			// writes them with the request headers.
			_, err = t.Write(s.connectProxyHeader(a.Connect.ProxyProtocol))
			if err != nil {
				t.Close()
				err = &upstream.ExchangeError{Kind: upstream.FailReset, Err: err}
			}
		}
	} else {
		proto := at.cl.Protocol
		if proto == upstream.UseDownstream {
			proto = upstream.HTTP1
			if s.Info.Protocol == "HTTP/2" {
				proto = upstream.HTTP2
			}
		}
		t, err = at.cl.OpenTunnel(h, proto, &upstream.TunnelRequest{Method: s.Req.Method, Authority: at.authority,
			Path: at.path, Headers: &s.Req.Map, Deadline: deadline, SNI: opts.SNI, ProxyProtocol: opts.ProxyProtocol})
	}
	if err != nil {
		at.fail, at.failErr = s.failOf(at, err, deadline)
		if at.fail == failTimeout && idleBound {
			at.fail = failIdle
		}
		switch at.fail {
		case failConnect:
			h.OutlierResult(upstream.ResultConnectFailed)
		case failTimeout, failIdle:
			h.OutlierResult(upstream.ResultTimeout)
		case failReset, failProtocol:
			h.OutlierResult(upstream.ResultReset)
		}
		h.HostFinished(false, at.fail == failTimeout)
		s.finishFailure(at)
		return
	}
	defer t.Close()
	s.Info.UpstreamLocalAddress = t.LocalAddr
	s.Info.UpstreamBytesSent += uint64(t.HeadSent)
	s.Info.UpstreamBytesReceived += uint64(t.HeadReceived)
	s.Info.FirstUpstreamRxByte = s.Info.Since()
	s.Info.ResponseCodeDetails = "via_upstream"
	status := 200 // what Envoy's TCP upstream synthesizes
	if !tcp {
		status = t.Status
		s.Resp.Map.CopyFrom(&t.Header)
		headers.StripHopByHop(&s.Resp.Map)
		if status < 200 || status >= 300 {
			h.OutlierResult(status)
			s.relayRefusal(at, t)
			return
		}
		// RFC 9110 §9.3.6: a 2xx to CONNECT has no content framing.
		s.Resp.Map.Del("content-length")
		s.Resp.Map.Del("transfer-encoding")
	}
	h.OutlierResult(status)
	s.Resp.Status = status
	s.finishUpstreamHeaders(at)
	s.ds.ResponseStarted()
	s.Info.FirstDownstreamTxByte = s.Info.Since()
	if !s.cfg.NoDynamicStats {
		at.cl.Stats.ChargeCode(status)
	}
	s.cfg.Stats.RqStatus.Inc(status)
	s.ds.StartTunnel()
	err = s.ds.EncodeHead(-1, false)
	if err == nil {
		err = s.ds.EncodeFlush()
	}
	if err != nil {
		if !errors.Is(err, ErrReplaced) {
			s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
		}
		s.ds.CloseConnection()
		h.HostFinished(false, false)
		return
	}
	if s.Upgrade == "connect" {
		st := s.cfg.Stats
		st.CxUpgradesTotal.Inc()
		st.CxUpgradesActive.Inc()
		defer st.CxUpgradesActive.Dec()
	}
	ok := s.relayTunnel(t, s.Req.Method == "CONNECT" && s.Info.Protocol != "HTTP/2")
	s.Info.LastUpstreamRxByte = s.Info.Since()
	s.Info.LastDownstreamTxByte = s.Info.Since()
	if !s.cfg.NoDynamicStats {
		at.cl.Stats.RqTime.Record(float64(time.Since(at.sentAt).Microseconds()) / 1000)
	}
	h.HostFinished(ok, false)
}

// connectProxyHeader is the PROXY protocol header (version 1 or 2) of the
// downstream connection, as Envoy's generateProxyProtoHeader writes it
// for connect_config: its remote and local addresses.
func (s *Stream) connectProxyHeader(version uint8) []byte {
	src := s.Info.DownstreamConnRemote
	if !src.IsValid() {
		src = s.Info.DownstreamDirectRemote
	}
	dst := s.Info.DownstreamLocal
	if version == 1 {
		return proxyproto.AppendV1(nil, src, dst)
	}
	b, _ := proxyproto.AppendV2(nil, src, dst, nil)
	return b
}

// relayRefusal relays an upstream's answer that does not establish the
// tunnel (a 407, a 503…) as a response.
func (s *Stream) relayRefusal(at *attempt, t *upstream.Tunnel) {
	status := t.Status
	s.Resp.Status = status
	length, end := int64(-1), status == 204 || status == 304
	if v := t.Header.Get("content-length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			length, end = n, n == 0
		}
	}
	s.finishUpstreamHeaders(at)
	s.ds.ResponseStarted()
	if !s.cfg.NoDynamicStats {
		at.cl.Stats.ChargeCode(status)
	}
	s.cfg.Stats.RqStatus.Inc(status)
	if err := s.ds.EncodeHead(length, end); err != nil {
		if !errors.Is(err, ErrReplaced) {
			s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
		}
		at.host.HostFinished(false, false)
		return
	}
	ok := true
	if !end {
		ok = s.copyBody(t, length < 0, at)
	}
	if !ok {
		s.ds.CloseConnection()
	}
	s.ds.EncodeFinish(nil)
	// The CONNECT's payload was never relayed: the connection cannot be
	// reused for another request.
	s.ds.CloseConnection()
	at.host.HostFinished(ok && status < 500, false)
}

// relayTunnel copies the tunnel's bytes both ways until both sides ended,
// one failed, or the idle timeout passed; h1Connect says the client's
// side is an HTTP/1.1 CONNECT (no half-close). It reports whether the
// tunnel ended cleanly.
func (s *Stream) relayTunnel(t *upstream.Tunnel, h1Connect bool) bool {
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	touch := func() { last.Store(time.Now().UnixNano()) }
	upDone := make(chan error, 1)
	downDone := make(chan error, 1)
	go func() { upDone <- s.tunnelToClient(t, touch) }()
	go func() { downDone <- s.tunnelToUpstream(t, touch) }()

	idle := s.idleTimeout()
	var idleT *time.Timer
	var idleC <-chan time.Time
	if idle > 0 {
		idleT = time.NewTimer(idle)
		defer idleT.Stop()
		idleC = idleT.C
	}
	var lingerC <-chan time.Time
	// cause is the first failure not brought about by cutting the tunnel
	// on purpose (abort).
	var cause error
	upEnded, downEnded, aborted, timedOut := false, false, false, false
	abort := func() {
		aborted = true
		t.Close()
		s.ds.AbortRead()
	}
	// Once the client ended its side, nothing reads its connection: a
	// probe notices it closing (a reset, a drain's end), which ends the
	// tunnel.
	probe := time.NewTicker(time.Second)
	defer probe.Stop()
	for !upEnded || !downEnded {
		select {
		case <-probe.C:
			if downEnded && !upEnded && !aborted && s.ds.ClientGone() {
				abort()
			}
		case err := <-upDone:
			upEnded = true
			if err == nil {
				// The upstream ended its side: so does the response (HTTP/2
				// END_STREAM, with the upstream's trailers; HTTP/1.1 a FIN).
				s.ds.EncodeFinish(t.Trailers())
			} else if !aborted {
				cause = err
			}
			if downEnded || aborted {
				continue
			}
			switch {
			case err != nil:
				abort()
			case h1Connect:
				lingerC = time.After(tunnelLinger)
			default:
				// An HTTP/2 stream ends with its handler: what the client
				// still sends is refused (x/net's RST_STREAM NO_ERROR).
				abort()
			}
		case err := <-downDone:
			downEnded = true
			if err != nil {
				// A reset or a broken connection: the upstream is reset.
				if !aborted {
					cause = err
					if !upEnded {
						abort()
					}
				}
				continue
			}
			// The client ended its side: half-close towards the upstream.
			t.CloseWrite()
			if h1Connect && !upEnded {
				lingerC = time.After(tunnelLinger)
			}
		case <-lingerC:
			lingerC = nil
			abort()
		case <-idleC:
			if since := time.Since(time.Unix(0, last.Load())); since < idle {
				idleT.Reset(idle - since)
				continue
			}
			idleC = nil
			timedOut = true
			abort()
		}
	}
	switch {
	case timedOut:
		s.cfg.Stats.RqIdleTimeout.Inc()
		s.Info.SetFlag(streaminfo.StreamIdleTimeout)
		s.ds.CloseConnection()
		return false
	case cause == nil:
		return true
	case isDownstreamErr(cause):
		s.Info.SetFlag(streaminfo.DownstreamConnectionTermination)
	default:
		s.Info.SetFlag(streaminfo.UpstreamConnectionTermination)
		s.cfg.Stats.RqReset.Inc()
	}
	s.ds.CloseConnection()
	return false
}

func isDownstreamErr(err error) bool {
	var te *tunnelError
	return errors.As(err, &te) && te.downstream
}

// tunnelToClient copies what the upstream sends to the client, flushing
// as it comes; nil when the upstream ended its side.
func (s *Stream) tunnelToClient(t *upstream.Tunnel, touch func()) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := t.Read(buf)
		if n > 0 {
			touch()
			s.Info.BytesSent += uint64(n)
			if werr := s.ds.EncodeBody(buf[:n]); werr != nil {
				return &tunnelError{downstream: true, err: werr}
			}
			if werr := s.ds.EncodeFlush(); werr != nil {
				return &tunnelError{downstream: true, err: werr}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &tunnelError{err: err}
		}
	}
}

// tunnelToUpstream copies what the client sends to the upstream; nil when
// the client ended its side.
func (s *Stream) tunnelToUpstream(t *upstream.Tunnel, touch func()) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := s.ds.ReadBody(buf)
		if n > 0 {
			touch()
			s.Info.BytesReceived += uint64(n)
			if _, werr := t.Write(buf[:n]); werr != nil {
				return &tunnelError{err: werr}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return &tunnelError{downstream: true, err: err}
		}
	}
}
