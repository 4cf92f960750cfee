// Package config loads Envoy v3 configuration (bootstrap files and xDS
// resources) into the official go-control-plane protos, the way Envoy does:
// YAML or JSON with Envoy's leniencies, v2-era forms upgraded with warnings,
// and protoc-gen-validate's rules checked with Envoy-style field paths.
//
// Loading only produces validated protos; turning them into something that
// serves traffic is the job of the compile step in the packages that
// implement each part (listeners, routes, clusters).
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// LoadBootstrap reads the bootstrap config as `envoy -c path --config-yaml
// overlay` does: the file (YAML, JSON, .pb or .pb_text by extension) with the
// overlay YAML merged over it by protobuf merge rules (scalars replaced,
// repeated fields appended). Either may be empty, not both.
func LoadBootstrap(path, overlay string) (*bootstrapv3.Bootstrap, []Warning, error) {
	b, w, _, err := LoadBootstrapLines(path, overlay)
	return b, w, err
}

// LoadBootstrapLines is LoadBootstrap that also returns the source lines
// of the file's fields (for Lines.Annotate on later compile errors).
func LoadBootstrapLines(path, overlay string) (*bootstrapv3.Bootstrap, []Warning, Lines, error) {
	return LoadBootstrapWith(path, overlay, LoadOptions{})
}

// LoadOptions are the command-line choices that change how a bootstrap is
// read.
type LoadOptions struct {
	// AllowUnknownFields is Envoy's --allow-unknown-static-fields: unknown
	// fields (in YAML, JSON or binary protos) are warnings, not errors.
	AllowUnknownFields bool
}

// LoadBootstrapWith is LoadBootstrapLines with options.
func LoadBootstrapWith(path, overlay string, o LoadOptions) (*bootstrapv3.Bootstrap, []Warning, Lines, error) {
	if path == "" && overlay == "" {
		return nil, nil, nil, fmt.Errorf("no configuration: give a file with -c/--config-path or a YAML string with --config-yaml")
	}
	b := &bootstrapv3.Bootstrap{}
	var warns []Warning
	var lines Lines
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read config: %w", err)
		}
		w, l, err := decodeFile(path, data, b, o.AllowUnknownFields)
		warns, lines = append(warns, w...), l
		if err != nil {
			return nil, warns, lines, err
		}
	}
	if overlay != "" {
		ov := &bootstrapv3.Bootstrap{}
		w, l, err := decode([]byte(overlay), ov, "", true, o.AllowUnknownFields)
		warns = append(warns, w...)
		if err != nil {
			return nil, warns, lines, fmt.Errorf("--config-yaml: %w", err)
		}
		if path == "" {
			lines = l
		}
		proto.Merge(b, ov)
	}
	if err := Validate(b, ""); err != nil {
		return nil, warns, lines, lines.Annotate(err)
	}
	return b, warns, lines, nil
}

// decodeFile decodes data into msg according to the file's extension.
func decodeFile(path string, data []byte, msg proto.Message, allowUnknown bool) ([]Warning, Lines, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".pb":
		// A binary proto keeps fields it does not know as unknown bytes;
		// Envoy refuses them in static config unless allowed.
		if err := proto.Unmarshal(data, msg); err != nil {
			return nil, nil, fmt.Errorf("%s: decode binary proto: %w", path, err)
		}
		return unknownBinary(path, msg, allowUnknown)
	case ".pb_text":
		if err := (prototext.UnmarshalOptions{DiscardUnknown: allowUnknown}).Unmarshal(data, msg); err != nil {
			return nil, nil, fmt.Errorf("%s: decode text proto: %w", path, err)
		}
		return nil, nil, nil
	}
	return decode(data, msg, "", true, allowUnknown)
}

// unknownBinary reports the unknown fields of a decoded binary proto: an
// error, or warnings when they are allowed.
func unknownBinary(path string, msg proto.Message, allow bool) ([]Warning, Lines, error) {
	paths := UnknownFields(msg)
	if len(paths) == 0 {
		return nil, nil, nil
	}
	if !allow {
		return nil, nil, fmt.Errorf("%s: unknown fields at %s (a newer Envoy's config? --allow-unknown-static-fields ignores them)", path, strings.Join(paths, ", "))
	}
	var w []Warning
	for _, p := range paths {
		w = append(w, Warning{Path: p, Unknown: true, Message: "unknown field ignored (--allow-unknown-static-fields)"})
	}
	return w, nil, nil
}

// DecodeResourceFile reads a file that holds one resource of msg's type, or
// (for path_config_source files) a DiscoveryResponse, as Envoy accepts.
func DecodeResourceFile(path string, msg proto.Message) ([]Warning, error) {
	w, _, err := DecodeResourceFileLines(path, msg)
	return w, err
}

// DecodeResourceFileLines is DecodeResourceFile that also returns the
// source lines of the file's fields (none for .pb and .pb_text files).
func DecodeResourceFileLines(path string, msg proto.Message) ([]Warning, Lines, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return decodeFile(path, data, msg, false)
}
