// Package runtime is Envoy's layered runtime (layered_runtime): static
// layers from the bootstrap, disk layers read from a directory tree (and
// re-read when it changes — the symlink swap Envoy's docs describe), and
// the admin layer set through /runtime_modify; later layers override
// earlier ones. Values are strings, read as numbers, booleans or
// fractional percents where Envoy reads them (fault injection percentages,
// runtime_fraction, filter_enabled). A layer that fails to load keeps its
// last good values. RTDS layers are not implemented.
package runtime

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/legateproxy/legate/internal/config"
)

// Snapshot is an immutable view of the merged layers.
type Snapshot struct {
	values map[string]string
	layers []layerValues
}

type layerValues struct {
	name   string
	values map[string]string
}

// Get returns a key's value.
func (s *Snapshot) Get(key string) (string, bool) {
	if s == nil {
		return "", false
	}
	v, ok := s.values[key]
	return v, ok
}

// Keys lists every key, sorted.
func (s *Snapshot) Keys() []string {
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Integer reads a key as an unsigned integer, def when absent or invalid.
func (s *Snapshot) Integer(key string, def uint64) uint64 {
	v, ok := s.Get(key)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f < 0 {
		return def
	}
	return uint64(f)
}

// Bool reads a key as a boolean ("true"/"false"), def otherwise.
func (s *Snapshot) Bool(key string, def bool) bool {
	v, ok := s.Get(key)
	if !ok {
		return def
	}
	switch strings.TrimSpace(v) {
	case "true":
		return true
	case "false":
		return false
	}
	return def
}

// Fraction reads a fractional percent: an integer is the numerator over
// def's denominator, as Envoy; "n/d" style struct values are flattened to
// key.numerator and key.denominator.
func (s *Snapshot) Fraction(key string, def *typev3.FractionalPercent) (num, den uint32) {
	num, den = def.GetNumerator(), denominator(def.GetDenominator())
	if key == "" || s == nil {
		return
	}
	if v, ok := s.Get(key); ok {
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
			return uint32(n), den
		}
		return
	}
	if v, ok := s.Get(key + ".numerator"); ok {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			num = uint32(n)
			den = 100
			if d, ok := s.Get(key + ".denominator"); ok {
				switch strings.ToUpper(d) {
				case "TEN_THOUSAND", "1":
					den = 10000
				case "MILLION", "2":
					den = 1000000
				}
			}
		}
	}
	return
}

func denominator(d typev3.FractionalPercent_DenominatorType) uint32 {
	switch d {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return 10000
	case typev3.FractionalPercent_MILLION:
		return 1000000
	}
	return 100
}

// Loader holds the layers and the current snapshot.
type Loader struct {
	cur    atomic.Pointer[Snapshot]
	mu     sync.Mutex
	layers []*layer
	log    *slog.Logger
	stop   chan struct{}
	// Counters (runtime.load_success, load_error, admin_overrides_active).
	OnLoad func(ok bool)
}

type layer struct {
	name   string
	kind   string // static, disk, admin
	values map[string]string
	// disk layers
	dir     string
	lastSig string
}

// New compiles layered_runtime. Without layers, Envoy's default is one
// admin layer; nil lr gives that too.
func New(lr *bootstrapv3.LayeredRuntime, log *slog.Logger) (*Loader, error) {
	l := &Loader{log: log, stop: make(chan struct{})}
	if log == nil {
		l.log = slog.Default()
	}
	for i, pl := range lr.GetLayers() {
		p := config.Index("layered_runtime.layers", i)
		if err := config.CheckFields(pl, p, "name", "static_layer", "disk_layer", "admin_layer"); err != nil {
			return nil, err
		}
		ly := &layer{name: pl.GetName(), values: map[string]string{}}
		switch {
		case pl.GetStaticLayer() != nil:
			ly.kind = "static"
			flatten("", pl.GetStaticLayer(), ly.values)
		case pl.GetDiskLayer() != nil:
			dl := pl.GetDiskLayer()
			if err := config.CheckFields(dl, config.Join(p, "disk_layer"), "symlink_root", "subdirectory", "append_service_cluster"); err != nil {
				return nil, err
			}
			if dl.GetAppendServiceCluster() {
				return nil, config.Unsupported(config.Join(p, "disk_layer.append_service_cluster"), "append_service_cluster")
			}
			ly.kind, ly.dir = "disk", filepath.Join(dl.GetSymlinkRoot(), dl.GetSubdirectory())
		case pl.GetAdminLayer() != nil:
			ly.kind = "admin"
		default:
			return nil, config.Unsupported(p, fmt.Sprintf("runtime layer %q of this kind (RTDS)", pl.GetName()), "static_layer", "disk_layer", "admin_layer")
		}
		l.layers = append(l.layers, ly)
	}
	if lr == nil {
		l.layers = append(l.layers, &layer{name: "admin", kind: "admin", values: map[string]string{}})
	}
	l.reloadDisk()
	l.publish()
	return l, nil
}

func flatten(prefix string, s *structpb.Struct, out map[string]string) {
	for k, v := range s.GetFields() {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		switch x := v.GetKind().(type) {
		case *structpb.Value_StructValue:
			flatten(key, x.StructValue, out)
		case *structpb.Value_StringValue:
			out[key] = x.StringValue
		case *structpb.Value_BoolValue:
			out[key] = strconv.FormatBool(x.BoolValue)
		case *structpb.Value_NumberValue:
			out[key] = strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
		}
	}
}

// Snapshot returns the current values (never nil after New).
func (l *Loader) Snapshot() *Snapshot {
	if l == nil {
		return nil
	}
	return l.cur.Load()
}

func (l *Loader) publish() {
	s := &Snapshot{values: map[string]string{}}
	for _, ly := range l.layers {
		cp := make(map[string]string, len(ly.values))
		for k, v := range ly.values {
			s.values[k] = v
			cp[k] = v
		}
		s.layers = append(s.layers, layerValues{ly.name, cp})
	}
	l.cur.Store(s)
}

// Start watches disk layers (every second) until Stop.
func (l *Loader) Start() {
	if l == nil {
		return
	}
	hasDisk := false
	for _, ly := range l.layers {
		hasDisk = hasDisk || ly.kind == "disk"
	}
	if !hasDisk {
		return
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.mu.Lock()
				if l.reloadDisk() {
					l.publish()
				}
				l.mu.Unlock()
			}
		}
	}()
}

// Stop ends the disk watch.
func (l *Loader) Stop() {
	if l != nil {
		select {
		case <-l.stop:
		default:
			close(l.stop)
		}
	}
}

// reloadDisk re-reads disk layers whose tree changed; a tree that cannot
// be read keeps its last values. It reports whether anything changed.
func (l *Loader) reloadDisk() bool {
	changed := false
	for _, ly := range l.layers {
		if ly.kind != "disk" {
			continue
		}
		vals, sig, err := readTree(ly.dir)
		if err != nil {
			if !os.IsNotExist(err) {
				l.log.Warn("runtime disk layer not loaded; the last good values stay", "layer", ly.name, "dir", ly.dir, "error", err)
				if l.OnLoad != nil {
					l.OnLoad(false)
				}
			}
			if os.IsNotExist(err) && ly.lastSig != "" {
				// The directory went away: Envoy then has no values for it.
				ly.values, ly.lastSig, changed = map[string]string{}, "", true
			}
			continue
		}
		if sig == ly.lastSig {
			continue
		}
		ly.values, ly.lastSig, changed = vals, sig, true
		if l.OnLoad != nil {
			l.OnLoad(true)
		}
	}
	return changed
}

// readTree reads every file under dir: its path relative to dir, with
// "/" as ".", is the key, its trimmed content the value (Envoy's disk
// layer). sig changes whenever a file, its size or its mtime does.
func readTree(dir string) (map[string]string, string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, "", err
	}
	vals := map[string]string{}
	var sig strings.Builder
	sig.WriteString(root)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		fmt.Fprintf(&sig, "|%s:%d:%d", rel, info.Size(), info.ModTime().UnixNano())
		vals[strings.ReplaceAll(rel, string(filepath.Separator), ".")] = strings.TrimSpace(string(b))
		return nil
	})
	return vals, sig.String(), err
}

// SetAdmin sets (or, with an empty value, removes) keys in the last admin
// layer, as /runtime_modify does. It fails without an admin layer.
func (l *Loader) SetAdmin(kv map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var admin *layer
	for _, ly := range l.layers {
		if ly.kind == "admin" {
			admin = ly
		}
	}
	if admin == nil {
		return fmt.Errorf("no admin layer is configured (add an admin_layer to layered_runtime)")
	}
	for k, v := range kv {
		if v == "" {
			delete(admin.values, k)
		} else {
			admin.values[k] = v
		}
	}
	l.publish()
	return nil
}

// Dump renders /runtime: every key with its final value and its value in
// each layer, and the layer names, as Envoy's JSON.
func (s *Snapshot) Dump() map[string]any {
	names := make([]string, 0, len(s.layers))
	for _, ly := range s.layers {
		names = append(names, ly.name)
	}
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	entries := map[string]any{}
	for _, k := range keys {
		lv := make([]string, len(s.layers))
		for i, ly := range s.layers {
			lv[i] = ly.values[k]
		}
		entries[k] = map[string]any{"final_value": s.values[k], "layer_values": lv}
	}
	return map[string]any{"layers": names, "entries": entries}
}
