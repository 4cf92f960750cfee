// Upstream HTTP filters: a cluster's http_filters ending in
// upstream_codec. Registers the test filter test.upstream_probe (@type
// envoy.extensions.filters.http.thrift_to_metadata.v3.ThriftToMetadata).

package features_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	probev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/thrift_to_metadata/v3"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/testutil"
)

// probeAttempts numbers the upstream requests the probe filter saw.
var probeAttempts atomic.Int64

// The probe is a test-only upstream HTTP filter (registered on a type
// Legate does not implement): it numbers each upstream request, holds the
// request headers until the whole body passed and appends "!" to it,
// holds the response headers until its body passed and upper-cases it,
// and answers 403 itself when asked to.
func init() {
	httpfilter.Register("test.upstream_probe", nil, &probev3.ThriftToMetadata{}, nil, httpfilter.Factory{
		Upstream: true,
		Compile: func(ctx *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
			return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter { return &probe{cb: cb} }), nil
		},
	}, "test only")
}

type probe struct{ cb httpfilter.Callbacks }

func (p *probe) DecodeHeaders(h *headers.Request, end bool) httpfilter.Status {
	if h.Get("x-probe-deny") != "" {
		p.cb.SendLocalReply(403, "denied upstream", httpfilter.LocalReply{Details: "probe_denied"})
		return httpfilter.StopIteration
	}
	h.Set("x-probe-attempt", strconv.FormatInt(probeAttempts.Add(1), 10))
	if end {
		return httpfilter.Continue
	}
	h.Del("content-length") // the body changes
	return httpfilter.StopIteration
}

func (p *probe) DecodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !end {
		return httpfilter.StopAndBuffer
	}
	b.Append([]byte("!"))
	return httpfilter.Continue
}

func (p *probe) EncodeHeaders(h *headers.Response, end bool) httpfilter.Status {
	h.Set("x-probe", "seen")
	if end {
		return httpfilter.Continue
	}
	return httpfilter.StopIteration
}

func (p *probe) EncodeData(b *httpfilter.Buffer, end bool) httpfilter.Status {
	if !end {
		return httpfilter.StopAndBuffer
	}
	b.Set(bytes.ToUpper(b.Bytes()))
	return httpfilter.Continue
}

const probeFilters = `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http_protocol_options: {}}, http_filters: [
  {name: probe, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.thrift_to_metadata.v3.ThriftToMetadata}},
  {name: envoy.filters.http.upstream_codec, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}}]}}`

// TestUpstreamFilters: a cluster's upstream filters see each upstream
// request (one instance per attempt, after the router's rewrites) and the
// response before the client does; a local reply from one ends the request
// without a retry.
func TestUpstreamFilters(t *testing.T) {
	var fails atomic.Int64
	fails.Store(1)
	backend := testutil.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/retry" && fails.Add(-1) >= 0 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("x-seen-attempt", r.Header.Get("x-probe-attempt"))
		w.Header().Set("x-seen-length", strconv.FormatInt(r.ContentLength, 10))
		w.Write([]byte("path=" + r.URL.Path + " body=" + string(body)))
	}))
	p := start(t, cfg{
		vhosts: vhost(`{match: {prefix: /retry}, route: {cluster: web, retry_policy: {retry_on: 5xx, num_retries: 2}}}`,
			`{match: {prefix: /old}, route: {cluster: web, prefix_rewrite: /new}}`,
			`{match: {prefix: /}, route: {cluster: web}}`),
		clusters: "[" + staticCluster("web", probeFilters, backend.Addr) + "]",
	})
	c := testutil.Client()

	t.Run("request and response pass the filter", func(t *testing.T) {
		code, h, body := testutil.Do(t, c, "POST", p.URL("http", "/old/x"), "hello")
		if code != 200 || body != "PATH=/NEW/X BODY=HELLO!" {
			t.Fatalf("status %d body %q, want 200 %q", code, body, "PATH=/NEW/X BODY=HELLO!")
		}
		if h.Get("x-probe") != "seen" || h.Get("x-seen-length") != "6" {
			t.Errorf("headers %v: want x-probe: seen and the upstream body of 6 bytes with its length", h)
		}
	})
	t.Run("one instance per attempt", func(t *testing.T) {
		before := probeAttempts.Load()
		code, h, body := testutil.Do(t, c, "POST", p.URL("http", "/retry"), "r")
		if code != 200 {
			t.Fatalf("status %d: %s", code, body)
		}
		if got := probeAttempts.Load() - before; got != 2 {
			t.Errorf("the filter saw %d upstream requests, want 2 (the first attempt and its retry)", got)
		}
		if want := strconv.FormatInt(before+2, 10); h.Get("x-seen-attempt") != want {
			t.Errorf("the host saw attempt %q, want %q", h.Get("x-seen-attempt"), want)
		}
	})
	t.Run("local reply", func(t *testing.T) {
		hits := backend.Hits()
		code, _, body := testutil.Do(t, c, "GET", p.URL("http", "/retry"), "", "x-probe-deny", "1")
		if code != 403 || body != "denied upstream" {
			t.Errorf("status %d body %q, want 403 from the upstream filter", code, body)
		}
		if backend.Hits() != hits {
			t.Error("the request reached the host")
		}
	})
}

// TestUpstreamFilterConfig: the chain must end in upstream_codec, and
// only filters Envoy allows upstream may be in it.
func TestUpstreamFilterConfig(t *testing.T) {
	codec := `{name: envoy.filters.http.upstream_codec, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec}}`
	cors := `{name: cors, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}`
	opts := func(filters string) string {
		return `typed_extension_protocol_options: {envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http_protocol_options: {}}, http_filters: [` + filters + `]}}`
	}
	for _, tc := range []struct {
		name, cluster, hcm, want string
	}{
		{"no codec", opts(cors), "", "cannot be an upstream filter"},
		{"codec not last", opts(codec + ", " + codec), "", "must be the last upstream HTTP filter"},
		{"missing codec", opts(`{name: probe, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.thrift_to_metadata.v3.ThriftToMetadata}}`), "", "must be envoy.filters.http.upstream_codec"},
		{"codec downstream", "", "http_filters: [" + codec + `, {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]`, "is an upstream HTTP filter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := testutil.TryStartProxy(t, cfg{hcm: tc.hcm, vhosts: vhost(`{match: {prefix: /}, route: {cluster: web}}`),
				clusters: "[" + staticCluster("web", tc.cluster, "127.0.0.1:1") + "]"}.String(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}
