package json_to_metadata

import (
	"log/slog"
	"strings"
	"testing"

	j2mv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/json_to_metadata/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

type fakeCallbacks struct {
	httpfilter.Callbacks
	info    streaminfo.Info
	cleared int
}

func (f *fakeCallbacks) StreamInfo() *streaminfo.Info { return &f.info }
func (f *fakeCallbacks) PerRouteConfig() any          { return nil }
func (f *fakeCallbacks) ClearRouteCache()             { f.cleared++ }
func (f *fakeCallbacks) Log() *slog.Logger            { return slog.New(slog.DiscardHandler) }

func build(t *testing.T, js string, perRoute bool) (*filterConfig, *stats.Store, error) {
	t.Helper()
	var c j2mv3.JsonToMetadata
	if err := protojson.Unmarshal([]byte(js), &c); err != nil {
		t.Fatal(err)
	}
	st := stats.NewStore()
	fc, err := compileConfig(&httpfilter.Context{Stats: st}, &c, "c", perRoute)
	return fc, st, err
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		js       string
		perRoute bool
		err      string
	}{
		{`{"request_rules": {"rules": [{"selectors": [{"key": "a"}]}]}}`, false, "c.request_rules.rules[0]: json to metadata filter: neither `on_present` nor `on_missing` set"},
		{`{"request_rules": {"rules": [{"selectors": [{"key": "a"}], "on_missing": {"key": "k"}}]}}`, false, "cannot specify on_missing rule with empty value"},
		{`{"response_rules": {"rules": [{"selectors": [{"key": "a"}], "on_present": {"key": "k"}, "on_error": {"key": "k"}}]}}`, false, "c.response_rules.rules[0].on_error: json to metadata filter: cannot specify on_error rule with empty value"},
		{`{}`, true, "Per filter configs must at least specify either request or response rules"},
		{`{"request_rules": {"allow_content_types_regex": {"regex": "("}}}`, false, "c.request_rules.allow_content_types_regex"},
	} {
		_, _, err := build(t, tc.js, tc.perRoute)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: error %v, want %q", tc.js, err, tc.err)
		}
	}
	if _, _, err := build(t, `{}`, false); err != nil {
		t.Errorf("a filter config without rules (routes give them): %v", err)
	}
}

const rules = `{"request_rules": {"rules": [
  {"selectors": [{"key": "version"}], "on_present": {"metadata_namespace": "envoy.lb", "key": "version", "type": "STRING"},
   "on_missing": {"metadata_namespace": "envoy.lb", "key": "version", "value": "unknown"},
   "on_error": {"metadata_namespace": "envoy.lb", "key": "version", "value": "error"}},
  {"selectors": [{"key": "a"}, {"key": "b"}], "on_present": {"key": "ab", "type": "NUMBER"}, "on_missing": {"key": "ab", "value": -1}},
  {"selectors": [{"key": "pv"}], "on_present": {"key": "pv"}},
  {"selectors": [{"key": "fixed"}], "on_present": {"key": "fixed", "value": "yes"}},
  {"selectors": [{"key": "keep"}], "on_present": {"metadata_namespace": "pre", "key": "k", "preserve_existing_metadata_value": true}}
 ]}}`

func TestBody(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		want           map[string]string // "ns:key" → JSON of the value; absent keys must be absent
		stat           string
	}{
		{"values", "application/json", `{"version": "1.2", "a": {"b": "  3.5 "}, "pv": true, "fixed": null, "keep": "new"}`,
			map[string]string{"envoy.lb:version": `"1.2"`, Name + ":ab": `3.5`, Name + ":pv": `true`, Name + ":fixed": `"yes"`, "pre:k": `"old"`}, "success"},
		{"number and bool as string", "application/json", `{"version": 7, "a": {"b": 2}, "pv": 1.25}`,
			map[string]string{"envoy.lb:version": `"7"`, Name + ":ab": `2`, Name + ":pv": `1.25`}, "success"},
		{"double and bool strings", "application/json", `{"version": 1.5}`, map[string]string{"envoy.lb:version": `"1.500000"`, Name + ":ab": `-1`}, "success"},
		{"bool string", "application/json", `{"version": true}`, map[string]string{"envoy.lb:version": `"1"`}, "success"},
		{"missing", "application/json", `{"a": 1}`, map[string]string{"envoy.lb:version": `"unknown"`, Name + ":ab": `-1`}, "success"},
		{"object value is missing", "application/json", `{"version": {"x": 1}, "a": {"b": "x"}}`, map[string]string{"envoy.lb:version": `"unknown"`, Name + ":ab": `-1`}, "success"},
		{"empty string adds nothing", "application/json", `{"version": ""}`, map[string]string{"envoy.lb:version": ""}, "success"},
		{"not an object", "application/json", `"just a string"`, map[string]string{"envoy.lb:version": `"unknown"`, Name + ":ab": `-1`}, "success"},
		{"invalid", "application/json", `{"version": `, map[string]string{"envoy.lb:version": `"error"`, Name + ":ab": ""}, "invalid_json_body"},
		{"content type", "text/plain", `{"version": "1"}`, map[string]string{"envoy.lb:version": `"error"`}, "mismatched_content_type"},
		{"content type parameters are not stripped", "application/json; charset=utf-8", `{"version": "1"}`, map[string]string{"envoy.lb:version": `"error"`}, "mismatched_content_type"},
		{"empty body", "application/json", ``, map[string]string{"envoy.lb:version": `"unknown"`}, "no_body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc, st, err := build(t, rules, false)
			if err != nil {
				t.Fatal(err)
			}
			cb := &fakeCallbacks{}
			cb.info.SetDynamicMetadata("pre", map[string]*structpb.Value{"k": structpb.NewStringValue("old")})
			f := fc.NewFilter(cb).(*filter)
			h := &headers.Request{Method: "POST", Path: "/"}
			h.Map.Set("content-type", tc.ct)
			status := f.DecodeHeaders(h, tc.body == "")
			if tc.body != "" && status == httpfilter.StopIteration {
				half := len(tc.body) / 2
				b := &httpfilter.Buffer{}
				b.Append([]byte(tc.body[:half]))
				if f.DecodeData(b, false) != httpfilter.StopAndBuffer {
					t.Fatal("the body is not buffered")
				}
				b.Append([]byte(tc.body[half:]))
				if f.DecodeData(b, true) != httpfilter.Continue || string(b.Bytes()) != tc.body {
					t.Fatal("the body does not go on unchanged")
				}
			}
			for k, want := range tc.want {
				ns, key, _ := strings.Cut(k, ":")
				got := ""
				if v := cb.info.DynamicMetadata[ns].GetFields()[key]; v != nil {
					b, _ := protojson.Marshal(v)
					got = string(b)
				}
				if got != want {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
			}
			for _, name := range []string{"success", "mismatched_content_type", "no_body", "invalid_json_body"} {
				want := uint64(0)
				if name == tc.stat {
					want = 1
				}
				if got := st.Counter("json_to_metadata.rq." + name).Value(); got != want {
					t.Errorf("json_to_metadata.rq.%s = %d, want %d", name, got, want)
				}
			}
			if cb.cleared != 1 {
				t.Errorf("route cache cleared %d times, want once", cb.cleared)
			}
		})
	}
}
