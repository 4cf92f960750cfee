package compressor_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/legateproxy/legate/internal/testutil"
)

// The filters of Envoy's gzip example (examples/gzip), then brotli and
// zstd compressors after it, and the example's decompressor for uploads.
const cfg = `
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/plain"}
                route: {cluster: backend}
                typed_per_filter_config:
                  envoy.filters.http.compressor: {"@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute, disabled: true}
              - match: {prefix: "/"}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.compressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config:
                common_config:
                  min_content_length: 100
                  content_type: [application/json]
                disable_on_etag_header: true
              compressor_library:
                name: text_optimized
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
                  memory_level: 3
                  window_bits: 10
          - name: brotli
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config: {common_config: {content_type: [application/json]}}
              compressor_library: {name: br, typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli}}
          - name: zstd
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
              response_direction_config: {common_config: {content_type: [application/json]}}
              compressor_library: {name: zs, typed_config: {"@type": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd}}
          - name: envoy.filters.http.decompressor
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor
              response_direction_config: {common_config: {enabled: {default_value: false, runtime_key: off}}}
              decompressor_library:
                name: upload
                typed_config:
                  "@type": "type.googleapis.com/envoy.extensions.compression.gzip.decompressor.v3.Gzip"
                  window_bits: 9
                  chunk_size: 8192
                  max_inflate_ratio: 1000
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: {{.Host}}, port_value: {{.Port}}}}}}]}]
`

var doc = []byte(`{"items": [` + strings.Repeat(`{"name": "legate", "kind": "proxy"},`, 200) + `{}]}`)

func backend() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("x-content-encoding", r.Header.Get("Content-Encoding"))
			w.Header().Set("x-accept-encoding", r.Header.Get("Accept-Encoding"))
			w.Header().Set("Content-Type", "text/plain")
			w.Write(b)
			return
		case "/small":
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"a": 1}`))
			return
		case "/html":
			w.Header().Set("Content-Type", "text/html")
		case "/etag":
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Type", "application/json")
		case "/weak":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("ETag", `W/"weak"`)
		default:
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
		}
		w.Write(doc)
	})
}

func TestCompressor(t *testing.T) {
	up := testutil.StartUpstream(t, backend())
	h, port := up.Host()
	p := testutil.StartProxy(t, cfg, map[string]string{"Host": h, "Port": port})
	get := func(path, accept string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", p.URL("http", path), nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := testutil.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	decode := map[string]func([]byte) ([]byte, error){
		"gzip": func(b []byte) ([]byte, error) {
			r, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(r)
		},
		"br": func(b []byte) ([]byte, error) { return io.ReadAll(brotli.NewReader(bytes.NewReader(b))) },
		"zstd": func(b []byte) ([]byte, error) {
			r, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(r)
		},
	}
	for _, c := range []struct{ path, accept, want string }{
		{"/", "gzip", "gzip"},
		{"/", "br;q=1, gzip;q=0.5", "br"},
		{"/", "gzip;q=0.2, zstd;q=0.9", "zstd"},
		{"/", "*", "gzip"},            // the first compressor registered
		{"/", "gzip;q=0, br;q=0", ""}, // refused
		{"/", "identity", ""},
		{"/", "", ""},
		{"/small", "gzip", ""}, // under min_content_length
		{"/html", "gzip", ""},  // not a listed content type
		{"/etag", "gzip", ""},  // disable_on_etag_header
		{"/plain", "gzip", ""}, // CompressorPerRoute disabled
		{"/weak", "br", "br"},  // a weak ETag stays
		{"/etag", "br", "br"},  // a strong one is removed (brotli has no disable_on_etag_header)
	} {
		resp, body := get(c.path, c.accept)
		enc := resp.Header.Get("Content-Encoding")
		if enc != c.want {
			t.Errorf("%s Accept-Encoding %q: content-encoding %q, want %q", c.path, c.accept, enc, c.want)
			continue
		}
		if c.want == "" {
			continue
		}
		got, err := decode[enc](body)
		if err != nil || !bytes.Equal(got, doc) {
			t.Errorf("%s %s: body does not decode to the original: %v (%d bytes)", c.path, enc, err, len(got))
		}
		if resp.Header.Get("Vary") != "Accept-Encoding" || resp.Header.Get("Content-Length") != "" {
			t.Errorf("%s %s: vary %q content-length %q", c.path, enc, resp.Header.Get("Vary"), resp.Header.Get("Content-Length"))
		}
		wantTag := map[string]string{"/weak": `W/"weak"`}[c.path]
		if resp.Header.Get("ETag") != wantTag {
			t.Errorf("%s: etag %q, want %q", c.path, resp.Header.Get("ETag"), wantTag)
		}
	}
	if n := p.Stat(t, "http.ingress.compressor.text_optimized.gzip.compressed"); n != 2 {
		t.Errorf("gzip compressed = %d, want 2", n)
	}
	if n := p.Stat(t, "http.ingress.compressor.text_optimized.gzip.not_compressed_etag"); n != 2 {
		t.Errorf("not_compressed_etag = %d, want 2 (/etag for gzip, /weak: brotli ran first and removed the strong tag of /etag)", n)
	}
	// curl, a client we did not write, decodes what we send.
	if out, err := exec.Command("curl", "-s", "--compressed", p.URL("http", "/")).Output(); err != nil || !bytes.Equal(out, doc) {
		t.Errorf("curl --compressed: %v, %d bytes", err, len(out))
	}
}

func TestDecompressor(t *testing.T) {
	up := testutil.StartUpstream(t, backend())
	h, port := up.Host()
	p := testutil.StartProxy(t, cfg, map[string]string{"Host": h, "Port": port})
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(doc)
	zw.Close()
	req, _ := http.NewRequest("POST", p.URL("http", "/upload"), bytes.NewReader(zb.Bytes()))
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, doc) || resp.Header.Get("x-content-encoding") != "" {
		t.Errorf("upstream got %d bytes with content-encoding %q, want the %d decoded bytes", len(body), resp.Header.Get("x-content-encoding"), len(doc))
	}
	// A body that is not gzip is refused with 400.
	req, _ = http.NewRequest("POST", p.URL("http", "/upload"), strings.NewReader("not gzip at all"))
	req.Header.Set("Content-Encoding", "gzip")
	resp, err = testutil.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("corrupt upload: status %d, want 400", resp.StatusCode)
	}
	if n := p.Stat(t, "http.ingress.decompressor.upload.gzip.request.decompressed"); n != 2 {
		t.Errorf("request.decompressed = %d, want 2", n)
	}
}
