package cors

import (
	"testing"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
)

// benchCallbacks is the stream as the CORS filter sees it: a forwarding
// route and the virtual host's CorsPolicy. Calling anything else panics
// (the embedded interface is nil), so the benchmark notices new uses.
type benchCallbacks struct {
	httpfilter.Callbacks
	rt  *route.Route
	per []any
}

func (c *benchCallbacks) Route() *route.Route       { return c.rt }
func (c *benchCallbacks) AllPerRouteConfigs() []any { return c.per }
func (c *benchCallbacks) PerRouteConfig() any       { return c.per[0] }

// BenchmarkCORS is bench/cmd/filtercost's cors variant in process: a
// simple (non-preflight) GET with an allowed Origin, through DecodeHeaders
// and EncodeHeaders, with the same CorsPolicy.
func BenchmarkCORS(b *testing.B) {
	ctx := &httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.bench."}
	cfg, err := compile(ctx, &corsv3.Cors{}, "cors")
	if err != nil {
		b.Fatal(err)
	}
	var p corsv3.CorsPolicy
	if err := protojson.Unmarshal([]byte(`{
		"allow_origin_string_match": [{"exact": "https://other.example"}, {"suffix": ".internal.example"}, {"exact": "https://app.example"}],
		"allow_methods": "GET, POST, PUT", "allow_headers": "authorization, content-type, x-tenant",
		"expose_headers": "x-request-id", "max_age": "600", "allow_credentials": true}`), &p); err != nil {
		b.Fatal(err)
	}
	pol, err := compilePolicy(ctx, &p, "policy")
	if err != nil {
		b.Fatal(err)
	}
	cb := &benchCallbacks{rt: &route.Route{Action: &route.RouteAction{}}, per: []any{pol}}
	req := &headers.Request{Method: "GET", Scheme: "http", Authority: "api.example", Path: "/api/v5/items"}
	req.Map.Add("user-agent", "wrk")
	req.Map.Add("origin", "https://app.example")
	req.Map.Add("accept", "*/*")
	var resp headers.Response
	round := func() {
		f := cfg.NewFilter(cb)
		if st := f.(httpfilter.DecoderHeaders).DecodeHeaders(req, true); st != httpfilter.Continue {
			b.Fatalf("DecodeHeaders: status %v, want Continue", st)
		}
		resp.Reset()
		resp.Status = 200
		resp.Map.Add("content-type", "text/plain")
		resp.Map.Add("content-length", "100")
		f.(httpfilter.EncoderHeaders).EncodeHeaders(&resp, false)
	}
	round()
	if got := resp.Map.Get("access-control-allow-origin"); got != "https://app.example" {
		b.Fatalf("access-control-allow-origin %q, want https://app.example", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
}
