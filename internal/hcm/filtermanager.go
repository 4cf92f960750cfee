package hcm

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/router"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// This file is the HTTP filter manager, after Envoy's
// (source/common/http/filter_manager.cc): the request headers, body and
// trailers go through the decoder filters in http_filters order before
// the router (the terminal filter); the response — from the upstream or a
// local reply — goes through the encoder filters in reverse order. A
// filter stops iteration to wait for body data; data it buffers is bounded
// by the buffer limit (413 on the request side, 500 on the response side,
// as Envoy). With no filters, or none that looks at bodies, the body goes
// straight between the codec and the router.

// httpFilterEntry is one compiled entry of http_filters (not the router).
type httpFilterEntry struct {
	name string
	cfg  httpfilter.Config
	// disabled filters run only on routes whose typed_per_filter_config
	// names them (FilterConfig with disabled: false, or any config).
	disabled bool
}

// filterSlot is a filter instance of one stream; it is the filter's
// httpfilter.Callbacks.
type filterSlot struct {
	s     *stream
	entry *httpFilterEntry
	f     httpfilter.Filter
	decH  httpfilter.DecoderHeaders
	decD  httpfilter.DecoderData
	decT  httpfilter.DecoderTrailers
	encH  httpfilter.EncoderHeaders
	encD  httpfilter.EncoderData
	encT  httpfilter.EncoderTrailers
	buf   httpfilter.Buffer // request data this filter buffers
	ebuf  httpfilter.Buffer // response data this filter buffers
	// cfgs holds what AllPerRouteConfigs returns (a route, its virtual
	// host and route table rarely give more), so that it allocates
	// nothing.
	cfgs [3]any
}

// errFilterReplied ends body processing once a filter has answered.
var errFilterReplied = errors.New("a filter answered the request")

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

// defaultBufferLimit is Envoy's default per_connection_buffer_limit_bytes.
const defaultBufferLimit = 1 << 20

// fm is the filter-manager state of one stream.
type fm struct {
	slots []filterSlot
	// hdrStop is 1 + the index of the filter holding the request headers
	// back (0: none, so that a zero fm is a stream without filters);
	// encStop likewise for the response headers.
	hdrStop, encStop int
	// decData is set when some filter sees the request body; the router
	// then reads the body through them (bodyQ).
	decData, bodyFiltered bool
	bodyQ                 []byte
	bodyQOff              int
	bodyQEnd              bool
	// enc is set when some filter sees the response; encData when some
	// filter sees its body.
	enc, encData bool
	// encoding is set while the response passes the encoder filters;
	// direct when a local reply replaced it (it then bypasses them).
	encoding, direct bool
	// replaced is set once such a local reply was sent.
	replaced bool
	// reset is set when a filter reset the stream.
	reset     bool
	headSent  bool
	encLength int64
	limit     int64
	// reqLength is the codec's request body length before any was read
	// (the codec reports what remains).
	reqLength int64
	// added is a body a filter gave a request that had none (AddDecodedData
	// from DecodeHeaders); addedFrom is the filter after it, the first to
	// see it; addedReq says the request now has a body.
	added     []byte
	addedFrom int
	addedReq  bool
	// addedResp is a body a filter gave a response that had none
	// (AddEncodedData from EncodeHeaders); addedRespTo is the filter before
	// it, the first to see it.
	addedResp   []byte
	addedRespTo int
	// addedTrailers are trailers a filter gave a response that had none
	// (AddEncodedTrailers); respAdded says a header-only response got a
	// body or trailers that way.
	addedTrailers *headers.Map
	respAdded     bool
	// decodingAt and encodingAt are 1 + the index of the filter whose
	// headers callback runs (0: none).
	decodingAt, encodingAt int
}

// startFilters instantiates the stream's filters for its route.
func (s *stream) startFilters() {
	m := &s.fm
	m.reqLength = s.ds.bodyLength()
	m.limit = s.cfg.bufferLimit
	if s.rt != nil {
		if l := s.rt.RequestBufferLimit(); l > 0 {
			m.limit = l
		}
	}
	if cap(m.slots) < len(s.cfg.filters) {
		// Preallocated: a slot's address is the filter's callbacks.
		m.slots = make([]filterSlot, 0, len(s.cfg.filters))
	}
	for i := range s.cfg.filters {
		e := &s.cfg.filters[i]
		pf := route.PerFilterConfig(s.rt, s.wc, e.name)
		if (pf != nil && pf.Disabled) || (e.disabled && pf == nil) {
			continue
		}
		m.slots = append(m.slots, filterSlot{s: s, entry: e})
		sl := &m.slots[len(m.slots)-1]
		f := e.cfg.NewFilter(sl)
		sl.f = f
		sl.decH, _ = f.(httpfilter.DecoderHeaders)
		sl.decD, _ = f.(httpfilter.DecoderData)
		sl.decT, _ = f.(httpfilter.DecoderTrailers)
		sl.encH, _ = f.(httpfilter.EncoderHeaders)
		sl.encD, _ = f.(httpfilter.EncoderData)
		sl.encT, _ = f.(httpfilter.EncoderTrailers)
		// A filter that sees request trailers needs the body to pass the
		// manager too: the trailers come at its end.
		m.decData = m.decData || sl.decD != nil || sl.decT != nil
		m.enc = m.enc || sl.encH != nil || sl.encD != nil || sl.encT != nil
		m.encData = m.encData || sl.encD != nil
	}
}

// endFilters tells the filters the stream is over and clears the state,
// keeping storage for the next request.
func (s *stream) endFilters() {
	m := &s.fm
	for i := range m.slots {
		if d, ok := m.slots[i].f.(httpfilter.Destroyer); ok {
			d.OnDestroy()
		}
		m.slots[i] = filterSlot{}
	}
	slots, q := m.slots[:0], m.bodyQ[:0]
	*m = fm{slots: slots, bodyQ: q}
}

// decodeFilters runs the request through the decoder filters. It reports
// whether the request goes on to the router (false: a filter answered, or
// the body could not be read).
func (s *stream) decodeFilters() bool {
	m := &s.fm
	if !s.decodeHeadersFrom(0) {
		return false
	}
	if m.addedReq {
		// A body a filter added goes through the later filters now, so
		// that the router knows its length.
		if err := s.pumpBody(); err != nil {
			if !errors.Is(err, errFilterReplied) {
				s.bodyReadFailed(err)
			}
			return false
		}
	}
	for m.hdrStop > 0 {
		if err := s.pumpBody(); err != nil {
			if !errors.Is(err, errFilterReplied) {
				s.bodyReadFailed(err)
			}
			return false
		}
	}
	return !s.respStarted
}

// decodeHeadersFrom runs DecodeHeaders from filter start on; it stops at a
// filter that holds the headers back for body data.
func (s *stream) decodeHeadersFrom(start int) bool {
	m := &s.fm
	end := m.reqLength == 0 && !m.addedReq
	for k := start; k < len(m.slots); k++ {
		sl := &m.slots[k]
		if sl.decH == nil {
			continue
		}
		m.decodingAt = k + 1
		st := sl.decH.DecodeHeaders(&s.req, end)
		m.decodingAt = 0
		if s.respStarted {
			return false
		}
		if m.added != nil && !m.addedReq {
			if !end {
				m.added = nil // only a header-only request takes a body
			} else {
				// The filter gave the header-only request a body (Envoy's
				// addDecodedData from decodeHeaders): the filters after it
				// see headers then that body, the upstream gets it.
				end, m.addedReq, m.addedFrom = false, true, k+1
				continue
			}
		}
		if st == httpfilter.StopIteration && !end {
			m.hdrStop = k + 1
			return true
		}
	}
	return true
}

// pumpBody reads one chunk of the request body from the codec and passes
// it through the decoder filters; what comes out waits in bodyQ for the
// router.
func (s *stream) pumpBody() error {
	m := &s.fm
	m.bodyFiltered = true
	if m.bodyQEnd {
		return io.EOF
	}
	if m.addedReq {
		// The body a filter added is the whole body (the client sent none).
		data := m.added
		m.added = nil
		err := s.decodeDataFrom(m.addedFrom, data, true)
		m.addedReq = false
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	n, err := s.ds.readBody(buf)
	end := err == io.EOF
	if err != nil && !end {
		return err
	}
	if n == 0 && !end {
		return nil
	}
	s.info.BytesReceived += uint64(n)
	err = s.decodeDataFrom(0, buf[:n], end)
	s.chargeBuffers()
	if err != nil {
		return err
	}
	if end {
		if t := s.ds.reqTrailers(); t != nil && t.Len() > 0 {
			for k := range m.slots {
				if sl := &m.slots[k]; sl.decT != nil {
					sl.decT.DecodeTrailers(t)
					if s.replied {
						return errFilterReplied
					}
				}
			}
		}
	}
	return nil
}

// decodeDataFrom passes request data through the decoder filters from
// filter start on.
func (s *stream) decodeDataFrom(start int, data []byte, end bool) error {
	m := &s.fm
	for k := start; k < len(m.slots); k++ {
		sl := &m.slots[k]
		if sl.decD != nil {
			sl.buf.Append(data)
			st := sl.decD.DecodeData(&sl.buf, end)
			// Only a filter's own answer ends the request body: a proxied
			// response may stream while the client still sends (gRPC
			// bidirectional streams).
			if s.replied {
				return errFilterReplied
			}
			if !end {
				switch st {
				case httpfilter.StopAndBuffer:
					if m.limit > 0 && int64(sl.buf.Len()) > m.limit {
						// As Envoy: a request buffered over the limit is 413.
						s.cfg.stats.rqTooLarge.Inc()
						s.localReply(413, "Payload Too Large", "request_payload_too_large", 0)
						return errFilterReplied
					}
					return nil
				case httpfilter.StopNoBuffer:
					sl.buf.Reset()
					return nil
				}
			}
			data = sl.buf.Bytes()
			if st == httpfilter.StopNoBuffer {
				data = nil
			}
			// data aliases sl.buf until the next call into this filter,
			// which comes after it has been copied on.
			sl.buf.Reset()
		}
		if k+1 == m.hdrStop {
			m.hdrStop = 0
			if !s.decodeHeadersFrom(k + 1) {
				return errFilterReplied
			}
		}
	}
	m.bodyQ = append(m.bodyQ, data...)
	if end {
		m.bodyQEnd = true
	}
	return nil
}

// readBody is how the router reads the request body: straight from the
// codec, or what came out of the decoder filters.
func (s *stream) readBody(p []byte) (int, error) {
	m := &s.fm
	if !m.decData && !m.bodyFiltered {
		return s.ds.readBody(p)
	}
	for m.bodyQOff >= len(m.bodyQ) {
		if m.bodyQEnd {
			return 0, io.EOF
		}
		m.bodyQ, m.bodyQOff = m.bodyQ[:0], 0
		if err := s.pumpBody(); err != nil {
			return 0, err
		}
	}
	n := copy(p, m.bodyQ[m.bodyQOff:])
	m.bodyQOff += n
	s.chargeBuffers()
	return n, nil
}

// bodyLength is the length of the request body the router will read: the
// codec's, or, through filters that may change it, the buffered length
// once the whole body has passed them (-1 before).
func (s *stream) bodyLength() int64 {
	m := &s.fm
	if !m.decData && !m.bodyFiltered {
		return s.ds.bodyLength()
	}
	if m.bodyQEnd {
		return int64(len(m.bodyQ) - m.bodyQOff)
	}
	if m.addedReq {
		return -1 // not yet through the later filters
	}
	if m.reqLength == 0 {
		return 0
	}
	// As Envoy, the content-length the filters left in the headers frames
	// the body upstream (a filter that changes the body's size updates or
	// removes it).
	if v := s.req.Map.Get("content-length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	return -1
}

// bodyReadFailed handles a request body that could not be read.
func (s *stream) bodyReadFailed(err error) {
	s.bodyConsumed = true
	if errors.Is(err, errRequestTimeout) {
		s.localReply(408, "request timeout", "request_overall_timeout", 0)
		return
	}
	s.closeConn = true
	s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
}

// errReplaced tells the router that a local reply from an encoder filter
// replaced the response it was relaying.
var errReplaced = router.ErrReplaced

// encodeHead starts the response (status and headers in s.resp). length
// is the body length or -1; end means there is no body.
func (s *stream) encodeHead(length int64, end bool) error {
	m := &s.fm
	if m.replaced {
		return errReplaced
	}
	s.respStarted = true
	if !m.enc || m.direct {
		m.headSent = true
		return s.ds.writeHead(s.resp.Status, &s.resp.Map, length, end)
	}
	m.encoding = true
	m.encLength = length
	if m.encData && !end {
		m.encLength = -1 // the filters may change the body
	}
	if !s.encodeHeadersFrom(len(m.slots)-1, end) {
		return errReplaced
	}
	if m.respAdded {
		// The head goes out with the body a filter added, from
		// encodeFinish (the router ends a header-only response there).
		return nil
	}
	if m.encStop > 0 {
		return nil
	}
	return s.writeHeadNow(end)
}

func (s *stream) writeHeadNow(end bool) error {
	m := &s.fm
	m.headSent = true
	return s.ds.writeHead(s.resp.Status, &s.resp.Map, m.encLength, end)
}

// encodeHeadersFrom runs EncodeHeaders from filter start down to the first.
func (s *stream) encodeHeadersFrom(start int, end bool) bool {
	m := &s.fm
	for k := start; k >= 0; k-- {
		sl := &m.slots[k]
		if sl.encH == nil {
			continue
		}
		m.encodingAt = k + 1
		st := sl.encH.EncodeHeaders(&s.resp, end)
		m.encodingAt = 0
		if m.direct {
			return false
		}
		if end && (m.addedResp != nil || m.addedTrailers != nil) {
			// The filter gave the header-only response a body or trailers
			// (Envoy's addEncodedData / addEncodedTrailers from
			// encodeHeaders): the filters before it see headers, then that
			// body.
			end, m.respAdded, m.addedRespTo = false, true, k-1
			continue
		}
		if st == httpfilter.StopIteration && !end {
			m.encStop = k + 1
			return true
		}
	}
	return true
}

// encodeBody sends response body data through the encoder filters.
func (s *stream) encodeBody(p []byte) error {
	m := &s.fm
	if m.replaced {
		return errReplaced
	}
	if !m.encData || m.direct {
		return s.ds.writeBody(p)
	}
	err := s.encodeDataFrom(len(m.slots)-1, p, false)
	s.chargeBuffers()
	return err
}

// encodeFlush sends what is buffered (streamed responses).
func (s *stream) encodeFlush() error {
	m := &s.fm
	if m.replaced {
		return errReplaced
	}
	if m.encStop > 0 || (m.encoding && !m.headSent) {
		return nil
	}
	return s.ds.flush()
}

// encodeFinish ends the response, with trailers if any.
func (s *stream) encodeFinish(trailers *headers.Map) error {
	m := &s.fm
	if m.replaced {
		return errReplaced
	}
	if !m.enc || m.direct {
		return s.ds.finish(trailers)
	}
	// Trailers first: as in Envoy, a filter sees the last data without
	// end_stream when trailers follow, so one holding the headers (the
	// gRPC bridges) can still change them from the trailers; the end of
	// the body then releases everything.
	if trailers != nil && trailers.Len() > 0 {
		s.info.RespTrailers = trailers
		for k := len(m.slots) - 1; k >= 0; k-- {
			if sl := &m.slots[k]; sl.encT != nil {
				sl.encT.EncodeTrailers(trailers)
				if m.direct {
					return errReplaced
				}
			}
		}
	}
	if m.respAdded {
		data := m.addedResp
		m.addedResp, m.respAdded = nil, false
		if err := s.encodeDataFrom(m.addedRespTo, data, true); err != nil {
			return err
		}
	} else if m.encData {
		if err := s.encodeDataFrom(len(m.slots)-1, nil, true); err != nil {
			return err
		}
	}
	if !m.headSent {
		m.encStop = 0
		if err := s.writeHeadNow(true); err != nil {
			return err
		}
	}
	if (trailers == nil || trailers.Len() == 0) && m.addedTrailers != nil && m.addedTrailers.Len() > 0 {
		// Trailers a filter added to a response that had none.
		trailers = m.addedTrailers
		s.info.RespTrailers = trailers
	}
	if m.reset {
		// No clean end: the codec closes the connection (closeConn).
		return s.ds.flush()
	}
	return s.ds.finish(trailers)
}

// encodeDataFrom passes response data through the encoder filters from
// filter start down to the first, then to the codec.
func (s *stream) encodeDataFrom(start int, data []byte, end bool) error {
	m := &s.fm
	for k := start; k >= 0; k-- {
		sl := &m.slots[k]
		if sl.encD != nil {
			sl.ebuf.Append(data)
			st := sl.encD.EncodeData(&sl.ebuf, end)
			if m.direct {
				return errReplaced
			}
			if !end {
				switch st {
				case httpfilter.StopAndBuffer:
					if m.limit > 0 && int64(sl.ebuf.Len()) > m.limit {
						s.cfg.stats.rsTooLarge.Inc()
						if !m.headSent {
							// As Envoy: a response buffered over the limit
							// before its headers went out is a 500.
							s.localReply(500, "Internal Server Error", "response_payload_too_large", 0)
							return errReplaced
						}
						return errors.New("response buffer limit exceeded")
					}
					return nil
				case httpfilter.StopNoBuffer:
					sl.ebuf.Reset()
					return nil
				}
			}
			data = sl.ebuf.Bytes()
			if st == httpfilter.StopNoBuffer {
				data = nil
			}
			sl.ebuf.Reset()
		}
		if k+1 == m.encStop {
			m.encStop = 0
			if !s.encodeHeadersFrom(k-1, false) {
				return errReplaced
			}
			if m.encStop > 0 || end {
				// At the end of the body the head goes out after the
				// last filter, with the exact length.
				continue
			}
			if err := s.writeHeadNow(false); err != nil {
				return err
			}
		}
	}
	if m.encStop > 0 {
		return nil
	}
	if !m.headSent {
		if end {
			m.encLength = int64(len(data))
		}
		if err := s.writeHeadNow(false); err != nil {
			return err
		}
	}
	if len(data) == 0 {
		return nil
	}
	return s.ds.writeBody(data)
}

// --- httpfilter.Callbacks ---

func (sl *filterSlot) Route() *route.Route { return sl.s.rt }

func (sl *filterSlot) ClearRouteCache() { sl.s.resolveRoute() }

// RouteCluster is the cluster the stream's route picked (a weighted
// cluster is picked once per resolution), as Envoy's clusterInfo(); the
// rate limit filter charges its stats there.
func (sl *filterSlot) RouteCluster() string { return sl.s.pickName }

func (sl *filterSlot) PerRouteConfig() any {
	if fc := route.PerFilterConfig(sl.s.rt, sl.s.wc, sl.entry.name); fc != nil {
		return fc.Config
	}
	return nil
}

func (sl *filterSlot) AllPerRouteConfigs() []any {
	var buf [4]*route.FilterConfig
	fcs := route.AllPerFilterConfigs(sl.s.rt, sl.s.wc, sl.entry.name, buf[:0])
	out := sl.cfgs[:0]
	for _, fc := range fcs {
		if fc.Config != nil {
			out = append(out, fc.Config)
		}
	}
	return out
}

func (sl *filterSlot) ResetStream() {
	sl.s.closeConn = true
	sl.s.fm.reset = true
}

func (sl *filterSlot) SetDecoderBufferLimit(n int64) { sl.s.fm.limit = n }

// BufferLimit is the stream's buffer limit (Envoy's bufferLimit()): what
// a filter that buffers by itself may hold; 0 is no limit.
func (sl *filterSlot) BufferLimit() int64 { return sl.s.fm.limit }

// AddDecodedData gives a header-only request a body, from the filter's
// DecodeHeaders (Envoy's addDecodedData there): the filters after it see
// it in DecodeData, with the end of the stream, and the upstream gets it.
// Called at any other time, it does nothing.
func (sl *filterSlot) AddDecodedData(p []byte) {
	m := &sl.s.fm
	if m.decodingAt == 0 || &m.slots[m.decodingAt-1] != sl {
		return
	}
	m.added = append(m.added, p...)
	if m.added == nil {
		m.added = []byte{} // an empty body still gives the request a body
	}
}

// AddEncodedData gives a header-only response a body, from the filter's
// EncodeHeaders (Envoy's addEncodedData there): the filters before it see
// it in EncodeData, with the end of the stream. Called at any other time,
// it does nothing (a filter changes the body in its EncodeData).
func (sl *filterSlot) AddEncodedData(p []byte) {
	m := &sl.s.fm
	if m.encodingAt == 0 || &m.slots[m.encodingAt-1] != sl {
		return
	}
	m.addedResp = append(m.addedResp, p...)
	if m.addedResp == nil {
		m.addedResp = []byte{} // an empty body still ends the head's stream later
	}
}

// AddEncodedTrailers returns trailers for a response that has none
// (Envoy's addEncodedTrailers), from EncodeHeaders of a header-only
// response or EncodeData at the end of the stream: the response ends
// with them (trailers the upstream sent win). The filters before this
// one do not see them.
func (sl *filterSlot) AddEncodedTrailers() *headers.Map {
	m := &sl.s.fm
	if m.addedTrailers == nil {
		m.addedTrailers = &headers.Map{}
	}
	return m.addedTrailers
}

func (sl *filterSlot) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	s := sl.s
	s.replyHeaders = r.Headers
	s.replyGRPCStatus = r.GRPCStatus
	s.localReply(status, body, r.Details, r.Flag)
}

// StartResponse is httpfilter.Responder's: a decoder filter's own
// response (Envoy's decoder_callbacks encodeHeaders), through the encoder
// filters like any response.
func (sl *filterSlot) StartResponse(details string, length int64, end bool) error {
	s := sl.s
	if s.replied || s.respStarted {
		return errFilterReplied
	}
	s.info.ResponseCodeDetails = details
	s.info.ResponseCode = s.resp.Status
	s.finalizeResponseHeaders()
	s.cfg.stats.rqStatus.Inc(s.resp.Status)
	if err := s.encodeHead(length, end); err != nil {
		return sl.responseFailed(err)
	}
	if end {
		return sl.FinishResponse(nil)
	}
	return nil
}

// SendResponseData is httpfilter.Responder's (Envoy's encodeData).
func (sl *filterSlot) SendResponseData(p []byte) error {
	s := sl.s
	if s.replied || !s.respStarted {
		return errFilterReplied
	}
	if err := s.encodeBody(p); err != nil {
		return sl.responseFailed(err)
	}
	s.info.BytesSent += uint64(len(p))
	return nil
}

// FinishResponse is httpfilter.Responder's: the end of the filter's
// response (Envoy's encodeTrailers, or encodeData with end_stream).
func (sl *filterSlot) FinishResponse(trailers *headers.Map) error {
	s := sl.s
	if s.replied || !s.respStarted {
		return errFilterReplied
	}
	err := s.encodeFinish(trailers)
	s.replied = true
	if err != nil {
		return sl.responseFailed(err)
	}
	s.drainRequestBody()
	return nil
}

// responseFailed ends a filter's response that could not be written: the
// client is gone (the connection closes) or an encoder filter's local
// reply replaced it.
func (sl *filterSlot) responseFailed(err error) error {
	s := sl.s
	s.replied = true
	if !errors.Is(err, errReplaced) {
		s.info.SetFlag(streaminfo.DownstreamConnectionTermination)
		s.closeConn = true
	}
	return err
}

func (sl *filterSlot) StreamInfo() *streaminfo.Info { return &sl.s.info }

func (sl *filterSlot) RequestHeaders() *headers.Request { return &sl.s.req }

func (sl *filterSlot) ResponseHeaders() *headers.Response { return &sl.s.resp }

func (sl *filterSlot) ConnectionState(key any, create func() any) any {
	c := sl.s.conn
	if v, ok := c.bucketMap().Load(key); ok {
		return v
	}
	v, _ := c.bucketMap().LoadOrStore(key, create())
	return v
}

func (sl *filterSlot) Log() *slog.Logger { return sl.s.d.Log.With("filter", sl.entry.name) }
