// Package asyncclient makes the side calls of filters — authorization
// checks, rate-limit queries, JWKS fetches — through the cluster manager:
// the host is picked by the cluster's load balancer among its healthy
// hosts, the connection dialed over the cluster's transport socket and
// counted in its stats, HTTP/2 used when the cluster says so. gRPC calls
// use grpc-go over connections dialed the same way.
package asyncclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"io"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/http1"
	"github.com/legateproxy/legate/internal/upstream"
)

// ErrNoHealthyUpstream is a cluster with no host to pick.
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// Client is the async client of one server (shared by every filter).
type Client struct {
	clusters *upstream.Manager
	mu       sync.Mutex
	grpc     map[string]*grpc.ClientConn
}

// New returns a client over the cluster manager.
func New(clusters *upstream.Manager) *Client {
	c := &Client{clusters: clusters, grpc: map[string]*grpc.ClientConn{}}
	return c
}

func (c *Client) cluster(name string) (*upstream.Cluster, *upstream.Host, error) {
	cl := c.clusters.Get(name)
	if cl == nil {
		return nil, nil, fmt.Errorf("cluster %q does not exist", name)
	}
	h := cl.Pick(&upstream.LBContext{})
	if h == nil {
		cl.Stats.CxNoneHealthy.Inc()
		return nil, nil, ErrNoHealthyUpstream
	}
	return cl, h, nil
}

// Do sends req to a host of the cluster through the cluster's connection
// pools (HTTP/1.1 or HTTP/2, as the cluster says): req.URL gives the path,
// req.Host (or the URL's host) the authority. The response body must be
// closed; reading it to its end lets the connection be reused.
func (c *Client) Do(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
	cl, h, err := c.cluster(cluster)
	if err != nil {
		return nil, err
	}
	proto := upstream.HTTP1
	if cl.Protocol == upstream.HTTP2 {
		proto = upstream.HTTP2
	}
	var m headers.Map
	for k, vs := range req.Header {
		for _, v := range vs {
			m.Add(headers.Lower(k), v)
		}
	}
	authority := req.Host
	if authority == "" {
		authority = req.URL.Host
	}
	r := upstream.Request{Method: req.Method, Path: req.URL.RequestURI(), Authority: authority, Headers: &m, Ctx: ctx}
	if dl, ok := ctx.Deadline(); ok {
		r.Deadline = dl
	}
	if req.Body != nil && req.Body != http.NoBody {
		r.Stream, r.Length = req.Body, req.ContentLength
		if r.Length <= 0 {
			r.Length = -1
		}
	}
	cl.Stats.RqTotal.Inc()
	h.HostStarted()
	b := &body{ex: cl.Open(h, proto)}
	// The context's end cancels the exchange, unless it was closed first
	// (a closed exchange goes back to a pool and may serve someone else).
	stop := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.closed {
			b.ex.Cancel()
		}
	})
	b.stop = stop
	ex := b.ex
	var head http1.ResponseHead
	if err := ex.Send(&r, &head); err != nil {
		b.Close()
		h.HostFinished(false, upstream.FailOf(err) == upstream.FailTimeout)
		return nil, err
	}
	cl.Stats.ChargeCode(head.Status)
	h.HostFinished(head.Status < 500, false)
	length, _, _ := ex.Framing(req.Method)
	resp := &http.Response{
		StatusCode: head.Status, Status: strconv.Itoa(head.Status) + " " + http.StatusText(head.Status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, ContentLength: length, Request: req,
	}
	if proto == upstream.HTTP2 {
		resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/2.0", 2, 0
	}
	// The head's strings point into the connection's buffer, which the
	// next request reuses: copy them.
	for _, f := range head.Headers.Fields() {
		k := http.CanonicalHeaderKey(f.Name)
		resp.Header[k] = append(resp.Header[k], strings.Clone(f.Value))
	}
	b.resp = resp
	resp.Body = b
	return resp, nil
}

// body is a response body read from an exchange.
type body struct {
	ex       upstream.Exchange
	stop     func() bool
	resp     *http.Response
	complete bool
	mu       sync.Mutex
	closed   bool
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.ex.Body().Read(p)
	if err == io.EOF && !b.complete {
		b.complete = true
		if tr := b.ex.Trailers(); tr != nil {
			b.resp.Trailer = http.Header{}
			for _, f := range tr.Fields() {
				k := http.CanonicalHeaderKey(f.Name)
				b.resp.Trailer[k] = append(b.resp.Trailer[k], strings.Clone(f.Value))
			}
		}
	}
	return n, err
}

func (b *body) Close() error {
	b.stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.ex.Close(b.complete)
	}
	return nil
}

// GRPC returns a connection for gRPC calls to the cluster (cached by
// cluster and authority); each new transport connection picks a host.
func (c *Client) GRPC(cluster, authority string) (*grpc.ClientConn, error) {
	key := cluster + "\x00" + authority
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.grpc[key]; cc != nil {
		return cc, nil
	}
	if authority == "" {
		authority = cluster
	}
	cc, err := grpc.NewClient("passthrough:///"+cluster,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			cl, h, err := c.cluster(cluster)
			if err != nil {
				return nil, err
			}
			return cl.DialHost(ctx, h.Address)
		}))
	if err != nil {
		return nil, err
	}
	c.grpc[key] = cc
	return cc, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cc := range c.grpc {
		cc.Close()
		delete(c.grpc, k)
	}
}
