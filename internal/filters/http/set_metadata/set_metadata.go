// Package set_metadata is Envoy's set-metadata filter
// (envoy.filters.http.set_metadata): it adds fixed values to a
// namespace of the stream's dynamic metadata when the request headers
// arrive, for later filters, metadata matchers and access logs.
package set_metadata

import (
	setmetadatav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/set_metadata/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/headers"
	"github.com/legateproxy/legate/internal/httpfilter"
)

func init() {
	httpfilter.Register("envoy.filters.http.set_metadata", nil, &setmetadatav3.Config{}, nil, httpfilter.Factory{Compile: compile},
		"typed_value (typed metadata) is not implemented")
}

type entry struct {
	ns        string
	value     *structpb.Struct
	overwrite bool
}

func compile(_ *httpfilter.Context, cfg proto.Message, path string) (httpfilter.Config, error) {
	c := cfg.(*setmetadatav3.Config)
	if err := config.CheckFields(c, path, "metadata_namespace", "value", "metadata"); err != nil {
		return nil, err
	}
	var entries []entry
	if c.GetMetadataNamespace() != "" || c.GetValue() != nil {
		// The deprecated form: merged into the namespace, always.
		entries = append(entries, entry{ns: c.GetMetadataNamespace(), value: c.GetValue(), overwrite: true})
	}
	for i, m := range c.GetMetadata() {
		p := config.Index(config.Join(path, "metadata"), i)
		if err := config.CheckFields(m, p, "metadata_namespace", "allow_overwrite", "value"); err != nil {
			return nil, err
		}
		if m.GetMetadataNamespace() == "" {
			return nil, config.Errorf(config.Join(p, "metadata_namespace"), "a metadata entry needs a namespace")
		}
		entries = append(entries, entry{ns: m.GetMetadataNamespace(), value: m.GetValue(), overwrite: m.GetAllowOverwrite()})
	}
	return httpfilter.ConfigFunc(func(cb httpfilter.Callbacks) httpfilter.Filter {
		return &filter{cb: cb, entries: entries}
	}), nil
}

type filter struct {
	cb      httpfilter.Callbacks
	entries []entry
}

// DecodeHeaders applies the entries, as Envoy: an untyped value is merged
// into its namespace key by key; with allow_overwrite false a namespace
// that already exists is left as it is.
func (f *filter) DecodeHeaders(*headers.Request, bool) httpfilter.Status {
	info := f.cb.StreamInfo()
	for _, e := range f.entries {
		if _, exists := info.DynamicMetadata[e.ns]; exists && !e.overwrite {
			continue
		}
		fields := make(map[string]*structpb.Value, len(e.value.GetFields()))
		for k, v := range e.value.GetFields() {
			fields[k] = v
		}
		info.SetDynamicMetadata(e.ns, fields)
	}
	return httpfilter.Continue
}
