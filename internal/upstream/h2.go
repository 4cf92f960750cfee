package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// h2Client talks HTTP/2 to a cluster's hosts (cleartext by prior
// knowledge, or over the cluster's TLS transport socket), multiplexing
// requests over one connection per host as Envoy does.
type h2Client struct {
	t *http2.Transport
}

// h2Options are the cluster's Http2ProtocolOptions the client applies.
type h2Options struct {
	hpackTableSize        uint32
	hpackSet              bool
	pingIdle, pingTimeout time.Duration
}

func newH2Client(c *Cluster) *h2Client {
	t := &http2.Transport{
		AllowHTTP:          true,
		DisableCompression: true,
		// connection_keepalive: a PING after this long without a frame
		// (0: never), the connection closed when it goes unanswered.
		ReadIdleTimeout: c.h2opts.pingIdle,
		PingTimeout:     c.h2opts.pingTimeout,
		IdleConnTimeout: c.IdleTimeout,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return c.DialHost(ctx, h2HostAddr(addr))
		},
	}
	if c.h2opts.hpackSet {
		// hpack_table_size: the dynamic table this side keeps for decoding
		// (the SETTINGS it sends) and the most it uses for encoding.
		t.MaxDecoderHeaderTableSize = c.h2opts.hpackTableSize
		t.MaxEncoderHeaderTableSize = c.h2opts.hpackTableSize
	}
	return &h2Client{t: t}
}

func (h *h2Client) close() { h.t.CloseIdleConnections() }

// h2HostAddr undoes what the HTTP/2 transport makes of a host address
// with no port (a pipe's "unix:<path>", an internal "envoy://…"): it
// adds the scheme's port, bracketed.
func h2HostAddr(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil && (strings.HasPrefix(h, "unix:") || strings.HasPrefix(h, internalScheme)) {
		return h
	}
	return addr
}

// DialHost opens a counted connection to one of the cluster's hosts (by
// address), over the cluster's transport socket: the HTTP/2 transport and
// the async client (side calls of filters) dial through it.
func (c *Cluster) DialHost(ctx context.Context, addr string) (net.Conn, error) {
	var host *Host
	if hs := c.hosts.Load(); hs != nil {
		for _, h := range hs.all {
			if h.Address == addr {
				host = h
				break
			}
		}
	}
	start := time.Now()
	conn, err := c.dialAddr(ctx, addr, host, ConnOptions{})
	if err != nil {
		c.Stats.cxConnectFail.Inc()
		if host != nil {
			host.stats.CxConnectFail.Add(1)
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.Stats.cxConnectTimeout.Inc()
		}
		return nil, &ConnectError{Err: err}
	}
	if t := c.transportFor(host); t != nil && host != nil {
		if DialInfoFrom(ctx) == nil {
			// The transport socket learns the host it wraps a connection to.
			ctx = WithDialInfo(ctx, &DialInfo{Host: host})
		}
		if conn, err = t.Client(ctx, conn, ""); err != nil {
			c.Stats.cxConnectFail.Inc()
			return nil, &ConnectError{Err: err}
		}
	}
	c.Stats.cxConnectMs.Record(float64(time.Since(start).Microseconds()) / 1000)
	c.Stats.cxTotal.Inc()
	c.Stats.cxHTTP2Total.Inc()
	c.Stats.cxActive.Inc()
	if host != nil {
		host.stats.CxTotal.Add(1)
		host.stats.CxActive.Add(1)
	}
	return &countedConn{Conn: conn, c: c, h: host}, nil
}

type countedConn struct {
	net.Conn
	c      *Cluster
	h      *Host
	closed atomic.Bool
}

func (cc *countedConn) Close() error {
	if cc.closed.CompareAndSwap(false, true) {
		cc.c.Stats.cxActive.Dec()
		cc.c.Stats.cxDestroy.Inc()
		if cc.h != nil {
			cc.h.stats.CxActive.Add(-1)
		}
	}
	return cc.Conn.Close()
}

// roundTripH2 sends an HTTP/2 request to a host. req.URL's host must be
// the host's address; req.Host carries the :authority.
func (c *Cluster) roundTripH2(req *http.Request) (*http.Response, error) {
	if c.h2 == nil {
		return nil, &ConnectError{Err: net.ErrClosed}
	}
	return c.h2.t.RoundTrip(req)
}
