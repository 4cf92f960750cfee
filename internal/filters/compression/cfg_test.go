package compression

import (
	brotlicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	brotlidv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	gzipcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	gzipdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	zstdcv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	zstddv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
)

func gzipCfg() *gzipcv3.Gzip        { return &gzipcv3.Gzip{} }
func gzipDCfg() *gzipdv3.Gzip       { return &gzipdv3.Gzip{} }
func brotliCfg() *brotlicv3.Brotli  { return &brotlicv3.Brotli{} }
func brotliDCfg() *brotlidv3.Brotli { return &brotlidv3.Brotli{} }
func zstdCfg() *zstdcv3.Zstd        { return &zstdcv3.Zstd{} }
func zstdDCfg() *zstddv3.Zstd       { return &zstddv3.Zstd{} }
