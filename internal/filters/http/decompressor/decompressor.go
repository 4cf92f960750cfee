// Package decompressor is envoy.filters.http.decompressor: it decodes
// request and response bodies whose Content-Encoding is its library's
// (gzip, brotli, zstd), strips that coding from the header, and advertises
// the encoding upstream in Accept-Encoding, as Envoy's decompressor filter.
package decompressor

import (
	"errors"
	"strings"

	decompressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/decompressor/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
	"github.com/legateproxy/legate/internal/filters/compression"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/runtime"
	"github.com/legateproxy/legate/internal/stats"
)

func init() {
	httpfilter.Register("envoy.filters.http.decompressor", nil, &decompressorv3.Decompressor{}, nil,
		httpfilter.Factory{Compile: compile}, "")
}

type side struct {
	enabled                                                                   runtime.FeatureFlag
	ignoreNoTransform                                                         bool
	decompressed, notDecompressed, compressedBytes, uncompressedBytes, errors *stats.Counter
}

type filterConfig struct {
	lib       *compression.DecompressorLibrary
	req, resp side
	advertise bool
}

func compileSide(rt *runtime.Loader, cc *decompressorv3.Decompressor_CommonDirectionConfig, path string, sc func(string) *stats.Counter) (side, error) {
	s := side{enabled: runtime.NewFeatureFlag(rt, nil)}
	if cc != nil {
		if err := config.CheckFields(cc, path, "enabled", "ignore_no_transform_header"); err != nil {
			return s, err
		}
		s.enabled, s.ignoreNoTransform = runtime.NewFeatureFlag(rt, cc.GetEnabled()), cc.GetIgnoreNoTransformHeader()
	}
	s.decompressed, s.notDecompressed = sc("decompressed"), sc("not_decompressed")
	s.compressedBytes, s.uncompressedBytes, s.errors = sc("total_compressed_bytes"), sc("total_uncompressed_bytes"), sc("decompression_errors")
	return s, nil
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	d := msg.(*decompressorv3.Decompressor)
	if err := config.CheckFields(d, path, "decompressor_library", "request_direction_config", "response_direction_config"); err != nil {
		return nil, err
	}
	lp := config.Join(path, "decompressor_library")
	if d.GetDecompressorLibrary() == nil {
		return nil, config.Errorf(lp, "decompressor_library is required")
	}
	r, err := extension.Lookup(extension.CompressionDecompressor, d.GetDecompressorLibrary().GetTypedConfig(), config.Join(lp, "typed_config"))
	if err != nil {
		return nil, err
	}
	lib, err := r.Ext.Factory.(compression.DecompressorFactory)(r.Config, config.Join(lp, "typed_config"))
	if err != nil {
		return nil, err
	}
	// As Envoy: <connection manager>.decompressor.<library name>.<library prefix>{request,response}.
	base := "decompressor." + d.GetDecompressorLibrary().GetName() + "." + lib.StatPrefix
	f := &filterConfig{lib: lib, advertise: true}
	rq, rs := d.GetRequestDirectionConfig(), d.GetResponseDirectionConfig()
	if rq != nil {
		if err := config.CheckFields(rq, config.Join(path, "request_direction_config"), "common_config", "advertise_accept_encoding"); err != nil {
			return nil, err
		}
		if v := rq.GetAdvertiseAcceptEncoding(); v != nil {
			f.advertise = v.GetValue()
		}
	}
	if rs != nil {
		if err := config.CheckFields(rs, config.Join(path, "response_direction_config"), "common_config"); err != nil {
			return nil, err
		}
	}
	reqScope, respScope := ctx.Scope(base+"request."), ctx.Scope(base+"response.")
	if f.req, err = compileSide(ctx.Runtime, rq.GetCommonConfig(), config.Join(path, "request_direction_config.common_config"), reqScope.Counter); err != nil {
		return nil, err
	}
	if f.resp, err = compileSide(ctx.Runtime, rs.GetCommonConfig(), config.Join(path, "response_direction_config.common_config"), respScope.Counter); err != nil {
		return nil, err
	}
	return f, nil
}

func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{cfg: c, cb: cb}
}

type filter struct {
	cfg       *filterConfig
	cb        httpfilter.Callbacks
	req, resp compression.Decompressor
	out       []byte
	failed    bool
}

// strip removes the outermost coding from a Content-Encoding value when
// it is enc; it reports whether it did.
func strip(m *headers.Map, enc string) bool {
	v := m.Joined("content-encoding")
	if v == "" {
		return false
	}
	codings := strings.Split(v, ",")
	last := strings.TrimSpace(codings[len(codings)-1])
	if !strings.EqualFold(last, enc) {
		return false
	}
	codings = codings[:len(codings)-1]
	if len(codings) == 0 {
		m.Del("content-encoding")
	} else {
		m.Set("content-encoding", strings.TrimSpace(strings.Join(codings, ",")))
	}
	m.Del("content-length")
	return true
}

func noTransform(m *headers.Map) bool {
	for _, t := range strings.Split(m.Joined("cache-control"), ",") {
		if strings.EqualFold(strings.TrimSpace(t), "no-transform") {
			return true
		}
	}
	return false
}

func (f *filter) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	c := f.cfg
	if c.resp.enabled.Enabled() && c.advertise {
		// Let the upstream compress: the response will be decoded here.
		if v := h.Map.Joined("accept-encoding"); v == "" {
			h.Map.Set("accept-encoding", c.lib.Encoding)
		} else if !strings.Contains(strings.ToLower(v), c.lib.Encoding) {
			h.Map.Set("accept-encoding", v+","+c.lib.Encoding)
		}
	}
	if !c.req.enabled.Enabled() || end {
		return httpfilter.Continue
	}
	if (c.req.ignoreNoTransform || !noTransform(&h.Map)) && strip(&h.Map, c.lib.Encoding) {
		c.req.decompressed.Inc()
		f.req = c.lib.New()
	} else {
		c.req.notDecompressed.Inc()
	}
	return httpfilter.Continue
}

func (f *filter) run(d compression.Decompressor, s *side, b *httpfilter.Buffer, end bool) error {
	s.compressedBytes.Add(uint64(b.Len()))
	out, err := d.Decompress(f.out[:0], b.Bytes(), end)
	f.out = out
	b.Set(out)
	s.uncompressedBytes.Add(uint64(len(out)))
	if err != nil {
		s.errors.Inc()
	}
	return err
}

func (f *filter) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.req == nil {
		return httpfilter.Continue
	}
	if err := f.run(f.req, &f.cfg.req, b, end); err != nil {
		f.cb.Log().Info("request body does not decompress", "encoding", f.cfg.lib.Encoding, "error", err)
		status := 400
		if errors.Is(err, compression.ErrInflateRatio) {
			status = 413
		}
		f.cb.SendLocalReply(status, "request body does not decompress", httpfilter.LocalReply{Details: "decompressor_error"})
		return httpfilter.StopNoBuffer
	}
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	c := f.cfg
	if !c.resp.enabled.Enabled() || end {
		return httpfilter.Continue
	}
	if (c.resp.ignoreNoTransform || !noTransform(&h.Map)) && strip(&h.Map, c.lib.Encoding) {
		c.resp.decompressed.Inc()
		f.resp = c.lib.New()
	} else {
		c.resp.notDecompressed.Inc()
	}
	return httpfilter.Continue
}

func (f *filter) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if f.resp == nil || f.failed {
		if f.failed {
			return httpfilter.StopNoBuffer
		}
		return httpfilter.Continue
	}
	if err := f.run(f.resp, &f.cfg.resp, b, end); err != nil {
		// The upstream sent a body that is not what it says: the client
		// gets what decoded and the connection is closed.
		f.cb.Log().Info("response body does not decompress", "encoding", f.cfg.lib.Encoding, "error", err)
		f.failed = true
		f.cb.ResetStream()
	}
	return httpfilter.Continue
}

// OnDestroy releases the decoders.
func (f *filter) OnDestroy() {
	for _, d := range []compression.Decompressor{f.req, f.resp} {
		if d != nil {
			d.Close()
		}
	}
}
