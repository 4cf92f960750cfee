// Package header_to_metadata is Envoy's header-to-metadata filter
// (envoy.filters.http.header_to_metadata): rules copy a request (or
// response) header's value — or a fixed value — into dynamic metadata
// when the header is present or missing, optionally removing the header,
// so later filters, the router's metadata matchers and access logs
// (%DYNAMIC_METADATA%) see it.
package header_to_metadata

import (
	"encoding/base64"
	"strconv"

	h2mv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_to_metadata/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
	"github.com/legateproxy/legate/internal/route"
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
	header  string
	present *kv
	missing *kv
	remove  bool
}

type filterConfig struct {
	request, response []rule
}

func compileRules(rs []*h2mv3.Config_Rule, path string) ([]rule, error) {
	var out []rule
	for i, r := range rs {
		p := config.Index(path, i)
		if err := config.CheckFields(r, p, "header", "on_header_present", "on_header_missing", "remove"); err != nil {
			return nil, err
		}
		if r.GetHeader() == "" {
			return nil, config.Errorf(config.Join(p, "header"), "a rule needs a header (cookie rules are not implemented)")
		}
		ru := rule{header: headers.Lower(r.GetHeader()), remove: r.GetRemove()}
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

func compile(_ *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	fc, err := compileConfig(cfg.(*h2mv3.Config), path)
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

func compilePerRoute(_ *httpfilter.Context, cfg proto.Message, path string) (any, error) {
	return compileConfig(cfg.(*h2mv3.Config), path)
}

func compileConfig(c *h2mv3.Config, path string) (*filterConfig, error) {
	if err := config.CheckFields(c, path, "request_rules", "response_rules"); err != nil {
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
	return &filterConfig{request: req, response: resp}, nil
}

type filter struct {
	cb  httpfilter.Callbacks
	cfg *filterConfig
}

func (f *filter) DecodeHeaders(h *headers.Request, _ bool) httpfilter.Status {
	apply(f.cfg.request, &h.Map, f.cb.StreamInfo())
	return httpfilter.Continue
}

func (f *filter) EncodeHeaders(h *headers.Response, _ bool) httpfilter.Status {
	apply(f.cfg.response, &h.Map, f.cb.StreamInfo())
	return httpfilter.Continue
}

// apply runs the rules, as Envoy: a present header sets its pair (the
// header's value unless the pair has a fixed one) and may be removed; a
// missing one sets on_header_missing's pair.
func apply(rules []rule, m *headers.Map, info *streaminfo.Info) {
	for i := range rules {
		r := &rules[i]
		v, ok := m.Lookup(r.header)
		switch {
		case ok && r.present != nil:
			set(r.present, v, info)
		case !ok && r.missing != nil:
			set(r.missing, r.missing.value, info)
		}
		if ok && r.remove {
			m.Del(r.header)
		}
	}
}

func set(k *kv, headerValue string, info *streaminfo.Info) {
	v := headerValue
	if k.value != "" {
		v = k.value
	} else if k.rewrite != nil {
		v = k.rewrite(v)
	}
	if v == "" {
		return // Envoy ignores empty values
	}
	var pv *structpb.Value
	switch k.typ {
	case h2mv3.Config_NUMBER:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return // as Envoy: a value of the wrong type is not added
		}
		pv = structpb.NewNumberValue(n)
	case h2mv3.Config_PROTOBUF_VALUE:
		raw := []byte(v)
		if k.base64 {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return
			}
			raw = b
		}
		pv = &structpb.Value{}
		if err := proto.Unmarshal(raw, pv); err != nil {
			if err := protojson.Unmarshal(raw, pv); err != nil {
				return
			}
		}
	default:
		s := v
		if k.base64 {
			s = base64.StdEncoding.EncodeToString([]byte(v))
		}
		pv = structpb.NewStringValue(s)
	}
	info.SetDynamicMetadata(k.ns, map[string]*structpb.Value{k.key: pv})
}
