package cdn_loop

import (
	"log/slog"
	"strings"
	"testing"

	cdnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cdn_loop/v3"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the cdn-ids joined with "|"
		err  bool
	}{
		{"", "", false},
		{"   ", "", false},
		{"cdn", "cdn", false},
		{"cdn.example.com:8080", "cdn.example.com:8080", false},
		{"cdn:", "cdn:", false},
		{"[2001:DB8::1]:443, [::1]", "[2001:DB8::1]:443|[::1]", false},
		{"foo; a=b ; c=\"quoted \\\"x\\\" ok\"", "foo", false},
		{" a ,b,\t c ", "a|b|c", false},
		{",,a,, ,b,", "a|b", false},
		{"Foo, foo", "Foo|foo", false},
		{"cdn;", "", true},
		{"cdn; p", "", true},
		{"cdn; p=", "", true},
		{"cdn; =v", "", true},
		{"cdn; p=\"open", "", true},
		{"cdn; p=\"bad \x01\"", "", true},
		{"[::1", "", true},
		{"[::g]", "", true},
		{"a b", "", true},
		{"\"quoted\"", "", true},
		{"a,@", "", true},
	} {
		ids, err := parseCDNInfoList(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("%q: parsed as %q, want an error", tc.in, ids)
			}
			continue
		}
		if err != nil || strings.Join(ids, "|") != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, ids, err, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for id, want := range map[string]string{
		"":      "cdn_id must not be empty",
		"[::1":  `c.cdn_id: Provided cdn_id "[::1" is not a valid CDN identifier`,
		"\"x\"": "not a valid CDN identifier",
	} {
		if _, err := compile(nil, &cdnv3.CdnLoopConfig{CdnId: id}, "c"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("cdn_id %q: %v, want %q", id, err, want)
		}
	}
	for _, id := range []string{"legate", "cdn.example.com:443", "[2001:db8::1]"} {
		if _, err := compile(nil, &cdnv3.CdnLoopConfig{CdnId: id}, "c"); err != nil {
			t.Errorf("cdn_id %q: %v", id, err)
		}
	}
}

type fakeCallbacks struct {
	httpfilter.Callbacks
	status       int
	body, detail string
}

func (f *fakeCallbacks) Log() *slog.Logger { return slog.New(slog.DiscardHandler) }

func (f *fakeCallbacks) SendLocalReply(status int, body string, r httpfilter.LocalReply) {
	f.status, f.body, f.detail = status, body, r.Details
}

func TestDecision(t *testing.T) {
	fc, err := compile(nil, &cdnv3.CdnLoopConfig{CdnId: "legate", MaxAllowedOccurrences: 1}, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		in     []string
		status int
		detail string
		out    string // the CDN-Loop header after the filter
	}{
		{"none", nil, 0, "", "legate"},
		{"other", []string{"other"}, 0, "", "other,legate"},
		{"once", []string{"legate; v=1"}, 0, "", "legate; v=1,legate"},
		{"twice", []string{"legate", "other, legate"}, 502, "cdn_loop_detected", ""},
		{"two fields coalesced", []string{"a", "b"}, 0, "", "a,b,legate"},
		{"empty", []string{""}, 0, "", "legate"},
		{"invalid", []string{"legate;"}, 400, "invalid_cdn_loop_header", ""},
	} {
		cb := &fakeCallbacks{}
		h := &headers.Request{Method: "GET", Path: "/"}
		for _, v := range tc.in {
			h.Map.Add("cdn-loop", v)
		}
		fc.NewFilter(cb).(*filter).DecodeHeaders(h, true)
		if cb.status != tc.status || cb.detail != tc.detail {
			t.Errorf("%s: %d %q, want %d %q", tc.name, cb.status, cb.detail, tc.status, tc.detail)
		}
		if tc.status == 0 {
			if got := h.Map.Values("cdn-loop"); len(got) != 1 || got[0] != tc.out {
				t.Errorf("%s: cdn-loop %q, want %q", tc.name, got, tc.out)
			}
		}
		switch tc.status {
		case 400:
			if cb.body != "Invalid CDN-Loop header in request." {
				t.Errorf("%s: body %q", tc.name, cb.body)
			}
		case 502:
			if cb.body != "The server has detected a loop between CDNs." {
				t.Errorf("%s: body %q", tc.name, cb.body)
			}
		}
	}
}
