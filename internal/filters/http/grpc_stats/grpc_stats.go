// Package grpc_stats is envoy.filters.http.grpc_stats: for gRPC (and
// Connect) requests it counts, in the route's cluster's stats, the calls
// by grpc-status (cluster.<c>.grpc[.<service>.<method>].<status>,
// .success, .failure, .total), the messages each way by reading the
// length-prefixed frames (request_message_count, response_message_count)
// and, with enable_upstream_stats, the upstream time (upstream_rq_time);
// service and method are in the names for every method
// (stats_for_all_methods) or for those of
// individual_method_stats_allowlist. With emit_filter_state the message
// counts are the filter state envoy.filters.http.grpc_stats
// (%FILTER_STATE(envoy.filters.http.grpc_stats:PLAIN)% is "<req>,<resp>").
// As Envoy's grpc_stats_filter.cc and Grpc::ContextImpl.
package grpc_stats

import (
	"encoding/json"
	"strconv"
	"strings"

	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
	"github.com/legateproxy/legate/internal/upstream"
)

// Name is the filter's name and its filter-state key.
const Name = "envoy.filters.http.grpc_stats"

func init() {
	httpfilter.Register(Name, nil, &grpcstatsv3.FilterConfig{}, nil, httpfilter.Factory{Compile: compile}, "")
}

type filterConfig struct {
	emitFilterState, upstreamStats, replaceDots, allMethods bool
	// allowlist is service → method → allowed (nil without one).
	allowlist map[string]map[string]bool
	stats     *stats.Store
	clusters  *upstream.Manager
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*grpcstatsv3.FilterConfig)
	if err := config.CheckFields(c, path, "emit_filter_state", "individual_method_stats_allowlist", "stats_for_all_methods",
		"enable_upstream_stats", "replace_dots_in_grpc_service_name"); err != nil {
		return nil, err
	}
	fc := &filterConfig{emitFilterState: c.GetEmitFilterState(), upstreamStats: c.GetEnableUpstreamStats(),
		replaceDots: c.GetReplaceDotsInGrpcServiceName(), allMethods: c.GetStatsForAllMethods().GetValue(),
		stats: ctx.Stats, clusters: ctx.Clusters}
	if al := c.GetIndividualMethodStatsAllowlist(); al != nil {
		ap := config.Join(path, "individual_method_stats_allowlist")
		if err := config.CheckFields(al, ap, "services"); err != nil {
			return nil, err
		}
		fc.allowlist = map[string]map[string]bool{}
		for i, s := range al.GetServices() {
			if err := config.CheckFields(s, config.Index(config.Join(ap, "services"), i), "name", "method_names"); err != nil {
				return nil, err
			}
			m := fc.allowlist[s.GetName()]
			if m == nil {
				m = map[string]bool{}
				fc.allowlist[s.GetName()] = m
			}
			for _, name := range s.GetMethodNames() {
				m[name] = true
			}
		}
	}
	return fc, nil
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

// Object is the filter state the filter emits (Envoy's GrpcStatsObject).
type Object struct {
	RequestMessageCount, ResponseMessageCount uint64
}

// String is "<request count>,<response count>".
func (o *Object) String() string {
	return strconv.FormatUint(o.RequestMessageCount, 10) + "," + strconv.FormatUint(o.ResponseMessageCount, 10)
}

// AppendJSON appends the FilterObject message in proto JSON (uint64s as
// strings, zero fields omitted).
func (o *Object) AppendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if o.RequestMessageCount != 0 {
		dst = append(dst, `"requestMessageCount":"`...)
		dst = strconv.AppendUint(dst, o.RequestMessageCount, 10)
		dst = append(dst, '"')
	}
	if o.ResponseMessageCount != 0 {
		if o.RequestMessageCount != 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `"responseMessageCount":"`...)
		dst = strconv.AppendUint(dst, o.ResponseMessageCount, 10)
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

var _ streaminfo.TypedFilterStateValue = (*Object)(nil)

type filter struct {
	cfg *filterConfig
	cb  httpfilter.Callbacks

	grpcRequest, grpcResponse        bool
	connectUnary, connectStreaming   bool
	connectStreamingResponse         bool
	connectUnaryReq, connectUnaryRsp bool
	reqEnded, respEnded              bool
	tracking                         bool
	// names is "<service>.<method>." in the stat names ("" without).
	names string
	// prefix is the cluster's stats prefix ("cluster.<name>."); "" while
	// the cluster is not known yet (a weighted cluster the router has not
	// picked), when charges wait in pending.
	prefix    string
	noCluster bool
	pending   []charge
	req       frameCounter
	resp      responseCounter
	obj       *Object
}

// charge is a stat update waiting for the cluster.
type charge struct {
	name string
	n    uint64
}

// clusterPrefix is the stats prefix of the route's cluster: Envoy's
// clusterInfo() of the cached route. A weighted cluster is known once the
// router picked it (StreamInfo's upstream cluster).
func (f *filter) clusterPrefix() string {
	if f.prefix != "" || f.noCluster {
		return f.prefix
	}
	var cl *upstream.Cluster
	rt := f.cb.Route()
	switch {
	case rt == nil || rt.Kind != route.Forward || rt.Action == nil:
		f.noCluster = true
		return ""
	case rt.Action.Cluster != nil:
		cl = rt.Action.Cluster.Get()
	case rt.Action.ClusterHeader != "":
		if f.cfg.clusters != nil {
			cl = f.cfg.clusters.Get(f.cb.RequestHeaders().Get(rt.Action.ClusterHeader))
		}
	default:
		name := f.cb.StreamInfo().UpstreamCluster
		if name == "" {
			return "" // not picked yet
		}
		if f.cfg.clusters != nil {
			cl = f.cfg.clusters.Get(name)
		}
	}
	if cl == nil {
		f.noCluster = true
		return ""
	}
	name := cl.Name
	if cl.Proto.GetAltStatName() != "" {
		name = cl.Proto.GetAltStatName()
	}
	f.prefix = "cluster." + stats.SanitizeName(name) + ".grpc."
	return f.prefix
}

// add charges a counter under cluster.<c>.grpc.[<service>.<method>.].
func (f *filter) add(suffix string, n uint64) {
	if f.noCluster {
		return
	}
	p := f.clusterPrefix()
	if p == "" {
		f.pending = append(f.pending, charge{f.names + suffix, n})
		return
	}
	f.flush()
	f.cfg.stats.Counter(p + f.names + suffix).Add(n)
}

func (f *filter) flush() {
	for _, c := range f.pending {
		f.cfg.stats.Counter(f.prefix + c.name).Add(c.n)
	}
	f.pending = f.pending[:0]
}

// chargeStatus is Envoy's chargeStat with a grpc-status: the status
// counter, then success or failure and total.
func (f *filter) chargeStatus(status string, ok bool) {
	if !ok {
		return // no grpc-status: nothing is charged
	}
	f.add(status, 1)
	f.chargeSuccess(status == "0")
}

func (f *filter) chargeSuccess(success bool) {
	if success {
		f.add("success", 1)
	} else {
		f.add("failure", 1)
	}
	f.add("total", 1)
}

// resolveNames is Envoy's resolveServiceAndMethod: a path
// /<service>/<method> (query ignored, empty segments dropped).
func resolveNames(path string) (service, method string, ok bool) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	var parts []string
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) != 2 {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// DecodeHeaders classifies the request and resolves its stat names.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	f.reqEnded = endStream
	if h.Path == "" {
		return httpfilter.Continue
	}
	ct := h.Map.Get("content-type")
	f.grpcRequest = headers.HasContentType(ct, "application/grpc")
	f.connectUnary = h.Map.Has("connect-protocol-version")
	f.connectStreaming = strings.HasPrefix(ct, "application/connect+")
	if !f.grpcRequest && !f.connectUnary && !f.connectStreaming {
		return httpfilter.Continue
	}
	f.clusterPrefix()
	if f.noCluster {
		return httpfilter.Continue
	}
	service, method, ok := resolveNames(h.Path)
	if !ok {
		return httpfilter.Continue
	}
	f.tracking = true
	switch {
	case f.cfg.allMethods:
		if f.cfg.replaceDots {
			service = strings.ReplaceAll(service, ".", "_")
		}
		f.names = service + "." + method + "."
	case f.cfg.allowlist != nil && f.cfg.allowlist[service][method]:
		f.names = service + "." + method + "."
	}
	// Otherwise the call is counted without service and method.
	return httpfilter.Continue
}

// DecodeData counts the request messages.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.reqEnded {
		return httpfilter.Continue
	}
	switch {
	case f.grpcRequest:
		if d := f.req.inspect(b.Bytes()); d > 0 {
			f.writeFilterState()
			if f.tracking {
				f.add("request_message_count", d)
			}
		}
	case f.connectStreaming:
		if d := f.req.inspect(b.Bytes()); d > 0 {
			f.writeFilterState()
			f.add("request_message_count", d)
		}
	case f.connectUnary && endStream:
		// A Connect unary request is one message, whatever its framing.
		f.connectUnaryReq = true
		f.writeFilterState()
		f.add("request_message_count", 1)
	}
	return httpfilter.Continue
}

// EncodeHeaders charges a status the headers carry (trailers-only).
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	f.respEnded = endStream
	ct := h.Map.Get("content-type")
	status, hasStatus := h.Map.Lookup("grpc-status")
	if endStream {
		f.grpcResponse = hasStatus
	} else {
		f.grpcResponse = h.Status == 200 && headers.HasContentType(ct, "application/grpc")
	}
	f.connectStreamingResponse = h.Status == 200 && strings.HasPrefix(ct, "application/connect+")
	if !f.tracking {
		return httpfilter.Continue
	}
	if f.connectUnary {
		f.chargeSuccess(h.Status == 200)
	} else if !f.connectStreamingResponse {
		f.chargeStatus(status, hasStatus)
	}
	if endStream {
		f.chargeUpstream(true)
	}
	return httpfilter.Continue
}

// EncodeData counts the response messages (and ends a Connect stream).
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	if f.respEnded {
		return httpfilter.Continue
	}
	switch {
	case f.grpcResponse:
		if d := f.resp.inspect(b.Bytes()); d > 0 {
			f.writeFilterState()
			if f.tracking {
				f.add("response_message_count", d)
			}
		}
	case f.connectStreaming:
		// As Envoy, keyed on the request being a Connect stream.
		if d := f.resp.inspect(b.Bytes()); d > 0 {
			f.writeFilterState()
			f.add("response_message_count", d)
		}
		if endStream {
			f.chargeSuccess(f.resp.connectSuccess())
			f.chargeUpstream(false)
		}
	case f.connectUnary && endStream:
		f.connectUnaryRsp = true
		f.writeFilterState()
		f.add("response_message_count", 1)
		f.chargeUpstream(false)
	}
	return httpfilter.Continue
}

// EncodeTrailers charges the call's grpc-status.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if f.grpcRequest && f.tracking {
		status, ok := t.Lookup("grpc-status")
		f.chargeStatus(status, ok)
		f.chargeUpstream(false)
	}
	return httpfilter.Continue
}

// OnDestroy charges what still waits for a cluster the router never
// picked: nothing, as Envoy would have had no cluster either.
func (f *filter) OnDestroy() { f.pending = nil }

// chargeUpstream records upstream_rq_time (ms): from the last byte sent
// upstream to the last received. At the end of a header-only response the
// router has not stamped the last received byte yet, so it is now.
func (f *filter) chargeUpstream(headersEnd bool) {
	if !f.cfg.upstreamStats {
		return
	}
	info := f.cb.StreamInfo()
	tx, rx := info.LastUpstreamTxByte, info.LastUpstreamRxByte
	if rx == 0 && headersEnd && tx != 0 {
		rx = info.Since()
	}
	if tx == 0 || rx == 0 {
		return
	}
	p := f.clusterPrefix()
	if p == "" {
		return
	}
	f.flush()
	f.cfg.stats.Histogram(p + f.names + "upstream_rq_time").Record(float64((rx - tx).Milliseconds()))
}

// writeFilterState is Envoy's maybeWriteFilterState.
func (f *filter) writeFilterState() {
	if !f.cfg.emitFilterState {
		return
	}
	if f.obj == nil {
		f.obj = &Object{}
		f.cb.StreamInfo().SetFilterState(Name, f.obj)
	}
	if f.connectUnary {
		f.obj.RequestMessageCount, f.obj.ResponseMessageCount = b2u(f.connectUnaryReq), b2u(f.connectUnaryRsp)
		return
	}
	f.obj.RequestMessageCount, f.obj.ResponseMessageCount = f.req.count, f.resp.count
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// frameCounter is Envoy's Grpc::FrameInspector: it follows the
// length-prefixed frames (1 flags byte, 4 bytes big-endian length, data)
// across data callbacks and counts a frame at its first byte.
type frameCounter struct {
	state  uint8 // 0: flags, 1-4: length bytes, 5: data
	length uint32
	left   uint32
	count  uint64
	// hooks for the Connect end-of-stream frame (response side).
	onStart func(flags byte) bool
	onData  func(p []byte)
	onEnd   func()
}

func (c *frameCounter) inspect(p []byte) uint64 {
	var delta uint64
	for len(p) > 0 {
		switch c.state {
		case 0:
			if c.onStart != nil && !c.onStart(p[0]) {
				return delta
			}
			c.count++
			delta++
			c.state, c.length = 1, 0
			p = p[1:]
		case 1, 2, 3, 4:
			c.length = c.length<<8 | uint32(p[0])
			p = p[1:]
			if c.state == 4 {
				if c.length == 0 {
					if c.onEnd != nil {
						c.onEnd()
					}
					c.state = 0
				} else {
					c.state, c.left = 5, c.length
				}
			} else {
				c.state++
			}
		default:
			n := min(uint32(len(p)), c.left)
			if c.onData != nil {
				c.onData(p[:n])
			}
			p = p[n:]
			c.left -= n
			if c.left == 0 {
				if c.onEnd != nil {
					c.onEnd()
				}
				c.state = 0
			}
		}
	}
	return delta
}

// responseCounter is Envoy's ResponseFrameCounter: a frameCounter that
// does not count a Connect end-of-stream frame (flag 0x02) and reads its
// JSON for an error.
type responseCounter struct {
	frameCounter
	eosState uint8 // 0 none, 1 buffering, 2 parsed, 3 invalid
	eos      []byte
	hasError bool
	init     bool
}

const connectEOS = 0x02

func (r *responseCounter) inspect(p []byte) uint64 {
	if !r.init {
		r.init = true
		r.onStart = func(flags byte) bool {
			if r.eosState != 0 {
				return false // nothing follows the end-of-stream frame
			}
			if flags&connectEOS != 0 {
				r.eosState = 1
			}
			return true
		}
		r.onData = func(b []byte) {
			if r.eosState == 1 {
				r.eos = append(r.eos, b...)
			}
		}
		r.onEnd = func() {
			if r.eosState != 1 {
				return
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(r.eos, &m); err != nil {
				r.eosState = 3
				return
			}
			r.eosState = 2
			_, r.hasError = m["error"]
		}
	}
	wasAtEOS := r.eosState != 0
	d := r.frameCounter.inspect(p)
	if r.eosState != 0 && !wasAtEOS {
		// The end-of-stream frame is not a message.
		d--
		r.count--
	}
	return d
}

// connectSuccess: the end-of-stream frame parsed and has no error.
func (r *responseCounter) connectSuccess() bool { return r.eosState == 2 && !r.hasError }
