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
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/legateproxy/legate/internal/upstream"
)

// ErrNoHealthyUpstream is a cluster with no host to pick.
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// Client is the async client of one server (shared by every filter).
type Client struct {
	clusters *upstream.Manager
	http     *http.Transport
	mu       sync.Mutex
	grpc     map[string]*grpc.ClientConn
}

// New returns a client over the cluster manager.
func New(clusters *upstream.Manager) *Client {
	c := &Client{clusters: clusters, grpc: map[string]*grpc.ClientConn{}}
	c.http = &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			cl, _ := ctx.Value(clusterKey{}).(*upstream.Cluster)
			if cl == nil {
				return nil, fmt.Errorf("asyncclient: no cluster for %s", addr)
			}
			return cl.DialHost(ctx, addr)
		},
	}
	return c
}

type clusterKey struct{}

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

// Do sends req to a host of the cluster; req.URL's host is replaced by
// the picked host's address, req.Host is kept as the authority.
func (c *Client) Do(ctx context.Context, cluster string, req *http.Request) (*http.Response, error) {
	cl, h, err := c.cluster(cluster)
	if err != nil {
		return nil, err
	}
	u := *req.URL
	u.Scheme, u.Host = "http", h.Address
	req = req.Clone(context.WithValue(ctx, clusterKey{}, cl))
	req.URL = &u
	cl.Stats.RqTotal.Inc()
	h.HostStarted()
	var resp *http.Response
	if cl.Protocol == upstream.HTTP2 {
		resp, err = cl.RoundTripH2(req)
	} else {
		resp, err = c.http.RoundTrip(req)
	}
	h.HostFinished(err == nil && resp.StatusCode < 500, errors.Is(err, context.DeadlineExceeded))
	if err == nil {
		cl.Stats.RqStatus.Inc(resp.StatusCode)
	}
	return resp, err
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
	c.http.CloseIdleConnections()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, cc := range c.grpc {
		cc.Close()
		delete(c.grpc, k)
	}
}
