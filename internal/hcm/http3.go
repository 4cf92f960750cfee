package hcm

// HTTP/3 (codec_type HTTP3) on a QUIC listener: quic-go's http3 server is
// the codec, one server per QUIC connection (so a drain's GOAWAY reaches
// exactly that connection, as for HTTP/2). Each request is adapted into
// the same stream, filter manager and router as HTTP/1 and HTTP/2: an
// h3stream is the h2stream adapter (both codecs speak net/http's handler
// interface) with its own protocol name.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/listener"
	"github.com/legateproxy/legate/internal/overload"
	"github.com/legateproxy/legate/internal/stats"
)

// codecHTTP3 is codec_type HTTP3.
const codecHTTP3 = codecHTTP2 + 1

// h3Config is what the HTTP/3 codec adds to a connection manager.
type h3Config struct {
	cxHTTP3, rqHTTP3 *stats.Counter
	cxHTTP3Active    *stats.Gauge
}

// compileHTTP3 checks http3_protocol_options (at path): the fields
// quic-go's server implements.
func compileHTTP3(h *hcmv3.HttpConnectionManager, path string, c *hcmConfig) error {
	o := h.GetHttp3ProtocolOptions()
	if o == nil {
		return nil
	}
	p := config.Join(path, "http3_protocol_options")
	if c.codec != codecHTTP3 {
		// As Envoy: the options configure an HTTP/3 codec, and this
		// connection manager has none (Envoy's HTTP/3 example sets them on
		// its TCP listener too).
		return nil
	}
	if err := config.CheckFields(o, p, "quic_protocol_options", "override_stream_error_on_invalid_http_message"); err != nil {
		return err
	}
	if err := checkH3StreamError(o, p); err != nil {
		return err
	}
	if o.GetQuicProtocolOptions() != nil {
		// The QUIC endpoint belongs to the listener: Envoy reads these
		// from udp_listener_config.quic_options on the downstream side.
		return config.Errorf(config.Join(p, "quic_protocol_options"), "set QUIC options on the listener's udp_listener_config.quic_options.quic_protocol_options")
	}
	return nil
}

// checkH3StreamError checks override_stream_error_on_invalid_http_message
// of http3_protocol_options (at p): quic-go's server answers a malformed
// request by resetting its stream with H3_MESSAGE_ERROR (RFC 9114 section
// 4.1.2), which is the option's true; false, Envoy's closing of the whole
// connection, is refused.
func checkH3StreamError(o *corev3.Http3ProtocolOptions, p string) error {
	if v := o.GetOverrideStreamErrorOnInvalidHttpMessage(); v != nil && !v.GetValue() {
		return config.Unsupported(config.Join(p, "override_stream_error_on_invalid_http_message"),
			"false (closing the HTTP/3 connection on an invalid message: quic-go resets only that stream; omit the field or set it true)")
	}
	return nil
}

// checkHTTP3Chain checks that codec_type HTTP3 and QUIC listeners go
// together (as Envoy refuses either without the other) and makes the
// HTTP/3 statistics.
func checkHTTP3Chain(c *hcmConfig, opts listener.ChainOptions, path string, d *listener.Context) error {
	switch {
	case opts.QUIC && c.codec != codecHTTP3:
		return config.Errorf(config.Join(path, "codec_type"), "the connection manager of a QUIC listener needs codec_type HTTP3")
	case !opts.QUIC && c.codec == codecHTTP3:
		return config.Errorf(config.Join(path, "codec_type"), "codec_type HTTP3 needs a QUIC listener (a UDP address with udp_listener_config.quic_options and transport_socket envoy.transport_sockets.quic)")
	case !opts.QUIC:
		return nil
	}
	for t, on := range c.upgrades {
		if on {
			// CONNECT and extended CONNECT (RFC 9220) over HTTP/3 are not
			// relayed: refused rather than answered as HTTP/1 would be.
			return config.Unsupported(config.Join(path, "upgrade_configs"), fmt.Sprintf("upgrade %q on an HTTP/3 connection manager", t))
		}
	}
	s := d.Stats.Scope("http." + stats.SanitizeName(c.statPrefix) + ".")
	c.h3 = &h3Config{cxHTTP3: s.Counter("downstream_cx_http3_total"), rqHTTP3: s.Counter("downstream_rq_http3_total"),
		cxHTTP3Active: s.Gauge("downstream_cx_http3_active")}
	return nil
}

// h3stream is the downstream side of one HTTP/3 request.
type h3stream struct {
	h2stream
	peek [1]byte
}

// settleBody finds out whether a request without Content-Length has a
// body. An HTTP/3 request's end is a FIN on its stream, which quic-go does
// not report with the headers (HTTP/2 has END_STREAM on HEADERS): for the
// methods that rarely carry a body (RFC 9110 §9.3), the body is read
// until its first byte or its end, so that a GET goes upstream without
// one rather than chunked. Other methods stream as they come, as an
// HTTP/2 request without END_STREAM does.
func (h *h3stream) settleBody(r *http.Request) {
	if r.ContentLength >= 0 || r.Body == nil || r.Body == http.NoBody {
		return
	}
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "DELETE", "TRACE":
	default:
		return
	}
	n, err := r.Body.Read(h.peek[:])
	switch {
	case n == 0 && err == io.EOF:
		r.ContentLength = 0
	case n > 0:
		r.Body = &prefixBody{ReadCloser: r.Body, prefix: h.peek[:n], err: err}
	case err != nil:
		r.Body = &prefixBody{ReadCloser: r.Body, err: err}
	}
}

// prefixBody is a request body with its first bytes already read.
type prefixBody struct {
	io.ReadCloser
	prefix []byte
	err    error // what the first read returned with them
}

func (p *prefixBody) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.ReadCloser.Read(b)
}

func (h *h3stream) protocol() string { return "HTTP/3" }

var h3Streams = sync.Pool{New: func() any { return &h3stream{} }}

// ServeQUIC serves HTTP/3 on a QUIC connection (listener.QUICFilter).
func (f *hcmFilter) ServeQUIC(tc *listener.Conn, qc *quic.Conn) {
	cfg, d := f.cfg, f.d
	cs := newConnState(tc)
	st := cfg.stats
	st.cxTotal.Inc()
	st.cxActive.Inc()
	cfg.h3.cxHTTP3.Inc()
	cfg.h3.cxHTTP3Active.Inc()
	defer func() {
		cfg.h3.cxHTTP3Active.Dec()
		st.cxActive.Dec()
		st.cxDestroy.Inc()
		st.cxLengthMs.Record(float64(time.Since(cs.tc.Start).Milliseconds()))
	}()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := headerCount(r.Header); n > cfg.maxHeadersCount {
			// common_http_protocol_options.max_headers_count: as Envoy's
			// codecs, the stream is reset (quic-go resets it when the
			// handler aborts). quic-go bounds the header bytes itself.
			st.cxHeadersTooLarge.Inc()
			d.Log.Debug("HTTP/3 request with too many headers: stream reset", "headers", n, "max_headers_count", cfg.maxHeadersCount, "remote", cs.tc.Remote.String())
			panic(http.ErrAbortHandler)
		}
		hs := h3Streams.Get().(*h3stream)
		hs.settleBody(r)
		hs.w, hs.r = w, r
		s := &hs.st
		s.cfg, s.conn, s.ds, s.d = cfg, cs, hs, d
		s.req.Method = r.Method
		s.req.Authority = r.Host
		s.req.Path = r.RequestURI
		if r.Method == "CONNECT" && r.Proto == "HTTP/3.0" {
			// RFC 9114 §4.4: a CONNECT has :authority and no :path.
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
			// As for HTTP/2: the announced trailer names go on upstream.
			names := make([]string, 0, len(r.Trailer))
			for k := range r.Trailer {
				names = append(names, headers.Lower(k))
			}
			sort.Strings(names)
			s.req.Map.Add("trailer", strings.Join(names, ", "))
		}
		cfg.h3.rqHTTP3.Inc()
		s.serve()
		ovReset := s.overloadWasReset()
		s.reset()
		s.cfg, s.conn, s.ds, s.d = nil, nil, nil, nil
		hs.w, hs.r, hs.trailers = nil, nil, headers.Map{}
		h3Streams.Put(hs)
		if ovReset {
			// The overload manager reset the stream (overload_reset.go):
			// quic-go resets the stream of a handler aborted so, as x/net
			// does for HTTP/2.
			panic(http.ErrAbortHandler)
		}
	})
	srv := &http3.Server{
		Handler:        handler,
		MaxHeaderBytes: cfg.maxHeaderBytes,
		IdleTimeout:    cfg.ov.Scale(overload.ConnIdle, cfg.idleTimeout),
		Logger:         slog.New(slog.DiscardHandler),
	}
	var once sync.Once
	drain := func() {
		once.Do(func() {
			cs.draining.Store(true)
			st.cxDrainClose.Inc()
			go func() {
				// GOAWAY, then the connection closes once its streams
				// finished or the drain timeout passed (Envoy's drain).
				ctx, cancel := context.WithTimeout(context.Background(), cfg.drainTimeout)
				defer cancel()
				if srv.Shutdown(ctx) != nil {
					qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "drain timeout")
				}
			}()
		})
	}
	tc.SetDrain(drain)
	defer tc.SetDrain(nil)
	if dur := cfg.ov.Scale(overload.ConnMax, cfg.maxConnDuration); dur > 0 {
		t := time.AfterFunc(time.Until(cs.tc.Start.Add(dur)), func() {
			st.cxMaxDuration.Inc()
			drain()
		})
		defer t.Stop()
	}
	srv.ServeQUICConn(qc)
}

// headerCount is the number of header fields of a request.
func headerCount(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	return n
}
