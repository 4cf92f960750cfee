package proxy

import (
	"net"
	"sync"
	"time"

	"github.com/legateproxy/legate/internal/upstream"
)

// forwardUpgrade proxies an HTTP/1.1 upgrade (WebSocket): the request goes
// to an HTTP/1.1 upstream connection; on 101 both connections are spliced
// until either side closes. Any other response is relayed normally.
func (s *stream) forwardUpgrade(at *attempt) {
	a := s.rt.Action
	s.prepareUpstreamHeaders(at, a)
	s.info.UpstreamRequestAttemptCount = 1
	h := at.cl.Pick(&at.lb)
	if h == nil {
		at.cl.Stats.CxNoneHealthy.Inc()
		at.fail = failNoHealthy
		s.finishFailure(at)
		return
	}
	at.host = h
	s.info.UpstreamHost = h.Address
	at.cl.Stats.RqTotal.Inc()
	h.HostStarted()
	ex := at.cl.Open(h, upstream.HTTP1)
	s.req.Map.Set("upgrade", s.upgrade)
	at.ureq = upstream.Request{Method: s.req.Method, Path: at.path, Authority: at.authority, Headers: &s.req.Map,
		Upgrade: s.upgrade, Deadline: at.deadline, SNI: s.upstreamSNI(at)}
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
	s.resp.Status = 101
	s.resp.Map.CopyFrom(&at.head.Headers)
	stripHopByHop(&s.resp.Map)
	s.finishUpstreamHeaders(at)
	s.resp.Map.Del("date")
	s.respStarted = true
	at.cl.Stats.RqStatus.Inc(101)
	s.cfg.stats.rqStatus.Inc(101)
	if err := s.ds.writeHead(101, &s.resp.Map, 0, false); err != nil {
		ex.Close(false)
		h.HostFinished(false, false)
		return
	}
	s.ds.flush()
	down, buffered, ok := s.ds.hijack()
	if !ok {
		ex.Close(false)
		h.HostFinished(false, false)
		return
	}
	st := s.cfg.stats
	st.cxUpgradesTotal.Inc()
	st.cxUpgradesActive.Inc()
	defer st.cxUpgradesActive.Dec()
	up, upBuffered, _ := ex.Hijack()
	sent, recv := splice(down, buffered, up, upBuffered, s.cfg.streamIdleTimeout)
	s.info.BytesReceived += sent
	s.info.BytesSent += recv
	s.closeConn = true
	s.bodyConsumed = true
	ex.Close(false) // the spliced connection is not reused
	h.HostFinished(true, false)
}

// splice copies bytes both ways until one side closes; idle bounds how long
// a direction may stay silent (0 = no limit). It returns the bytes sent
// downstream→upstream and upstream→downstream.
func splice(down net.Conn, downBuf []byte, up net.Conn, upBuf []byte, idle time.Duration) (uint64, uint64) {
	var wg sync.WaitGroup
	var toUp, toDown uint64
	pipe := func(dst, src net.Conn, pre []byte, n *uint64) {
		defer wg.Done()
		if len(pre) > 0 {
			if _, err := dst.Write(pre); err != nil {
				src.Close()
				return
			}
			*n += uint64(len(pre))
		}
		buf := make([]byte, 16*1024)
		for {
			if idle > 0 {
				src.SetReadDeadline(time.Now().Add(idle))
			}
			k, err := src.Read(buf)
			if k > 0 {
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
				*n += uint64(k)
			}
			if err != nil {
				break
			}
		}
		// Half-close when possible, so the peer sees EOF; else close.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		// The other direction ends soon after: give the peer a moment to
		// close its side too.
		dst.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	wg.Add(2)
	go pipe(up, down, downBuf, &toUp)
	pipe(down, up, upBuf, &toDown)
	wg.Wait()
	down.Close()
	up.Close()
	return toUp, toDown
}
