package grpc_stats

import (
	"encoding/binary"
	"strings"
	"testing"

	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
)

func frame(flags byte, payload string) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func TestFrameCounter(t *testing.T) {
	var all []byte
	all = append(all, frame(0, "hello")...)
	all = append(all, frame(0, "")...)
	all = append(all, frame(1, strings.Repeat("x", 300))...)
	// Byte by byte: frames span callbacks; each counts at its first byte.
	var c frameCounter
	var total uint64
	for i := range all {
		total += c.inspect(all[i : i+1])
	}
	if total != 3 || c.count != 3 {
		t.Errorf("byte by byte: %d frames (count %d), want 3", total, c.count)
	}
	var c2 frameCounter
	if d := c2.inspect(all[:11]); d != 2 { // "hello" frame and the first byte of the empty one
		t.Errorf("first chunk: %d, want 2", d)
	}
	if d := c2.inspect(all[11:]); d != 1 {
		t.Errorf("rest: %d, want 1", d)
	}
}

func TestConnectEndOfStream(t *testing.T) {
	for _, tc := range []struct {
		eos     string
		success bool
	}{
		{`{}`, true},
		{`{"metadata": {"a": ["b"]}}`, true},
		{`{"error": {"code": "not_found"}}`, false},
		{`not json`, false},
	} {
		var r responseCounter
		data := append(frame(0, "m1"), frame(0, "m2")...)
		data = append(data, frame(connectEOS, tc.eos)...)
		if d := r.inspect(data); d != 2 || r.count != 2 {
			t.Errorf("%s: %d messages (count %d), want 2: the end-of-stream frame is not one", tc.eos, d, r.count)
		}
		if r.connectSuccess() != tc.success {
			t.Errorf("%s: success %v, want %v", tc.eos, r.connectSuccess(), tc.success)
		}
		if d := r.inspect(frame(0, "late")); d != 0 {
			t.Errorf("a frame after the end of stream counted")
		}
	}
}

func TestResolveNames(t *testing.T) {
	for path, want := range map[string]string{
		"/pkg.Svc/Method":     "pkg.Svc Method",
		"/pkg.Svc/Method?x=1": "pkg.Svc Method",
		"//pkg.Svc//Method/":  "pkg.Svc Method",
		"/only":               "",
		"/a/b/c":              "",
	} {
		s, m, ok := resolveNames(path)
		got := ""
		if ok {
			got = s + " " + m
		}
		if got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

func TestObject(t *testing.T) {
	o := &Object{RequestMessageCount: 3, ResponseMessageCount: 1}
	if o.String() != "3,1" || string(o.AppendJSON(nil)) != `{"requestMessageCount":"3","responseMessageCount":"1"}` {
		t.Errorf("object %s %s", o.String(), o.AppendJSON(nil))
	}
	if z := (&Object{ResponseMessageCount: 2}).AppendJSON(nil); string(z) != `{"responseMessageCount":"2"}` {
		t.Errorf("zero fields are omitted: %s", z)
	}
}

func TestCompile(t *testing.T) {
	var c grpcstatsv3.FilterConfig
	if err := protojson.Unmarshal([]byte(`{"individual_method_stats_allowlist": {"services": [{"name": "a.B", "method_names": ["M", "N"]}]}, "emit_filter_state": true}`), &c); err != nil {
		t.Fatal(err)
	}
	fc, err := compile(&httpfilter.Context{Stats: stats.NewStore()}, &c, "c")
	if err != nil {
		t.Fatal(err)
	}
	cfg := fc.(*filterConfig)
	if !cfg.allowlist["a.B"]["N"] || cfg.allowlist["a.B"]["X"] || cfg.allMethods || !cfg.emitFilterState {
		t.Errorf("compiled %+v", cfg)
	}
}
