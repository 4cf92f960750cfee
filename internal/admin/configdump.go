package admin

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// InitDumper is implemented by a Server that can list its unready init
// targets (/init_dump).
type InitDumper interface {
	// InitDump returns the unready targets of the init managers mask
	// selects ("" or "listener": the listeners'; anything else: none).
	InitDump(mask string) *adminv3.UnreadyTargetsDumps
}

// handleConfigDump serves /config_dump as Envoy's ConfigDumpHandler:
// resource= selects one repeated field of the dump's configs and returns
// each element, mask= is a FieldMask applied to each element (with
// resource) or to each config (without), name_regex= keeps the resources
// whose name fully matches (RE2), include_eds adds the endpoints.
func (a *Admin) handleConfigDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	_, eds := q["include_eds"]
	var nameRE *regexp.Regexp
	if re := q.Get("name_regex"); re != "" {
		var err error
		// Envoy's name matcher is a RE2 full match.
		if nameRE, err = regexp.Compile("^(?:" + re + ")$"); err != nil {
			dumpError(w, http.StatusBadRequest, fmt.Sprintf("INVALID_ARGUMENT: Error while parsing name_regex from %s: %v", re, err))
			return
		}
	}
	m, err := a.srv.ConfigDump(eds)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cd, ok := m.(*adminv3.ConfigDump)
	if !ok {
		writeProto(w, m, false)
		return
	}
	_, hasMask := q["mask"]
	out, code, msg := selectDump(cd, q.Get("resource"), q.Has("resource"), q.Get("mask"), hasMask, nameRE)
	if code != http.StatusOK {
		dumpError(w, code, msg)
		return
	}
	writeProto(w, out, false)
}

// dumpError answers a /config_dump error as Envoy: plain text, nosniff.
func dumpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("content-type", "text/plain; charset=UTF-8")
	w.Header().Set("x-content-type-options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}

// selectDump applies name_regex, resource and mask to a full dump.
func selectDump(cd *adminv3.ConfigDump, resource string, hasResource bool, mask string, hasMask bool, nameRE *regexp.Regexp) (*adminv3.ConfigDump, int, string) {
	var configs []proto.Message
	for _, a := range cd.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		if nameRE != nil {
			filterNames(m.ProtoReflect(), nameRE)
		}
		configs = append(configs, m)
	}
	paths := splitMask(mask)
	out := &adminv3.ConfigDump{}
	if hasResource {
		for _, m := range configs {
			fd := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(resource))
			if fd == nil {
				continue
			}
			if !fd.IsList() || fd.Message() == nil {
				return nil, http.StatusBadRequest, fmt.Sprintf("%s is not a repeated field. Use ?mask=%s to get only this field", fd.Name(), fd.Name())
			}
			l := m.ProtoReflect().Get(fd).List()
			for i := 0; i < l.Len(); i++ {
				e := l.Get(i).Message().Interface()
				if hasMask && !trimResource(paths, e.ProtoReflect()) {
					return nil, http.StatusBadRequest, fmt.Sprintf("FieldMask %s could not be successfully used.", maskDebugString(paths))
				}
				packed, _ := anypb.New(e)
				out.Configs = append(out.Configs, packed)
			}
			return out, http.StatusOK, ""
		}
		return nil, http.StatusNotFound, fmt.Sprintf("%s not found in config dump", resource)
	}
	for _, m := range configs {
		// Without resource=, a mask that does not fit a config's type
		// skips that config (each type has its own valid masks).
		if hasMask && !trimChecked(paths, m.ProtoReflect()) {
			continue
		}
		packed, _ := anypb.New(m)
		out.Configs = append(out.Configs, packed)
	}
	if hasMask && len(out.Configs) == 0 {
		return nil, http.StatusBadRequest, fmt.Sprintf("FieldMask %s could not be successfully applied to any configs.", mask)
	}
	return out, http.StatusOK, ""
}

// splitMask parses a FieldMask's string form: paths separated by commas
// (empty ones skipped, as protobuf's FieldMaskUtil::FromString).
func splitMask(mask string) []string {
	var out []string
	for _, p := range strings.Split(mask, ",") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// maskDebugString renders a FieldMask as protobuf's DebugString does,
// which Envoy's error message embeds.
func maskDebugString(paths []string) string {
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "paths: %q\n", p)
	}
	return b.String()
}

// pathParts splits a field path on "." without empty parts (protobuf's
// Split).
func pathParts(p string) []string {
	var out []string
	for _, s := range strings.Split(p, ".") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// validPath reports whether path names fields of md, every part but the
// last a singular message (FieldMaskUtil::GetFieldDescriptors).
func validPath(md protoreflect.MessageDescriptor, path string) bool {
	parts := pathParts(path)
	for i, p := range parts {
		fd := md.Fields().ByName(protoreflect.Name(p))
		if fd == nil {
			return false
		}
		if i < len(parts)-1 {
			if fd.IsList() || fd.IsMap() || fd.Message() == nil {
				return false
			}
			md = fd.Message()
		}
	}
	return true
}

// trimChecked validates paths against m and trims m to them (Envoy's
// checkFieldMaskAndTrimMessage); false leaves m unchanged.
func trimChecked(paths []string, m protoreflect.Message) bool {
	for _, p := range paths {
		if !validPath(m.Descriptor(), p) {
			return false
		}
	}
	trim(maskTree(paths), m)
	return true
}

// node is a FieldMask as a tree; a leaf (no children) keeps its field
// whole.
type node map[string]node

func maskTree(paths []string) node {
	root := node{}
	for _, p := range paths {
		parts := pathParts(p)
		if len(parts) == 0 {
			continue
		}
		n := root
		for i, part := range parts {
			child, ok := n[part]
			if ok && len(child) == 0 {
				break // already kept whole
			}
			if !ok {
				child = node{}
				n[part] = child
			}
			if i == len(parts)-1 {
				// A shorter path keeps the whole field.
				for k := range child {
					delete(child, k)
				}
			}
			n = child
		}
	}
	return root
}

// trim clears every field of m the tree does not name and trims the
// named singular messages to their subtrees (FieldMaskUtil::TrimMessage).
func trim(t node, m protoreflect.Message) {
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		sub, ok := t[string(fd.Name())]
		switch {
		case !ok:
			clear = append(clear, fd)
		case len(sub) > 0 && fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			trim(sub, v.Message())
		}
		return true
	})
	for _, fd := range clear {
		m.Clear(fd)
	}
}

// trimResource applies a mask to one resource element as Envoy's
// trimResourceMessage: paths through the element's singular Any field
// (cluster, listener, route_config, secret, …) apply to the message
// packed in it, the others to the element itself.
func trimResource(paths []string, m protoreflect.Message) bool {
	md := m.Descriptor()
	var outer, inner []string
	anyField := ""
	for _, p := range paths {
		parts := pathParts(p)
		if len(parts) == 0 {
			continue
		}
		fd := md.Fields().ByName(protoreflect.Name(parts[0]))
		if fd != nil && !fd.IsList() && fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any" {
			if anyField == "" {
				anyField = parts[0]
			}
			outer = append(outer, parts[0])
			inner = append(inner, strings.Join(parts[1:], "."))
			continue
		}
		outer = append(outer, p)
	}
	if anyField != "" {
		fd := md.Fields().ByName(protoreflect.Name(anyField))
		if m.Has(fd) {
			a, ok := m.Get(fd).Message().Interface().(*anypb.Any)
			if !ok {
				return false
			}
			msg, err := a.UnmarshalNew()
			if err != nil {
				return false
			}
			if !trimChecked(inner, msg.ProtoReflect()) {
				return false
			}
			packed, err := anypb.New(msg)
			if err != nil {
				return false
			}
			m.Set(fd, protoreflect.ValueOfMessage(packed.ProtoReflect()))
		}
	}
	return trimChecked(outer, m)
}

// filterNames drops, from every repeated field of a config dump message,
// the resources whose name the regex does not match (Envoy gives each
// config tracker callback the name matcher). A bootstrap has no named
// resources and stays whole.
func filterNames(m protoreflect.Message, re *regexp.Regexp) {
	if _, ok := m.Interface().(*adminv3.BootstrapConfigDump); ok {
		return
	}
	// Fields are collected first: a message must not change while it is
	// ranged over.
	var lists []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if fd.IsList() && fd.Message() != nil {
			lists = append(lists, fd)
		}
		return true
	})
	for _, fd := range lists {
		l := m.Mutable(fd).List()
		n := 0
		for i := 0; i < l.Len(); i++ {
			e := l.Get(i)
			if name, ok := resourceName(e.Message()); !ok || re.MatchString(name) {
				l.Set(n, e)
				n++
			}
		}
		l.Truncate(n)
		if n == 0 {
			m.Clear(fd)
		}
	}
}

// resourceName is a dump element's resource name: its own name field
// (dynamic listeners, secrets), else the name (cluster_name for an
// endpoint assignment) of the resource packed in its Any.
func resourceName(m protoreflect.Message) (string, bool) {
	fields := m.Descriptor().Fields()
	if fd := fields.ByName("name"); fd != nil && fd.Kind() == protoreflect.StringKind {
		return m.Get(fd).String(), true
	}
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.IsList() || fd.Message() == nil || fd.Message().FullName() != "google.protobuf.Any" || !m.Has(fd) {
			continue
		}
		a, ok := m.Get(fd).Message().Interface().(*anypb.Any)
		if !ok {
			continue
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		ifs := inner.ProtoReflect().Descriptor().Fields()
		for _, n := range []protoreflect.Name{"name", "cluster_name"} {
			if fd := ifs.ByName(n); fd != nil && fd.Kind() == protoreflect.StringKind {
				return inner.ProtoReflect().Get(fd).String(), true
			}
		}
	}
	return "", false
}

// handleInitDump serves /init_dump: the unready targets of the init
// managers (mask=listener: the listeners'), as Envoy's
// UnreadyTargetsDumps JSON — "{}" when nothing is pending.
func (a *Admin) handleInitDump(w http.ResponseWriter, r *http.Request) {
	d := &adminv3.UnreadyTargetsDumps{}
	if id, ok := a.srv.(InitDumper); ok {
		if got := id.InitDump(r.URL.Query().Get("mask")); got != nil {
			d = got
		}
	}
	writeProto(w, d, false)
}

// handleHotRestartVersion serves /hot_restart_version. Legate has no hot
// restart; Envoy with hot restart disabled answers "disabled" (its
// HotRestartNopImpl), with no newline.
func (a *Admin) handleHotRestartVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "text/plain; charset=UTF-8")
	io.WriteString(w, "disabled")
}
