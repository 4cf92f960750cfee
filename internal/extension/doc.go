package extension

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"github.com/legateproxy/legate/internal/extension/catalog"
)

// Markdown renders docs/extensions.md: every registered extension by
// category, then every other Envoy extension (from the catalog), which
// Legate reports as not implemented.
func Markdown() []byte {
	var b bytes.Buffer
	b.WriteString("# Extensions\n\n")
	b.WriteString("Generated from Legate's extension registry (`internal/extension`) and the catalog of Envoy's\n")
	b.WriteString("extension types in go-control-plane; `make docs` regenerates it and a test checks it is fresh.\n\n")
	b.WriteString("An `@type` is resolved in the place it is used: an extension Legate implements is compiled; an\n")
	b.WriteString("Envoy extension it does not implement is an error, *\"… is not implemented by legate\"*, at the\n")
	b.WriteString("config path (an HTTP filter or a per-route config marked `is_optional` is skipped instead, as\n")
	b.WriteString("Envoy does); an `@type` that exists nowhere is *\"unknown @type …; did you mean …?\"*.\n")
	b.WriteString("`udpa.type.v1.TypedStruct` and `xds.type.v3.TypedStruct` work everywhere an `@type` does.\n\n")
	b.WriteString("## Implemented\n\n")
	b.WriteString("| category | extension | @type | per-route @type | notes |\n|---|---|---|---|---|\n")
	impl := map[string]bool{}
	for _, e := range All() {
		impl[catalog.TypeName(e.TypeURL())] = true
		if e.PerRoute != nil {
			impl[typeName(e.PerRoute)] = true
		}
		pr := ""
		if e.PerRoute != nil {
			pr = "`" + typeName(e.PerRoute) + "`"
		}
		name := "`" + e.Name + "`"
		if other := e.OtherNames(); len(other) > 0 {
			name += " (also `" + strings.Join(other, "`, `") + "`)"
		}
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s |\n", e.Category, name, typeName(e.Config), pr, e.Notes)
	}
	b.WriteString("\n## Not implemented yet\n\n")
	b.WriteString("Envoy's other extensions, by category (the name is derived from the proto package; a few of\n")
	b.WriteString("Envoy's registered names differ). A config that uses one fails with the path of the `@type`.\n\n")
	byCat := map[string]map[string][]string{}
	for _, e := range catalog.All() {
		if impl[e.Type] {
			continue
		}
		if byCat[e.Category] == nil {
			byCat[e.Category] = map[string][]string{}
		}
		byCat[e.Category][e.Name] = append(byCat[e.Category][e.Name], e.Type)
	}
	cats := make([]string, 0, len(byCat))
	for c := range byCat {
		cats = append(cats, c)
	}
	sort.Strings(cats)
	b.WriteString("| category | extension | config types |\n|---|---|---|\n")
	for _, c := range cats {
		names := make([]string, 0, len(byCat[c]))
		for n := range byCat[c] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ts := byCat[c][n]
			short := make([]string, len(ts))
			for i, t := range ts {
				short[i] = t[strings.LastIndexByte(t, '.')+1:]
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s |\n", c, n, strings.Join(short, ", "))
		}
	}
	return b.Bytes()
}
