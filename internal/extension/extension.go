// Package extension is Legate's one registry of extensions, keyed by the
// @type URL of their typed_config, as Envoy finds its factories. Every place
// of the config that holds an Any — listener, network and HTTP filters,
// transport sockets, access loggers, retry predicates, resource monitors,
// DNS resolvers, protocol options… — resolves it here, so that:
//
//   - udpa.type.v1.TypedStruct and xds.type.v3.TypedStruct decode into
//     their inner type everywhere;
//   - an Envoy extension Legate lacks is reported as "not implemented by
//     legate", an @type that does not exist as "unknown @type … did you
//     mean …", and a type used in the wrong place names the place it
//     belongs to;
//   - docs/extensions.md is generated from what is registered.
//
// A package that implements extensions registers them in its init function
// with Register; Factory holds the category's own factory type (for HTTP
// filters, httpfilter.Factory), which the consuming package asserts.
package extension

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	udpav1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/extension/catalog"
)

// Category is an extension point, named as Envoy names it.
type Category string

// The extension points.
const (
	ListenerFilter     Category = "envoy.filters.listener"
	NetworkFilter      Category = "envoy.filters.network"
	HTTPFilter         Category = "envoy.filters.http"
	UpstreamHTTPFilter Category = "envoy.filters.http.upstream"
	UDPListenerFilter  Category = "envoy.filters.udp_listener"
	// DownstreamTransportSocket and UpstreamTransportSocket are the two
	// sides of envoy.transport_sockets.
	DownstreamTransportSocket Category = "envoy.transport_sockets.downstream"
	UpstreamTransportSocket   Category = "envoy.transport_sockets.upstream"
	AccessLogger              Category = "envoy.access_loggers"
	AccessLogFilter           Category = "envoy.access_loggers.extension_filters"
	Tracer                    Category = "envoy.tracers"
	StatSink                  Category = "envoy.stats_sinks"
	ResourceMonitor           Category = "envoy.resource_monitors"
	LoadBalancingPolicy       Category = "envoy.load_balancing_policies"
	ClusterType               Category = "envoy.clusters"
	RetryHostPredicate        Category = "envoy.retry_host_predicates"
	RetryPriority             Category = "envoy.retry_priorities"
	MatchingInput             Category = "envoy.matching.http.input"
	MatchingAction            Category = "envoy.matching.action"
	DNSResolver               Category = "envoy.network.dns_resolver"
	Bootstrap                 Category = "envoy.bootstrap"
	Formatter                 Category = "envoy.formatter"
	UpstreamOptions           Category = "envoy.upstream_options"
	HealthChecker             Category = "envoy.health_checkers"
	CompressionCompressor     Category = "envoy.compression.compressor"
	CompressionDecompressor   Category = "envoy.compression.decompressor"
	// Upstreams are the router's connection pools (Cluster.upstream_config).
	Upstreams Category = "envoy.upstreams"
	// OTelSampler and OTelResourceDetector plug into the OpenTelemetry
	// tracer (OpenTelemetryConfig.sampler, resource_detectors).
	OTelSampler          Category = "envoy.tracers.opentelemetry.samplers"
	OTelResourceDetector Category = "envoy.tracers.opentelemetry.resource_detectors"
	// RegexEngine is the bootstrap's default_regex_engine.
	RegexEngine Category = "envoy.regex_engines"
	// WatchdogAction is a watchdog's actions (envoy.watchdog.profile_action, …).
	WatchdogAction Category = "envoy.watchdog"

	InternalRedirectPredicate Category = "envoy.internal_redirect_predicates"
)

// Categories lists every category, in the order docs/extensions.md shows them.
var Categories = []Category{
	ListenerFilter, NetworkFilter, HTTPFilter, UpstreamHTTPFilter, UDPListenerFilter,
	DownstreamTransportSocket, UpstreamTransportSocket, AccessLogger, AccessLogFilter, Tracer, StatSink,
	ResourceMonitor, LoadBalancingPolicy, ClusterType, RetryHostPredicate, RetryPriority,
	MatchingInput, MatchingAction, DNSResolver, Bootstrap, Formatter, UpstreamOptions, HealthChecker,
	CompressionCompressor, CompressionDecompressor, Upstreams, OTelSampler, OTelResourceDetector,
	RegexEngine, WatchdogAction, InternalRedirectPredicate,
}

// Extension is one implemented extension.
type Extension struct {
	// Name is Envoy's canonical name (envoy.filters.http.router).
	Name string
	// Aliases are other names that mean the same extension. Envoy's
	// deprecated v2 names (envoy.router) need not be listed: the registry
	// resolves them through the catalog's table (catalog.V2Names).
	Aliases []string
	// Category is where it plugs in.
	Category Category
	// Config is a prototype of its typed_config message; its full name is
	// the registry key.
	Config proto.Message
	// PerRoute is a prototype of its per-route config message
	// (typed_per_filter_config), if it has one.
	PerRoute proto.Message
	// Factory is the category's factory value.
	Factory any
	// Notes says what is not implemented yet, for docs/extensions.md.
	Notes string
}

// TypeURL is the @type URL of the extension's config.
func (e *Extension) TypeURL() string { return typeURL(e.Config) }

// OtherNames returns the other names the extension is found by: its
// deprecated v2 names (from the catalog), then its Aliases.
func (e *Extension) OtherNames() []string {
	var out []string
	seen := map[string]bool{}
	cat := e.Category.envoyCategory()
	for _, v := range catalog.V2Names() {
		if v.Category == cat && v.V3 == e.Name && !seen[v.Name] {
			seen[v.Name] = true
			out = append(out, v.Name)
		}
	}
	for _, a := range e.Aliases {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// envoyCategory is the category as Envoy names it, which the catalog's
// deprecated names are kept by: the two sides of envoy.transport_sockets
// are one, upstream HTTP filters are HTTP filters.
func (c Category) envoyCategory() string {
	switch c {
	case DownstreamTransportSocket, UpstreamTransportSocket:
		return catalog.TransportSockets
	case UpstreamHTTPFilter:
		return catalog.HTTPFilters
	}
	return string(c)
}

func typeURL(m proto.Message) string { return catalog.TypePrefix + typeName(m) }

func typeName(m proto.Message) string { return string(m.ProtoReflect().Descriptor().FullName()) }

type key struct {
	cat Category
	typ string
}

var (
	mu       sync.RWMutex
	byKey    = map[key]*Extension{}
	byRoute  = map[string]*Extension{} // per-route config type → HTTP filter
	byName   = map[key]*Extension{}
	all      []*Extension
	disabled = map[string]bool{}
)

// Register adds an extension. It panics on a duplicate (a programming
// error found at start-up by every test).
func Register(e Extension) {
	mu.Lock()
	defer mu.Unlock()
	if e.Name == "" || e.Category == "" || e.Config == nil {
		panic("extension: Register needs Name, Category and Config")
	}
	k := key{e.Category, typeName(e.Config)}
	if prev, dup := byKey[k]; dup {
		panic(fmt.Sprintf("extension: %s registered twice (%s and %s)", k.typ, prev.Name, e.Name))
	}
	for _, a := range e.Aliases {
		if v3, ok := catalog.CanonicalName(e.Category.envoyCategory(), a); ok && v3 != e.Name {
			panic(fmt.Sprintf("extension: alias %q of %s is Envoy's deprecated name of %s", a, e.Name, v3))
		}
	}
	ep := &e
	byKey[k] = ep
	for _, n := range append([]string{e.Name}, e.Aliases...) {
		byName[key{e.Category, n}] = ep
	}
	if e.PerRoute != nil {
		byRoute[typeName(e.PerRoute)] = ep
	}
	all = append(all, ep)
}

// Disable makes the named extensions unavailable, as Envoy's
// --disable-extensions: configs that use them fail as not implemented.
func Disable(names ...string) {
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		disabled[n] = true
	}
}

// All returns every registered extension, by category then name.
func All() []*Extension {
	mu.RLock()
	out := append([]*Extension(nil), all...)
	mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Category != out[j].Category {
			return out[i].Category < out[j].Category
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].TypeURL() < out[j].TypeURL()
	})
	return out
}

// ByName returns the extension registered under a name or alias, or the
// one a deprecated v2 name of the category stands for (catalog.V2Names).
func ByName(cat Category, name string) *Extension {
	mu.RLock()
	defer mu.RUnlock()
	e := byName[key{cat, name}]
	if e == nil {
		if v3, ok := catalog.CanonicalName(cat.envoyCategory(), name); ok {
			e = byName[key{cat, v3}]
		}
	}
	if e != nil && disabled[e.Name] {
		return nil
	}
	return e
}

// Resolved is an Any resolved against the registry.
type Resolved struct {
	Ext *Extension
	// Config is the decoded, validated typed_config.
	Config proto.Message
}

// Lookup resolves the typed_config of an extension in category cat: it
// unwraps TypedStruct, finds the implementation by @type, decodes and
// validates the message. path is the config path of the Any, for errors.
func Lookup(cat Category, a *anypb.Any, path string) (Resolved, error) {
	if a == nil {
		return Resolved{}, config.Errorf(path, "typed_config is required (an %s extension, by @type)", cat)
	}
	url, msg, err := Unpack(a, path)
	if err != nil {
		return Resolved{}, err
	}
	mu.RLock()
	e := byKey[key{cat, url}]
	off := e != nil && disabled[e.Name]
	mu.RUnlock()
	if e == nil || off {
		return Resolved{}, notImplemented(cat, url, path, off)
	}
	return Resolved{Ext: e, Config: msg}, nil
}

// LookupPerRoute resolves a typed_per_filter_config entry: the HTTP filter
// whose per-route config message has this @type.
func LookupPerRoute(a *anypb.Any, path string) (Resolved, error) {
	url, msg, err := Unpack(a, path)
	if err != nil {
		return Resolved{}, err
	}
	mu.RLock()
	e := byRoute[url]
	main := byKey[key{HTTPFilter, url}]
	mu.RUnlock()
	if e == nil && main != nil {
		// An implemented filter's own config where its per-route config
		// belongs: say so, rather than "not implemented".
		if main.PerRoute == nil {
			return Resolved{}, config.Errorf(path, "@type %s is the config of HTTP filter %s, which has no per-route config", url, main.Name)
		}
		return Resolved{}, config.Errorf(path, "@type %s is the config of HTTP filter %s; its per-route config is %s", url, main.Name, typeName(main.PerRoute))
	}
	if e == nil || disabled[e.Name] {
		return Resolved{}, notImplemented(HTTPFilter, url, path, e != nil)
	}
	return Resolved{Ext: e, Config: msg}, nil
}

// NotImplementedError is an Envoy extension (or a known type in the wrong
// place) that Legate does not run.
type NotImplementedError struct {
	Path, Type, Name string
	Line             int
	Category         Category
	Msg              string
}

func (e *NotImplementedError) Error() string { return at(e.Path, e.Line) + ": " + e.Msg }

// Location lets config.Lines add the source line.
func (e *NotImplementedError) Location() (string, *int) { return e.Path, &e.Line }

// UnknownTypeError is an @type that is in no Envoy API Legate knows.
type UnknownTypeError struct {
	Path, Type string
	Line       int
	Suggest    []string
}

// Location lets config.Lines add the source line.
func (e *UnknownTypeError) Location() (string, *int) { return e.Path, &e.Line }

func (e *UnknownTypeError) Error() string {
	msg := at(e.Path, e.Line) + ": unknown @type " + e.Type + ": no Envoy extension has this type"
	if len(e.Suggest) > 0 {
		msg += "; did you mean " + strings.Join(e.Suggest, " or ") + "?"
	}
	return msg
}

// Missing reports an extension Legate lacks (not implemented) or an
// unknown type: what an is_optional filter may be skipped for.
func Missing(err error) bool {
	var ni *NotImplementedError
	var ut *UnknownTypeError
	return errors.As(err, &ni) || errors.As(err, &ut)
}

func at(p string, line int) string {
	if p == "" {
		p = "(root)"
	}
	if line > 0 {
		return fmt.Sprintf("%s (line %d)", p, line)
	}
	return p
}

func notImplemented(cat Category, url, path string, off bool) error {
	name := catalog.TypeName(url)
	if off {
		return &NotImplementedError{Path: path, Type: name, Category: cat, Msg: fmt.Sprintf("@type %s: this extension is disabled (--disable-extensions)", name)}
	}
	// Implemented, but in another category?
	mu.RLock()
	var elsewhere []string
	for k, e := range byKey {
		if k.typ == name && k.cat != cat {
			elsewhere = append(elsewhere, fmt.Sprintf("%s (%s)", e.Name, k.cat))
		}
	}
	mu.RUnlock()
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		return &NotImplementedError{Path: path, Type: name, Category: cat,
			Msg: fmt.Sprintf("@type %s is %s, which does not go here (expected an %s extension)", name, strings.Join(elsewhere, ", "), cat)}
	}
	if ce, ok := catalog.Find(name); ok {
		return &NotImplementedError{Path: path, Type: name, Name: ce.Name, Category: cat,
			Msg: fmt.Sprintf("@type %s (Envoy extension %s) is not implemented by legate (see docs/extensions.md)", name, ce.Name)}
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName(protoreflectName(name)); err == nil {
		return &NotImplementedError{Path: path, Type: name, Category: cat,
			Msg: fmt.Sprintf("@type %s is not an %s extension that legate implements", name, cat)}
	}
	return &UnknownTypeError{Path: path, Type: name, Suggest: catalog.Nearest(name, 2, registeredTypes()...)}
}

func registeredTypes() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(byKey))
	for k := range byKey {
		out = append(out, k.typ)
	}
	return out
}

var (
	typedStructV1 = typeURL(&udpav1.TypedStruct{})
	typedStructV3 = typeURL(&xdstypev3.TypedStruct{})
)

// Unpack decodes an Any into its message: a TypedStruct becomes its inner
// type (its value converted field by field), then the message is validated
// (protoc-gen-validate rules, including nested Anys). It returns the
// message's type name.
func Unpack(a *anypb.Any, path string) (string, proto.Message, error) {
	name, msg, err := Decode(a, path)
	if err != nil {
		return name, msg, err
	}
	if err := config.Validate(msg, path); err != nil {
		return name, nil, err
	}
	return name, msg, nil
}

// InnerType returns the type URL an Any carries: a TypedStruct's type_url,
// else its own (what Decode will decode it as).
func InnerType(a *anypb.Any) string {
	switch a.GetTypeUrl() {
	case typedStructV1:
		ts := &udpav1.TypedStruct{}
		if a.UnmarshalTo(ts) == nil {
			return ts.GetTypeUrl()
		}
	case typedStructV3:
		ts := &xdstypev3.TypedStruct{}
		if a.UnmarshalTo(ts) == nil {
			return ts.GetTypeUrl()
		}
	}
	return a.GetTypeUrl()
}

// Decode is Unpack without validation, for code that only reads a
// message already validated when it was compiled.
func Decode(a *anypb.Any, path string) (string, proto.Message, error) {
	url := a.GetTypeUrl()
	var st *structpb.Struct
	switch url {
	case typedStructV1:
		ts := &udpav1.TypedStruct{}
		if err := a.UnmarshalTo(ts); err != nil {
			return "", nil, config.Errorf(path, "decode TypedStruct: %v", err)
		}
		url, st = ts.GetTypeUrl(), ts.GetValue()
	case typedStructV3:
		ts := &xdstypev3.TypedStruct{}
		if err := a.UnmarshalTo(ts); err != nil {
			return "", nil, config.Errorf(path, "decode TypedStruct: %v", err)
		}
		url, st = ts.GetTypeUrl(), ts.GetValue()
	}
	name := catalog.TypeName(url)
	if name == "" {
		return "", nil, config.Errorf(path, "@type is empty")
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflectName(name))
	if err != nil {
		return name, nil, notImplemented("", url, path, false)
	}
	msg := mt.New().Interface()
	if st != nil {
		js, err := protojson.Marshal(st)
		if err != nil {
			return name, nil, config.Errorf(path, "decode TypedStruct value: %v", err)
		}
		if err := protojson.Unmarshal(js, msg); err != nil {
			return name, nil, config.Errorf(path, "decode TypedStruct value as %s: %v", name, err)
		}
	} else if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return name, nil, config.Errorf(path, "decode %s: %v", name, err)
	}
	return name, msg, nil
}
