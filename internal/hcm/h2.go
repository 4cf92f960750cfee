package hcm

import (
	"context"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/overload"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/legateproxy/legate/internal/headers"
)

// h2Server serves HTTP/2 (cleartext by prior knowledge, or over TLS with
// ALPN h2) for one filter chain, with golang.org/x/net/http2 as the codec.
type h2Server struct {
	cfg *hcmConfig
}

// h2Conn is the codec of one connection: x/net's graceful shutdown
// (GOAWAY) applies to every connection of one http2.Server, so each
// connection gets its own, and a drain — a listener update of its chain,
// max_connection_duration, /drain_listeners — reaches exactly the
// connections it is for, as Envoy drains connection by connection.
type h2Conn struct {
	srv      *http2.Server
	base     *http.Server
	shutdown sync.Once
}

func newH2Server(cfg *hcmConfig) *h2Server {
	return &h2Server{cfg: cfg}
}

func newH2Conn(cfg *hcmConfig) *h2Conn {
	g := &h2Conn{}
	g.srv = &http2.Server{
		MaxConcurrentStreams:         cfg.h2MaxConcurrentStreams,
		MaxUploadBufferPerStream:     int32(max(cfg.h2InitialStreamWindow, 65535)),
		MaxUploadBufferPerConnection: int32(max(cfg.h2InitialConnWindow, 1<<20)),
		// reduce_timeouts applies when the connection starts (x/net's
		// server takes one idle timeout per connection).
		IdleTimeout:      cfg.ov.Scale(overload.ConnIdle, cfg.idleTimeout),
		MaxReadFrameSize: 1 << 20,
	}
	// The guard applies max_request_headers_kb and max_headers_count to
	// each header block (a stream reset, as Envoy's codec); x/net's own
	// limit sits above them so that its 431 never pre-empts that.
	limits := h2GuardLimits(cfg)
	g.base = &http.Server{MaxHeaderBytes: limits.codecMaxHeaderBytes()}
	// ConfigureServer registers graceful shutdown (GOAWAY) with base.
	http2.ConfigureServer(g.base, g.srv)
	return g
}

// drain sends GOAWAY to the connection, once: its streams finish, new ones
// are refused, and what is still open after the drain timeout is closed
// (Envoy's drain sequence).
func (h *h2Server) drain(g *h2Conn, conn net.Conn) {
	g.shutdown.Do(func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), h.cfg.drainTimeout)
			defer cancel()
			if g.base.Shutdown(ctx) != nil {
				conn.Close()
			}
		}()
	})
}

var h2Streams = sync.Pool{New: func() any { return &h2stream{} }}

func (h *h2Server) serve(conn net.Conn, cs *connState, d *listener.Context, tc *listener.Conn) {
	g := newH2Conn(h.cfg)
	tc.SetDrain(func() {
		cs.draining.Store(true)
		h.drain(g, conn)
	})
	defer tc.SetDrain(nil)
	if d := h.cfg.ov.Scale(overload.ConnMax, h.cfg.maxConnDuration); d > 0 {
		// max_connection_duration: the connection is drained (GOAWAY, then
		// closed after the drain timeout), as Envoy does for HTTP/2.
		t := time.AfterFunc(time.Until(cs.tc.Start.Add(d)), func() {
			h.cfg.stats.cxMaxDuration.Inc()
			cs.draining.Store(true)
			h.drain(g, conn)
		})
		defer t.Stop()
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs := h2Streams.Get().(*h2stream)
		hs.w, hs.r = w, r
		s := &hs.st
		s.cfg, s.conn, s.ds, s.d = h.cfg, cs, hs, d
		s.req.Method = r.Method
		s.req.Authority = r.Host
		s.req.Path = r.RequestURI
		if r.Method == "CONNECT" && r.Header.Get(":protocol") == "" {
			// RFC 9113 §8.5: a CONNECT has :authority and no :path (x/net
			// gives the authority as the request URI, as HTTP/1 would).
			s.req.Path = ""
		}
		s.req.Scheme = cs.scheme()
		for k, vs := range r.Header {
			lk := headers.Lower(k)
			for _, v := range vs {
				s.req.Map.Add(lk, v)
			}
		}
		if len(r.Trailer) > 0 {
			// x/net moves the request's Trailer field into r.Trailer's
			// keys; the field goes on to the upstream as the client sent
			// it (an HTTP/2 upstream needs it to send the trailers on).
			names := make([]string, 0, len(r.Trailer))
			for k := range r.Trailer {
				names = append(names, headers.Lower(k))
			}
			sort.Strings(names)
			s.req.Map.Add("trailer", strings.Join(names, ", "))
		}
		h.cfg.stats.rqHTTP2.Inc()
		s.serve()
		ovReset := s.overloadWasReset()
		s.reset()
		s.cfg, s.conn, s.ds, s.d = nil, nil, nil, nil
		hs.w, hs.r, hs.trailers = nil, nil, headers.Map{}
		h2Streams.Put(hs)
		if ovReset {
			// The overload manager reset the stream (overload_reset.go):
			// x/net answers a handler aborted so with RST_STREAM.
			panic(http.ErrAbortHandler)
		}
	})
	// The flood guard sits between the connection and the codec.
	limits := h2GuardLimits(h.cfg)
	if rt := d.Runtime; rt != nil {
		snap := rt.Snapshot()
		limits.prematureTotal = snap.Integer("overload.premature_reset_total_stream_count", limits.prematureTotal)
		limits.prematureLifetime = time.Duration(snap.Integer("overload.premature_reset_min_stream_lifetime_seconds", uint64(limits.prematureLifetime/time.Second))) * time.Second
	}
	guard := newH2Guard(conn, limits, h.cfg.h2Stats)
	g.srv.ServeConn(guard, &http2.ServeConnOpts{Handler: handler, BaseConfig: g.base})
	guard.wait()
}

// h2GuardLimits are the guard's limits for cfg: http2_protocol_options,
// and the request header limits (max_request_headers_kb,
// common_http_protocol_options.max_headers_count) Envoy's codec applies to
// every header block.
func h2GuardLimits(cfg *hcmConfig) h2Limits {
	l := cfg.h2Limits
	l.maxHeaderBytes = cfg.maxHeaderBytes
	l.maxHeaders = cfg.maxHeadersCount
	return l
}

// h2stream is the downstream side of one HTTP/2 request.
type h2stream struct {
	st       stream
	w        http.ResponseWriter
	r        *http.Request
	trailers headers.Map
	// gone is the router's watch callback while an overload reset can
	// reach the stream (overload_reset.go).
	gone h2gone
}

func (h *h2stream) readBody(p []byte) (int, error) {
	n, err := h.r.Body.Read(p)
	if err == io.EOF {
		for k, vs := range h.r.Trailer {
			lk := headers.Lower(k)
			for _, v := range vs {
				h.trailers.Add(lk, v)
			}
		}
	}
	return n, err
}

func (h *h2stream) bodyLength() int64 {
	if h.r.Body == nil || h.r.Body == http.NoBody {
		return 0
	}
	if h.r.ContentLength >= 0 {
		return h.r.ContentLength
	}
	return -1
}

func (h *h2stream) reqTrailers() *headers.Map { return &h.trailers }

func (h *h2stream) protocol() string { return "HTTP/2" }

func (h *h2stream) context() context.Context { return h.r.Context() }

// watchClose is not needed on HTTP/2: a reset cancels the context. A
// stream with a buffer account keeps gone for an overload reset.
func (h *h2stream) watchClose(gone func()) func() {
	if h.st.acct == nil {
		return noStop
	}
	return h.watchGone(gone)
}

func noStop() {}

// ownValues returns the fields' values as strings that own their bytes:
// one allocation holds them all. Values parsed from an HTTP/1 upstream
// point into that connection's read buffer, which is reused once the
// upstream connection is released — but x/net/http2 encodes the HEADERS
// (and trailers) when the handler ends, after that.
func ownValues(fields []headers.Field) func(i int) string {
	total := 0
	for _, f := range fields {
		total += len(f.Value)
	}
	var b strings.Builder
	b.Grow(total)
	for _, f := range fields {
		b.WriteString(f.Value)
	}
	all := b.String()
	offs := make([]int, len(fields)+1)
	for i, f := range fields {
		offs[i+1] = offs[i] + len(f.Value)
	}
	return func(i int) string { return all[offs[i]:offs[i+1]] }
}

func (h *h2stream) writeHead(status int, m *headers.Map, length int64, endStream bool) error {
	hdr := h.w.Header()
	fields := m.Fields()
	value := ownValues(fields)
	for i, f := range fields {
		if f.Name == "content-length" || f.Name == "connection" || f.Name == "transfer-encoding" || f.Name == "keep-alive" {
			continue
		}
		// Canonical keys: net/http's HTTP/2 server looks up Content-Type,
		// Content-Length and Date by them and would add its own otherwise.
		k := http.CanonicalHeaderKey(f.Name)
		hdr[k] = append(hdr[k], value(i))
	}
	if _, ok := hdr["Content-Type"]; !ok {
		hdr["Content-Type"] = nil // no sniffing: Envoy never invents a content-type
	}
	if length >= 0 && status != 204 && status != 304 {
		hdr["Content-Length"] = []string{strconv.FormatInt(length, 10)}
	}
	if status < 200 {
		status = 502 // informational and upgrade responses do not exist in HTTP/2
	}
	h.w.WriteHeader(status)
	return nil
}

func (h *h2stream) writeBody(p []byte) error {
	_, err := h.w.Write(p)
	return err
}

func (h *h2stream) finish(trailers *headers.Map) error {
	if trailers != nil {
		hdr := h.w.Header()
		fields := trailers.Fields()
		value := ownValues(fields)
		for i, f := range fields {
			k := http.TrailerPrefix + f.Name // a new string
			hdr[k] = append(hdr[k], value(i))
		}
	}
	return nil
}

func (h *h2stream) flush() error {
	if f, ok := h.w.(http.Flusher); ok {
		f.Flush()
	}
	return nil
}

func (h *h2stream) hijack() (net.Conn, []byte, bool) { return nil, nil, false }

// startTunnel: an HTTP/2 stream has no per-request deadlines to stop.
func (h *h2stream) startTunnel() {}

// clientGone: the stream's context ends with a reset or the connection.
func (h *h2stream) clientGone() bool { return h.r.Context().Err() != nil }

// abortRead closes the request body, which makes a blocked Read return.
func (h *h2stream) abortRead() {
	if h.r.Body != nil {
		h.r.Body.Close()
	}
}
