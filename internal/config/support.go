package config

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// CheckFields reports, as a FieldError at path, every field set in msg that
// is not among known. Compile code calls it for each message it handles,
// listing the fields it implements and those that have no behavioural
// effect, so a field that would change behaviour is never silently ignored.
func CheckFields(msg proto.Message, path string, known ...string) error {
	var bad []string
	msg.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		name := string(fd.Name())
		for _, k := range known {
			if k == name {
				return true
			}
		}
		bad = append(bad, name)
		return true
	})
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	errs := make(ErrorList, len(bad))
	for i, b := range bad {
		errs[i] = &FieldError{Path: join(path, b), Message: fmt.Sprintf("field %s.%s is not supported by legate", msg.ProtoReflect().Descriptor().Name(), b)}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errs
}

// Unsupported returns a FieldError saying that a value at path is not
// implemented, with a hint of what is.
func Unsupported(path, what string, supported ...string) error {
	msg := what + " is not supported by legate"
	if len(supported) > 0 {
		msg += " (supported: " + strings.Join(supported, ", ") + ")"
	}
	return &FieldError{Path: orRoot(path), Message: msg}
}

// Errorf returns a FieldError at path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: orRoot(path), Message: fmt.Sprintf(format, args...)}
}

// Join appends a field name to a path.
func Join(path, field string) string { return join(path, field) }

// Index appends a list index to a path.
func Index(path string, i int) string { return index(path, i) }
