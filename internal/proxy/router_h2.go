package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// h2Attempt holds the state of an HTTP/2 upstream exchange.
type h2Attempt struct {
	resp   *http.Response
	cancel context.CancelFunc
}

// attemptH2 sends the request over the cluster's HTTP/2 connection.
func (s *stream) attemptH2(at *attempt, deadline time.Time) {
	// The client's context: a client that resets its stream resets the
	// upstream one at once, as Envoy.
	ctx, cancel := context.WithCancel(s.ds.context())
	if !deadline.IsZero() {
		cancel()
		ctx, cancel = context.WithDeadline(s.ds.context(), deadline)
	}
	req := &http.Request{
		Method:     s.req.Method,
		URL:        &url.URL{Scheme: "http", Host: at.host.Address, Opaque: at.path},
		Host:       at.authority,
		Header:     make(http.Header, s.req.Map.Len()),
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
	}
	if strings.HasPrefix(at.path, "*") {
		req.URL.Opaque = ""
		req.URL.Path = "*"
	}
	for _, f := range s.req.Map.Fields() {
		if f.Name == "te" && f.Value != "trailers" {
			continue
		}
		req.Header[f.Name] = append(req.Header[f.Name], f.Value)
	}
	switch at.bodyMode {
	case bodyBuffered:
		req.Body = io.NopCloser(bytes.NewReader(at.body))
		req.ContentLength = int64(len(at.body))
	case bodyStream:
		s.bodyConsumed = true
		var r io.Reader = readerFunc(s.countingRead)
		if len(at.body) > 0 {
			r = io.MultiReader(bytes.NewReader(at.body), r)
		}
		req.Body = io.NopCloser(r)
		req.ContentLength = s.bodyLength()
		if req.ContentLength < 0 {
			req.ContentLength = -1
		}
		// Request trailers (gRPC client streaming rarely has them) are
		// announced so the transport sends them after the body.
		req.Trailer = http.Header{}
		req.Body = &trailerBody{r: r, s: s, tr: req.Trailer}
	default:
		req.Body = http.NoBody
	}
	req = req.WithContext(ctx)
	at.sentAt = time.Now()
	if s.info.FirstUpstreamTxByte == 0 {
		s.info.FirstUpstreamTxByte = s.info.Since()
	}
	resp, err := at.cl.RoundTripH2(req)
	if err != nil {
		cancel()
		var ce *upstream.ConnectError
		switch {
		case errors.As(err, &ce):
			at.fail, at.failErr = failConnect, err
		case ctx.Err() != nil || isTimeout(err):
			at.fail = s.timeoutKind(at, deadline)
		case errors.Is(err, errDownstreamProtocol):
			at.fail, at.failErr = failDownstreamProtocol, err
		case errors.Is(err, errDownstream):
			at.fail = failDownstream
		default:
			at.fail, at.failErr = failReset, err
		}
		return
	}
	if s.info.FirstUpstreamRxByte == 0 {
		s.info.FirstUpstreamRxByte = s.info.Since()
	}
	at.head.Reset()
	at.head.Status = resp.StatusCode
	for k, vs := range resp.Header {
		lk := headers.Lower(k)
		for _, v := range vs {
			at.head.Headers.Add(lk, v)
		}
	}
	at.head.ContentLength = resp.ContentLength
	at.h2 = &h2Attempt{resp: resp, cancel: cancel}
}

// countingRead reads the downstream body and counts it.
func (s *stream) countingRead(p []byte) (int, error) {
	n, err := s.readBody(p)
	s.info.BytesReceived += uint64(n)
	if err != nil && err != io.EOF {
		s.closeConn = true
		var pe *http1.ProtocolError
		if errors.As(err, &pe) {
			return n, &downstreamProtocolError{pe}
		}
		s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
		return n, errDownstream
	}
	return n, err
}

// trailerBody copies the downstream request trailers into the upstream
// request once the body ends.
type trailerBody struct {
	r  io.Reader
	s  *stream
	tr http.Header
}

func (t *trailerBody) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		if rt := t.s.ds.reqTrailers(); rt != nil {
			for _, f := range rt.Fields() {
				t.tr[f.Name] = append(t.tr[f.Name], f.Value)
			}
		}
	}
	return n, err
}

func (t *trailerBody) Close() error { return nil }

// relayH2 writes an HTTP/2 upstream response to the client.
func (s *stream) relayH2(at *attempt) {
	h := at.h2
	defer h.cancel()
	resp := h.resp
	defer resp.Body.Close()
	s.resp.Status = resp.StatusCode
	// As Envoy, %RESPONSE_CODE_DETAILS% of a proxied response.
	s.info.ResponseCodeDetails = "via_upstream"
	s.resp.Map.CopyFrom(&at.head.Headers)
	if s.newCookie != "" {
		s.resp.Add("set-cookie", s.newCookie)
	}
	stripHopByHop(&s.resp.Map)
	s.finishUpstreamHeaders(at)
	length := resp.ContentLength
	if s.req.Method == "HEAD" || resp.StatusCode == 204 || resp.StatusCode == 304 {
		if length < 0 {
			length = 0
		}
	}
	noBody := length == 0 && len(resp.Trailer) == 0
	s.respStarted = true
	s.info.FirstDownstreamTxByte = s.info.Since()
	at.cl.Stats.RqStatus.Inc(resp.StatusCode)
	s.cfg.stats.rqStatus.Inc(resp.StatusCode)
	if err := s.encodeHead(length, noBody && s.req.Method != "HEAD"); err != nil {
		if !errors.Is(err, errReplaced) {
			s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
		}
		at.host.HostFinished(false, false)
		return
	}
	ok := true
	if !noBody {
		ok = s.copyBody(resp.Body, length < 0, at)
	}
	var trailers *headers.Map
	if ok && len(resp.Trailer) > 0 {
		var tm headers.Map
		for k, vs := range resp.Trailer {
			lk := headers.Lower(k)
			for _, v := range vs {
				tm.Add(lk, v)
			}
		}
		trailers = &tm
		s.info.RespTrailers = &tm
	}
	s.info.LastUpstreamRxByte = s.info.Since()
	if !ok {
		s.closeConn = true
	}
	s.encodeFinish(trailers)
	s.info.LastDownstreamTxByte = s.info.Since()
	at.cl.Stats.RqTime.Record(float64(time.Since(at.sentAt).Microseconds()) / 1000)
	at.host.HostFinished(ok && resp.StatusCode < 500, false)
	s.drainRequestBody()
}
