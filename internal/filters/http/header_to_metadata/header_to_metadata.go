// Package header_to_metadata is Envoy's header-to-metadata filter
// (envoy.filters.http.header_to_metadata): rules copy a request (or
// response) header's value — or a fixed value — into dynamic metadata
// when the header is present or missing, optionally removing the header,
// so later filters, the router's metadata matchers and access logs
// (%DYNAMIC_METADATA%) see it. A rule may name a cookie instead of a
// header: the value of that cookie in the Cookie headers.
package header_to_metadata

import (
	"encoding/base64"
	"strconv"
	"strings"

	h2mv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_to_metadata/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
	"github.com/legateproxy/legate/internal/stats"
	"github.com/legateproxy/legate/internal/streaminfo"
)

// name is the filter's name, Envoy's default metadata namespace.
const name = "envoy.filters.http.header_to_metadata"

func init() {
	httpfilter.Register(name, nil, &h2mv3.Config{}, &h2mv3.Config{}, httpfilter.Factory{Compile: compile, CompilePerRoute: compilePerRoute}, "")
}

type kv struct {
	ns, key string
	value   string // fixed value; "" takes the header's
	typ     h2mv3.Config_ValueType
	base64  bool
	rewrite func(string) string
}

type rule struct {
	header  string // lower case; "" for a cookie rule
	cookie  string // the cookie's name, for a cookie rule
	present *kv
	missing *kv
	remove  bool
}

type filterConfig struct {
	request, response []rule
	// stats is nil unless stat_prefix is set: Envoy's statistics are
	// opt-in.
	stats *filterStats
}

// dirStats are the counters Envoy keeps per direction.
type dirStats struct {
	rulesProcessed, metadataAdded, headerNotFound *stats.Counter
}

// filterStats are Envoy's ALL_HEADER_TO_METADATA_FILTER_STATS, rooted at
// "http_filter_name.<stat_prefix>." (Envoy's Config::generateStats).
type filterStats struct {
	request, response                                *dirStats
	base64Failed, valueTooLong, regexSubstitutionBad *stats.Counter
}

func newFilterStats(store *stats.Store, prefix string) *filterStats {
	sc := store.Scope("http_filter_name." + prefix + ".")
	dir := func(d string) *dirStats {
		return &dirStats{
			rulesProcessed: sc.Counter(d + "_rules_processed"),
			metadataAdded:  sc.Counter(d + "_metadata_added"),
			headerNotFound: sc.Counter(d + "_header_not_found"),
		}
	}
	return &filterStats{
		request: dir("request"), response: dir("response"),
		base64Failed:         sc.Counter("base64_decode_failed"),
		valueTooLong:         sc.Counter("header_value_too_long"),
		regexSubstitutionBad: sc.Counter("regex_substitution_failed"),
	}
}

// inc counts c when stats are configured.
func inc(c *stats.Counter) {
	if c != nil {
		c.Inc()
	}
}

// maxValueLen is Envoy's MAX_HEADER_VALUE_LEN: a value this long or
// longer is not added (header_value_too_long).
const maxValueLen = 8 * 1024

func compileRules(rs []*h2mv3.Config_Rule, path string) ([]rule, error) {
	var out []rule
	for i, r := range rs {
		p := config.Index(path, i)
		if err := config.CheckFields(r, p, "header", "cookie", "on_header_present", "on_header_missing", "remove"); err != nil {
			return nil, err
		}
		// Envoy's Rule: exactly one of header and cookie; remove is for
		// headers only.
		switch {
		case r.GetHeader() != "" && r.GetCookie() != "":
			return nil, config.Errorf(p, "Cannot specify both header and cookie in the same rule")
		case r.GetHeader() == "" && r.GetCookie() == "":
			return nil, config.Errorf(p, "One of Cookie or Header option needs to be specified")
		case r.GetCookie() != "" && r.GetRemove():
			return nil, config.Errorf(config.Join(p, "remove"), "Cannot specify remove for cookie")
		}
		ru := rule{header: headers.Lower(r.GetHeader()), cookie: r.GetCookie(), remove: r.GetRemove()}
		if r.GetOnHeaderPresent() == nil && r.GetOnHeaderMissing() == nil {
			what := "header '" + r.GetHeader() + "'"
			if r.GetCookie() != "" {
				what = "cookie '" + r.GetCookie() + "'"
			}
			return nil, config.Errorf(p, "header to metadata filter: rule for %s has neither `on_header_present` nor `on_header_missing` set", what)
		}
		var err error
		if r.GetOnHeaderPresent() != nil {
			if ru.present, err = compileKV(r.GetOnHeaderPresent(), config.Join(p, "on_header_present")); err != nil {
				return nil, err
			}
		}
		if r.GetOnHeaderMissing() != nil {
			if ru.missing, err = compileKV(r.GetOnHeaderMissing(), config.Join(p, "on_header_missing")); err != nil {
				return nil, err
			}
			if ru.missing.value == "" {
				return nil, config.Errorf(config.Join(p, "on_header_missing.value"), "on_header_missing needs a value")
			}
		}
		out = append(out, ru)
	}
	return out, nil
}

func compileKV(k *h2mv3.Config_KeyValuePair, path string) (*kv, error) {
	if err := config.CheckFields(k, path, "metadata_namespace", "key", "value", "regex_value_rewrite", "type", "encode"); err != nil {
		return nil, err
	}
	out := &kv{ns: k.GetMetadataNamespace(), key: k.GetKey(), value: k.GetValue(), typ: k.GetType(), base64: k.GetEncode() == h2mv3.Config_BASE64}
	if out.ns == "" {
		out.ns = name
	}
	if rw := k.GetRegexValueRewrite(); rw != nil {
		f, err := route.CompileRegexRewrite(rw, config.Join(path, "regex_value_rewrite"))
		if err != nil {
			return nil, err
		}
		out.rewrite = f
	}
	return out, nil
}

func compile(ctx *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	fc, err := compileConfig(ctx, cfg.(*h2mv3.Config), path)
	if err != nil {
		return nil, err
	}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		c := fc
		if pr, ok := cb.PerRouteConfig().(*filterConfig); ok {
			c = pr
		}
		return &filter{cb: cb, cfg: c}
	}), nil
}

func compilePerRoute(ctx *httpfilter.Context, cfg proto.Message, path string) (any, error) {
	return compileConfig(ctx, cfg.(*h2mv3.Config), path)
}

func compileConfig(ctx *httpfilter.Context, c *h2mv3.Config, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "request_rules", "response_rules", "stat_prefix"); err != nil {
		return nil, err
	}
	req, err := compileRules(c.GetRequestRules(), config.Join(path, "request_rules"))
	if err != nil {
		return nil, err
	}
	resp, err := compileRules(c.GetResponseRules(), config.Join(path, "response_rules"))
	if err != nil {
		return nil, err
	}
	fc := &filterConfig{request: req, response: resp}
	if p := c.GetStatPrefix(); p != "" && ctx != nil && ctx.Stats != nil {
		fc.stats = newFilterStats(ctx.Stats, p)
	}
	return fc, nil
}

type filter struct {
	cb  httpfilter.Callbacks
	cfg *filterConfig
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	apply(f.cfg.request, &h.Map, f.cb.StreamInfo(), f.cfg.stats, true)
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	apply(f.cfg.response, &h.Map, f.cb.StreamInfo(), f.cfg.stats, false)
	return httpfilter.Continue
}

// apply runs the rules, as Envoy: a present header sets its pair (the
// header's value unless the pair has a fixed one) and may be removed; a
// missing one sets on_header_missing's pair. st (nil without stat_prefix)
// counts as Envoy's writeHeaderToMetadata: every rule processed, and a
// missing header only when the rule has on_header_missing.
func apply(rules []rule, m *headers.Map, info *streaminfo.Info, st *filterStats, request bool) {
	var ds *dirStats
	var c counters
	if st != nil {
		ds = st.response
		if request {
			ds = st.request
		}
		c = counters{added: ds.metadataAdded, base64: st.base64Failed, tooLong: st.valueTooLong, regex: st.regexSubstitutionBad}
	}
	for i := range rules {
		r := &rules[i]
		var v string
		var ok bool
		if r.cookie != "" {
			// Envoy's CookieValueSelector: the named cookie of the map's
			// Cookie headers (of a response map too, as Envoy); an empty
			// value counts as missing.
			v = cookieValue(m.Values("cookie"), r.cookie)
			ok = v != ""
		} else {
			v, ok = m.Lookup(r.header)
		}
		if ds != nil {
			ds.rulesProcessed.Inc()
		}
		switch {
		case ok && r.present != nil:
			set(r.present, v, info, &c)
		case !ok && r.missing != nil:
			if ds != nil {
				ds.headerNotFound.Inc()
			}
			set(r.missing, r.missing.value, info, &c)
		}
		if ok && r.remove {
			m.Del(r.header)
		}
	}
}

// counters are the stats set charges (all nil without stat_prefix).
type counters struct {
	added, base64, tooLong, regex *stats.Counter
}

// set is Envoy's applyKeyValue and addMetadata: the pair's fixed value or
// the (rewritten) header value, at most maxValueLen bytes, base64-decoded
// for encode BASE64 whatever the type, then converted to the pair's type.
func set(k *kv, headerValue string, info *streaminfo.Info, c *counters) {
	v := headerValue
	if k.value != "" {
		v = k.value
	} else if k.rewrite != nil {
		v = k.rewrite(v)
		if headerValue != "" && v == "" {
			// Envoy takes a non-empty value rewritten to nothing as a
			// failed substitution.
			inc(c.regex)
		}
	}
	if v == "" {
		return // Envoy ignores empty values
	}
	if len(v) >= maxValueLen {
		inc(c.tooLong)
		return
	}
	if k.base64 {
		// Envoy's Base64::decodeWithoutPadding: padding is optional and
		// a value that does not decode (or decodes to nothing) is not
		// added.
		b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		if err != nil || len(b) == 0 {
			inc(c.base64)
			return
		}
		v = string(b)
	}
	var pv *structpb.Value
	switch k.typ {
	case h2mv3.Config_NUMBER:
		n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return // as Envoy: a value of the wrong type is not added
		}
		pv = structpb.NewNumberValue(n)
	case h2mv3.Config_PROTOBUF_VALUE:
		// Envoy parses the serialized (binary) google.protobuf.Value.
		pv = &structpb.Value{}
		if err := proto.Unmarshal([]byte(v), pv); err != nil {
			return
		}
	default:
		pv = structpb.NewStringValue(v)
	}
	info.SetDynamicMetadata(k.ns, map[string]*structpb.Value{k.key: pv})
	inc(c.added)
}

// cookieValue is Envoy's Http::Utility::parseCookieValue: the value of the
// first cookie called name in the Cookie header lines, "" when there is
// none. Pairs split on ";", leading spaces of a name are dropped, a pair
// without "=" is skipped and a quoted value loses its quotes.
func cookieValue(lines []string, name string) string {
	for _, line := range lines {
		for _, part := range strings.Split(line, ";") {
			k, v, ok := strings.Cut(strings.TrimLeft(part, " "), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}
