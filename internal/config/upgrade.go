package config

import (
	"strings"
	"sync"

	udpaannotations "github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"gopkg.in/yaml.v3"

	"github.com/legateproxy/legate/internal/extension/catalog"
)

// This file upgrades v2-era config forms, which still circulate in tutorials,
// to their v3 equivalents. Each upgrade leaves one warning that shows the v3
// form, so users can fix their files; `legate config upgrade` prints the
// whole upgraded config.

const typePrefix = "type.googleapis.com/"

// The deprecated v2 extension names and the @type of every extension
// name come from the extension catalog (internal/extension/catalog), which
// the extension registry resolves names with too.

// CanonicalName returns the v3 name of a deprecated v2 extension name
// (envoy.buffer → envoy.filters.http.buffer), as the loader renames them.
// A name deprecated for two extensions (envoy.ext_authz: the HTTP and the
// network filter) is resolved as an HTTP filter's: route tables key
// typed_per_filter_config by HTTP filter names.
func CanonicalName(name string) (string, bool) {
	if c, ok := catalog.CanonicalName(catalog.HTTPFilters, name); ok {
		return c, true
	}
	for _, v := range catalog.V2Names() {
		if v.Name == name {
			return v.V3, true
		}
	}
	return "", false
}

// v2TypeURLs maps v2 message names to their v3 successors.
var v2TypeURLs = map[string]string{
	"envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager": "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"envoy.config.filter.network.tcp_proxy.v2.TcpProxy":                            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
	"envoy.config.filter.http.router.v2.Router":                                    "envoy.extensions.filters.http.router.v3.Router",
	"envoy.config.accesslog.v2.FileAccessLog":                                      "envoy.extensions.access_loggers.file.v3.FileAccessLog",
	"envoy.api.v2.auth.DownstreamTlsContext":                                       "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
	"envoy.api.v2.auth.UpstreamTlsContext":                                         "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"envoy.api.v2.Cluster":                                                         "envoy.config.cluster.v3.Cluster",
	"envoy.api.v2.Listener":                                                        "envoy.config.listener.v3.Listener",
	"envoy.api.v2.RouteConfiguration":                                              "envoy.config.route.v3.RouteConfiguration",
	"envoy.api.v2.ClusterLoadAssignment":                                           "envoy.config.endpoint.v3.ClusterLoadAssignment",
	"envoy.config.filter.listener.tls_inspector.v2.TlsInspector":                   "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
}

// upgradeTypeURL returns the v3 form of a v2 type URL (calling warn when it
// changes it), or url unchanged.
func upgradeTypeURL(url string, warn func(string)) string {
	name := strings.TrimPrefix(url, typePrefix)
	v3, ok := v2TypeURLs[name]
	if !ok {
		v3, ok = previousTypes()[name]
	}
	if !ok {
		v3, ok = successorByPackage(name)
	}
	if ok {
		nu := typePrefix + v3
		warn(nu)
		return nu
	}
	return url
}

// oldVersions are the package versions of Envoy's API before v3 (and the
// alpha ones of v3) whose messages moved to a v3 package.
var oldVersions = map[string]bool{"v2": true, "v2alpha": true, "v2alpha1": true, "v3alpha": true, "v4alpha": true}

// successorByPackage finds the v3 message of an old Envoy message name that
// the versioning annotations miss, by the package moves Envoy's v3 API
// made: envoy.config.filter.<http|network|...>.<name>.<version>.<Msg>
// became envoy.extensions.filters.<...>.<name>.v3.<Msg>, and an alpha
// package (oauth2.v3alpha) graduated to v3. Some v3 messages name an
// intermediate package as their previous type (ext_authz's is
// envoy.config.filter.http.ext_authz.v3.ExtAuthz), so a candidate may also
// be such a previous type. Only a linked v3 type is an answer; a name that
// is itself linked (a current v3alpha message) is left alone.
func successorByPackage(name string) (string, bool) {
	if !strings.HasPrefix(name, "envoy.") {
		return "", false
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name)); err == nil {
		return "", false
	}
	parts := strings.Split(name, ".")
	ver := -1
	for i, p := range parts[:len(parts)-1] {
		if oldVersions[p] {
			ver = i
		}
	}
	if ver < 0 {
		return "", false
	}
	renamed := append(append(append([]string{}, parts[:ver]...), "v3"), parts[ver+1:]...)
	candidates := []string{strings.Join(renamed, ".")}
	if len(renamed) > 3 && renamed[1] == "config" && renamed[2] == "filter" {
		candidates = append(candidates, "envoy.extensions.filters."+strings.Join(renamed[3:], "."))
	}
	for _, c := range candidates {
		if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(c)); err == nil {
			return c, true
		}
		if v3, ok := previousTypes()[c]; ok {
			return v3, true
		}
	}
	return "", false
}

// previousTypes maps the v2 (and v2alpha, v3alpha) names of the v3
// messages this binary links to their v3 names, read from the
// udpa.annotations.versioning option each v3 message carries
// (previous_message_type), so every linked type's old @type upgrades.
var previousTypes = sync.OnceValue(func() map[string]string {
	out := map[string]string{}
	protoregistry.GlobalTypes.RangeMessages(func(mt protoreflect.MessageType) bool {
		md := mt.Descriptor()
		opts, ok := md.Options().(*descriptorpb.MessageOptions)
		if !ok || opts == nil || !proto.HasExtension(opts, udpaannotations.E_Versioning) {
			return true
		}
		v, _ := proto.GetExtension(opts, udpaannotations.E_Versioning).(*udpaannotations.VersioningAnnotation)
		if prev := v.GetPreviousMessageType(); prev != "" {
			out[prev] = string(md.FullName())
		}
		return true
	})
	return out
})

// typedConfigHolders are the messages that carry `name` + `typed_config` and,
// in v2, `config`, with the extension category their name is one of.
var typedConfigHolders = map[protoreflect.FullName]string{
	"envoy.config.listener.v3.Filter":                                        catalog.NetworkFilters,
	"envoy.config.listener.v3.ListenerFilter":                                catalog.ListenerFilters,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": catalog.HTTPFilters,
	"envoy.config.accesslog.v3.AccessLog":                                    catalog.AccessLoggers,
	"envoy.config.core.v3.TransportSocket":                                   catalog.TransportSockets,
	"envoy.config.metrics.v3.StatsSink":                                      catalog.StatsSinks,
	"envoy.config.trace.v3.Tracing.Http":                                     catalog.Tracers,
}

// ignoredByEnvoy are fields Envoy accepts and never reads (hidden as not
// implemented in its API), by message: Legate accepts them too, with a
// warning, where a config is read from text; the compile code of their
// extension logs the same warning for configs that come over xDS.
var ignoredByEnvoy = map[protoreflect.FullName]map[string]string{
	// Envoy's FilterConfigPerRoute keeps only vh_rate_limits and domain.
	"envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute": {"override_option": "DEFAULT"},
}

// warnIgnored warns of each field of ps that Envoy ignores, unless it has
// its default value.
func (d *decoder) warnIgnored(md protoreflect.MessageDescriptor, path string, ps []pair) {
	fields := ignoredByEnvoy[md.FullName()]
	if fields == nil {
		return
	}
	for _, p := range ps {
		fd := md.Fields().ByName(protoreflect.Name(p.key))
		if fd == nil {
			fd = md.Fields().ByJSONName(p.key)
		}
		if fd == nil {
			continue
		}
		def, ok := fields[string(fd.Name())]
		v := resolve(p.value)
		if !ok || isNull(v) || v.Kind == yaml.ScalarNode && (strings.EqualFold(v.Value, def) || v.Value == "0") {
			continue
		}
		d.warnf(p.kn, join(path, string(fd.Name())), "%s is ignored, as by Envoy (not implemented there): remove it", fd.Name())
	}
}

// upgradeV2 rewrites the v2-era keys of one mapping into their v3 form.
func (d *decoder) upgradeV2(n *yaml.Node, md protoreflect.MessageDescriptor, path string, ps []pair) []pair {
	ps = d.upgradeAPIVersions(n, md, path, ps)
	d.warnIgnored(md, path, ps)
	switch md.FullName() {
	case "envoy.config.cluster.v3.Cluster":
		return d.upgradeCluster(md, path, ps)
	case "envoy.config.listener.v3.FilterChain":
		return d.upgradeTLSContext(ps, path, "DownstreamTlsContext")
	case "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext":
		return d.upgradeVerifySAN(ps, path)
	case "envoy.config.route.v3.RouteMatch":
		return renameKey(d, ps, path, "regex", "safe_regex", func(v *yaml.Node) *yaml.Node {
			return mapping(v.Line, "google_re2", mapping(v.Line), "regex", v)
		})
	case "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
		return renameKey(d, ps, path, "idle_timeout", "common_http_protocol_options", func(v *yaml.Node) *yaml.Node {
			return mapping(v.Line, "idle_timeout", v)
		})
	case "envoy.extensions.access_loggers.file.v3.FileAccessLog":
		return renameKey(d, ps, path, "format", "log_format", func(v *yaml.Node) *yaml.Node {
			return mapping(v.Line, "text_format", v)
		})
	}
	category, holder := typedConfigHolders[md.FullName()]
	if !holder {
		return ps
	}
	var name string
	var nameNode *yaml.Node
	hasTyped := false
	for _, p := range ps {
		switch p.key {
		case "name":
			nameNode = resolve(p.value)
			name = nameNode.Value
		case "typed_config", "typedConfig", "config_discovery", "configDiscovery":
			hasTyped = true
		}
	}
	if hasTyped {
		// typed_config: {} is an Any without a type: Envoy finds the
		// extension by its name and uses its default config (Envoy's own
		// configs/envoy_ext_authz.yaml relies on it), so the name decides,
		// as when typed_config is absent.
		kept := ps[:0:0]
		for _, p := range ps {
			if v := resolve(p.value); (p.key == "typed_config" || p.key == "typedConfig") && v.Kind == yaml.MappingNode && len(v.Content) == 0 {
				hasTyped = false
				continue
			}
			kept = append(kept, p)
		}
		ps = kept
	}
	canonical := name
	if canon, ok := catalog.CanonicalName(category, name); ok {
		canonical = canon
		d.warnf(nameNode, join(path, "name"), "deprecated v2 name %q upgraded to %q", name, canon)
		// The v3 form carries the canonical name (the type comes from
		// typed_config, so only names in logs and the config dump change).
		for i, p := range ps {
			if p.key == "name" {
				ps[i].value = scalar(nameNode.Line, canon)
			}
		}
	}
	typeFor := func() string {
		if category == catalog.TransportSockets && canonical == "envoy.transport_sockets.tls" {
			// The catalog cannot tell the side; the path can.
			if strings.Contains(path, "filter_chain") || strings.Contains(path, "listener") {
				return "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
			}
			return "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
		}
		t, _ := catalog.ConfigType(canonical)
		return t
	}
	out := make([]pair, 0, len(ps)+1)
	for _, p := range ps {
		if p.key != "config" {
			out = append(out, p)
			continue
		}
		hasTyped = true
		t := typeFor()
		if t == "" {
			d.errorf(p.kn, join(path, "config"), "v2 `config:` for unknown extension %q: give typed_config with an @type instead", name)
			continue
		}
		d.warnf(p.kn, join(path, "config"), "v2 `config:` upgraded to `typed_config:` with \"@type\": %s%s", typePrefix, t)
		body := resolve(p.value)
		tc := mapping(p.kn.Line, "@type", scalar(p.kn.Line, typePrefix+t))
		if body.Kind == yaml.MappingNode {
			for _, bp := range pairs(body) {
				tc.Content = append(tc.Content, bp.kn, bp.value)
			}
		}
		out = append(out, pair{key: "typed_config", kn: scalar(p.kn.Line, "typed_config"), value: tc})
	}
	if !hasTyped && name != "" {
		if t := typeFor(); t != "" {
			line := 0
			if nameNode != nil {
				line = nameNode.Line
			}
			d.warnf(nameNode, path, "%q has no typed_config: add typed_config: {\"@type\": %s%s}", name, typePrefix, t)
			out = append(out, pair{key: "typed_config", kn: scalar(line, "typed_config"), value: mapping(line, "@type", scalar(line, typePrefix+t))})
		}
	}
	return out
}

// upgradeCluster turns v2 `hosts:` into a v3 load_assignment and v2
// `tls_context:` into a transport_socket.
func (d *decoder) upgradeCluster(md protoreflect.MessageDescriptor, path string, ps []pair) []pair {
	var clusterName *yaml.Node
	for _, p := range ps {
		if p.key == "name" {
			clusterName = resolve(p.value)
		}
	}
	out := make([]pair, 0, len(ps))
	for _, p := range ps {
		switch p.key {
		case "hosts":
			hosts := resolve(p.value)
			line := p.kn.Line
			lbs := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line}
			if hosts.Kind == yaml.SequenceNode {
				for _, h := range hosts.Content {
					lbs.Content = append(lbs.Content, mapping(line, "endpoint", mapping(line, "address", h)))
				}
			}
			cn := scalar(line, "")
			if clusterName != nil {
				cn = clusterName
			}
			la := mapping(line, "cluster_name", cn, "endpoints", seq(line, mapping(line, "lb_endpoints", lbs)))
			d.warnf(p.kn, join(path, "hosts"), "v2 `hosts:` upgraded to `load_assignment: {cluster_name: ..., endpoints: [{lb_endpoints: [{endpoint: {address: ...}}]}]}`")
			out = append(out, pair{key: "load_assignment", kn: scalar(line, "load_assignment"), value: la})
		default:
			out = append(out, p)
		}
	}
	_ = md
	return d.upgradeTLSContext(out, path, "UpstreamTlsContext")
}

// upgradeTLSContext turns the v2 `tls_context:` of a cluster or a filter
// chain into the v3 transport_socket envoy.transport_sockets.tls whose
// typed_config, an Upstream- or DownstreamTlsContext (msg), has the same
// fields.
func (d *decoder) upgradeTLSContext(ps []pair, path, msg string) []pair {
	for i, p := range ps {
		if p.key != "tls_context" && p.key != "tlsContext" {
			continue
		}
		line := p.kn.Line
		tc := mapping(line, "@type", scalar(line, typePrefix+"envoy.extensions.transport_sockets.tls.v3."+msg))
		if b := resolve(p.value); b.Kind == yaml.MappingNode {
			for _, bp := range pairs(b) {
				tc.Content = append(tc.Content, bp.kn, bp.value)
			}
		}
		d.warnf(p.kn, join(path, "tls_context"), "v2 `tls_context:` upgraded to `transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.%s, ...}}`", msg)
		ps[i] = pair{key: "transport_socket", kn: scalar(line, "transport_socket"),
			value: mapping(line, "name", scalar(line, "envoy.transport_sockets.tls"), "typed_config", tc)}
	}
	return ps
}

// upgradeVerifySAN turns the v2 `verify_subject_alt_name: [a, b]` of a
// validation context into the v3 `match_subject_alt_names: [{exact: a},
// {exact: b}]`, as Envoy's v2 to v3 upgrade did (its exact matchers keep
// the v2 semantics: a DNS SAN matches as a DNS name, others exactly),
// after any match_subject_alt_names also given, as v2 Envoy checked both.
func (d *decoder) upgradeVerifySAN(ps []pair, path string) []pair {
	var from *pair
	for i := range ps {
		if ps[i].key == "verify_subject_alt_name" || ps[i].key == "verifySubjectAltName" {
			from = &ps[i]
		}
	}
	if from == nil {
		return ps
	}
	line := from.kn.Line
	for _, p := range ps {
		if p.key == "match_subject_alt_names" || p.key == "matchSubjectAltNames" {
			// v2 required both lists to match; v3's one list is OR'ed, so
			// merging them would weaken the check.
			d.errorf(from.kn, join(path, "verify_subject_alt_name"), "v2 verify_subject_alt_name together with match_subject_alt_names cannot be upgraded (v2 required both to match); keep only match_subject_alt_names")
			return ps
		}
	}
	var matchers []*yaml.Node
	if v := resolve(from.value); v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			if !ignored(e) {
				matchers = append(matchers, mapping(e.Line, "exact", e))
			}
		}
	} else {
		// A single value for a repeated field, as the decoder takes it.
		matchers = append(matchers, mapping(line, "exact", v))
	}
	d.warnf(from.kn, join(path, "verify_subject_alt_name"), "v2 `verify_subject_alt_name: [name, ...]` upgraded to `match_subject_alt_names: [{exact: name}, ...]`")
	out := make([]pair, 0, len(ps))
	for _, p := range ps {
		if p.key == "verify_subject_alt_name" || p.key == "verifySubjectAltName" {
			continue
		}
		out = append(out, p)
	}
	return append(out, pair{key: "match_subject_alt_names", kn: scalar(line, "match_subject_alt_names"), value: seq(line, matchers...)})
}

// apiVersionFields are the fields that pick the xDS transport or resource
// version (envoy.config.core.v3.ApiVersion) of a config source or a gRPC
// service's client.
var apiVersionFields = []protoreflect.Name{"transport_api_version", "resource_api_version"}

// requiresV3 are the messages whose unset transport_api_version (AUTO)
// Envoy refuses, as it does V2 (Config::Utility::checkTransportVersion):
// v2-era configs leave it out, and those are upgraded too.
var requiresV3 = map[protoreflect.FullName]bool{
	"envoy.config.ratelimit.v3.RateLimitServiceConfig": true,
}

// upgradeAPIVersions turns an ApiVersion of V2 or AUTO into V3: Envoy no
// longer has the v2 xDS API and refuses both (AUTO meant "V2 unless told"),
// while the services these configs talk to speak v3 today, so Legate
// upgrades them with a warning that says to write V3.
func (d *decoder) upgradeAPIVersions(n *yaml.Node, md protoreflect.MessageDescriptor, path string, ps []pair) []pair {
	for _, name := range apiVersionFields {
		fd := md.Fields().ByName(name)
		if fd == nil || fd.Kind() != protoreflect.EnumKind || fd.Enum().FullName() != "envoy.config.core.v3.ApiVersion" {
			continue
		}
		found := false
		for i, p := range ps {
			if p.key != string(name) && p.key != fd.JSONName() {
				continue
			}
			found = true
			v := resolve(p.value)
			if v.Kind != yaml.ScalarNode || isNull(v) {
				continue
			}
			old := ""
			switch strings.ToUpper(v.Value) {
			case "V2", "1":
				old = "V2"
			case "AUTO", "0":
				old = "AUTO"
			}
			if old == "" {
				continue
			}
			d.warnf(p.kn, join(path, string(name)), "%s %s upgraded to V3 (Envoy supports only the v3 xDS API): write %s: V3", name, old, name)
			ps[i] = pair{key: p.key, kn: p.kn, value: scalar(v.Line, "V3")}
		}
		if !found && name == "transport_api_version" && requiresV3[md.FullName()] {
			line := 0
			if n != nil {
				line = n.Line
			}
			d.warnf(n, join(path, string(name)), "unset %s (AUTO, a v2-era default) upgraded to V3 (Envoy refuses it here): add %s: V3", name, name)
			ps = append(ps, pair{key: string(name), kn: scalar(line, string(name)), value: scalar(line, "V3")})
		}
	}
	return ps
}

// renameKey renames a v2 key to its v3 name, optionally wrapping its value.
func renameKey(d *decoder, ps []pair, path, from, to string, wrap func(*yaml.Node) *yaml.Node) []pair {
	for i, p := range ps {
		if p.key != from {
			continue
		}
		v := p.value
		if wrap != nil {
			v = wrap(resolve(v))
		}
		d.warnf(p.kn, join(path, from), "deprecated field %q upgraded to %q", from, to)
		ps[i] = pair{key: to, kn: scalar(p.kn.Line, to), value: v}
	}
	return ps
}

func scalar(line int, v string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v, Line: line}
}

// mapping builds a mapping node from alternating keys and value nodes.
func mapping(line int, kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Content = append(m.Content, scalar(line, kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return m
}

func seq(line int, items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line, Content: items}
}
