package extension

import "google.golang.org/protobuf/reflect/protoreflect"

func protoreflectName(s string) protoreflect.FullName { return protoreflect.FullName(s) }
