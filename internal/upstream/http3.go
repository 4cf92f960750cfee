package upstream

// HTTP/3 upstreams with quic-go's http3.Transport: a cluster whose
// HttpProtocolOptions say explicit_http_config.http3_protocol_options
// speaks HTTP/3 to every host over its envoy.transport_sockets.quic
// transport socket (one multiplexed QUIC connection per host, as the
// HTTP/2 client); one with auto_config and http3_protocol_options starts
// on TCP (HTTP/1.1 over the transport socket's TLS) and learns from each
// response's alt-svc header (RFC 7838) that a host serves h3, then sends
// that host's requests over HTTP/3 until the advertisement expires or an
// HTTP/3 connection cannot be made — Envoy's alternate protocols cache.
// Both reuse the HTTP/2 exchange (h2Exchange): x/net and quic-go speak
// the same net/http round-trip interface.

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/stats"
)

// HTTP/3 protocols of a cluster.
const (
	// HTTP3 is explicit_http_config.http3_protocol_options.
	HTTP3 Protocol = UseDownstream + 1 + iota
	// AutoHTTP3 is auto_config with http3_protocol_options: HTTP/1.1
	// over TCP until a host advertises h3 (alt-svc).
	AutoHTTP3
)

// QUICClientTransport is a cluster transport socket that can make QUIC
// connections (tlsx.ClientContext of a QuicUpstreamTransport).
type QUICClientTransport interface {
	QUIC() bool
	QUICConfig(sni string) *tls.Config
	QUICHandshakeDone(st tls.ConnectionState)
}

// h3Client is a cluster's HTTP/3 client.
type h3Client struct {
	c     *Cluster
	t     *http3.Transport
	qconf *quic.Config
	// alt is the alternate protocols cache (AutoHTTP3 only).
	alt *altSvcCache
	// cxHTTP3 is upstream_cx_http3_total.
	cxHTTP3 *stats.Counter
	once    sync.Once
	udp     *quic.Transport
	err     error
}

// compileHTTP3 compiles an Http3ProtocolOptions of a cluster at path.
func (c *Cluster) compileHTTP3(o *corev3.Http3ProtocolOptions, path string) error {
	c.h3conf = &quic.Config{MaxIdleTimeout: 300 * time.Second, KeepAlivePeriod: 0}
	if o == nil {
		return nil
	}
	if err := config.CheckFields(o, path, "quic_protocol_options", "override_stream_error_on_invalid_http_message"); err != nil {
		return err
	}
	if v := o.GetOverrideStreamErrorOnInvalidHttpMessage(); v != nil && !v.GetValue() {
		// quic-go's client resets only the stream of a malformed
		// response (H3_MESSAGE_ERROR); it cannot close the connection.
		return config.Unsupported(config.Join(path, "override_stream_error_on_invalid_http_message"),
			"false (closing the HTTP/3 connection on an invalid message: quic-go resets only that stream; omit the field or set it true)")
	}
	return QUICProtocolOptions(o.GetQuicProtocolOptions(), config.Join(path, "quic_protocol_options"), c.h3conf)
}

// compileAutoHTTP3 compiles auto_config's HTTP/3 part at path: the
// alternate protocols cache it learns hosts' h3 endpoints in.
func (c *Cluster) compileAutoHTTP3(ac *httpopts.HttpProtocolOptions_AutoHttpConfig, path string) error {
	if err := config.CheckFields(ac, path, "http_protocol_options", "http2_protocol_options", "http3_protocol_options", "alternate_protocols_cache_options"); err != nil {
		return err
	}
	if ac.GetHttp3ProtocolOptions() == nil {
		if ac.GetAlternateProtocolsCacheOptions() != nil {
			return config.Errorf(config.Join(path, "alternate_protocols_cache_options"), "alternate_protocols_cache_options needs http3_protocol_options (Legate learns only h3 from alt-svc)")
		}
		return nil
	}
	if err := c.compileHTTP3(ac.GetHttp3ProtocolOptions(), config.Join(path, "http3_protocol_options")); err != nil {
		return err
	}
	ap := config.Join(path, "alternate_protocols_cache_options")
	o := ac.GetAlternateProtocolsCacheOptions()
	if o == nil {
		// As Envoy: HTTP/3 in auto_config is found through the cache.
		return config.Errorf(ap, "auto_config with http3_protocol_options needs alternate_protocols_cache_options")
	}
	if err := config.CheckFields(o, ap, "name", "max_entries"); err != nil {
		return err
	}
	n := 1024
	if v := o.GetMaxEntries(); v != nil {
		n = int(v.GetValue())
	}
	c.Protocol = AutoHTTP3
	c.h3alt = &altSvcCache{max: n, m: map[string]altEntry{}, now: time.Now}
	return nil
}

// checkHTTP3Transport checks that HTTP/3 clusters have a QUIC transport
// socket and that only they do (at path).
func (c *Cluster) checkHTTP3Transport(path string, scope stats.Scope) error {
	q, ok := c.transport.(QUICClientTransport)
	isQUIC := ok && q.QUIC()
	switch {
	case (c.Protocol == HTTP3 || c.Protocol == AutoHTTP3) && !isQUIC:
		return config.Errorf(config.Join(path, "transport_socket"), "an HTTP/3 cluster needs transport_socket envoy.transport_sockets.quic (QuicUpstreamTransport with an upstream_tls_context)")
	case isQUIC && c.Protocol != HTTP3 && c.Protocol != AutoHTTP3:
		return config.Errorf(config.Join(path, "transport_socket"), "envoy.transport_sockets.quic needs HttpProtocolOptions explicit_http_config.http3_protocol_options, or auto_config with http3_protocol_options")
	case !isQUIC:
		return nil
	}
	if c.bind != nil {
		return config.Unsupported(config.Join(path, "upstream_bind_config"), "upstream_bind_config on an HTTP/3 cluster")
	}
	if c.AutoSNI {
		return config.Unsupported(config.Join(path, "typed_extension_protocol_options.upstream_http_protocol_options.auto_sni"), "auto_sni on an HTTP/3 cluster")
	}
	c.h3 = newH3Client(c, q)
	c.h3.cxHTTP3 = scope.Counter("upstream_cx_http3_total")
	return nil
}

func newH3Client(c *Cluster, q QUICClientTransport) *h3Client {
	h := &h3Client{c: c, qconf: c.h3conf, alt: c.h3alt}
	h.t = &http3.Transport{
		QUICConfig:         c.h3conf,
		DisableCompression: true,
		Dial: func(ctx context.Context, addr string, _ *tls.Config, qc *quic.Config) (*quic.Conn, error) {
			return h.dial(ctx, addr, q, qc)
		},
	}
	return h
}

// dial opens a counted QUIC connection to addr from the cluster's one
// UDP socket.
func (h *h3Client) dial(ctx context.Context, addr string, q QUICClientTransport, qc *quic.Config) (*quic.Conn, error) {
	c := h.c
	h.once.Do(func() {
		pc, err := net.ListenUDP("udp", nil)
		if err != nil {
			h.err = err
			return
		}
		h.udp = &quic.Transport{Conn: pc}
	})
	if h.err != nil {
		c.Stats.cxConnectFail.Inc()
		return nil, &ConnectError{Err: h.err}
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		c.Stats.cxConnectFail.Inc()
		return nil, &ConnectError{Err: err}
	}
	if c.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.connectTimeout)
		defer cancel()
	}
	start := time.Now()
	conn, err := h.udp.Dial(ctx, ua, q.QUICConfig(""), qc)
	if err != nil {
		c.Stats.cxConnectFail.Inc()
		if errors.Is(err, context.DeadlineExceeded) {
			c.Stats.cxConnectTimeout.Inc()
		}
		return nil, &ConnectError{Err: err}
	}
	q.QUICHandshakeDone(conn.ConnectionState().TLS)
	c.Stats.cxConnectMs.Record(float64(time.Since(start).Microseconds()) / 1000)
	c.Stats.cxTotal.Inc()
	h.cxHTTP3.Inc()
	c.Stats.cxActive.Inc()
	host := c.hostByAddr(addr, h.alt)
	if host != nil {
		host.stats.CxTotal.Add(1)
		host.stats.CxActive.Add(1)
	}
	go func() {
		<-conn.Context().Done()
		c.Stats.cxActive.Dec()
		c.Stats.cxDestroy.Inc()
		if host != nil {
			host.stats.CxActive.Add(-1)
		}
	}()
	return conn, nil
}

// hostByAddr finds the host a QUIC connection to addr is for: the host
// with that address, or (AutoHTTP3) the host whose alt-svc endpoint it is.
func (c *Cluster) hostByAddr(addr string, alt *altSvcCache) *Host {
	hs := c.hosts.Load()
	if hs == nil {
		return nil
	}
	for _, h := range hs.all {
		if h.Address == addr {
			return h
		}
		if alt != nil {
			if e, ok := alt.get(h.Address); ok && e.endpoint(h.Address) == addr {
				return h
			}
		}
	}
	return nil
}

func (h *h3Client) close() {
	h.t.Close()
	if h.udp != nil {
		h.udp.Close()
	}
}

// roundTrip sends one request over HTTP/3 (always https, RFC 9114 §3.1).
func (h *h3Client) roundTrip(req *http.Request) (*http.Response, error) {
	req.URL.Scheme = "https"
	req.Proto, req.ProtoMajor = "HTTP/3.0", 3
	resp, err := h.t.RoundTrip(req)
	if err != nil && h.alt != nil {
		var ce *ConnectError
		if errors.As(err, &ce) {
			// The advertised endpoint does not answer: back to TCP until
			// the host advertises it again (Envoy marks HTTP/3 broken).
			h.alt.forgetEndpoint(req.URL.Host)
		}
	}
	return resp, err
}

// openH3 is Open for HTTP3 and AutoHTTP3.
func (c *Cluster) openH3(h *Host, proto Protocol) Exchange {
	if c.h3 == nil {
		e := h1Exchanges.Get().(*h1Exchange)
		e.cl, e.host = c, h
		return e
	}
	if proto == HTTP3 {
		return &h2Exchange{cl: c, host: h, rt: c.h3.roundTrip}
	}
	if e, ok := c.h3.alt.get(h.Address); ok {
		// The exchange talks to the advertised endpoint (the router
		// keeps the host's stats and outlier detection).
		return &h2Exchange{cl: c, addr: e.endpoint(h.Address), rt: c.h3.roundTrip}
	}
	e := h1Exchanges.Get().(*h1Exchange)
	e.cl, e.host = c, h
	return &altSvcLearner{Exchange: e, alt: c.h3.alt, origin: h.Address}
}

// altSvcLearner is an HTTP/1.1 exchange of an AutoHTTP3 cluster: the
// response's alt-svc header feeds the alternate protocols cache.
type altSvcLearner struct {
	Exchange
	alt    *altSvcCache
	origin string
}

// Send implements Exchange.
func (a *altSvcLearner) Send(req *Request, head *http1.ResponseHead) error {
	err := a.Exchange.Send(req, head)
	if err == nil {
		if v := head.Headers.Get("alt-svc"); v != "" {
			// The value points into the connection's read buffer, which
			// the next response reuses: the cache keeps its own copy.
			a.alt.learn(a.origin, strings.Clone(v))
		}
	}
	return err
}

// altSvcCache is a cluster's alternate protocols cache: by origin (the
// host's address), the h3 endpoint it advertised and until when.
type altSvcCache struct {
	mu  sync.Mutex
	m   map[string]altEntry
	max int
	now func() time.Time
	// learned counts advertisements taken in (for tests and /stats).
	learned atomic.Uint64
}

// altEntry is one learned h3 endpoint: the port on the origin's host.
type altEntry struct {
	port    string
	expires time.Time
}

// endpoint is the entry's UDP address for origin host:port.
func (e altEntry) endpoint(origin string) string {
	host, _, err := net.SplitHostPort(origin)
	if err != nil {
		return origin
	}
	return net.JoinHostPort(host, e.port)
}

func (a *altSvcCache) get(origin string) (altEntry, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[origin]
	if ok && !a.now().Before(e.expires) {
		delete(a.m, origin)
		return altEntry{}, false
	}
	return e, ok
}

func (a *altSvcCache) forgetEndpoint(endpoint string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for o, e := range a.m {
		if e.endpoint(o) == endpoint {
			delete(a.m, o)
		}
	}
}

// learn takes in an alt-svc field value the origin sent.
func (a *altSvcCache) learn(origin, value string) {
	e, clear, ok := parseAltSvc(value, a.now())
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case clear:
		delete(a.m, origin)
	case ok:
		if _, had := a.m[origin]; !had && len(a.m) >= a.max {
			return // full: max_entries
		}
		a.m[origin] = e
		a.learned.Add(1)
	}
}

// parseAltSvc reads an alt-svc field value (RFC 7838 §3): "clear", or
// alternatives such as h3=":443"; ma=86400. It returns the first h3
// alternative on the same host (Legate connects to the origin's address).
func parseAltSvc(v string, now time.Time) (e altEntry, clear, ok bool) {
	v = strings.TrimSpace(v)
	if v == "clear" {
		return e, true, false
	}
	for _, alt := range splitOutsideQuotes(v, ',') {
		params := splitOutsideQuotes(alt, ';')
		proto, auth, found := strings.Cut(strings.TrimSpace(params[0]), "=")
		if !found || strings.TrimSpace(proto) != "h3" {
			continue
		}
		auth = strings.Trim(strings.TrimSpace(auth), `"`)
		host, port, err := net.SplitHostPort(auth)
		if err != nil || host != "" {
			continue // another host: Legate keeps to the origin's address
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			continue
		}
		ma := 24 * time.Hour // RFC 7838 §3.1: the default max age
		for _, p := range params[1:] {
			k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.TrimSpace(k) == "ma" {
				if s, err := strconv.ParseUint(strings.Trim(strings.TrimSpace(val), `"`), 10, 32); err == nil {
					ma = time.Duration(s) * time.Second
				}
			}
		}
		if ma == 0 {
			continue
		}
		return altEntry{port: port, expires: now.Add(ma)}, false, true
	}
	return e, false, false
}

// splitOutsideQuotes splits s at sep outside quoted strings.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			if quoted {
				i++
			}
		case sep:
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
