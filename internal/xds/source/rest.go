package source

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/config"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// restPaths are the REST-JSON endpoints of each type (the google.api.http
// rules of the discovery services' Fetch methods).
var restPaths = map[string]string{
	xdsclient.ListenerType: "/v3/discovery:listeners",
	xdsclient.ClusterType:  "/v3/discovery:clusters",
	xdsclient.RouteType:    "/v3/discovery:routes",
	xdsclient.EndpointType: "/v3/discovery:endpoints",
	xdsclient.SecretType:   "/v3/discovery:secrets",
	xdsclient.RuntimeType:  "/v3/discovery:runtime",
}

// maxRESTBody bounds a REST response (Envoy's async client buffers it whole).
const maxRESTBody = 64 << 20

// rest polls a management server with REST-JSON, as Envoy's
// HttpSubscriptionImpl: a POST of the DiscoveryRequest as JSON every
// refresh_delay (plus up to as much again of jitter), Host set to the
// cluster name; 200 carries a DiscoveryResponse, 304 means "no change",
// any other status or a transport error is an update failure. There is no
// ACK/NACK: the next request carries the last accepted version_info.
type rest struct {
	cluster  string
	path     string
	typeURL  string
	decoder  resource.Type
	refresh  time.Duration
	timeout  time.Duration
	node     *corev3.Node
	clusters Clusters
	log      *slog.Logger

	mu       sync.Mutex
	handler  xdsclient.Handler
	stats    *xdsclient.Stats
	names    []string
	wildcard bool
	version  string
	first    chan struct{}
	once     sync.Once
	kick     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
}

func (m *Manager) restClient(ac *corev3.ApiConfigSource, typeURL string) *rest {
	timeout := time.Second // Envoy's request_timeout default
	if ac.GetRequestTimeout() != nil {
		timeout = ac.GetRequestTimeout().AsDuration()
	}
	return &rest{cluster: ac.GetClusterNames()[0], path: restPaths[typeURL], typeURL: typeURL, decoder: resource.ForURL(typeURL),
		refresh: ac.GetRefreshDelay().AsDuration(), timeout: timeout, node: m.opts.Node,
		clusters: m.opts.Clusters, log: m.log, first: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Subscribe sets the type's handler and names (nil: every resource).
func (r *rest) Subscribe(_ string, names []string, h xdsclient.Handler, st *xdsclient.Stats) {
	r.mu.Lock()
	r.handler, r.stats, r.wildcard = h, st, names == nil
	r.names = sortedCopy(names)
	r.mu.Unlock()
	r.poke()
}

// SetNames changes the names asked for; the next poll goes out now.
func (r *rest) SetNames(_ string, names []string) {
	r.mu.Lock()
	r.names = sortedCopy(names)
	r.mu.Unlock()
	r.poke()
}

func (r *rest) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Received is closed after the first fetch completes (or fails).
func (r *rest) Received(string) <-chan struct{} { return r.first }

// Start begins polling.
func (r *rest) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() {
		defer close(r.done)
		for {
			r.fetch(ctx)
			// Envoy: refresh_delay plus a random jitter of up to refresh_delay.
			wait := r.refresh + time.Duration(rand.Int64N(int64(r.refresh)))
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
			case <-time.After(wait):
			}
		}
	}()
}

// Stop ends polling.
func (r *rest) Stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}

func (r *rest) fetch(ctx context.Context) {
	r.mu.Lock()
	h, st := r.handler, r.stats
	wildcard := r.wildcard
	req := &discoveryv3.DiscoveryRequest{VersionInfo: r.version, Node: r.node, TypeUrl: r.typeURL}
	if !wildcard {
		req.ResourceNames = r.names
	}
	r.mu.Unlock()
	if h == nil || (!wildcard && len(req.ResourceNames) == 0) {
		return // nothing subscribed yet
	}
	defer r.once.Do(func() { close(r.first) })
	if st != nil {
		st.Attempt.Inc()
	}
	body, err := protojson.Marshal(req)
	if err != nil {
		r.fail(st, "encode request", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.cluster+r.path, bytes.NewReader(body))
	hr.Host = r.cluster // Envoy sets the Host header to the cluster name
	hr.Header.Set("Content-Type", "application/json")
	resp, err := r.clusters.Do(ctx, r.cluster, hr)
	if err != nil {
		r.fail(st, "REST fetch", err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTBody))
	if err != nil {
		r.fail(st, "REST fetch", err)
		return
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return // the version we hold is current
	default:
		r.fail(st, "REST fetch", fmt.Errorf("%s %s answered %d", r.cluster, r.path, resp.StatusCode))
		return
	}
	dr := &discoveryv3.DiscoveryResponse{}
	if _, err := config.Decode(data, dr, "discovery_response"); err != nil {
		r.reject(st, err)
		return
	}
	res, err := resource.DecodeAll(r.decoder, dr.GetResources())
	if err != nil {
		xdsclient.Reject(h, res, err)
	} else {
		err = h.Update(dr.GetVersionInfo(), res)
	}
	if err != nil {
		r.reject(st, err)
		return
	}
	r.mu.Lock()
	r.version = dr.GetVersionInfo()
	r.mu.Unlock()
	if st != nil {
		st.Success.Inc()
	}
}

// fail counts an update failure (the server could not be reached or
// answered an error); Envoy logs it and polls again.
func (r *rest) fail(st *xdsclient.Stats, what string, err error) {
	if st != nil {
		st.Failure.Inc()
	}
	r.log.Warn("REST xDS update failed", "path", r.path, "cluster", r.cluster, "op", what, "error", err)
}

// reject counts a response the proxy refused; the last good config stays.
func (r *rest) reject(st *xdsclient.Stats, err error) {
	if st != nil {
		st.Rejected.Inc()
	}
	r.log.Warn("REST xDS config rejected; the last good config keeps serving", "path", r.path, "error", err)
}

func sortedCopy(names []string) []string {
	if names == nil {
		return nil
	}
	out := append([]string(nil), names...)
	sort.Strings(out)
	return out
}
