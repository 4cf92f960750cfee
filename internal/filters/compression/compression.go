// Package compression is Envoy's compression libraries
// (envoy.compression.{gzip,brotli,zstd}.{compressor,decompressor}) for the
// compressor and decompressor HTTP filters: streaming encoders that flush
// at every body chunk (as Envoy's Z_SYNC_FLUSH) and streaming decoders
// bounded by an inflate ratio.
package compression

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	brotlicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	brotlidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	gzipcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	gzipdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	zstdcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	zstddv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension"
)

// Compressor compresses one stream.
type Compressor interface {
	// Compress appends to dst the compressed form of p, flushed so that
	// the peer can decode everything so far; finish ends the stream.
	Compress(dst, p []byte, finish bool) ([]byte, error)
}

// Decompressor decompresses one stream.
type Decompressor interface {
	// Decompress appends to dst what p (the next compressed bytes) decodes
	// to; finish says the input has ended. Close releases it.
	Decompress(dst, p []byte, finish bool) ([]byte, error)
	Close()
}

// CompressorLibrary is the Factory of an envoy.compression.compressor.
type CompressorLibrary struct {
	// Encoding is the content-encoding token (gzip, br, zstd); StatPrefix
	// the library's stats scope (gzip., brotli., zstd.).
	Encoding, StatPrefix string
	New                  func() Compressor
}

// DecompressorLibrary is the Factory of an envoy.compression.decompressor.
type DecompressorLibrary struct {
	Encoding, StatPrefix string
	// MaxInflateRatio bounds output/input (zip bombs); 0 means the default.
	New func() Decompressor
}

// CompressorFactory compiles a compressor library config.
type CompressorFactory func(cfg proto.Message, path string) (*CompressorLibrary, error)

// DecompressorFactory compiles a decompressor library config.
type DecompressorFactory func(cfg proto.Message, path string) (*DecompressorLibrary, error)

func init() {
	reg := func(name string, cat extension.Category, cfg proto.Message, f any, notes string) {
		extension.Register(extension.Extension{Name: name, Category: cat, Config: cfg, Factory: f, Notes: notes})
	}
	reg("envoy.compression.gzip.compressor", extension.CompressionCompressor, &gzipcv3.Gzip{}, CompressorFactory(gzipCompressor),
		"Go's deflate (klauspost/compress): memory_level, window_bits and compression_strategy tune zlib and are accepted without effect on the output's meaning")
	reg("envoy.compression.brotli.compressor", extension.CompressionCompressor, &brotlicv3.Brotli{}, CompressorFactory(brotliCompressor), "")
	reg("envoy.compression.zstd.compressor", extension.CompressionCompressor, &zstdcv3.Zstd{}, CompressorFactory(zstdCompressor), "dictionaries are not implemented")
	reg("envoy.compression.gzip.decompressor", extension.CompressionDecompressor, &gzipdv3.Gzip{}, DecompressorFactory(gzipDecompressor), "")
	reg("envoy.compression.brotli.decompressor", extension.CompressionDecompressor, &brotlidv3.Brotli{}, DecompressorFactory(brotliDecompressor), "")
	reg("envoy.compression.zstd.decompressor", extension.CompressionDecompressor, &zstddv3.Zstd{}, DecompressorFactory(zstdDecompressor), "dictionaries are not implemented")
}

// writerCompressor drives a streaming encoder that writes into a buffer.
type writerCompressor struct {
	buf bytes.Buffer
	w   interface {
		io.Writer
		Flush() error
		Close() error
	}
	// done, when set, takes the encoder back once its stream finished (a
	// pool: a gzip writer is about 1 MB of state to allocate per stream).
	done func()
}

func (c *writerCompressor) Compress(dst, p []byte, finish bool) ([]byte, error) {
	if c.w == nil {
		return dst, errors.New("compression stream already finished")
	}
	if len(p) > 0 {
		if _, err := c.w.Write(p); err != nil {
			return dst, err
		}
	}
	var err error
	if finish {
		err = c.w.Close()
	} else {
		err = c.w.Flush()
	}
	dst = append(dst, c.buf.Bytes()...)
	c.buf.Reset()
	if finish && c.done != nil {
		c.done()
		c.done, c.w = nil, nil
	}
	return dst, err
}

func gzipCompressor(msg proto.Message, path string) (*CompressorLibrary, error) {
	g := msg.(*gzipcv3.Gzip)
	if err := config.CheckFields(g, path, "memory_level", "compression_level", "compression_strategy", "window_bits", "chunk_size"); err != nil {
		return nil, err
	}
	level := gzip.DefaultCompression
	switch g.GetCompressionLevel() {
	case gzipcv3.Gzip_BEST_SPEED:
		level = gzip.BestSpeed
	case gzipcv3.Gzip_BEST_COMPRESSION:
		level = gzip.BestCompression
	case gzipcv3.Gzip_DEFAULT_COMPRESSION:
	default:
		// COMPRESSION_LEVEL_1 … 9 are the zlib levels.
		if n := int(g.GetCompressionLevel()); n >= 1 && n <= 9 {
			level = n
		}
	}
	// Writers are reused across streams of this config: one that finished
	// goes back to the pool and is Reset onto the next stream's buffer.
	pool := &sync.Pool{}
	return &CompressorLibrary{Encoding: "gzip", StatPrefix: "gzip.", New: func() Compressor {
		c := &writerCompressor{}
		zw, _ := pool.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(&c.buf, level)
		} else {
			zw.Reset(&c.buf)
		}
		c.w = zw
		c.done = func() { pool.Put(zw) }
		return c
	}}, nil
}

func brotliCompressor(msg proto.Message, path string) (*CompressorLibrary, error) {
	b := msg.(*brotlicv3.Brotli)
	if err := config.CheckFields(b, path, "quality", "encoder_mode", "window_bits", "input_block_bits", "chunk_size", "disable_literal_context_modeling"); err != nil {
		return nil, err
	}
	opts := brotli.WriterOptions{Quality: 3, LGWin: 18}
	if b.GetQuality() != nil {
		opts.Quality = int(b.GetQuality().GetValue())
	}
	if b.GetWindowBits() != nil {
		opts.LGWin = int(b.GetWindowBits().GetValue())
	}
	return &CompressorLibrary{Encoding: "br", StatPrefix: "brotli.", New: func() Compressor {
		c := &writerCompressor{}
		c.w = brotli.NewWriterOptions(&c.buf, opts)
		return c
	}}, nil
}

func zstdCompressor(msg proto.Message, path string) (*CompressorLibrary, error) {
	z := msg.(*zstdcv3.Zstd)
	if err := config.CheckFields(z, path, "compression_level", "enable_checksum", "strategy", "chunk_size"); err != nil {
		return nil, err
	}
	level := zstd.SpeedDefault
	if z.GetCompressionLevel() != nil {
		level = zstd.EncoderLevelFromZstd(int(z.GetCompressionLevel().GetValue()))
	}
	crc := z.GetEnableChecksum()
	return &CompressorLibrary{Encoding: "zstd", StatPrefix: "zstd.", New: func() Compressor {
		c := &writerCompressor{}
		c.w, _ = zstd.NewWriter(&c.buf, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(crc), zstd.WithEncoderConcurrency(1))
		return c
	}}, nil
}

// ErrInflateRatio is a stream that decompresses to more than the
// configured ratio of its size (a decompression bomb).
var ErrInflateRatio = errors.New("decompressed data exceeds max_inflate_ratio")

func gzipDecompressor(msg proto.Message, path string) (*DecompressorLibrary, error) {
	g := msg.(*gzipdv3.Gzip)
	if err := config.CheckFields(g, path, "window_bits", "chunk_size", "max_inflate_ratio"); err != nil {
		return nil, err
	}
	ratio := uint64(100) // Envoy's default max_inflate_ratio
	if g.GetMaxInflateRatio() != nil {
		ratio = uint64(g.GetMaxInflateRatio().GetValue())
	}
	return &DecompressorLibrary{Encoding: "gzip", StatPrefix: "gzip.", New: func() Decompressor {
		return newStreamDecoder(ratio, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) })
	}}, nil
}

func brotliDecompressor(msg proto.Message, path string) (*DecompressorLibrary, error) {
	if err := config.CheckFields(msg, path, "disable_ring_buffer_reallocation", "chunk_size"); err != nil {
		return nil, err
	}
	return &DecompressorLibrary{Encoding: "br", StatPrefix: "brotli.", New: func() Decompressor {
		// As Envoy, only the gzip decompressor bounds the inflate ratio.
		return newStreamDecoder(0, func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil })
	}}, nil
}

func zstdDecompressor(msg proto.Message, path string) (*DecompressorLibrary, error) {
	if err := config.CheckFields(msg, path, "chunk_size"); err != nil {
		return nil, err
	}
	return &DecompressorLibrary{Encoding: "zstd", StatPrefix: "zstd.", New: func() Decompressor {
		return newStreamDecoder(0, func(r io.Reader) (io.Reader, error) {
			d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
			if err != nil {
				return nil, err
			}
			return d.IOReadCloser(), nil
		})
	}}, nil
}
