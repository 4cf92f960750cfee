package resource

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/legateproxy/legate/internal/config"
)

func pack(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// wrap puts a resource in an envoy.service.discovery.v3.Resource.
func wrap(t *testing.T, name string, inner *anypb.Any) *anypb.Any {
	t.Helper()
	return pack(t, &discoveryv3.Resource{Name: name, Version: "1", Resource: inner})
}

// garbage is an Any of the right type whose bytes are not a message (a
// field tag with wire type 7, which does not exist).
func garbage(url string) *anypb.Any {
	return &anypb.Any{TypeUrl: url, Value: []byte{0x0f, 0x01}}
}

// typeCase is one type's inputs for the table below.
type typeCase struct {
	typ Type
	url string
	// good is a valid resource named "good"; invalid one named "bad" that
	// fails validation at badPath; nameless one without a name.
	good, invalid, nameless proto.Message
	badPath                 string
	nameField               string
	// other is a valid resource of another type.
	other proto.Message
}

func typeCases() []typeCase {
	return []typeCase{
		{typ: Listener, url: ListenerURL,
			good:    &listenerv3.Listener{Name: "good"},
			invalid: &listenerv3.Listener{Name: "bad", ListenerFilters: []*listenerv3.ListenerFilter{{}}},
			badPath: "listener bad.listener_filters[0].name", nameless: &listenerv3.Listener{}, nameField: "name",
			other: &clusterv3.Cluster{Name: "good"}},
		{typ: RouteConfiguration, url: RouteURL,
			good:    &routev3.RouteConfiguration{Name: "good"},
			invalid: &routev3.RouteConfiguration{Name: "bad", VirtualHosts: []*routev3.VirtualHost{{Name: "vh"}}},
			badPath: "route_configuration bad.virtual_hosts[0].domains", nameless: &routev3.RouteConfiguration{}, nameField: "name",
			other: &listenerv3.Listener{Name: "good"}},
		{typ: Cluster, url: ClusterURL,
			good:    &clusterv3.Cluster{Name: "good", ConnectTimeout: durationpb.New(1e9)},
			invalid: &clusterv3.Cluster{Name: "bad", ConnectTimeout: durationpb.New(0)},
			badPath: "cluster bad.connect_timeout", nameless: &clusterv3.Cluster{}, nameField: "name",
			other: &routev3.RouteConfiguration{Name: "good"}},
		{typ: ClusterLoadAssignment, url: EndpointURL,
			good:    &endpointv3.ClusterLoadAssignment{ClusterName: "good"},
			invalid: &endpointv3.ClusterLoadAssignment{ClusterName: "bad", Endpoints: []*endpointv3.LocalityLbEndpoints{{Priority: 1000}}},
			badPath: "cluster_load_assignment bad.endpoints[0].priority", nameless: &endpointv3.ClusterLoadAssignment{}, nameField: "cluster_name",
			other: &tlsv3.Secret{Name: "good"}},
		{typ: Secret, url: SecretURL,
			good:    &tlsv3.Secret{Name: "good"},
			invalid: &tlsv3.Secret{Name: "bad", Type: &tlsv3.Secret_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{}}},
			badPath: "secret bad.session_ticket_keys.keys", nameless: &tlsv3.Secret{}, nameField: "name",
			other: &endpointv3.ClusterLoadAssignment{ClusterName: "good"}},
	}
}

// TestDecode runs every decoder through the same cases: a good resource,
// the same in a Resource wrapper (named by it or by the message), a wrong
// type URL, bytes that do not decode, no name, a validation failure with
// its path, and broken wrappers.
func TestDecode(t *testing.T) {
	for _, tc := range typeCases() {
		kind := strings.Fields(tc.badPath)[0]
		msgName := tc.url[strings.LastIndexByte(tc.url, '/')+1:]
		good := pack(t, tc.good)
		for _, c := range []struct {
			name string
			in   *anypb.Any
			// want: the decoded name, or the error's substrings and name.
			want     string
			err      []string
			errName  string
			validate bool // the error is a validation failure (config.ErrorList)
		}{
			{name: "good", in: good, want: "good"},
			{name: "wrapped", in: wrap(t, "", good), want: "good"},
			{name: "wrapped and renamed", in: wrap(t, "alias", good), want: "alias"},
			{name: "wrong type", in: pack(t, tc.other),
				err: []string{kind + " resource: a resource of type", `"` + pack(t, tc.other).GetTypeUrl() + `"`, "must send " + tc.url}},
			{name: "wrong type wrapped", in: wrap(t, "w", pack(t, tc.other)),
				err: []string{kind + " w: a resource of type"}, errName: "w"},
			{name: "garbage", in: garbage(tc.url),
				err: []string{kind + " resource: cannot decode " + msgName, "must be a serialized " + msgName}},
			{name: "garbage wrapped", in: wrap(t, "g", garbage(tc.url)),
				err: []string{kind + " g: cannot decode " + msgName}, errName: "g"},
			{name: "garbage wrapper", in: garbage(WrapperURL),
				err: []string{kind + " resource: cannot decode its envoy.service.discovery.v3.Resource wrapper"}},
			{name: "empty wrapper", in: wrap(t, "e", nil),
				err: []string{kind + " e: the envoy.service.discovery.v3.Resource wrapper carries no resource; set its resource to a " + msgName}, errName: "e"},
			{name: "no name", in: pack(t, tc.nameless),
				err: []string{kind + " resource has no name; set " + tc.nameField}},
			{name: "invalid", in: pack(t, tc.invalid), err: []string{tc.badPath + ": "}, errName: "bad", validate: true},
		} {
			t.Run(kind+"/"+c.name, func(t *testing.T) {
				d, err := tc.typ.Decode(c.in)
				if c.err == nil {
					if err != nil {
						t.Fatalf("Decode: %v", err)
					}
					if d.Name != c.want {
						t.Errorf("name %q, want %q", d.Name, c.want)
					}
					if !proto.Equal(d.Message, tc.good) {
						t.Errorf("message %v, want %v", d.Message, tc.good)
					}
					if !bytes.Equal(d.Raw, good.GetValue()) {
						t.Errorf("Raw is not the resource's serialized bytes")
					}
					return
				}
				if err == nil {
					t.Fatalf("Decode accepted it: %v", d.Message)
				}
				for _, s := range c.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				var re *Error
				if !errors.As(err, &re) || re.Name != c.errName {
					t.Errorf("error %#v: want an *Error named %q", err, c.errName)
				}
				var fields config.ErrorList
				if errors.As(err, &fields) != c.validate {
					t.Errorf("error %q: a validation failure is %v, want %v", err, !c.validate, c.validate)
				}
			})
		}
		if tc.typ.URL() != tc.url || ForURL(tc.url) != tc.typ {
			t.Errorf("%s: URL %q, ForURL gives %v", kind, tc.typ.URL(), ForURL(tc.url))
		}
	}
}

// TestAs: a handler reads the message it expects, and a resource of
// another type is an error naming it, not a panic.
func TestAs(t *testing.T) {
	d, err := Listener.Decode(pack(t, &listenerv3.Listener{Name: "l"}))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := As[*listenerv3.Listener](d); err != nil || l.GetName() != "l" {
		t.Errorf("As listener: %v %v", l, err)
	}
	if _, err := As[*clusterv3.Cluster](d); err == nil || !strings.Contains(err.Error(), "l: internal error") {
		t.Errorf("As cluster on a listener: %v", err)
	}
}

// TestDecodeAll: every failure is reported (not only the first), with the
// names that could be read; the resources that decoded come back too; a
// later resource of a name replaces an earlier one.
func TestDecodeAll(t *testing.T) {
	first := pack(t, &clusterv3.Cluster{Name: "a", ConnectTimeout: durationpb.New(1e9)})
	second := pack(t, &clusterv3.Cluster{Name: "a", ConnectTimeout: durationpb.New(2e9)})
	got, err := DecodeAll(Cluster, []*anypb.Any{first, second, pack(t, &clusterv3.Cluster{Name: "b", ConnectTimeout: durationpb.New(1e9)})})
	if err != nil || len(got) != 2 || !bytes.Equal(got["a"].Raw, second.GetValue()) {
		t.Fatalf("DecodeAll: %v %v", got, err)
	}
	got, err = DecodeAll(Cluster, []*anypb.Any{
		first,
		pack(t, &clusterv3.Cluster{Name: "bad", ConnectTimeout: durationpb.New(0)}),
		garbage(ClusterURL),
		wrap(t, "w", nil),
	})
	var list config.ErrorList
	if !errors.As(err, &list) || len(list) != 3 {
		t.Fatalf("DecodeAll error %v: want a list of 3", err)
	}
	if len(got) != 1 || got["a"] == nil {
		t.Errorf("decoded %v, want a", got)
	}
	if names := FailedNames(err); !slices.Equal(names, []string{"bad", "w"}) {
		t.Errorf("FailedNames %v, want [bad w]", names)
	}
}

// TestUnknownType: a type the proxy does not consume decodes nothing.
func TestUnknownType(t *testing.T) {
	const url = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
	typ := ForURL(url)
	if typ.URL() != url {
		t.Errorf("URL %q", typ.URL())
	}
	_, err := typ.Decode(pack(t, &listenerv3.Listener{Name: "l"}))
	if err == nil || !strings.Contains(err.Error(), "legate does not consume "+url+" resources") {
		t.Errorf("Decode: %v", err)
	}
}

func TestShortType(t *testing.T) {
	if got := ShortType(EndpointURL); got != "ClusterLoadAssignment" {
		t.Errorf("ShortType = %q", got)
	}
}

// TestPath: Path is the prefix of the decoder's own error paths, which
// callers compile a resource under (and map back to a file's lines).
func TestPath(t *testing.T) {
	for typ, want := range map[Type]string{
		Listener: "listener l", RouteConfiguration: "route_configuration l", Cluster: "cluster l",
		ClusterLoadAssignment: "cluster_load_assignment l", Secret: "secret l", ForURL("type.googleapis.com/x.Y"): "Y l",
	} {
		if got := Path(typ, "l"); got != want {
			t.Errorf("Path(%s) = %q, want %q", typ.URL(), got, want)
		}
	}
}
