// Package runtime is Envoy's layered runtime (layered_runtime): static
// layers from the bootstrap, disk layers read from a directory tree (and
// re-read when the symlink root is swapped, as Envoy's watch on it does),
// the admin layer set through /runtime_modify and RTDS layers fed by the
// xDS Runtime resource of their name (subscribed by the server, applied
// through SetRTDS). Later layers override earlier ones. Values are strings,
// read as numbers, booleans or fractional percents where Envoy reads them
// (fault injection percentages, runtime_fraction, filter_enabled).
//
// Readers never lock: every change builds a new immutable Snapshot and
// publishes it through an atomic pointer.
package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"gopkg.in/yaml.v3"

	"github.com/legateproxy/legate/internal/config"
	"github.com/legateproxy/legate/internal/stats"
)

// Snapshot is an immutable view of the merged layers.
type Snapshot struct {
	values    map[string]string
	fractions map[string]fraction
	layers    []layerValues
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
	if s == nil {
		return nil
	}
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Layers lists the names of the layers the snapshot was built from, in
// order (a disk layer whose directory does not exist is not one, as in
// Envoy).
func (s *Snapshot) Layers() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.layers))
	for i, ly := range s.layers {
		out[i] = ly.name
	}
	return out
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

// Fraction reads a key as Envoy's featureEnabled(key, default) does: an
// integer value is a percentage (numerator over 100; more than 100 is
// always on); a fractional percent value — a struct with numerator and
// denominator, or a file holding that YAML — is itself; anything else,
// or no value, is def.
func (s *Snapshot) Fraction(key string, def *typev3.FractionalPercent) (num, den uint32) {
	num, den = def.GetNumerator(), denominator(def.GetDenominator())
	if key == "" || s == nil {
		return
	}
	if v, ok := s.values[key]; ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 {
			if f > 100 {
				return 100, 100
			}
			return uint32(f), 100
		}
	}
	if fr, ok := s.fractions[key]; ok {
		return fr.num, fr.den
	}
	return
}

// fraction is a fractional percent value, parsed when the snapshot is
// built so that reading one allocates nothing.
type fraction struct{ num, den uint32 }

// fractionsOf finds the fractional percent values: structs flattened to
// key.numerator (and key.denominator), and values that are a
// FractionalPercent in YAML ("numerator: 5\ndenominator: MILLION").
func fractionsOf(values map[string]string) map[string]fraction {
	out := map[string]fraction{}
	for k, v := range values {
		if base, ok := strings.CutSuffix(k, ".numerator"); ok {
			d := values[base+".denominator"]
			if fr, ok := parseFraction(v, d); ok {
				out[base] = fr
			}
			continue
		}
		if !strings.Contains(v, "numerator") {
			continue
		}
		var y struct {
			Numerator   string `yaml:"numerator"`
			Denominator string `yaml:"denominator"`
		}
		if yaml.Unmarshal([]byte(v), &y) == nil && y.Numerator != "" {
			if fr, ok := parseFraction(y.Numerator, y.Denominator); ok {
				out[k] = fr
			}
		}
	}
	return out
}

func parseFraction(num, den string) (fraction, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 32)
	if err != nil {
		return fraction{}, false
	}
	fr := fraction{num: uint32(n), den: 100}
	switch strings.ToUpper(strings.TrimSpace(den)) {
	case "", "HUNDRED", "0":
	case "TEN_THOUSAND", "1":
		fr.den = 10000
	case "MILLION", "2":
		fr.den = 1000000
	default:
		return fraction{}, false
	}
	return fr, true
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

// Layer kinds.
const (
	kindStatic = "static"
	kindDisk   = "disk"
	kindAdmin  = "admin"
	kindRTDS   = "rtds"
)

// Options are what New needs besides the config.
type Options struct {
	Log *slog.Logger
	// Stats receives Envoy's runtime.* statistics (a private store when nil).
	Stats *stats.Store
	// ServiceCluster is the node's cluster, which a disk layer with
	// append_service_cluster appends to its path.
	ServiceCluster string
	// PollInterval is how often disk layers' symlink roots are checked
	// for a swap (default 1 s).
	PollInterval time.Duration
}

// Loader holds the layers and the current snapshot.
type Loader struct {
	cur    atomic.Pointer[Snapshot]
	mu     sync.Mutex
	layers []*layer
	log    *slog.Logger
	stats  loaderStats
	poll   time.Duration
	stop   chan struct{}
	// started guards Start against a second watch goroutine.
	started bool
}

// loaderStats are Envoy's runtime.* statistics (ALL_RUNTIME_STATS).
type loaderStats struct {
	loadSuccess, loadError, overrideExists, overrideNotExists, deprecatedUse *stats.Counter
	numKeys, numLayers, adminActive, deprecatedSeen                          *stats.Gauge
}

type layer struct {
	name   string
	kind   string
	values map[string]string
	// present is false for a disk layer whose directory does not exist:
	// it is then left out of the snapshot, as in Envoy. (An RTDS layer
	// before its first resource is present and empty, as in Envoy.)
	present bool
	// disk layers
	root, dir string
	rootSig   string
	// rtds layers
	rtds *bootstrapv3.RuntimeLayer_RtdsLayer
}

// RTDSLayer is one rtds_layer: the Runtime resource name to subscribe to
// and the config source to subscribe through.
type RTDSLayer struct {
	// Name is the Runtime resource's name (rtds_layer.name).
	Name string
	// Source is rtds_layer.rtds_config.
	Source *corev3.ConfigSource
	// Path is the layer's config path, for errors.
	Path string
}

// New compiles layered_runtime with a logger (see NewWith).
func New(lr *bootstrapv3.LayeredRuntime, log *slog.Logger) (*Loader, error) {
	return NewWith(lr, Options{Log: log})
}

// NewWith compiles layered_runtime. Without a layered_runtime Envoy's
// default applies: an empty static layer "base" and an admin layer
// "admin"; a layered_runtime without layers is one unnamed admin layer.
// Disk layers are read once here; Start watches them.
func NewWith(lr *bootstrapv3.LayeredRuntime, o Options) (*Loader, error) {
	l := &Loader{log: o.Log, stop: make(chan struct{}), poll: o.PollInterval}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.poll <= 0 {
		l.poll = time.Second
	}
	st := o.Stats
	if st == nil {
		st = stats.NewStore()
	}
	sc := st.Scope("runtime.")
	l.stats = loaderStats{
		loadSuccess: sc.Counter("load_success"), loadError: sc.Counter("load_error"),
		overrideExists: sc.Counter("override_dir_exists"), overrideNotExists: sc.Counter("override_dir_not_exists"),
		deprecatedUse: sc.Counter("deprecated_feature_use"),
		numKeys:       sc.Gauge("num_keys"), numLayers: sc.Gauge("num_layers"),
		adminActive: sc.Gauge("admin_overrides_active"), deprecatedSeen: sc.Gauge("deprecated_feature_seen_since_process_start"),
	}
	switch {
	case lr == nil:
		l.layers = []*layer{{name: "base", kind: kindStatic, values: map[string]string{}, present: true},
			{name: "admin", kind: kindAdmin, values: map[string]string{}, present: true}}
	case len(lr.GetLayers()) == 0:
		l.layers = []*layer{{name: "", kind: kindAdmin, values: map[string]string{}, present: true}}
	}
	names := map[string]bool{}
	admins := 0
	for i, pl := range lr.GetLayers() {
		p := config.Index("layered_runtime.layers", i)
		if err := config.CheckFields(pl, p, "name", "static_layer", "disk_layer", "admin_layer", "rtds_layer"); err != nil {
			return nil, err
		}
		if names[pl.GetName()] {
			return nil, config.Errorf(config.Join(p, "name"), "Duplicate layer name: %s", pl.GetName())
		}
		names[pl.GetName()] = true
		ly := &layer{name: pl.GetName(), values: map[string]string{}, present: true}
		switch {
		case pl.GetStaticLayer() != nil:
			ly.kind = kindStatic
			vals, err := ParseStruct(pl.GetStaticLayer())
			if err != nil {
				return nil, config.Errorf(config.Join(p, "static_layer"), "%v", err)
			}
			ly.values = vals
		case pl.GetDiskLayer() != nil:
			dl := pl.GetDiskLayer()
			if err := config.CheckFields(dl, config.Join(p, "disk_layer"), "symlink_root", "subdirectory", "append_service_cluster"); err != nil {
				return nil, err
			}
			ly.kind, ly.root = kindDisk, dl.GetSymlinkRoot()
			// Envoy's path: symlink_root/subdirectory[/service_cluster].
			ly.dir = dl.GetSymlinkRoot() + "/" + dl.GetSubdirectory()
			if dl.GetAppendServiceCluster() {
				ly.dir += "/" + o.ServiceCluster
			}
			ly.present = false
		case pl.GetAdminLayer() != nil:
			admins++
			if admins > 1 {
				return nil, config.Errorf(p, "Too many admin layers specified in LayeredRuntime, at most one may be specified")
			}
			ly.kind = kindAdmin
		case pl.GetRtdsLayer() != nil:
			rl := pl.GetRtdsLayer()
			if err := config.CheckFields(rl, config.Join(p, "rtds_layer"), "name", "rtds_config"); err != nil {
				return nil, err
			}
			if rl.GetRtdsConfig() == nil {
				return nil, config.Errorf(config.Join(p, "rtds_layer.rtds_config"), "an rtds_layer needs an rtds_config (the config source of its Runtime resource)")
			}
			ly.kind, ly.rtds = kindRTDS, rl
		default:
			return nil, config.Errorf(p, "runtime layer %q has no layer (set static_layer, disk_layer, admin_layer or rtds_layer)", pl.GetName())
		}
		l.layers = append(l.layers, ly)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	errs := l.reloadDiskLocked(true)
	l.publishLocked(errs)
	return l, nil
}

// RTDSLayers lists the rtds_layers in order, for the server to subscribe.
func (l *Loader) RTDSLayers() []RTDSLayer {
	if l == nil {
		return nil
	}
	var out []RTDSLayer
	for i, ly := range l.layers {
		if ly.kind == kindRTDS {
			out = append(out, RTDSLayer{Name: ly.rtds.GetName(), Source: ly.rtds.GetRtdsConfig(),
				Path: config.Join(config.Index("layered_runtime.layers", i), "rtds_layer.rtds_config")})
		}
	}
	return out
}

// ParseStruct flattens a runtime Struct (a static layer, an RTDS
// resource's layer) into keys, as Envoy's ProtoLayer: nested structs join
// their keys with "."; a list, a null or an unset value is an error
// ("Invalid runtime entry value for <key>"). A struct holding numerator or
// denominator is a fractional percent, kept as key.numerator and
// key.denominator for Fraction.
func ParseStruct(s *structpb.Struct) (map[string]string, error) {
	out := map[string]string{}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable first error
	for _, k := range keys {
		if err := walkValue(k, s.GetFields()[k], out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func walkValue(key string, v *structpb.Value, out map[string]string) error {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		out[key] = x.StringValue
	case *structpb.Value_BoolValue:
		out[key] = strconv.FormatBool(x.BoolValue)
	case *structpb.Value_NumberValue:
		out[key] = strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
	case *structpb.Value_StructValue:
		f := x.StructValue.GetFields()
		_, num := f["numerator"]
		_, den := f["denominator"]
		if len(f) == 0 {
			out[key] = "{}"
			return nil
		}
		if num || den {
			for k, fv := range f {
				out[key+"."+k] = scalar(fv)
			}
			return nil
		}
		for k, fv := range f {
			if err := walkValue(key+"."+k, fv, out); err != nil {
				return err
			}
		}
	default: // list, null, unset: what Envoy refuses
		//lint:ignore ST1005 Envoy's message
		return fmt.Errorf("Invalid runtime entry value for %s", key)
	}
	return nil
}

func scalar(v *structpb.Value) string {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return x.StringValue
	case *structpb.Value_NumberValue:
		return strconv.FormatFloat(x.NumberValue, 'f', -1, 64)
	case *structpb.Value_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	}
	return ""
}

// Snapshot returns the current values (never nil after New).
func (l *Loader) Snapshot() *Snapshot {
	if l == nil {
		return nil
	}
	return l.cur.Load()
}

// publishLocked builds and stores a new snapshot and counts it, as
// Envoy's loadNewSnapshot: load_error when a layer failed to load (it
// keeps its last good values), load_success otherwise; num_layers and
// num_keys; override_dir_exists when more than one disk layer is loaded
// (Envoy's test is "> 1"), override_dir_not_exists otherwise.
func (l *Loader) publishLocked(errLayers int) {
	s := &Snapshot{values: map[string]string{}}
	disk := 0
	for _, ly := range l.layers {
		if !ly.present {
			continue
		}
		if ly.kind == kindDisk {
			disk++
		}
		cp := make(map[string]string, len(ly.values))
		for k, v := range ly.values {
			s.values[k] = v
			cp[k] = v
		}
		s.layers = append(s.layers, layerValues{ly.name, cp})
	}
	s.fractions = fractionsOf(s.values)
	l.cur.Store(s)
	l.stats.numLayers.Set(int64(len(s.layers)))
	l.stats.numKeys.Set(int64(len(s.values)))
	if errLayers == 0 {
		l.stats.loadSuccess.Inc()
	} else {
		l.stats.loadError.Inc()
	}
	if disk > 1 {
		l.stats.overrideExists.Inc()
	} else {
		l.stats.overrideNotExists.Inc()
	}
}

// Start watches disk layers' symlink roots until Stop.
func (l *Loader) Start() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	hasDisk := false
	for _, ly := range l.layers {
		hasDisk = hasDisk || ly.kind == kindDisk
	}
	if !hasDisk || l.started {
		return
	}
	l.started = true
	go func() {
		t := time.NewTicker(l.poll)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
				l.mu.Lock()
				if l.rootsSwappedLocked() {
					l.publishLocked(l.reloadDiskLocked(false))
				}
				l.mu.Unlock()
			}
		}
	}()
}

// Stop ends the disk watch.
func (l *Loader) Stop() {
	if l != nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		select {
		case <-l.stop:
		default:
			close(l.stop)
		}
	}
}

// rootSig identifies what a symlink root is now: its target when it is a
// symlink, and its inode. Envoy reloads on a moved-to event on the root
// (the atomic symlink swap its docs prescribe); a change of this
// signature is that event seen by polling. Edits inside the tree, which
// Envoy does not watch, do not change it.
func rootSig(root string) string {
	fi, err := os.Lstat(root)
	if err != nil {
		return ""
	}
	sig := fmt.Sprintf("%d", fi.ModTime().UnixNano())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		sig = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		t, _ := os.Readlink(root)
		sig += "->" + t
	}
	return sig
}

func (l *Loader) rootsSwappedLocked() bool {
	swapped := false
	for _, ly := range l.layers {
		if ly.kind == kindDisk {
			if sig := rootSig(ly.root); sig != ly.rootSig {
				swapped = true
			}
		}
	}
	return swapped
}

// reloadDiskLocked re-reads every disk layer (Envoy re-reads them all on
// any swap) and returns how many failed. A missing directory removes the
// layer from the snapshot; one that fails to read keeps its last good
// values and is logged and counted (runtime.load_error).
func (l *Loader) reloadDiskLocked(initial bool) int {
	errs := 0
	for _, ly := range l.layers {
		if ly.kind != kindDisk {
			continue
		}
		ly.rootSig = rootSig(ly.root)
		if fi, err := os.Stat(ly.dir); err != nil || !fi.IsDir() {
			ly.present, ly.values = false, map[string]string{}
			continue
		}
		vals, err := ReadTree(ly.dir)
		if err != nil {
			errs++
			l.log.Warn("runtime disk layer not loaded; its last good values stay", "layer", ly.name, "dir", ly.dir, "error", err)
			continue
		}
		ly.values, ly.present = vals, true
		if !initial {
			l.log.Info("runtime disk layer reloaded", "layer", ly.name, "dir", ly.dir, "keys", len(vals))
		}
	}
	return errs
}

// maxWalkDepth is Envoy's bound on a disk layer's directory depth.
const maxWalkDepth = 16

// ReadTree reads a disk layer's directory as Envoy's DiskLayer: every
// regular file (a symlink to one counts) is a key — its path relative to
// dir with "/" as "." — and its content the value, without the lines that
// start with "#" (comments) and with trailing whitespace trimmed from the
// last line. A tree deeper than 16 levels is an error, as in Envoy.
func ReadTree(dir string) (map[string]string, error) {
	vals := map[string]string{}
	if err := walk(dir, "", 1, vals); err != nil {
		return nil, err
	}
	return vals, nil
}

func walk(dir, prefix string, depth int, vals map[string]string) error {
	if depth > maxWalkDepth {
		//lint:ignore ST1005 Envoy's message
		return fmt.Errorf("Walk recursion depth exceeded %d", maxWalkDepth)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		full := filepath.Join(dir, e.Name())
		key := e.Name()
		if prefix != "" {
			key = prefix + "." + e.Name()
		}
		fi, err := os.Stat(full) // follows symlinks, as Envoy's directory iterator
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // a dangling link
			}
			return err
		}
		switch {
		case fi.IsDir():
			if err := walk(full, key, depth+1, vals); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(full)
			if err != nil {
				return err
			}
			vals[key] = fileValue(string(b))
		}
	}
	return nil
}

// fileValue is Envoy's reading of a runtime file: lines starting with '#'
// are dropped, the others kept with their newlines, the last one
// right-trimmed.
func fileValue(text string) string {
	var lines []string
	for _, ln := range strings.Split(text, "\n") {
		if ln != "" {
			lines = append(lines, ln) // splitToken drops empty tokens
		}
	}
	var b strings.Builder
	for i, ln := range lines {
		if ln[0] == '#' {
			continue
		}
		if i == len(lines)-1 {
			b.WriteString(strings.TrimRight(ln, " \t\r\n\f\v"))
		} else {
			b.WriteString(ln + "\n")
		}
	}
	return b.String()
}

// SetAdmin sets (or, with an empty value, removes) keys in the admin
// layer, as /runtime_modify does. It fails without an admin layer.
func (l *Loader) SetAdmin(kv map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var admin *layer
	for _, ly := range l.layers {
		if ly.kind == kindAdmin {
			admin = ly
		}
	}
	if admin == nil {
		//lint:ignore ST1005 Envoy's message (the /runtime_modify body)
		return fmt.Errorf("No admin layer specified (add an admin_layer to layered_runtime)")
	}
	for k, v := range kv {
		if v == "" {
			delete(admin.values, k)
		} else {
			admin.values[k] = v
		}
	}
	if len(admin.values) > 0 {
		l.stats.adminActive.Set(1)
	} else {
		l.stats.adminActive.Set(0)
	}
	l.publishLocked(0)
	return nil
}

// SetRTDS replaces the values of the RTDS layers subscribed to the
// Runtime resource name with vals (from ParseStruct) and publishes them.
// It reports whether such a layer exists.
func (l *Loader) SetRTDS(name string, vals map[string]string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	found := false
	for _, ly := range l.layers {
		if ly.kind == kindRTDS && ly.rtds.GetName() == name {
			cp := make(map[string]string, len(vals))
			for k, v := range vals {
				cp[k] = v
			}
			ly.values, found = cp, true
		}
	}
	if found {
		l.publishLocked(0)
	}
	return found
}

// Dump renders /runtime as Envoy's JSON: the layer names, and every key
// with its value in each layer ("" where a layer does not set it) and its
// final value.
func (s *Snapshot) Dump() map[string]any {
	names := s.Layers()
	entries := map[string]any{}
	for _, k := range s.Keys() {
		lv := make([]string, len(s.layers))
		for i, ly := range s.layers {
			lv[i] = ly.values[k]
		}
		entries[k] = map[string]any{"final_value": s.values[k], "layer_values": lv}
	}
	return map[string]any{"layers": names, "entries": entries}
}
