// Package client is the proxy's xDS client: it subscribes to resources on
// a management server over gRPC — aggregated (ADS) or one stream per type,
// state-of-the-world or delta — decodes each resource once (package
// resource: unwrap, unmarshal, name, validate) and hands each type's
// complete current set to a handler, which compiles and applies it or
// rejects it; a resource that fails to decode rejects the response before
// the handler sees it. The client then ACKs or NACKs (with error_detail) as
// Envoy does, keeps the last good version when a response is rejected, and
// reconnects with jittered back-off, resuming with the versions it holds.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// Type URLs of the resources the proxy consumes (those of package
// resource, under the names the transports and handlers use).
const (
	ListenerType = resource.ListenerURL
	ClusterType  = resource.ClusterURL
	RouteType    = resource.RouteURL
	EndpointType = resource.EndpointURL
	SecretType   = resource.SecretURL
	RuntimeType  = resource.RuntimeURL
)

// typeOrder is the order in which subscriptions are (re)sent on a new ADS
// stream: runtime (RTDS) first — Envoy starts its RTDS subscriptions
// before CDS —, clusters before endpoints, listeners before routes, as Envoy.
var typeOrder = []string{RuntimeType, ClusterType, EndpointType, ListenerType, RouteType, SecretType}

// Handler applies the resources of one type.
type Handler interface {
	// Update receives the complete current set of the type's resources
	// (after merging the response), keyed by name, each decoded and
	// validated once by the transport (resource.Type.Decode). An error
	// rejects the response: the handler must not have applied any of it.
	Update(version string, resources map[string]*resource.Decoded) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(version string, resources map[string]*resource.Decoded) error

// Update calls f.
func (f HandlerFunc) Update(version string, resources map[string]*resource.Decoded) error {
	return f(version, resources)
}

// Rejecter is implemented by a Handler that keeps statistics per resource
// (RDS counts update_attempt and update_rejected per route configuration).
// A transport that refuses an update before calling Update — one of its
// resources failed to decode — calls Rejected instead, with the names the
// update carried: those that decoded and those that failed under a name
// that could be read.
type Rejecter interface {
	Rejected(names []string)
}

// Reject tells h, when it is a Rejecter, that an update was refused before
// Update: decoded holds the update's resources that decoded, err is the
// decode failure (resource.DecodeAll's error list, or one *resource.Error).
func Reject(h Handler, decoded map[string]*resource.Decoded, err error) {
	r, ok := h.(Rejecter)
	if !ok {
		return
	}
	names := make([]string, 0, len(decoded))
	for n := range decoded {
		names = append(names, n)
	}
	names = append(names, resource.FailedNames(err)...)
	sort.Strings(names)
	r.Rejected(names)
}

// Stats are one subscription's Envoy statistics (<prefix>update_attempt, …).
type Stats struct {
	Attempt, Success, Rejected, Failure, Empty *stats.Counter
	Version                                    *stats.Gauge
}

// NewStats creates the statistics under a prefix such as
// "cluster_manager.cds.".
func NewStats(s stats.Scope) *Stats {
	return &Stats{
		Attempt: s.Counter("update_attempt"), Success: s.Counter("update_success"),
		Rejected: s.Counter("update_rejected"), Failure: s.Counter("update_failure"),
		Empty: s.Counter("update_empty"), Version: s.Gauge("version"),
	}
}

// typeState is the client's view of one resource type.
type typeState struct {
	typeURL  string
	decoder  resource.Type
	handler  Handler
	stats    *Stats
	wildcard bool
	names    map[string]bool
	// accepted state
	version   string
	resources map[string]*resource.Decoded
	versions  map[string]string // delta: per-resource versions
	nonce     string
	// LastUpdated and lastError describe the latest response.
	lastUpdated time.Time
	lastError   string
	received    chan struct{} // closed at the first response (accepted or not)
	receivedOne sync.Once
	// rejected remembers the last rejected response's content, so a server
	// that re-sends it (go-control-plane's snapshot cache does, forever) is
	// NACKed again without recompiling or logging each time.
	rejectedFP  uint64
	rejectedErr error
	// namesSent is set once a non-empty name list went out on the current
	// stream: an empty list means "wildcard" in the protocol, so it is only
	// sent to unsubscribe from names sent before.
	namesSent bool
}

// sendable reports whether a request for the type should go out now.
func (ts *typeState) sendable() bool {
	if ts.wildcard || len(ts.names) > 0 {
		return true
	}
	return ts.namesSent
}

// Options configure a Client.
type Options struct {
	Conn grpc.ClientConnInterface
	Node *corev3.Node
	// Delta selects the incremental protocol (DELTA_GRPC).
	Delta bool
	// Service is "" for ADS, or a single type URL for a per-type stream
	// (api_config_source with one resource type).
	Service string
	Stats   *stats.Store
	Log     *slog.Logger
}

// Client is a connection to one management server.
type Client struct {
	opts  Options
	log   *slog.Logger
	mu    sync.Mutex
	types map[string]*typeState
	// send is set while a stream is up; it queues a request for a type.
	wake      chan struct{}
	connected *stats.Gauge
	dirty     map[string]bool // types whose subscription changed since last sent
	cancel    context.CancelFunc
	done      chan struct{}
}

// New returns a client; Start connects it.
func New(opts Options) *Client {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	return &Client{
		opts:      opts,
		log:       opts.Log,
		types:     map[string]*typeState{},
		wake:      make(chan struct{}, 1),
		connected: opts.Stats.Gauge("control_plane.connected_state"),
		dirty:     map[string]bool{},
		done:      make(chan struct{}),
	}
}

// Subscribe registers a handler for a type. names nil means a wildcard
// subscription (every resource of the type: LDS, CDS).
func (c *Client) Subscribe(typeURL string, names []string, h Handler, st *Stats) {
	if st == nil {
		// Types whose statistics live elsewhere (EDS counts per cluster).
		st = NewStats(stats.NewStore().Scope(""))
	}
	c.mu.Lock()
	ts := &typeState{typeURL: typeURL, decoder: resource.ForURL(typeURL), handler: h, stats: st, wildcard: names == nil, names: map[string]bool{},
		resources: map[string]*resource.Decoded{}, versions: map[string]string{}, received: make(chan struct{})}
	for _, n := range names {
		ts.names[n] = true
	}
	c.types[typeURL] = ts
	c.dirty[typeURL] = true
	c.mu.Unlock()
	c.poke()
}

// SetNames changes the resource names of a non-wildcard subscription
// (routes named by listeners, endpoints of EDS clusters).
func (c *Client) SetNames(typeURL string, names []string) {
	c.mu.Lock()
	ts := c.types[typeURL]
	if ts == nil || ts.wildcard {
		c.mu.Unlock()
		return
	}
	next := map[string]bool{}
	for _, n := range names {
		next[n] = true
	}
	if equalSets(next, ts.names) {
		c.mu.Unlock()
		return
	}
	ts.names = next
	// Resources no longer subscribed are dropped from the current set.
	for n := range ts.resources {
		if !next[n] {
			delete(ts.resources, n)
			delete(ts.versions, n)
		}
	}
	c.dirty[typeURL] = true
	c.mu.Unlock()
	c.poke()
}

// Received returns a channel closed once the first response for the type
// arrived (for initialization and initial_fetch_timeout).
func (c *Client) Received(typeURL string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ts := c.types[typeURL]; ts != nil {
		return ts.received
	}
	ch := make(chan struct{})
	return ch
}

// Resources returns the accepted resources of a type, their version and
// when the latest response arrived.
func (c *Client) Resources(typeURL string) (string, map[string]*resource.Decoded, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ts := c.types[typeURL]
	if ts == nil {
		return "", nil, time.Time{}
	}
	return ts.version, maps.Clone(ts.resources), ts.lastUpdated
}

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Start runs the client until Stop: it connects, subscribes, processes
// responses and reconnects with back-off.
func (c *Client) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.done)
		backoff := 500 * time.Millisecond
		for {
			start := time.Now()
			err := c.runStream(ctx)
			c.connected.Set(0)
			if ctx.Err() != nil {
				return
			}
			c.log.Warn("xDS stream closed; reconnecting", "error", err)
			if time.Since(start) > 30*time.Second {
				backoff = 500 * time.Millisecond
			}
			wait := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			backoff = min(backoff*2, 30*time.Second)
		}
	}()
}

// Stop closes the stream and waits for the client to end.
func (c *Client) Stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

func (c *Client) runStream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.opts.Delta {
		return c.runDelta(sctx)
	}
	return c.runSotW(sctx)
}

// sortedTypes returns the subscribed types in Envoy's order.
func (c *Client) sortedTypes() []string {
	var out []string
	for _, t := range typeOrder {
		if _, ok := c.types[t]; ok {
			out = append(out, t)
		}
	}
	for t := range c.types {
		found := false
		for _, o := range out {
			found = found || o == t
		}
		if !found {
			out = append(out, t)
		}
	}
	return out
}

// --- state of the world ---

type sotwStream interface {
	Send(*discoveryv3.DiscoveryRequest) error
	Recv() (*discoveryv3.DiscoveryResponse, error)
}

func (c *Client) openSotW(ctx context.Context) (sotwStream, error) {
	if c.opts.Service == "" {
		return discoveryv3.NewAggregatedDiscoveryServiceClient(c.opts.Conn).StreamAggregatedResources(ctx)
	}
	method, ok := sotwMethods[c.opts.Service]
	if !ok {
		return nil, fmt.Errorf("no xDS service for %s", c.opts.Service)
	}
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	s, err := c.opts.Conn.NewStream(ctx, desc, method)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]{ClientStream: s}, nil
}

var sotwMethods = map[string]string{
	ClusterType:  "/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters",
	ListenerType: "/envoy.service.listener.v3.ListenerDiscoveryService/StreamListeners",
	RouteType:    "/envoy.service.route.v3.RouteDiscoveryService/StreamRoutes",
	EndpointType: "/envoy.service.endpoint.v3.EndpointDiscoveryService/StreamEndpoints",
	SecretType:   "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets",
	RuntimeType:  "/envoy.service.runtime.v3.RuntimeDiscoveryService/StreamRuntime",
}

var deltaMethods = map[string]string{
	ClusterType:  "/envoy.service.cluster.v3.ClusterDiscoveryService/DeltaClusters",
	ListenerType: "/envoy.service.listener.v3.ListenerDiscoveryService/DeltaListeners",
	RouteType:    "/envoy.service.route.v3.RouteDiscoveryService/DeltaRoutes",
	EndpointType: "/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints",
	SecretType:   "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets",
	RuntimeType:  "/envoy.service.runtime.v3.RuntimeDiscoveryService/DeltaRuntime",
}

func (c *Client) sotwRequest(ts *typeState) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   ts.version,
		Node:          c.opts.Node,
		TypeUrl:       ts.typeURL,
		ResponseNonce: ts.nonce,
	}
	if !ts.wildcard {
		req.ResourceNames = sortedNames(ts.names)
		if len(req.ResourceNames) > 0 {
			ts.namesSent = true
		}
	}
	return req
}

func (c *Client) runSotW(ctx context.Context) error {
	stream, err := c.openSotW(ctx)
	if err != nil {
		return err
	}
	// A new stream starts with no nonces; versions are kept to resume.
	c.mu.Lock()
	for _, ts := range c.types {
		ts.nonce = ""
		ts.namesSent = false
	}
	var initial []*discoveryv3.DiscoveryRequest
	for _, t := range c.sortedTypes() {
		if ts := c.types[t]; ts.sendable() {
			initial = append(initial, c.sotwRequest(ts))
		}
		delete(c.dirty, t)
	}
	c.mu.Unlock()
	for _, r := range initial {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	c.connected.Set(1)
	resps, recvErr := receive(ctx, stream.Recv)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case r := <-resps:
			req := c.handleSotW(r)
			if req != nil {
				if err := stream.Send(req); err != nil {
					return err
				}
			}
		case <-c.wake:
			c.mu.Lock()
			var reqs []*discoveryv3.DiscoveryRequest
			for _, t := range c.sortedTypes() {
				if c.dirty[t] {
					if ts := c.types[t]; ts.sendable() {
						reqs = append(reqs, c.sotwRequest(ts))
					}
					delete(c.dirty, t)
				}
			}
			c.mu.Unlock()
			for _, r := range reqs {
				if err := stream.Send(r); err != nil {
					return err
				}
			}
		}
	}
}

// handleSotW applies a state-of-the-world response and returns the ACK or
// NACK to send.
func (c *Client) handleSotW(r *discoveryv3.DiscoveryResponse) *discoveryv3.DiscoveryRequest {
	c.mu.Lock()
	ts := c.types[r.GetTypeUrl()]
	if ts == nil {
		c.mu.Unlock()
		c.log.Warn("xDS response for a type that is not subscribed", "type", r.GetTypeUrl())
		return nil
	}
	ts.stats.Attempt.Inc()
	fp := fingerprint(r.GetVersionInfo(), r.GetResources())
	repeat := ts.rejectedErr != nil && ts.rejectedFP == fp
	// Listeners and clusters come as a complete set; other types may come
	// partially and merge into what is held.
	var held map[string]*resource.Decoded
	if !repeat && ts.typeURL != ListenerType && ts.typeURL != ClusterType {
		held = maps.Clone(ts.resources)
	}
	// ts.names is replaced, never changed in place: it can be read unlocked.
	handler, dec, wildcard, names, err := ts.handler, ts.decoder, ts.wildcard, ts.names, ts.rejectedErr
	c.mu.Unlock()

	var next map[string]*resource.Decoded
	if !repeat {
		next, err = decodeSotW(dec, r.GetResources(), held, wildcard, names)
		if err != nil {
			Reject(handler, next, err)
		} else {
			err = handler.Update(r.GetVersionInfo(), next)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	ts.nonce = r.GetNonce()
	ts.lastUpdated = time.Now()
	ts.receivedOne.Do(func() { close(ts.received) })
	req := c.sotwRequest(ts)
	if err != nil {
		ts.stats.Rejected.Inc()
		ts.lastError = err.Error()
		ts.rejectedFP, ts.rejectedErr = fp, err
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		if !repeat {
			c.log.Warn("xDS update rejected (NACK); the last good config keeps serving",
				"type", resource.ShortType(ts.typeURL), "version", r.GetVersionInfo(), "error", err)
		} else {
			// Back off a little so a server re-sending the same rejected
			// response cannot spin this loop.
			c.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
			c.mu.Lock()
		}
		return req
	}
	ts.rejectedFP, ts.rejectedErr = 0, nil
	ts.resources = next
	ts.version = r.GetVersionInfo()
	ts.lastError = ""
	req.VersionInfo = ts.version
	ts.stats.Success.Inc()
	ts.stats.Version.Set(int64(xxhash.Sum64String(ts.version) >> 1))
	if len(next) == 0 {
		ts.stats.Empty.Inc()
	}
	c.log.Debug("xDS update accepted (ACK)", "type", resource.ShortType(ts.typeURL), "version", ts.version, "resources", len(next))
	return req
}

// decodeSotW decodes a state-of-the-world response's resources with t into
// the set a handler gets: held (what is kept from before, for types that
// may come partially; nil for none) plus every resource the subscription
// names. A resource it does not name is skipped, even an invalid one, as
// long as its name could be read; any other failure is in the returned
// config.ErrorList, with the resources that did decode in the map.
func decodeSotW(t resource.Type, list []*anypb.Any, held map[string]*resource.Decoded, wildcard bool, names map[string]bool) (map[string]*resource.Decoded, error) {
	next := held
	if next == nil {
		next = make(map[string]*resource.Decoded, len(list))
	}
	var errs config.ErrorList
	for _, a := range list {
		d, err := t.Decode(a)
		if err != nil {
			var re *resource.Error
			if !wildcard && errors.As(err, &re) && re.Name != "" && !names[re.Name] {
				continue // not subscribed (any more)
			}
			errs = append(errs, err)
			continue
		}
		if !wildcard && !names[d.Name] {
			continue // not subscribed (any more)
		}
		next[d.Name] = d
	}
	if len(errs) > 0 {
		return next, errs
	}
	return next, nil
}

// --- delta ---

type deltaStream interface {
	Send(*discoveryv3.DeltaDiscoveryRequest) error
	Recv() (*discoveryv3.DeltaDiscoveryResponse, error)
}

func (c *Client) openDelta(ctx context.Context) (deltaStream, error) {
	if c.opts.Service == "" {
		return discoveryv3.NewAggregatedDiscoveryServiceClient(c.opts.Conn).DeltaAggregatedResources(ctx)
	}
	method, ok := deltaMethods[c.opts.Service]
	if !ok {
		return nil, fmt.Errorf("no delta xDS service for %s", c.opts.Service)
	}
	s, err := c.opts.Conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return nil, err
	}
	return &grpc.GenericClientStream[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]{ClientStream: s}, nil
}

// sentNames remembers, per type, the names subscribed on the current delta
// stream, to send only changes.
type deltaSent map[string]map[string]bool

func (c *Client) runDelta(ctx context.Context) error {
	stream, err := c.openDelta(ctx)
	if err != nil {
		return err
	}
	sent := deltaSent{}
	c.mu.Lock()
	var initial []*discoveryv3.DeltaDiscoveryRequest
	for _, t := range c.sortedTypes() {
		ts := c.types[t]
		delete(c.dirty, t)
		if !ts.wildcard && len(ts.names) == 0 {
			continue // an empty subscription would mean "wildcard"
		}
		req := &discoveryv3.DeltaDiscoveryRequest{Node: c.opts.Node, TypeUrl: t, InitialResourceVersions: map[string]string{}}
		for n, v := range ts.versions {
			req.InitialResourceVersions[n] = v
		}
		if ts.wildcard {
			req.ResourceNamesSubscribe = []string{"*"}
		} else {
			req.ResourceNamesSubscribe = sortedNames(ts.names)
		}
		sent[t] = copySet(ts.names)
		initial = append(initial, req)
	}
	c.mu.Unlock()
	for _, r := range initial {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	c.connected.Set(1)
	resps, recvErr := receive(ctx, stream.Recv)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			return err
		case r := <-resps:
			if req := c.handleDelta(r); req != nil {
				if err := stream.Send(req); err != nil {
					return err
				}
			}
		case <-c.wake:
			c.mu.Lock()
			var reqs []*discoveryv3.DeltaDiscoveryRequest
			for _, t := range c.sortedTypes() {
				if !c.dirty[t] {
					continue
				}
				delete(c.dirty, t)
				ts := c.types[t]
				prev, ok := sent[t]
				if !ok && !ts.wildcard && len(ts.names) == 0 {
					continue
				}
				req := &discoveryv3.DeltaDiscoveryRequest{Node: c.opts.Node, TypeUrl: t}
				if !ok {
					if ts.wildcard {
						req.ResourceNamesSubscribe = []string{"*"}
					} else {
						req.ResourceNamesSubscribe = sortedNames(ts.names)
					}
				} else {
					for n := range ts.names {
						if !prev[n] {
							req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
						}
					}
					for n := range prev {
						if !ts.names[n] {
							req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
						}
					}
					sort.Strings(req.ResourceNamesSubscribe)
					sort.Strings(req.ResourceNamesUnsubscribe)
				}
				sent[t] = copySet(ts.names)
				reqs = append(reqs, req)
			}
			c.mu.Unlock()
			for _, r := range reqs {
				if err := stream.Send(r); err != nil {
					return err
				}
			}
		}
	}
}

func (c *Client) handleDelta(r *discoveryv3.DeltaDiscoveryResponse) *discoveryv3.DeltaDiscoveryRequest {
	c.mu.Lock()
	ts := c.types[r.GetTypeUrl()]
	if ts == nil {
		c.mu.Unlock()
		return nil
	}
	ts.stats.Attempt.Inc()
	next := maps.Clone(ts.resources)
	versions := maps.Clone(ts.versions)
	handler, dec := ts.handler, ts.decoder
	c.mu.Unlock()
	var errs config.ErrorList
	for _, res := range r.GetResources() {
		a := res.GetResource()
		if a == nil {
			continue // a name-only resource (on-demand heartbeat)
		}
		d, err := dec.Decode(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if n := res.GetName(); n != "" {
			d.Name = n // the delta protocol names resources itself
		}
		next[d.Name] = d
		versions[d.Name] = res.GetVersion()
	}
	for _, n := range r.GetRemovedResources() {
		delete(next, n)
		delete(versions, n)
	}
	var err error
	if len(errs) > 0 {
		err = errs
		Reject(handler, next, err)
	} else {
		err = handler.Update(r.GetSystemVersionInfo(), next)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ts.lastUpdated = time.Now()
	ts.receivedOne.Do(func() { close(ts.received) })
	req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: ts.typeURL, ResponseNonce: r.GetNonce()}
	if err != nil {
		ts.stats.Rejected.Inc()
		ts.lastError = err.Error()
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
		c.log.Warn("delta xDS update rejected (NACK); the last good config keeps serving", "type", resource.ShortType(ts.typeURL), "error", err)
		return req
	}
	ts.resources, ts.versions = next, versions
	ts.version = r.GetSystemVersionInfo()
	ts.stats.Success.Inc()
	ts.stats.Version.Set(int64(xxhash.Sum64String(ts.version) >> 1))
	if len(next) == 0 {
		ts.stats.Empty.Inc()
	}
	return req
}

// --- helpers ---

// fingerprint hashes a response's version and resources.
func fingerprint(version string, res []*anypb.Any) uint64 {
	d := xxhash.New()
	d.WriteString(version)
	for _, a := range res {
		d.WriteString(a.GetTypeUrl())
		d.Write(a.GetValue())
	}
	return d.Sum64()
}

func sortedNames(s map[string]bool) []string {
	out := make([]string, 0, len(s))
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func copySet(s map[string]bool) map[string]bool {
	out := make(map[string]bool, len(s))
	for k := range s {
		out[k] = true
	}
	return out
}

func equalSets(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// receive runs a stream's Recv in a goroutine, delivering responses on one
// channel and the first error on the other, until ctx ends.
func receive[T any](ctx context.Context, recv func() (T, error)) (<-chan T, <-chan error) {
	resps := make(chan T)
	errs := make(chan error, 1)
	go func() {
		for {
			r, err := recv()
			if err != nil {
				errs <- err
				return
			}
			select {
			case resps <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return resps, errs
}
