package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	corev1 "k8s.io/api/core/v1"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	contourv1 "github.com/legateproxy/legate/api/projectcontour/v1"
	contourv1alpha1 "github.com/legateproxy/legate/api/projectcontour/v1alpha1"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Scheme knows the core Kubernetes types, projectcontour.io/v1 and
// projectcontour.io/v1alpha1 (ExtensionService).
var Scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := contourv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := gatewayv1.Install(s); err != nil {
		panic(err)
	}
	if err := contourv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

var decoder = serializer.NewCodecFactory(Scheme).UniversalDeserializer()

// LoadManifests reads every .yaml, .yml and .json file under dir (multi-
// document YAML and v1 Lists included) and returns the objects the
// controller reads. Objects it does not use (other kinds, Secrets that
// hold no certificate, key or CA, objects without a name, the earlier of
// two objects with the same kind, namespace and name) are dropped (see
// LoadManifestsReport); a document that does not decode is an error naming
// its file and position. Objects without a namespace get "default"
// (Namespaces themselves are cluster-scoped and keep none).
func LoadManifests(dir string) (*Objects, error) {
	o, _, err := LoadManifestsReport(dir)
	return o, err
}

// The reasons a manifest object is dropped (the reason label of
// legate_controller_manifest_objects_dropped_total).
const (
	// DropUnknownKind: a kind the controller does not read (a
	// Deployment, a ConfigMap, an unknown CRD).
	DropUnknownKind = "unknown_kind"
	// DropUnusedSecret: a Secret that holds no certificate, key, CA
	// bundle or JSON Web Key Set (the controller keeps only those).
	DropUnusedSecret = "unused_secret"
	// DropParseError: a document that is not YAML/JSON or does not match
	// its kind's schema. The whole load fails (the last good objects stay).
	DropParseError = "parse_error"
	// DropNoName: an object without metadata.name (the API server would
	// refuse it; manifests mode has no generateName).
	DropNoName = "no_name"
	// DropDuplicate: an object with the same kind, namespace and name as a
	// later one, which wins (as `kubectl apply -f DIR`, in file order).
	DropDuplicate = "duplicate"
)

// Drop is one manifest object the controller does not use, and why.
type Drop struct {
	File     string
	Document int // 1-based position in File (items of a List count as their List)
	Kind     string
	// Namespace and Name: the namespace is the one the object gets
	// ("default" when not given) once it decodes, else as written.
	Namespace, Name string
	Reason          string // one of the Drop* constants
	Message         string
}

// LoadManifestsReport is LoadManifests with the objects it dropped, in
// file order; on a parse error the report ends with it (Reason
// DropParseError) and the error is returned too.
func LoadManifestsReport(dir string) (*Objects, []Drop, error) {
	files, err := manifestFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	o := NewObjects()
	l := &loader{st: &Store{objs: o, changed: make(chan struct{}, 1)}, seen: map[string]Drop{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, l.drops, fmt.Errorf("read manifests: %w", err)
		}
		l.file = f
		if err := l.decode(data, 0); err != nil {
			return nil, l.drops, fmt.Errorf("%s: %w", f, err)
		}
	}
	return o, l.drops, nil
}

// loader decodes the documents of a manifests folder into a store,
// noting what it drops.
type loader struct {
	st    *Store
	file  string
	drops []Drop
	// seen maps kind/namespace/name to where it was last read.
	seen map[string]Drop
}

func (l *loader) drop(d Drop) {
	d.File = l.file
	l.drops = append(l.drops, d)
}

// decode reads the documents of data; doc, when not 0, is the position of
// the List data is an item of.
func (l *loader) decode(data []byte, doc int) error {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		pos := doc
		if pos == 0 {
			pos = i + 1
		}
		var raw runtime.RawExtension
		if err := d.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return l.parseError(pos, nil, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		var meta docMeta
		_ = json.Unmarshal(raw.Raw, &meta) // best effort, for the report
		data, err := upgradeIngress(raw.Raw)
		if err != nil {
			return l.parseError(pos, &meta, err)
		}
		obj, gvk, err := decoder.Decode(data, nil, nil)
		if gvk != nil && gvk.Kind == "List" && gvk.Group == "" {
			err = nil
		}
		if err != nil {
			if runtime.IsNotRegisteredError(err) {
				l.drop(Drop{Document: pos, Kind: meta.Kind, Namespace: meta.Metadata.Namespace, Name: meta.Metadata.Name, Reason: DropUnknownKind,
					Message: fmt.Sprintf("the controller does not read %s %s", meta.APIVersion, meta.Kind)})
				continue
			}
			return l.parseError(pos, &meta, err)
		}
		if gvk.Kind == "List" {
			var list struct{ Items []json.RawMessage }
			if err := json.Unmarshal(data, &list); err != nil {
				return l.parseError(pos, &meta, err)
			}
			for _, item := range list.Items {
				if err := l.decode(item, pos); err != nil {
					return err
				}
			}
			continue
		}
		m, ok := obj.(interface {
			GetNamespace() string
			SetNamespace(string)
			GetName() string
		})
		if !ok {
			l.drop(Drop{Document: pos, Kind: gvk.Kind, Reason: DropUnknownKind, Message: "the controller does not read " + gvk.Kind})
			continue
		}
		d := Drop{Document: pos, Kind: gvk.Kind, Namespace: m.GetNamespace(), Name: m.GetName()}
		if m.GetName() == "" {
			d.Reason, d.Message = DropNoName, "metadata.name is required"
			l.drop(d)
			continue
		}
		if clusterScoped(obj) {
			// cluster-scoped: keyed by name alone
		} else if m.GetNamespace() == "" {
			m.SetNamespace("default")
		}
		d.Namespace = m.GetNamespace()
		if sec, ok := obj.(*corev1.Secret); ok && len(sec.StringData) > 0 {
			// What the API server does on write: stringData is merged into
			// data (and wins), so a manifest with stringData reads as applied.
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			for k, v := range sec.StringData {
				sec.Data[k] = []byte(v)
			}
			sec.StringData = nil
		}
		if !l.st.Upsert(obj) {
			d.Reason, d.Message = DropUnknownKind, "the controller does not read "+gvk.Kind+"s"
			if _, ok := obj.(*corev1.Secret); ok {
				d.Reason, d.Message = DropUnusedSecret, "the controller reads only Secrets of type kubernetes.io/tls, or with ca.crt, crl.pem or a JSON Web Key Set"
			}
			if _, ok := obj.(*corev1.ConfigMap); ok {
				d.Message = "the controller reads only ConfigMaps with a ca.crt (BackendTLSPolicy CA bundles)"
			}
			l.drop(d)
			continue
		}
		k := gvk.Kind + "/" + m.GetNamespace() + "/" + m.GetName()
		if prev, dup := l.seen[k]; dup {
			// The later object replaced it in the store, as a later
			// `kubectl apply` of the same object does.
			prev.Reason = DropDuplicate
			prev.Message = fmt.Sprintf("replaced by the %s %s/%s of %s document %d", gvk.Kind, m.GetNamespace(), m.GetName(), l.file, pos)
			l.drops = append(l.drops, prev)
		}
		d.File = l.file
		l.seen[k] = d
	}
}

// docMeta is what the report says of a document: read leniently, before
// (and whether or not) it decodes.
type docMeta struct {
	APIVersion, Kind string
	Metadata         struct{ Name, Namespace string }
}

func (l *loader) parseError(pos int, meta *docMeta, err error) error {
	d := Drop{Document: pos, Reason: DropParseError, Message: err.Error()}
	if meta != nil {
		d.Kind, d.Namespace, d.Name = meta.Kind, meta.Metadata.Namespace, meta.Metadata.Name
	}
	l.drop(d)
	return fmt.Errorf("document %d: %w", pos, err)
}

func manifestFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir // e.g. Kubernetes ConfigMap mounts' ..data dirs are followed via symlinks
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read manifests folder: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// fingerprint summarises the folder so that a change of any file (content
// replaced, file added or removed, atomic rename) is noticed.
func fingerprint(dir string) string {
	files, err := manifestFiles(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s|%d|%d|%d\n", f, st.Size(), st.ModTime().UnixNano(), inode(st))
	}
	return b.String()
}

// WatchManifests loads dir into the store and reloads it whenever its
// files change, until ctx ends. A folder that fails to load keeps the last
// good objects (logged). The first load's error is returned. Dropped
// objects are logged (WatchManifestsWith also counts them).
func WatchManifests(ctx context.Context, dir string, st *Store, log *slog.Logger, every time.Duration) error {
	return WatchManifestsWith(ctx, ManifestWatch{Dir: dir, Log: log, Every: every}, st)
}

// ManifestWatch configures WatchManifestsWith.
type ManifestWatch struct {
	Dir   string
	Log   *slog.Logger
	Every time.Duration // how often the folder is checked for changes
	// Metrics, when set, counts the objects each load drops.
	Metrics *ManifestMetrics
}

// ManifestMetrics are manifests mode's controller metrics.
type ManifestMetrics struct {
	dropped *prometheus.CounterVec
}

// NewManifestMetrics registers legate_controller_manifest_objects_dropped_total
// with reg (when not nil).
func NewManifestMetrics(reg prometheus.Registerer) *ManifestMetrics {
	m := &ManifestMetrics{dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "legate_controller_manifest_objects_dropped_total",
		Help: "Manifest objects dropped when the --manifests folder was (re)loaded, by reason (unknown_kind, unused_secret, parse_error, no_name, duplicate); counted once per load.",
	}, []string{"reason"})}
	for _, r := range []string{DropUnknownKind, DropUnusedSecret, DropParseError, DropNoName, DropDuplicate} {
		m.dropped.WithLabelValues(r) // every reason exported from the start, at 0, so rate() and alerts see the first drop
	}
	if reg != nil {
		reg.MustRegister(m.dropped)
	}
	return m
}

// WatchManifestsWith is WatchManifests with its options. Each load (the
// first, then one per change of the folder: polls that find it unchanged
// read nothing) logs every object it drops, with its kind, namespace/name,
// file, document and reason, and counts it.
func WatchManifestsWith(ctx context.Context, w ManifestWatch, st *Store) error {
	if w.Log == nil {
		w.Log = slog.Default()
	}
	load := func() (*Objects, error) {
		objs, drops, err := LoadManifestsReport(w.Dir)
		for _, d := range drops {
			msg := "manifest object dropped"
			if d.Reason == DropParseError {
				msg = "manifest document does not parse: the folder does not load"
			}
			w.Log.Warn(msg, "kind", d.Kind, "name", d.Name, "namespace", d.Namespace,
				"file", d.File, "document", d.Document, "reason", d.Reason, "error", d.Message)
			if w.Metrics != nil {
				w.Metrics.dropped.WithLabelValues(d.Reason).Inc()
			}
		}
		return objs, err
	}
	objs, err := load()
	if err != nil {
		return err
	}
	st.Replace(objs)
	last := fingerprint(w.Dir)
	go func() {
		t := time.NewTicker(w.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fp := fingerprint(w.Dir)
			if fp == last {
				continue
			}
			last = fp
			objs, err := load()
			if err != nil {
				w.Log.Error("manifests folder changed but does not load; keeping the last good objects", "dir", w.Dir, "error", err)
				continue
			}
			w.Log.Info("manifests folder reloaded", "dir", w.Dir)
			st.Replace(objs)
		}
	}()
	return nil
}

// upgradeIngress rewrites an Ingress of the removed v1beta1 APIs
// (extensions/v1beta1, networking.k8s.io/v1beta1 — still in tutorials)
// into networking.k8s.io/v1: serviceName/servicePort become
// service.name/port, spec.backend becomes spec.defaultBackend, and paths
// without a pathType get ImplementationSpecific. Other documents are
// returned unchanged.
func upgradeIngress(doc []byte) ([]byte, error) {
	var tm struct{ APIVersion, Kind string }
	if err := json.Unmarshal(doc, &tm); err != nil || tm.Kind != "Ingress" ||
		(tm.APIVersion != "extensions/v1beta1" && tm.APIVersion != "networking.k8s.io/v1beta1") {
		return doc, nil
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	m["apiVersion"] = "networking.k8s.io/v1"
	backend := func(b any) any {
		old, ok := b.(map[string]any)
		if !ok {
			return b
		}
		svc := map[string]any{"name": old["serviceName"]}
		switch p := old["servicePort"].(type) {
		case string:
			svc["port"] = map[string]any{"name": p}
		default:
			svc["port"] = map[string]any{"number": p}
		}
		return map[string]any{"service": svc}
	}
	spec, _ := m["spec"].(map[string]any)
	if spec != nil {
		if b, ok := spec["backend"]; ok {
			spec["defaultBackend"] = backend(b)
			delete(spec, "backend")
		}
		rules, _ := spec["rules"].([]any)
		for _, r := range rules {
			http, _ := r.(map[string]any)["http"].(map[string]any)
			if http == nil {
				continue
			}
			paths, _ := http["paths"].([]any)
			for _, p := range paths {
				pm := p.(map[string]any)
				pm["backend"] = backend(pm["backend"])
				if _, ok := pm["pathType"]; !ok {
					pm["pathType"] = "ImplementationSpecific"
				}
			}
		}
	}
	return json.Marshal(m)
}

// clusterScoped reports whether obj's kind has no namespace: such objects
// are keyed by name alone.
func clusterScoped(obj any) bool {
	switch obj.(type) {
	case *corev1.Namespace, *gatewayv1.GatewayClass:
		return true
	}
	return false
}
