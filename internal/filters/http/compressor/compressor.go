// Package compressor is envoy.filters.http.compressor: it compresses
// response bodies (and, when configured, request bodies) with a compression
// library (gzip, brotli, zstd), choosing the encoding from Accept-Encoding
// with q-values across every compressor filter of the stream, and applying
// Envoy's rules — minimum length, content types, Cache-Control:
// no-transform, ETag handling, Vary — as compressor.cc does.
package compressor

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/filters/compression"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

func init() {
	httpfilter.Register("envoy.filters.http.compressor", nil, &compressorv3.Compressor{}, &compressorv3.CompressorPerRoute{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute},
		"a response without content-length is compressed whatever its transfer encoding; status_header_enabled is not implemented")
}

// defaultTypes are Envoy's default compressible content types.
var defaultTypes = []string{"text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
	"text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript", "text/x-js",
	"application/ecmascript", "application/x-json", "application/xml", "application/json", "image/svg+xml",
	"text/xml", "application/xhtml+xml"}

type direction struct {
	enabled  runtime.FeatureFlag
	minLen   int64
	types    map[string]bool
	matchers []func(string) bool
}

func (d *direction) typeAllowed(ct string) bool {
	if ct == "" {
		return true
	}
	v := strings.ToLower(strings.TrimSpace(strings.Split(ct, ";")[0]))
	if len(d.matchers) > 0 {
		for _, m := range d.matchers {
			if m(v) {
				return true
			}
		}
		return false
	}
	return d.types[v]
}

type dirStats struct {
	compressed, notCompressed, uncompressedBytes, compressedBytes *stats.Counter
}

type filterConfig struct {
	lib                                *compression.CompressorLibrary
	resp, req                          direction
	disableOnEtag, weakenEtag          bool
	removeAcceptEncoding, chooseFirst  bool
	uncompressible                     map[int]bool
	st                                 dirStats
	reqSt                              dirStats
	noAccept, identity, used           *stats.Counter
	overshadowed, wildcard, notValid   *stats.Counter
	tooSmall, notCompressedEtag, gzipH *stats.Counter
}

func compileDirection(rt *runtime.Loader, c *compressorv3.Compressor_CommonDirectionConfig, path string, def direction) (direction, error) {
	if c == nil {
		return def, nil
	}
	if err := config.CheckFields(c, path, "enabled", "min_content_length", "content_type", "content_type_matcher"); err != nil {
		return direction{}, err
	}
	d := direction{enabled: runtime.NewFeatureFlag(rt, c.GetEnabled()), minLen: 30, types: def.types}
	if c.GetMinContentLength() != nil {
		d.minLen = int64(c.GetMinContentLength().GetValue())
	}
	if len(c.GetContentType()) > 0 {
		d.types = typeSet(c.GetContentType())
	}
	for i, sm := range c.GetContentTypeMatcher() {
		m, err := route.CompileStringMatcher(sm, config.Index(config.Join(path, "content_type_matcher"), i))
		if err != nil {
			return direction{}, err
		}
		d.matchers = append(d.matchers, m)
	}
	return d, nil
}

func typeSet(ts []string) map[string]bool {
	m := make(map[string]bool, len(ts))
	for _, t := range ts {
		m[strings.ToLower(t)] = true
	}
	return m
}

func compileLibrary(tc *corev3.TypedExtensionConfig, path string) (*compression.CompressorLibrary, error) {
	if tc == nil {
		return nil, config.Errorf(path, "compressor_library is required")
	}
	r, err := extension.Lookup(extension.CompressionCompressor, tc.GetTypedConfig(), config.Join(path, "typed_config"))
	if err != nil {
		return nil, err
	}
	return r.Ext.Factory.(compression.CompressorFactory)(r.Config, config.Join(path, "typed_config"))
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c := msg.(*compressorv3.Compressor)
	if err := config.CheckFields(c, path, "content_length", "content_type", "disable_on_etag_header", "remove_accept_encoding_header",
		"runtime_enabled", "compressor_library", "request_direction_config", "response_direction_config", "choose_first"); err != nil {
		return nil, err
	}
	lib, err := compileLibrary(c.GetCompressorLibrary(), config.Join(path, "compressor_library"))
	if err != nil {
		return nil, err
	}
	f := &filterConfig{lib: lib, chooseFirst: c.GetChooseFirst(), uncompressible: map[int]bool{}}
	// The deprecated top-level fields apply without response_direction_config.
	legacy := direction{enabled: runtime.NewFeatureFlag(ctx.Runtime, c.GetRuntimeEnabled()), minLen: 30, types: typeSet(defaultTypes)}
	if c.GetContentLength() != nil {
		legacy.minLen = int64(c.GetContentLength().GetValue())
	}
	if len(c.GetContentType()) > 0 {
		legacy.types = typeSet(c.GetContentType())
	}
	f.disableOnEtag, f.removeAcceptEncoding = c.GetDisableOnEtagHeader(), c.GetRemoveAcceptEncodingHeader()
	f.resp = legacy
	if rd := c.GetResponseDirectionConfig(); rd != nil {
		rp := config.Join(path, "response_direction_config")
		if err := config.CheckFields(rd, rp, "common_config", "disable_on_etag_header", "weaken_etag_on_compress",
			"remove_accept_encoding_header", "uncompressible_response_codes", "status_header_enabled"); err != nil {
			return nil, err
		}
		if rd.GetStatusHeaderEnabled() {
			return nil, config.Unsupported(config.Join(rp, "status_header_enabled"), "status_header_enabled")
		}
		if f.resp, err = compileDirection(ctx.Runtime, rd.GetCommonConfig(), config.Join(rp, "common_config"),
			direction{enabled: runtime.NewFeatureFlag(ctx.Runtime, nil), minLen: 30, types: typeSet(defaultTypes)}); err != nil {
			return nil, err
		}
		f.disableOnEtag, f.weakenEtag, f.removeAcceptEncoding = rd.GetDisableOnEtagHeader(), rd.GetWeakenEtagOnCompress(), rd.GetRemoveAcceptEncodingHeader()
		for _, code := range rd.GetUncompressibleResponseCodes() {
			f.uncompressible[int(code)] = true
		}
	}
	if rq := c.GetRequestDirectionConfig(); rq != nil {
		rp := config.Join(path, "request_direction_config")
		if err := config.CheckFields(rq, rp, "common_config"); err != nil {
			return nil, err
		}
		if f.req, err = compileDirection(ctx.Runtime, rq.GetCommonConfig(), config.Join(rp, "common_config"),
			direction{enabled: runtime.NewFeatureFlag(ctx.Runtime, nil), minLen: 30, types: typeSet(defaultTypes)}); err != nil {
			return nil, err
		}
	}
	// As Envoy: <connection manager>.compressor.<library name>.<library prefix>.
	sc := ctx.Scope("compressor." + c.GetCompressorLibrary().GetName() + "." + lib.StatPrefix)
	f.st = dirStats{sc.Counter("compressed"), sc.Counter("not_compressed"), sc.Counter("total_uncompressed_bytes"), sc.Counter("total_compressed_bytes")}
	f.reqSt = dirStats{sc.Counter("request.compressed"), sc.Counter("request.not_compressed"), sc.Counter("request.total_uncompressed_bytes"), sc.Counter("request.total_compressed_bytes")}
	f.noAccept, f.identity, f.used = sc.Counter("no_accept_header"), sc.Counter("header_identity"), sc.Counter("header_compressor_used")
	f.overshadowed, f.wildcard, f.notValid = sc.Counter("header_compressor_overshadowed"), sc.Counter("header_wildcard"), sc.Counter("header_not_valid")
	f.tooSmall, f.notCompressedEtag, f.gzipH = sc.Counter("content_length_too_small"), sc.Counter("not_compressed_etag"), sc.Counter("header_gzip")
	return f, nil
}

// perRoute is a compiled CompressorPerRoute.
type perRoute struct {
	disabled             bool
	lib                  *compression.CompressorLibrary
	removeAcceptEncoding *bool
}

func compilePerRoute(_ *httpfilter.Context, msg proto.Message, path string) (any, error) {
	pr := msg.(*compressorv3.CompressorPerRoute)
	out := &perRoute{disabled: pr.GetDisabled()}
	if o := pr.GetOverrides(); o != nil {
		op := config.Join(path, "overrides")
		if err := config.CheckFields(o, op, "response_direction_config", "compressor_library"); err != nil {
			return nil, err
		}
		if o.GetCompressorLibrary() != nil {
			lib, err := compileLibrary(o.GetCompressorLibrary(), config.Join(op, "compressor_library"))
			if err != nil {
				return nil, err
			}
			out.lib = lib
		}
		if rd := o.GetResponseDirectionConfig(); rd != nil {
			if err := config.CheckFields(rd, config.Join(op, "response_direction_config"), "remove_accept_encoding_header"); err != nil {
				return nil, err
			}
			if v := rd.GetRemoveAcceptEncodingHeader(); v != nil {
				b := v.GetValue()
				out.removeAcceptEncoding = &b
			}
		}
	}
	return out, nil
}

// registry is the stream's compressor filters, in order (filter state
// "compressors"), and the cached encoding decision.
type registry struct {
	encodings []string
	decided   bool
	decision  string
	stat      decisionStat
}

func (r *registry) String() string { return strings.Join(r.encodings, ",") }

type decisionStat uint8

const (
	statValid decisionStat = iota
	statIdentity
	statWildcard
	statNotValid
)

const registryKey = "envoy.compression.compressors"

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	f := &filter{cfg: c, cb: cb, lib: c.lib}
	info := cb.StreamInfo()
	reg, _ := info.FilterState[registryKey].(*registry)
	if reg == nil {
		reg = &registry{}
		info.SetFilterState(registryKey, reg)
	}
	reg.encodings = append(reg.encodings, c.lib.Encoding)
	f.reg = reg
	return f
}

type filter struct {
	cfg            *filterConfig
	cb             httpfilter.Callbacks
	lib            *compression.CompressorLibrary
	reg            *registry
	acceptEncoding string
	hasAccept, off bool
	comp, reqComp  compression.Compressor
	out            []byte
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	remove := f.cfg.removeAcceptEncoding
	if pr, ok := f.cb.PerRouteConfig().(*perRoute); ok {
		f.off = pr.disabled
		if pr.lib != nil {
			f.lib = pr.lib
		}
		if pr.removeAcceptEncoding != nil {
			remove = *pr.removeAcceptEncoding
		}
	}
	if f.off {
		return httpfilter.Continue
	}
	f.acceptEncoding, f.hasAccept = h.Map.Joined("accept-encoding"), h.Map.Has("accept-encoding")
	if f.cfg.resp.enabled.Enabled() && remove {
		h.Map.Del("accept-encoding")
	}
	// Request compression.
	rq := &f.cfg.req
	if rq.enabled.Enabled() && !end && !h.Map.Has("content-encoding") && rq.typeAllowed(h.Map.Get("content-type")) && lengthOK(h.Map.Get("content-length"), rq.minLen) {
		h.Map.Del("content-length")
		h.Map.Set("content-encoding", f.lib.Encoding)
		f.reqComp = f.lib.New()
		f.cfg.reqSt.compressed.Inc()
	} else if rq.enabled.Enabled() {
		f.cfg.reqSt.notCompressed.Inc()
	}
	return httpfilter.Continue
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.reqComp == nil {
		return httpfilter.Continue
	}
	f.cfg.reqSt.uncompressedBytes.Add(uint64(b.Len()))
	out, err := f.reqComp.Compress(f.out[:0], b.Bytes(), end)
	if err != nil {
		f.cb.SendLocalReply(500, "compression failed", httpfilter.LocalReply{Details: "compressor_error"})
		return httpfilter.StopNoBuffer
	}
	f.out = out
	b.Set(out)
	f.cfg.reqSt.compressedBytes.Add(uint64(len(out)))
	return httpfilter.Continue
}

// lengthOK applies min_content_length to a content-length header; an
// unknown length (a streamed body) is compressed.
func lengthOK(cl string, min int64) bool {
	if cl == "" {
		return true
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	return err == nil && n >= min
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	c := f.cfg
	if f.off || !c.resp.enabled.Enabled() {
		c.st.notCompressed.Inc()
		return httpfilter.Continue
	}
	lenOK := lengthOK(h.Map.Get("content-length"), c.resp.minLen)
	if !lenOK {
		c.tooSmall.Inc()
	}
	etagOK := !(c.disableOnEtag && h.Map.Has("etag"))
	if !etagOK {
		c.notCompressedEtag.Inc()
	}
	compressible := lenOK && c.resp.typeAllowed(h.Map.Get("content-type")) && !hasToken(h.Map.Joined("cache-control"), "no-transform") &&
		etagOK && !h.Map.Has("content-encoding") && !c.uncompressible[h.Status]
	if !end && compressible && f.acceptEncodingAllowed(h) {
		if et := h.Map.Get("etag"); len(et) > 2 && !((et[0] == 'W' || et[0] == 'w') && et[1] == '/') {
			// A strong ETag no longer describes the bytes: weaken it, or
			// remove it, as Envoy (weak ones stay).
			if c.weakenEtag {
				h.Map.Set("etag", "W/"+et)
			} else {
				h.Map.Del("etag")
			}
		}
		h.Map.Del("content-length")
		h.Map.Set("content-encoding", f.lib.Encoding)
		c.st.compressed.Inc()
		f.comp = f.lib.New()
	} else {
		c.st.notCompressed.Inc()
	}
	if compressible {
		// Caches must know the resource varies by Accept-Encoding, even when
		// this response was not compressed.
		if v := h.Map.Get("vary"); v == "" {
			h.Map.Set("vary", "Accept-Encoding")
		} else if !hasToken(v, "accept-encoding") {
			h.Map.Set("vary", v+", Accept-Encoding")
		}
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.comp == nil {
		return httpfilter.Continue
	}
	f.cfg.st.uncompressedBytes.Add(uint64(b.Len()))
	out, err := f.comp.Compress(f.out[:0], b.Bytes(), end)
	if err != nil {
		f.cb.Log().Warn("compression failed", "error", err)
	}
	f.out = out
	b.Set(out)
	f.cfg.st.compressedBytes.Add(uint64(len(out)))
	return httpfilter.Continue
}

func hasToken(v, tok string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

// acceptEncodingAllowed decides, once per stream for all compressor
// filters, which encoding the client gets (chooseEncoding in Envoy), and
// reports whether it is this filter's.
func (f *filter) acceptEncodingAllowed(h *headers.Response) bool {
	c := f.cfg
	if !f.hasAccept {
		c.noAccept.Inc()
		return false
	}
	if !f.reg.decided {
		f.reg.decision, f.reg.stat = choose(f.acceptEncoding, f.reg.encodings)
		f.reg.decided = true
	}
	mine := strings.EqualFold(f.reg.decision, f.lib.Encoding)
	switch f.reg.stat {
	case statValid:
		if mine {
			c.used.Inc()
			if f.lib.Encoding == "gzip" {
				c.gzipH.Inc()
			}
		} else {
			c.overshadowed.Inc()
		}
	case statIdentity:
		c.identity.Inc()
	case statWildcard:
		c.wildcard.Inc()
	default:
		c.notValid.Inc()
	}
	return mine
}

// choose picks the encoding with the highest q-value among those the
// stream's compressors provide, "identity" or "*" (the first registered).
func choose(accept string, provided []string) (string, decisionStat) {
	allowed := map[string]int{}
	for i, e := range provided {
		if _, dup := allowed[e]; !dup {
			allowed[e] = i
		}
	}
	type pair struct {
		enc string
		q   float64
	}
	var pairs []pair
	for _, tok := range strings.Split(accept, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		enc, params, _ := strings.Cut(tok, ";")
		p := pair{strings.ToLower(strings.TrimSpace(enc)), 1}
		if k, v, ok := strings.Cut(params, "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				continue // an unparseable q-value is skipped
			}
			p.q = q
		}
		pairs = append(pairs, p)
		if p.q == 0 {
			delete(allowed, p.enc)
		}
	}
	if len(pairs) == 0 || len(allowed) == 0 {
		return "identity", statNotValid
	}
	best := pair{"identity", 0}
	for _, p := range pairs {
		if _, ok := allowed[p.enc]; (ok || p.enc == "identity" || p.enc == "*") && p.q > best.q {
			best = p
		}
	}
	switch {
	case best.q == 0:
		return "identity", statNotValid
	case best.enc == "identity":
		return "identity", statIdentity
	case best.enc == "*":
		first, fi := "", len(provided)
		for e, i := range allowed {
			if i < fi {
				first, fi = e, i
			}
		}
		return first, statWildcard
	}
	return best.enc, statValid
}

var _ streaminfo.FilterStateValue = (*registry)(nil)
