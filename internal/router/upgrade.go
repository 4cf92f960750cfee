package router

import (
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/netx"
	"github.com/legateproxy/legate/internal/upstream"
)

// forwardUpgrade proxies an HTTP/1.1 upgrade (WebSocket): the request goes
// to an HTTP/1.1 upstream connection; on 101 both connections are spliced
// until either side closes. Any other response is relayed normally.
func (s *Stream) forwardUpgrade(at *attempt) {
	a := s.Route.Action
	s.prepareUpstreamHeaders(at, a)
	s.Info.UpstreamRequestAttemptCount = 1
	h := s.pick(at)
	if h == nil {
		at.cl.Stats.CxNoneHealthy.Inc()
		at.fail = failNoHealthy
		s.finishFailure(at)
		return
	}
	at.host = h
	s.Info.UpstreamHost = h.Address
	at.cl.Stats.RqTotal.Inc()
	h.HostStarted()
	ex := at.cl.Open(h, upstream.HTTP1)
	s.Req.Map.Set("upgrade", s.Upgrade)
	at.ureq = upstream.Request{Method: s.Req.Method, Path: at.path, Authority: at.authority, Headers: &s.Req.Map,
		Upgrade: s.Upgrade, Deadline: at.deadline, SNI: s.upstreamSNI(at), ProxyProtocol: s.proxyProtocol(at)}
	at.sentAt = time.Now()
	if err := ex.Send(&at.ureq, &at.head); err != nil {
		ex.Close(false)
		at.fail, at.failErr = s.failOf(at, err, at.deadline)
		h.HostFinished(false, at.fail == failTimeout)
		s.finishFailure(at)
		return
	}
	if at.head.Status != 101 {
		at.ex = ex
		s.relayResponse(at)
		return
	}
	// Switch protocols: 101 to the client, then splice.
	s.Resp.Status = 101
	s.Resp.Map.CopyFrom(&at.head.Headers)
	headers.StripHopByHop(&s.Resp.Map)
	s.finishUpstreamHeaders(at)
	s.Resp.Map.Del("date")
	s.ds.ResponseStarted()
	if !s.cfg.NoDynamicStats {
		at.cl.Stats.ChargeCode(101)
	}
	s.cfg.Stats.RqStatus.Inc(101)
	if err := s.ds.WriteHead(101, &s.Resp.Map, 0, false); err != nil {
		ex.Close(false)
		h.HostFinished(false, false)
		return
	}
	s.ds.Flush()
	down, buffered, ok := s.ds.Hijack()
	if !ok {
		ex.Close(false)
		h.HostFinished(false, false)
		return
	}
	st := s.cfg.Stats
	st.CxUpgradesTotal.Inc()
	st.CxUpgradesActive.Inc()
	defer st.CxUpgradesActive.Dec()
	up, upBuffered, _ := ex.Hijack()
	sent, recv := netx.Splice(down, buffered, up, upBuffered, s.cfg.StreamIdleTimeout)
	s.Info.BytesReceived += sent
	s.Info.BytesSent += recv
	s.ds.CloseConnection()
	s.ds.BodyConsumed()
	ex.Close(false) // the spliced connection is not reused
	h.HostFinished(true, false)
}
