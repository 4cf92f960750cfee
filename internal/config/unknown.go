package config

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// UnknownFields returns the paths of the messages in m that carry fields
// their type does not define — what a binary proto from a newer Envoy (or
// a newer management server) keeps as unknown bytes. Any values are not
// opened: their contents are checked when they are compiled.
func UnknownFields(m proto.Message) []string {
	var out []string
	walkUnknown(m.ProtoReflect(), "", &out)
	return out
}

func walkUnknown(m protoreflect.Message, path string, out *[]string) {
	if len(m.GetUnknown()) > 0 {
		*out = append(*out, orRoot(path))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := join(path, string(fd.Name()))
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkUnknown(mv.Message(), p+"."+k.String(), out)
					return true
				})
			}
		case fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind:
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkUnknown(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), out)
			}
		default:
			walkUnknown(v.Message(), p, out)
		}
		return true
	})
}
