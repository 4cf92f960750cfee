// Package json_to_metadata is envoy.filters.http.json_to_metadata: it
// buffers a JSON request (or response) body whose content-type is allowed,
// and for each rule reads the value at its key selectors into dynamic
// metadata (on_present), or sets fixed values when the key is missing
// (on_missing) or the body is not JSON (on_error), as Envoy's
// json_to_metadata filter.cc. The body goes on unchanged. A route's
// JsonToMetadata (typed_per_filter_config) replaces the filter's; the
// filter's may then have no rules. Stats are Envoy's, at the root of the
// tree (Envoy builds them on the listener scope and ignores the connection
// manager's prefix): json_to_metadata.rq.{success,mismatched_content_type,
// no_body,invalid_json_body} and json_to_metadata.resp.*.
package json_to_metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	j2mv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/json_to_metadata/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/strmatch"
)

// Name is the filter's name and its default metadata namespace.
const Name = "envoy.filters.http.json_to_metadata"

// maxValueLen is Envoy's MAX_PAYLOAD_VALUE_LEN: a longer string is not
// stored (the rule's on_missing applies instead).
const maxValueLen = 8 * 1024

func init() {
	httpfilter.Register(Name, nil, &j2mv3.JsonToMetadata{}, &j2mv3.JsonToMetadata{},
		httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

// kv is a compiled KeyValuePair.
type kv struct {
	ns, key  string
	value    *structpb.Value // nil: the JSON value (on_present only)
	typ      j2mv3.JsonToMetadata_ValueType
	preserve bool
}

type rule struct {
	keys                      []string
	present, missing, onError *kv
}

// side is one direction's MatchRules and its stats.
type side struct {
	rules        []rule
	contentTypes map[string]bool
	allowEmpty   bool
	contentRe    *regexp.Regexp
	st           *sideStats
}

type sideStats struct {
	success, mismatched, noBody, invalidJSON *stats.Counter
}

// filterConfig is a compiled JsonToMetadata.
type filterConfig struct {
	request, response side
}

func newStats(st *stats.Store, prefix string) *sideStats {
	sc := st.Scope(prefix)
	return &sideStats{success: sc.Counter("success"), mismatched: sc.Counter("mismatched_content_type"),
		noBody: sc.Counter("no_body"), invalidJSON: sc.Counter("invalid_json_body")}
}

func compile(ctx *httpfilter.Context, msg proto.Message, path string) (httpfilter.Config, error) {
	c, err := compileConfig(ctx, msg.(*j2mv3.JsonToMetadata), path, false)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func compilePerRoute(ctx *httpfilter.Context, msg proto.Message, path string) (any, error) {
	return compileConfig(ctx, msg.(*j2mv3.JsonToMetadata), path, true)
}

// compileConfig compiles a JsonToMetadata. As Envoy, a per-route config
// needs rules; the filter's may have none and leave them to routes.
func compileConfig(ctx *httpfilter.Context, c *j2mv3.JsonToMetadata, path string, perRoute bool) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "request_rules", "response_rules"); err != nil {
		return nil, err
	}
	out := &filterConfig{}
	var err error
	if out.request, err = compileSide(c.GetRequestRules(), config.Join(path, "request_rules")); err != nil {
		return nil, err
	}
	if out.response, err = compileSide(c.GetResponseRules(), config.Join(path, "response_rules")); err != nil {
		return nil, err
	}
	if perRoute && len(out.request.rules) == 0 && len(out.response.rules) == 0 {
		return nil, config.Errorf(path, "json_to_metadata_filter: Per filter configs must at least specify either request or response rules")
	}
	// The counters are shared by the filter and every per-route config, as
	// Envoy creates them by name on one scope.
	out.request.st = newStats(ctx.Stats, "json_to_metadata.rq.")
	out.response.st = newStats(ctx.Stats, "json_to_metadata.resp.")
	return out, nil
}

func compileSide(m *j2mv3.JsonToMetadata_MatchRules, path string) (side, error) {
	var s side
	if m == nil {
		return s, nil
	}
	if err := config.CheckFields(m, path, "rules", "allow_content_types", "allow_empty_content_type", "allow_content_types_regex"); err != nil {
		return s, err
	}
	s.allowEmpty = m.GetAllowEmptyContentType()
	s.contentTypes = map[string]bool{}
	for _, ct := range m.GetAllowContentTypes() {
		s.contentTypes[ct] = true
	}
	if len(s.contentTypes) == 0 {
		s.contentTypes["application/json"] = true
	}
	if re := m.GetAllowContentTypesRegex(); re != nil {
		r, err := strmatch.CompileRegex(re, config.Join(path, "allow_content_types_regex"))
		if err != nil {
			return s, err
		}
		s.contentRe = r
	}
	for i, r := range m.GetRules() {
		p := config.Index(config.Join(path, "rules"), i)
		if err := config.CheckFields(r, p, "selectors", "on_present", "on_missing", "on_error"); err != nil {
			return s, err
		}
		if r.GetOnPresent() == nil && r.GetOnMissing() == nil {
			return s, config.Errorf(p, "json to metadata filter: neither `on_present` nor `on_missing` set")
		}
		var ru rule
		for j, sel := range r.GetSelectors() {
			sp := config.Index(config.Join(p, "selectors"), j)
			if err := config.CheckFields(sel, sp, "key"); err != nil {
				return s, err
			}
			ru.keys = append(ru.keys, sel.GetKey())
		}
		if len(ru.keys) == 0 {
			return s, config.Errorf(config.Join(p, "selectors"), "a rule needs at least one selector")
		}
		var err error
		if ru.present, err = compileKV(r.GetOnPresent(), config.Join(p, "on_present")); err != nil {
			return s, err
		}
		if ru.missing, err = compileKV(r.GetOnMissing(), config.Join(p, "on_missing")); err != nil {
			return s, err
		}
		if ru.missing != nil && ru.missing.value == nil {
			return s, config.Errorf(config.Join(p, "on_missing"), "json to metadata filter: cannot specify on_missing rule with empty value")
		}
		if ru.onError, err = compileKV(r.GetOnError(), config.Join(p, "on_error")); err != nil {
			return s, err
		}
		if ru.onError != nil && ru.onError.value == nil {
			return s, config.Errorf(config.Join(p, "on_error"), "json to metadata filter: cannot specify on_error rule with empty value")
		}
		s.rules = append(s.rules, ru)
	}
	return s, nil
}

func compileKV(k *j2mv3.JsonToMetadata_KeyValuePair, path string) (*kv, error) {
	if k == nil {
		return nil, nil
	}
	if err := config.CheckFields(k, path, "metadata_namespace", "key", "value", "type", "preserve_existing_metadata_value"); err != nil {
		return nil, err
	}
	out := &kv{ns: k.GetMetadataNamespace(), key: k.GetKey(), typ: k.GetType(), preserve: k.GetPreserveExistingMetadataValue()}
	if out.ns == "" {
		out.ns = Name
	}
	if _, ok := k.GetValueType().(*j2mv3.JsonToMetadata_KeyValuePair_Value); ok {
		out.value = k.GetValue()
		if out.value == nil {
			out.value = &structpb.Value{}
		}
	}
	return out, nil
}

// contentTypeAllowed is Envoy's: an exact member of allow_content_types
// (application/json by default) or a match of the regex; an empty or
// missing content-type only with allow_empty_content_type.
func (s *side) contentTypeAllowed(ct string) bool {
	if ct == "" {
		return s.allowEmpty
	}
	return s.contentTypes[ct] || (s.contentRe != nil && s.contentRe.MatchString(ct))
}

// NewFilter makes the stream's filter.
func (c *filterConfig) NewFilter(cb httpfilter.Callbacks) httpfilter.Filter {
	return &filter{def: c, cb: cb}
}

type filter struct {
	def, cfg *filterConfig
	cb       httpfilter.Callbacks
	// reqActive and respActive are set while the filter buffers a body it
	// will parse.
	reqActive, respActive bool
}

// config is the route's JsonToMetadata, else the filter's.
func (f *filter) config() *filterConfig {
	if f.cfg == nil {
		f.cfg = f.def
		if pr, ok := f.cb.PerRouteConfig().(*filterConfig); ok {
			f.cfg = pr
		}
	}
	return f.cfg
}

// DecodeHeaders decides whether the request body is parsed and holds the
// headers back until it is.
func (f *filter) DecodeHeaders(h *headers.Request, endStream bool) httpfilter.Status {
	return f.headers(&f.config().request, h.Map.Get("content-type"), endStream, true, &f.reqActive)
}

// DecodeData buffers the request body, then applies the rules to it.
func (f *filter) DecodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	return f.data(&f.cfg.request, b, endStream, true, &f.reqActive)
}

// EncodeHeaders is DecodeHeaders for the response.
func (f *filter) EncodeHeaders(h *headers.Response, endStream bool) httpfilter.Status {
	return f.headers(&f.config().response, h.Map.Get("content-type"), endStream, false, &f.respActive)
}

// EncodeData is DecodeData for the response.
func (f *filter) EncodeData(b *httpfilter.Buffer, endStream bool) httpfilter.Status {
	return f.data(&f.cfg.response, b, endStream, false, &f.respActive)
}

// headers is one direction's headers: *active says its body is parsed.
func (f *filter) headers(s *side, contentType string, endStream, request bool, active *bool) httpfilter.Status {
	if len(s.rules) == 0 || !f.startSide(s, contentType, endStream, request) {
		return httpfilter.Continue
	}
	*active = true
	return httpfilter.StopIteration
}

// data buffers one direction's body, then applies its rules.
func (f *filter) data(s *side, b *httpfilter.Buffer, endStream, request bool, active *bool) httpfilter.Status {
	if !*active {
		return httpfilter.Continue
	}
	if !endStream {
		return httpfilter.StopAndBuffer
	}
	*active = false
	f.processBody(s, b.Bytes(), request)
	return httpfilter.Continue
}

// startSide handles the headers of one direction; it reports whether the
// body is to be buffered and parsed.
func (f *filter) startSide(s *side, contentType string, endStream, request bool) bool {
	if !s.contentTypeAllowed(contentType) {
		// As Envoy: a mismatched content-type applies every on_error.
		f.applyAll(s, func(r *rule) *kv { return r.onError }, request)
		s.st.mismatched.Inc()
		return false
	}
	if endStream {
		f.applyAll(s, func(r *rule) *kv { return r.missing }, request)
		s.st.noBody.Inc()
		return false
	}
	return true
}

// result is the metadata one body produces, by namespace, set at once.
type result map[string]map[string]*structpb.Value

func (f *filter) add(res result, k *kv, v *structpb.Value) {
	if k.preserve {
		// Envoy looks at the metadata already set on the stream, not at
		// what this body produced so far.
		if st := f.cb.StreamInfo().DynamicMetadata[k.ns]; st != nil {
			if _, ok := st.GetFields()[k.key]; ok {
				return
			}
		}
	}
	m := res[k.ns]
	if m == nil {
		m = map[string]*structpb.Value{}
		res[k.ns] = m
	}
	m[k.key] = v
}

// applyAll sets the fixed value of each rule's pair that pick selects.
func (f *filter) applyAll(s *side, pick func(*rule) *kv, request bool) {
	res := result{}
	for i := range s.rules {
		if k := pick(&s.rules[i]); k != nil {
			f.add(res, k, k.value)
		}
	}
	f.finish(res, request)
}

// finish stores the metadata; a request's clears the route cache, as the
// route may match on it.
func (f *filter) finish(res result, request bool) {
	if len(res) == 0 {
		return
	}
	info := f.cb.StreamInfo()
	for ns, m := range res {
		info.SetDynamicMetadata(ns, m)
	}
	if request {
		f.cb.ClearRouteCache()
	}
}

// processBody is Envoy's processBody for a complete body.
func (f *filter) processBody(s *side, body []byte, request bool) {
	if len(body) == 0 {
		f.applyAll(s, func(r *rule) *kv { return r.missing }, request)
		s.st.noBody.Inc()
		return
	}
	root, err := parseJSON(body)
	if err != nil {
		f.cb.Log().Debug("json_to_metadata: invalid JSON body", "error", err)
		s.st.invalidJSON.Inc()
		f.applyAll(s, func(r *rule) *kv { return r.onError }, request)
		return
	}
	obj, ok := root.(map[string]any)
	if !ok {
		// A string, number, … is valid JSON but has no keys: every rule is
		// missing, and the body counts as a success.
		f.applyAll(s, func(r *rule) *kv { return r.missing }, request)
		s.st.success.Inc()
		return
	}
	res := result{}
	for i := range s.rules {
		r := &s.rules[i]
		node, found := obj, true
		for _, k := range r.keys[:len(r.keys)-1] {
			next, ok := node[k].(map[string]any)
			if !ok {
				found = false
				break
			}
			node = next
		}
		if found {
			err := f.onPresent(res, r, node)
			if err == nil {
				continue
			}
			f.cb.Log().Debug("json_to_metadata: value not usable", "key", r.keys[len(r.keys)-1], "error", err)
		}
		if r.missing != nil {
			f.add(res, r.missing, r.missing.value)
		}
	}
	s.st.success.Inc()
	f.finish(res, request)
}

// onPresent applies a rule whose parent object was found; an error (the
// key is missing, its value is not a scalar or does not convert) makes the
// caller apply on_missing.
func (f *filter) onPresent(res result, r *rule, node map[string]any) error {
	k := r.present
	if k == nil {
		return nil
	}
	if k.value != nil {
		f.add(res, k, k.value)
		return nil
	}
	key := r.keys[len(r.keys)-1]
	raw, ok := node[key]
	if !ok {
		return fmt.Errorf("key %q not found", key)
	}
	var sv scalar
	switch v := raw.(type) {
	case bool:
		sv = scalar{kind: kBool, b: v}
	case string:
		sv = scalar{kind: kString, s: v}
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			sv = scalar{kind: kInt, i: n}
		} else {
			d, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return fmt.Errorf("number %s: %w", v, err)
			}
			sv = scalar{kind: kDouble, d: d}
		}
	default:
		return fmt.Errorf("key %q is not a string, number or boolean", key)
	}
	var pv *structpb.Value
	switch k.typ {
	case j2mv3.JsonToMetadata_NUMBER:
		d, err := sv.number()
		if err != nil {
			return err
		}
		pv = structpb.NewNumberValue(d)
	case j2mv3.JsonToMetadata_STRING:
		str := sv.string()
		if len(str) > maxValueLen {
			return fmt.Errorf("metadata value is too long. value.length: %d", len(str))
		}
		if str == "" {
			return nil // as Envoy: an empty string adds nothing
		}
		pv = structpb.NewStringValue(str)
	default: // PROTOBUF_VALUE
		switch sv.kind {
		case kBool:
			pv = structpb.NewBoolValue(sv.b)
		case kInt:
			pv = structpb.NewNumberValue(float64(sv.i))
		case kDouble:
			pv = structpb.NewNumberValue(sv.d)
		default:
			if len(sv.s) > maxValueLen {
				return fmt.Errorf("metadata value is too long. value.length: %d", len(sv.s))
			}
			pv = structpb.NewStringValue(sv.s)
		}
	}
	f.add(res, k, pv)
	return nil
}

type scalarKind uint8

const (
	kBool scalarKind = iota
	kInt
	kDouble
	kString
)

// scalar is a JSON scalar as Envoy's Json::ValueType (bool, int64,
// double, string).
type scalar struct {
	kind scalarKind
	b    bool
	i    int64
	d    float64
	s    string
}

// string converts as Envoy's JsonValueToStringConverter (std::to_string:
// a boolean is "1" or "0", a double has six decimals).
func (v scalar) string() string {
	switch v.kind {
	case kBool:
		if v.b {
			return "1"
		}
		return "0"
	case kInt:
		return strconv.FormatInt(v.i, 10)
	case kDouble:
		return strconv.FormatFloat(v.d, 'f', 6, 64)
	}
	return v.s
}

// number converts as Envoy's JsonValueToDoubleConverter: a string must
// parse as a number once trimmed.
func (v scalar) number() (float64, error) {
	switch v.kind {
	case kBool:
		if v.b {
			return 1, nil
		}
		return 0, nil
	case kInt:
		return float64(v.i), nil
	case kDouble:
		return v.d, nil
	}
	d, err := strconv.ParseFloat(strings.Trim(v.s, " \t\f\v\n\r"), 64)
	if err != nil {
		return 0, fmt.Errorf("value %s to number conversion failed: %w", v.s, err)
	}
	return d, nil
}

// parseJSON parses one JSON document, numbers kept as written.
func parseJSON(b []byte) (any, error) {
	if !json.Valid(b) {
		return nil, fmt.Errorf("not a JSON document")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return v, nil
}
