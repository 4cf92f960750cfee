// Package refs finds the resources a listener or cluster depends on: the
// route configurations its HTTP connection managers take over RDS, the
// secrets its transport sockets take over SDS, the endpoints an EDS
// cluster takes. The xDS layer subscribes to exactly these once the
// listener or cluster is accepted, and drops the subscriptions with the
// last resource that named them — so compiling a resource has no
// subscription side effects.
package refs

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/legateproxy/legate/internal/extension"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
)

// Ref is one dependency: a resource of a type, by name, from a source.
type Ref struct {
	TypeURL string
	Name    string
	Source  *corev3.ConfigSource
}

// Of returns the RDS and SDS dependencies anywhere in msg (a listener, a
// cluster, a bootstrap's static resources), looking inside typed configs.
// SDS references without an sds_config name static secrets and are left
// out. For a cluster it also returns its EDS dependency.
func Of(msg proto.Message) []Ref {
	var out []Ref
	walk(msg.ProtoReflect(), &out)
	return out
}

// EDS returns an EDS cluster's endpoint dependency (service_name, or the
// cluster's name).
func EDS(c *clusterv3.Cluster) (Ref, bool) {
	if c.GetType() != clusterv3.Cluster_EDS {
		return Ref{}, false
	}
	ec := c.GetEdsClusterConfig()
	name := ec.GetServiceName()
	if name == "" {
		name = c.GetName()
	}
	return Ref{TypeURL: xdsclient.EndpointType, Name: name, Source: ec.GetEdsConfig()}, true
}

func walk(m protoreflect.Message, out *[]Ref) {
	switch v := m.Interface().(type) {
	case *hcmv3.Rds:
		*out = append(*out, Ref{TypeURL: xdsclient.RouteType, Name: v.GetRouteConfigName(), Source: v.GetConfigSource()})
		return
	case *tlsv3.SdsSecretConfig:
		if v.GetSdsConfig() != nil {
			*out = append(*out, Ref{TypeURL: xdsclient.SecretType, Name: v.GetName(), Source: v.GetSdsConfig()})
		}
		return
	case *anypb.Any:
		// Typed configs: look inside the ones this binary links (others
		// were refused when the resource compiled).
		if _, inner, err := extension.Decode(v, ""); err == nil {
			walk(inner.ProtoReflect(), out)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			l := val.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), out)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), out)
					return true
				})
			}
		default:
			walk(val.Message(), out)
		}
		return true
	})
}
