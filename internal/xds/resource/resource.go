// Package resource decodes xDS resources, once, for every transport.
//
// Each type the proxy consumes — Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment, Secret, Runtime (RTDS) — has one Type: it unwraps an
// envoy.service.discovery.v3.Resource wrapper, checks the type URL,
// unmarshals the message, reads its name and validates it (protoc-gen-validate
// rules through config.Validate, with paths such as "listener <name>.address").
// The gRPC client and the file and REST transports decode each resource of a
// response with its Type and hand the handlers the Decoded values, so the
// handlers compile messages without decoding them again. A resource that fails
// to decode rejects the whole response (NACK) before any handler sees it.
//
// Only v3 type URLs are decoded: the gRPC transports ask for v3 resources
// (resource_api_version V2 is refused when the config source is checked) and
// resource files are upgraded to v3 when they are read (config.Decode).
package resource

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	runtimev3 "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/config"
)

// Type URLs of the resources the proxy consumes.
const (
	ListenerURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteURL    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterURL  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointURL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretURL   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	RuntimeURL  = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
	// WrapperURL is envoy.service.discovery.v3.Resource, the wrapper a
	// server may send a resource in (with a name, a version, a TTL).
	WrapperURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"
)

// Type decodes the resources of one xDS type.
type Type interface {
	// URL is the type URL of the resources Decode accepts.
	URL() string
	// Decode unwraps, unmarshals, names and validates one resource. A
	// failure is an *Error that says which resource and what to fix.
	Decode(a *anypb.Any) (*Decoded, error)
}

// Decoded is one resource after Decode: valid, named, ready to compile.
type Decoded struct {
	// Name is the resource's name: the wrapper's name when a Resource
	// wrapper gives one, else the message's name (cluster_name for a
	// ClusterLoadAssignment).
	Name string
	// Message is the decoded, validated message (*listenerv3.Listener for
	// the Listener type, and so on); read it with As.
	Message proto.Message
	// Raw is the message's serialized form as received; handlers compare
	// it to skip resources that did not change.
	Raw []byte
}

// Error is a resource that failed to decode or validate.
type Error struct {
	// Name is the resource's name, "" when it could not be read (a wrong
	// type, bytes that do not decode, no name).
	Name string
	err  error
}

// Error returns the reason, which starts with the resource's path
// ("listener foo: …", or "listener resource: …" when it has no name).
func (e *Error) Error() string { return e.err.Error() }

// Unwrap returns the underlying error (a config.ErrorList for a
// validation failure, the protobuf error for undecodable bytes).
func (e *Error) Unwrap() error { return e.err }

// The decoders of the types the proxy consumes.
var (
	// Listener decodes LDS resources (envoy.config.listener.v3.Listener).
	Listener Type = &decoder[*listenerv3.Listener]{url: ListenerURL, kind: "listener", nameField: "name",
		new: func() *listenerv3.Listener { return &listenerv3.Listener{} }, name: (*listenerv3.Listener).GetName}
	// RouteConfiguration decodes RDS resources
	// (envoy.config.route.v3.RouteConfiguration).
	RouteConfiguration Type = &decoder[*routev3.RouteConfiguration]{url: RouteURL, kind: "route_configuration", nameField: "name",
		new: func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} }, name: (*routev3.RouteConfiguration).GetName}
	// Cluster decodes CDS resources (envoy.config.cluster.v3.Cluster).
	Cluster Type = &decoder[*clusterv3.Cluster]{url: ClusterURL, kind: "cluster", nameField: "name",
		new: func() *clusterv3.Cluster { return &clusterv3.Cluster{} }, name: (*clusterv3.Cluster).GetName}
	// ClusterLoadAssignment decodes EDS resources
	// (envoy.config.endpoint.v3.ClusterLoadAssignment), named by
	// cluster_name.
	ClusterLoadAssignment Type = &decoder[*endpointv3.ClusterLoadAssignment]{url: EndpointURL, kind: "cluster_load_assignment", nameField: "cluster_name",
		new: func() *endpointv3.ClusterLoadAssignment { return &endpointv3.ClusterLoadAssignment{} }, name: (*endpointv3.ClusterLoadAssignment).GetClusterName}
	// Secret decodes SDS resources
	// (envoy.extensions.transport_sockets.tls.v3.Secret).
	Secret Type = &decoder[*tlsv3.Secret]{url: SecretURL, kind: "secret", nameField: "name",
		new: func() *tlsv3.Secret { return &tlsv3.Secret{} }, name: (*tlsv3.Secret).GetName}
	// Runtime decodes RTDS resources (envoy.service.runtime.v3.Runtime),
	// the layers of layered_runtime's rtds_layers.
	Runtime Type = &decoder[*runtimev3.Runtime]{url: RuntimeURL, kind: "runtime", nameField: "name",
		new: func() *runtimev3.Runtime { return &runtimev3.Runtime{} }, name: (*runtimev3.Runtime).GetName}
)

var byURL = map[string]Type{}

func init() {
	for _, t := range []Type{Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, Secret, Runtime} {
		byURL[t.URL()] = t
	}
}

// ForURL returns the decoder of a type URL. For a type the proxy does not
// consume it returns a Type whose Decode fails, so a transport subscribed
// to it rejects every response instead of applying something unchecked.
func ForURL(url string) Type {
	if t, ok := byURL[url]; ok {
		return t
	}
	return unknown(url)
}

// As returns d's message as M. A resource decoded by another type's
// decoder is an error (a wiring bug, not bad input).
func As[M proto.Message](d *Decoded) (M, error) {
	m, ok := d.Message.(M)
	if !ok {
		var want M
		return want, fmt.Errorf("%s: internal error: the resource was decoded as %T, not %T", d.Name, d.Message, want)
	}
	return m, nil
}

// ShortType is the message name of a type URL ("Listener" for
// ListenerURL), for logs and metrics.
func ShortType(url string) string {
	return url[strings.LastIndexByte(url, '.')+1:]
}

// DecodeAll decodes a state-of-the-world list of resources with t and keys
// them by name (a later resource of a name replaces an earlier one). When
// any resource fails, the error is a config.ErrorList of every failure
// (each an *Error) and the map holds the resources that decoded.
func DecodeAll(t Type, list []*anypb.Any) (map[string]*Decoded, error) {
	out := make(map[string]*Decoded, len(list))
	var errs config.ErrorList
	for _, a := range list {
		d, err := t.Decode(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[d.Name] = d
	}
	if len(errs) > 0 {
		return out, errs
	}
	return out, nil
}

// FailedNames returns the names of the resources that an error from
// Decode or DecodeAll refused, where they could be read.
func FailedNames(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case *Error:
			if e.Name != "" {
				out = append(out, e.Name)
			}
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// decoder is the Type of one message type.
type decoder[M proto.Message] struct {
	url string
	// kind is the resource's name in error paths ("listener foo.address").
	kind string
	// nameField is the field that names the resource.
	nameField string
	new       func() M
	name      func(M) string
}

func (t *decoder[M]) URL() string { return t.url }

// TypeURL returns the type URL of a resource, inside its Resource wrapper
// if it has one (the decoder a file or response of it needs).
func TypeURL(a *anypb.Any) string {
	if a.GetTypeUrl() == WrapperURL {
		w := &discoveryv3.Resource{}
		if proto.Unmarshal(a.GetValue(), w) == nil && w.GetResource() != nil {
			return w.GetResource().GetTypeUrl()
		}
	}
	return a.GetTypeUrl()
}

func (t *decoder[M]) Decode(a *anypb.Any) (*Decoded, error) {
	msgName := t.url[strings.LastIndexByte(t.url, '/')+1:]
	name := ""
	if a.GetTypeUrl() == WrapperURL {
		w := &discoveryv3.Resource{}
		if err := proto.Unmarshal(a.GetValue(), w); err != nil {
			return nil, &Error{err: fmt.Errorf("%s resource: cannot decode its envoy.service.discovery.v3.Resource wrapper: %w; send a serialized Resource, or the %s itself", t.kind, err, msgName)}
		}
		name = w.GetName()
		if w.GetResource() == nil {
			return nil, &Error{Name: name, err: fmt.Errorf("%s: the envoy.service.discovery.v3.Resource wrapper carries no resource; set its resource to a %s", t.path(name), msgName)}
		}
		a = w.GetResource()
	}
	if a.GetTypeUrl() != t.url {
		return nil, &Error{Name: name, err: fmt.Errorf("%s: a resource of type %q in a %s response; the management server must send %s resources only", t.path(name), a.GetTypeUrl(), ShortType(t.url), t.url)}
	}
	m := t.new()
	if err := proto.Unmarshal(a.GetValue(), m); err != nil {
		return nil, &Error{Name: name, err: fmt.Errorf("%s: cannot decode %s: %w; the resource's value must be a serialized %s", t.path(name), msgName, err, msgName)}
	}
	if name == "" {
		name = t.name(m)
	}
	if name == "" {
		return nil, &Error{err: fmt.Errorf("%s resource has no name; set %s", t.kind, t.nameField)}
	}
	if u := config.UnknownFields(m); len(u) > 0 {
		switch UnknownFieldPolicy(unknownPolicy.Load()) {
		case RejectUnknown:
			return nil, &Error{Name: name, err: fmt.Errorf("%s: unknown fields at %s (rejected: --reject-unknown-dynamic-fields)", t.path(name), strings.Join(u, ", "))}
		case WarnUnknown:
			UnknownFieldsSeen.Add(1)
			slog.Warn("xDS resource has fields this proxy does not know; they are ignored", "resource", t.path(name), "fields", strings.Join(u, ", "))
		}
	}
	if err := config.Validate(m, t.kind+" "+name); err != nil {
		return nil, &Error{Name: name, err: err}
	}
	return &Decoded{Name: name, Message: m, Raw: a.GetValue()}, nil
}

// UnknownFieldPolicy is what Decode does with a resource that carries
// fields its type does not define (sent by a management server built
// against newer protos). It is process-wide, as Envoy's flags are.
type UnknownFieldPolicy int32

const (
	// WarnUnknown accepts the resource, logs a warning and counts it in
	// UnknownFieldsSeen (server.dynamic_unknown_fields): Envoy's default.
	WarnUnknown UnknownFieldPolicy = iota
	// RejectUnknown refuses it (NACK): --reject-unknown-dynamic-fields.
	RejectUnknown
	// IgnoreUnknown accepts it silently: --ignore-unknown-dynamic-fields.
	IgnoreUnknown
)

var unknownPolicy atomic.Int32

// SetUnknownFieldPolicy sets what Decode does with unknown fields.
func SetUnknownFieldPolicy(p UnknownFieldPolicy) { unknownPolicy.Store(int32(p)) }

// UnknownFieldsSeen counts resources accepted with unknown fields under
// WarnUnknown; the server reports it as server.dynamic_unknown_fields.
var UnknownFieldsSeen atomic.Uint64

// Path is the path that names a resource of type t in errors ("listener
// foo"): its decoder's validation errors start with it, and handlers compile
// the resource under it.
func Path(t Type, name string) string {
	if p, ok := t.(interface{ path(string) string }); ok {
		return p.path(name)
	}
	return ShortType(t.URL()) + " " + name
}

// path names a resource in an error: "listener foo", or "listener resource"
// when its name is not known.
func (t *decoder[M]) path(name string) string {
	if name == "" {
		return t.kind + " resource"
	}
	return t.kind + " " + name
}

// unknown is the Type of a type URL the proxy does not consume.
type unknown string

func (u unknown) URL() string { return string(u) }

func (u unknown) Decode(*anypb.Any) (*Decoded, error) {
	return nil, &Error{err: fmt.Errorf("legate does not consume %s resources; subscribe to one of %s, %s, %s, %s, %s",
		string(u), ListenerURL, RouteURL, ClusterURL, EndpointURL, SecretURL)}
}
