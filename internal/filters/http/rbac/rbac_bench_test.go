package rbac

import (
	"fmt"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// benchCallbacks is the stream as the RBAC filter sees it (no per-route
// config). Calling anything else panics (the embedded interface is nil).
type benchCallbacks struct {
	httpfilter.Callbacks
	info   streaminfo.Info
	denied int
}

func (c *benchCallbacks) PerRouteConfig() any                               { return nil }
func (c *benchCallbacks) StreamInfo() *streaminfo.Info                      { return &c.info }
func (c *benchCallbacks) SendLocalReply(int, string, httpfilter.LocalReply) { c.denied++ }

// BenchmarkRBAC is bench/cmd/filtercost's rbac variant in process: 5
// ALLOW policies of header and path permissions, the request matching
// only the last (policies are evaluated in name order).
func BenchmarkRBAC(b *testing.B) {
	var pols []string
	for i := 1; i <= 5; i++ {
		pols = append(pols, fmt.Sprintf(`"policy-%d": {"permissions": [{"and_rules": {"rules": [
			{"header": {"name": "x-tenant", "string_match": {"exact": "tenant-%d"}}},
			{"url_path": {"path": {"prefix": "/api/v%d/"}}}]}}], "principals": [{"any": true}]}`, i, i, i))
	}
	var msg rbacv3.RBAC
	if err := protojson.Unmarshal([]byte(`{"rules": {"action": "ALLOW", "policies": {`+strings.Join(pols, ",")+`}}}`), &msg); err != nil {
		b.Fatal(err)
	}
	cfg, err := compile(&httpfilter.Context{Stats: stats.NewStore(), StatPrefix: "http.bench."}, &msg, "rbac")
	if err != nil {
		b.Fatal(err)
	}
	req := &headers.Request{Method: "GET", Scheme: "http", Authority: "api.example", Path: "/api/v5/items"}
	req.Map.Add("user-agent", "wrk")
	req.Map.Add("x-tenant", "tenant-5")
	req.Map.Add("accept", "*/*")
	cb := &benchCallbacks{}
	round := func() {
		// As the connection manager's stream: the metadata map is kept,
		// emptied, from one request to the next.
		dm := cb.info.DynamicMetadata
		clear(dm)
		cb.info = streaminfo.Info{DynamicMetadata: dm}
		f := cfg.NewFilter(cb)
		f.(httpfilter.DecoderHeaders).DecodeHeaders(req, true)
	}
	round()
	if cb.denied != 0 {
		b.Fatal("the request matching policy-5 was denied")
	}
	if got := cb.info.DynamicMetadata[Name].GetFields()["enforced_effective_policy_id"].GetStringValue(); got != "policy-5" {
		b.Fatalf("effective policy %q, want policy-5", got)
	}
	b.ReportAllocs()
	for b.Loop() {
		round()
	}
	if cb.denied != 0 {
		b.Fatal("denied")
	}
}
