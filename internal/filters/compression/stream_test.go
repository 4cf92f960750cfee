package compression

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func TestRoundTrips(t *testing.T) {
	payload := []byte(strings.Repeat("the quick brown fox jumps over the lazy dog. ", 5000))
	libs := []struct {
		name   string
		c      func() Compressor
		d      func() Decompressor
		decode func([]byte) ([]byte, error) // a decoder we did not write
	}{
		{"gzip", func() Compressor { l, _ := gzipCompressor(gzipCfg(), ""); return l.New() }, func() Decompressor { l, _ := gzipDecompressor(gzipDCfg(), ""); return l.New() },
			func(b []byte) ([]byte, error) {
				r, err := gzip.NewReader(bytes.NewReader(b))
				if err != nil {
					return nil, err
				}
				return io.ReadAll(r)
			}},
		{"brotli", func() Compressor { l, _ := brotliCompressor(brotliCfg(), ""); return l.New() }, func() Decompressor { l, _ := brotliDecompressor(brotliDCfg(), ""); return l.New() },
			func(b []byte) ([]byte, error) { return io.ReadAll(brotli.NewReader(bytes.NewReader(b))) }},
		{"zstd", func() Compressor { l, _ := zstdCompressor(zstdCfg(), ""); return l.New() }, func() Decompressor { l, _ := zstdDecompressor(zstdDCfg(), ""); return l.New() },
			func(b []byte) ([]byte, error) {
				r, err := zstd.NewReader(bytes.NewReader(b))
				if err != nil {
					return nil, err
				}
				return io.ReadAll(r)
			}},
	}
	for _, l := range libs {
		t.Run(l.name, func(t *testing.T) {
			// Compress in chunks: every chunk is flushed, so a decoder that
			// gets only the first chunk already sees its data.
			c := l.c()
			var out []byte
			var firstFlush int
			for i := 0; i < len(payload); i += 7000 {
				end := min(i+7000, len(payload))
				var err error
				out, err = c.Compress(out, payload[i:end], end == len(payload))
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					firstFlush = len(out)
				}
			}
			got, err := l.decode(out)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("reference decoder: %v, %d of %d bytes", err, len(got), len(payload))
			}
			d := l.d()
			part, err := d.Decompress(nil, out[:firstFlush], false)
			if err != nil || len(part) < 7000 || !bytes.Equal(part, payload[:len(part)]) {
				t.Fatalf("first flushed block decodes to %d bytes (%v), want the first chunk", len(part), err)
			}
			rest, err := d.Decompress(part, out[firstFlush:], true)
			if err != nil || !bytes.Equal(rest, payload) {
				t.Fatalf("streamed decode: %v, %d of %d bytes", err, len(rest), len(payload))
			}
			d.Close()
		})
	}
}

func TestInflateRatioAndTruncation(t *testing.T) {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write(make([]byte, 10<<20)) // 10 MiB of zeros: ~10 KiB compressed
	w.Close()
	before := runtime.NumGoroutine()
	l, _ := gzipDecompressor(gzipDCfg(), "")
	d := l.New()
	if _, err := d.Decompress(nil, b.Bytes(), true); err != ErrInflateRatio {
		t.Fatalf("bomb: err %v, want ErrInflateRatio", err)
	}
	d.Close()
	d = l.New()
	if _, err := d.Decompress(nil, b.Bytes()[:b.Len()/2], true); err == nil {
		t.Fatal("a truncated stream decoded without error")
	}
	d.Close()
	// An abandoned decoder does not leak its goroutine.
	d = l.New()
	d.Decompress(nil, b.Bytes()[:100], false)
	d.Close()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines left, %d before", n, before)
	}
}
