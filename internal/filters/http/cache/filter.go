package cache

import (
	"strconv"
	"time"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// Envoy's response code details of a response from the cache, and of the
// 504 answering only-if-cached (Envoy has none: it does not implement
// the directive).
const (
	detailsFromCache    = "cache.response_from_cache_filter"
	detailsOnlyIfCached = "cache.only_if_cached"
)

// chunkSize is how much of a stored body is written at a time.
const chunkSize = 64 << 10

// state is where a stream is in Envoy's filter state machine.
type state uint8

const (
	// notServing: the request is not looked up (or the lookup missed):
	// the response is relayed, and stored when it is cacheable.
	notServing state = iota
	// validating: a stale entry's validators went upstream.
	validating
	// servedFromCache: the filter answered the request itself; its own
	// response passes its encoder callbacks unchanged.
	servedFromCache
)

// filter is the cache filter of one stream.
type filter struct {
	cfg   *filterConfig
	cb    httpfilter.Callbacks
	state state
	// looked says the request was looked up (only then is its response
	// stored).
	looked bool
	// head is a HEAD request: served from a stored GET, never stored.
	head bool
	// allowInsert is false for a request with no-store (RFC 9111
	// §5.2.1.5).
	allowInsert bool
	key         string
	// req is a copy of the request headers as looked up: the Vary values
	// of a stored variant and the client's own preconditions (validation
	// replaces them upstream).
	req headers.Request
	// stale is the entry under validation.
	stale *entry
	// insert is the response being stored as it streams.
	insert *pending
}

// pending is a response on its way into the store.
type pending struct {
	e      *entry
	vary   []string
	varyID string
	limit  int64
}

// DecodeHeaders looks the request up: a fresh stored response is served
// here, a stale one is validated upstream, a miss goes upstream as is.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	c := f.cfg
	if !endStream {
		// As Envoy: a request with a body (or trailers) bypasses the cache.
		f.count(c.statsOf().uncacheable)
		return httpfilter.Continue
	}
	if why := uncacheableRequest(h); why != "" {
		f.cb.Log().Debug("cache: request not cacheable", "reason", why)
		f.count(c.statsOf().uncacheable)
		return httpfilter.Continue
	}
	var rcc requestCacheControl
	if !c.ignoreReqCC {
		rcc = requestControl(h)
	}
	f.looked, f.state = true, notServing
	f.head = h.Method == "HEAD"
	f.allowInsert = !rcc.noStore && !f.head
	f.key = c.cacheKey(h.Scheme, h.Authority, h.Path)
	f.req = headers.Request{Method: h.Method, Map: h.Map.Clone()}
	now := time.Now()
	e := c.store.lookup(f.key, h, &c.vary)
	if e != nil {
		age := calculateAge(&e.head, e.responseTime, now)
		if !requiresValidation(&e.head, age, rcc) {
			f.count(c.statsOf().hit)
			f.serve(e, age)
			return httpfilter.Continue
		}
	}
	if rcc.onlyIfCached {
		// RFC 9111 §5.2.1.7: nothing usable is stored and the client
		// forbids going to the origin.
		f.count(c.statsOf().miss)
		f.cb.SendLocalReply(504, "", httpfilter.LocalReply{Details: detailsOnlyIfCached})
		return httpfilter.Continue
	}
	if e == nil {
		if f.head {
			f.count(c.statsOf().uncacheable)
		} else {
			f.count(c.statsOf().miss)
		}
		return httpfilter.Continue
	}
	// Stale (or validation required): ask the origin whether the stored
	// response is still good (RFC 9111 §4.3.1), with Envoy's validators.
	f.state, f.stale = validating, e
	if etag := e.head.Get("etag"); etag != "" {
		h.Map.Set("if-none-match", etag)
	} else {
		h.Map.Del("if-none-match")
	}
	if lm := e.head.Get("last-modified"); !httpTime(lm).IsZero() {
		h.Map.Set("if-modified-since", lm)
	} else if d := e.head.Get("date"); d != "" {
		// No valid Last-Modified: the Date of the stored response (RFC
		// 9110 §13.1.3).
		h.Map.Set("if-modified-since", d)
	} else {
		h.Map.Del("if-modified-since")
	}
	return httpfilter.Continue
}

func (f *filter) count(c interface{ Inc() }) {
	if f.cfg.stats != nil {
		c.Inc()
	}
}

var noStats = &eventStats{}

// statsOf is the config's stats, or an empty set for cache (v1): count
// checks the config before incrementing.
func (c *filterConfig) statsOf() *eventStats {
	if c.stats == nil {
		return noStats
	}
	return c.stats
}

// serve answers the request from a fresh stored response.
func (f *filter) serve(e *entry, age time.Duration) {
	r, ok := f.cb.(httpfilter.Responder)
	if !ok {
		// No way to answer (not a connection manager stream): relay.
		return
	}
	f.state = servedFromCache
	resp := f.cb.ResponseHeaders()
	resp.Status = e.status
	resp.Map.CopyFrom(&e.head)
	resp.Map.Set("age", strconv.FormatInt(int64(age/time.Second), 10))
	f.cb.StreamInfo().SetFlag(streaminfo.ResponseFromCacheFilter)
	if conditional(&f.req) && notModified(&f.req, &e.head) {
		// The client's own precondition holds (RFC 9111 §4.3.2): 304,
		// with the fields RFC 9110 §15.4.5 lists.
		keep := resp.Map.Clone()
		resp.Map.Reset()
		for _, name := range notModifiedHeaders {
			for _, v := range keep.Values(name) {
				resp.Map.Add(name, v)
			}
		}
		resp.Status = 304
		r.StartResponse(detailsFromCache, 0, true)
		return
	}
	body := e.body
	if rr := rangeFor(f.cb.RequestHeaders(), int64(len(body))); rr.present {
		if rr.unsatisfiable {
			// As Envoy: 416 with the length, no body.
			resp.Status = 416
			resp.Map.Add("content-range", "bytes */"+strconv.Itoa(len(body)))
			resp.Map.Set("content-length", "0")
			r.StartResponse(detailsFromCache, 0, true)
			return
		}
		resp.Status = 206
		resp.Map.Add("content-range", "bytes "+strconv.FormatInt(rr.r.begin, 10)+"-"+
			strconv.FormatInt(rr.r.end-1, 10)+"/"+strconv.Itoa(len(body)))
		body = body[rr.r.begin:rr.r.end]
	}
	if resp.Status != 204 {
		// RFC 9110 §8.6: a 204 has no content-length.
		resp.Map.Set("content-length", strconv.Itoa(len(body)))
	}
	end := f.head || (len(body) == 0 && e.trailers == nil)
	if err := r.StartResponse(detailsFromCache, int64(len(body)), end); err != nil || end {
		return
	}
	for len(body) > 0 {
		n := min(len(body), chunkSize)
		if r.SendResponseData(body[:n]) != nil {
			return
		}
		body = body[n:]
	}
	var t *headers.Map
	if e.trailers != nil {
		c := e.trailers.Clone()
		t = &c
	}
	r.FinishResponse(t)
}

// encodedAdder is what the connection manager offers for a header-only
// response given a body (Envoy's addEncodedData / addEncodedTrailers).
type encodedAdder interface {
	AddEncodedData(p []byte)
	AddEncodedTrailers() *headers.Map
}

// EncodeHeaders completes a validation (304: the stored response, its
// headers refreshed) or starts storing a cacheable response.
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	switch {
	case f.state == servedFromCache || !f.looked:
		return httpfilter.Continue
	case f.state == validating && h.Status == 304:
		f.count(f.cfg.statsOf().validate)
		f.validated(h, endStream)
		return httpfilter.Continue
	case f.state == validating:
		f.count(f.cfg.statsOf().failedValidation)
	}
	if !f.allowInsert || h.Status == 206 || !cacheableResponse(h, &f.cfg.vary) {
		return httpfilter.Continue
	}
	limit := f.cfg.store.maxEntry()
	if f.cfg.maxBodyBytes > 0 {
		limit = min(limit, f.cfg.maxBodyBytes)
	}
	if n, err := strconv.ParseInt(h.Map.Get("content-length"), 10, 64); err == nil && n > limit {
		f.cb.Log().Debug("cache: response too large to store", "content_length", n, "limit", limit)
		return httpfilter.Continue
	}
	p := &pending{e: &entry{status: h.Status, head: h.Map.Clone(), responseTime: time.Now()}, limit: limit}
	if hasVary(&p.e.head) {
		// From the copy: h's strings live in a buffer the stream reuses.
		p.vary = varyValues(&p.e.head)
		id, ok := varyIdentifier(&f.cfg.vary, p.vary, &f.req)
		if !ok {
			return httpfilter.Continue
		}
		p.varyID = id
	}
	f.insert = p
	if endStream {
		f.commit()
	}
	return httpfilter.Continue
}

// validated turns a 304 to the cache's validation into the stored
// response, as Envoy's processSuccessfulValidation.
func (f *filter) validated(h *headers.Response, endStream bool) {
	e := f.stale
	// RFC 9111 §4.3.4: a 304 whose strong validator differs from the
	// stored one does not update it.
	etag := h.Map.Get("etag")
	update := etag == "" || etag == e.head.Get("etag")
	orig := h.Map.Clone()
	// The stored status, the 304's headers, then every stored header the
	// 304 lacks; the stored Age goes (a validated response is as fresh as
	// the origin's, unless the 304 came from a cache upstream with its own).
	h.Status = e.status
	h.Map.Del("content-length")
	for _, fld := range e.head.Fields() {
		if fld.Name == "age" || orig.Has(fld.Name) {
			continue
		}
		h.Map.Add(fld.Name, fld.Value)
	}
	if update {
		head := e.head.Clone()
		applyHeaderUpdate(&orig, &head)
		head.Del("age")
		if a := orig.Get("age"); a != "" {
			head.Set("age", a)
		}
		f.cfg.store.replace(e, &entry{status: e.status, head: head, body: e.body, trailers: e.trailers, responseTime: time.Now()})
	}
	f.cb.StreamInfo().SetFlag(streaminfo.ResponseFromCacheFilter)
	f.cb.StreamInfo().ResponseCodeDetails = detailsFromCache
	f.state = servedFromCache
	if conditional(&f.req) && notModified(&f.req, &h.Map) {
		// The client's own precondition holds against the refreshed
		// response: it gets the 304.
		h.Status = 304
		return
	}
	if f.head || !endStream {
		// HEAD: headers only. A 304 with a body (invalid) is relayed as is.
		return
	}
	a, ok := f.cb.(encodedAdder)
	if !ok {
		return
	}
	body := e.body
	h.Map.Set("content-length", strconv.Itoa(len(body)))
	for len(body) > 0 {
		n := min(len(body), chunkSize)
		a.AddEncodedData(body[:n])
		body = body[n:]
	}
	if len(e.body) == 0 {
		a.AddEncodedData(nil)
	}
	if e.trailers != nil {
		t := a.AddEncodedTrailers()
		for _, fld := range e.trailers.Fields() {
			t.Add(fld.Name, fld.Value)
		}
	}
}

// EncodeData stores the body as it streams to the client.
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	p := f.insert
	if p == nil {
		return httpfilter.Continue
	}
	if int64(len(p.e.body)+b.Len()) > p.limit {
		// Larger than max_body_bytes or the store's bound: not stored.
		f.cb.Log().Debug("cache: response body too large to store", "limit", p.limit)
		f.insert = nil
		return httpfilter.Continue
	}
	p.e.body = append(p.e.body, b.Bytes()...)
	if endStream {
		f.commit()
	}
	return httpfilter.Continue
}

// EncodeTrailers stores the trailers with the response.
func (f *filter) EncodeTrailers(t *headers.Map) httpfilter.Status {
	if p := f.insert; p != nil {
		c := t.Clone()
		p.e.trailers = &c
	}
	return httpfilter.Continue
}

// commit stores the complete response.
// cutShort are the response flags of a response that did not arrive
// whole (the upstream reset or timed out, the client went away): the
// connection manager still ends the stream, but what was buffered is not
// the resource and must not be stored.
const cutShort = streaminfo.Flags(streaminfo.UpstreamRequestTimeout | streaminfo.UpstreamRemoteReset |
	streaminfo.UpstreamConnectionTermination | streaminfo.DownstreamConnectionTermination | streaminfo.LocalReset |
	streaminfo.StreamIdleTimeout | streaminfo.UpstreamMaxStreamDurationReached)

func (f *filter) commit() {
	p := f.insert
	f.insert = nil
	if f.cb.StreamInfo().ResponseFlags&cutShort != 0 {
		f.cb.Log().Debug("cache: response cut short; not stored")
		return
	}
	if n, err := strconv.ParseInt(p.e.head.Get("content-length"), 10, 64); err == nil && n != int64(len(p.e.body)) {
		f.cb.Log().Debug("cache: response body shorter than its content-length; not stored", "content_length", n, "body", len(p.e.body))
		return
	}
	if !f.cfg.store.insert(f.key, p.e, p.vary, p.varyID) {
		f.cb.Log().Debug("cache: response too large to store")
	}
}

// OnDestroy drops a response that did not arrive whole.
func (f *filter) OnDestroy() { f.insert = nil }
