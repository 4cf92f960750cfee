package server

import (
	"github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// redactedValue replaces sensitive strings and bytes, as Envoy's
// MessageUtil::redact.
const redactedValue = "[redacted]"

// redacted returns a copy of m with every field marked
// (udpa.annotations.sensitive) — private keys, generic secrets, session
// ticket keys, … — replaced by "[redacted]". Envoy redacts /config_dump
// this way so the admin interface never shows secret material; Anys are
// unpacked, redacted and repacked.
func redacted(m proto.Message) proto.Message {
	c := proto.Clone(m)
	redactMsg(c.ProtoReflect(), false)
	return c
}

func sensitive(fd protoreflect.FieldDescriptor) bool {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil {
		return false
	}
	v, _ := proto.GetExtension(opts, annotations.E_Sensitive).(bool)
	return v
}

// redactMsg redacts m in place; all set, every string and bytes field is
// redacted (the message sits under a sensitive field).
func redactMsg(m protoreflect.Message, all bool) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return
		}
		redactMsg(inner.ProtoReflect(), all)
		if b, err := proto.Marshal(inner); err == nil {
			a.Value = b
		}
		return
	}
	// Fields are collected first: a message must not be changed while it
	// is ranged over.
	var fds []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		fds = append(fds, fd)
		return true
	})
	for _, fd := range fds {
		v := m.Get(fd)
		hide := all || sensitive(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if nv, ok := redactValue(fd, l.Get(i), hide); ok {
					l.Set(i, nv)
				}
			}
		case fd.IsMap():
			mp := v.Map()
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if nv, ok := redactValue(fd.MapValue(), mv, hide); ok {
					mp.Set(k, nv)
				}
				return true
			})
		default:
			if nv, ok := redactValue(fd, v, hide); ok {
				m.Set(fd, nv)
			}
		}
	}
}

// redactValue redacts one value of field fd; ok reports a replacement
// for scalars (messages are redacted in place).
func redactValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, hide bool) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		redactMsg(v.Message(), hide)
	case protoreflect.StringKind:
		if hide {
			return protoreflect.ValueOfString(redactedValue), true
		}
	case protoreflect.BytesKind:
		if hide {
			return protoreflect.ValueOfBytes([]byte(redactedValue)), true
		}
	}
	return v, false
}
