package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// allValidator is implemented by every go-control-plane message
// (protoc-gen-validate's generated ValidateAll).
type allValidator interface{ ValidateAll() error }

type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

type multiError interface{ AllErrors() []error }

// Validate runs protoc-gen-validate's ValidateAll on msg and on every message
// packed in an Any inside it (ValidateAll does not look into Anys), and
// returns the violations with Envoy-style field paths rooted at root.
func Validate(msg proto.Message, root string) error {
	var errs ErrorList
	validateDeep(msg.ProtoReflect(), root, &errs)
	if len(errs) == 0 {
		return nil
	}
	return errs
}

func validateDeep(m protoreflect.Message, path string, errs *ErrorList) {
	if v, ok := m.Interface().(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			flattenPGV(err, path, errs)
		}
	}
	walkAnys(m, path, func(a *anypb.Any, p string) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			*errs = append(*errs, &FieldError{Path: orRoot(p), Message: fmt.Sprintf("cannot decode %s: %v", a.GetTypeUrl(), err)})
			return
		}
		validateDeep(inner.ProtoReflect(), p, errs)
	})
}

// walkAnys calls fn for each Any directly or indirectly inside m, without
// descending into the Anys themselves.
func walkAnys(m protoreflect.Message, path string, fn func(*anypb.Any, string)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		p := join(path, string(fd.Name()))
		visit := func(mv protoreflect.Message, p string) {
			if a, ok := mv.Interface().(*anypb.Any); ok {
				fn(a, p)
				return
			}
			walkAnys(mv, p, fn)
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message(), index(p, i))
			}
		case fd.IsMap():
			if fd.MapValue().Kind() != protoreflect.MessageKind {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(mv.Message(), fmt.Sprintf("%s[%q]", p, k.String()))
				return true
			})
		default:
			visit(v.Message(), p)
		}
		return true
	})
}

// flattenPGV turns a (possibly nested, possibly multi) protoc-gen-validate
// error into FieldErrors with snake_case paths.
func flattenPGV(err error, path string, errs *ErrorList) {
	var me multiError
	if errors.As(err, &me) && me != nil {
		for _, e := range me.AllErrors() {
			flattenPGV(e, path, errs)
		}
		return
	}
	var pe pgvError
	if !errors.As(err, &pe) {
		*errs = append(*errs, &FieldError{Path: orRoot(path), Message: err.Error()})
		return
	}
	p := join(path, snakePath(pe.Field()))
	if c := pe.Cause(); c != nil {
		var ce pgvError
		var cm multiError
		if errors.As(c, &ce) || errors.As(c, &cm) {
			flattenPGV(c, p, errs)
			return
		}
		*errs = append(*errs, &FieldError{Path: p, Message: fmt.Sprintf("%s: %v", pe.Reason(), c)})
		return
	}
	*errs = append(*errs, &FieldError{Path: p, Message: pe.Reason()})
}

// snakePath converts a Go field reference such as "StaticResources" or
// "Listeners[0]" to "static_resources" / "listeners[0]".
func snakePath(s string) string {
	var b strings.Builder
	inBracket := false
	for i, r := range s {
		switch {
		case r == '[':
			inBracket = true
		case r == ']':
			inBracket = false
		case !inBracket && unicode.IsUpper(r):
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
