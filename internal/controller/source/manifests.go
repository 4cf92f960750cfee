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
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
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
	if err := contourv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

var decoder = serializer.NewCodecFactory(Scheme).UniversalDeserializer()

// LoadManifests reads every .yaml, .yml and .json file under dir (multi-
// document YAML and v1 Lists included) and returns the objects the
// controller reads. Objects of other kinds (Deployments, ConfigMaps, …) are
// skipped; a document that does not decode is an error naming its file
// and position. Objects without a namespace get "default" (Namespaces
// themselves are cluster-scoped and keep none).
func LoadManifests(dir string) (*Objects, error) {
	files, err := manifestFiles(dir)
	if err != nil {
		return nil, err
	}
	o := NewObjects()
	st := &Store{objs: o, changed: make(chan struct{}, 1)}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		if err := decodeInto(st, data); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	return o, nil
}

func decodeInto(st *Store, data []byte) error {
	d := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var raw runtime.RawExtension
		if err := d.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(bytes.TrimSpace(raw.Raw)) == "null" {
			continue
		}
		data, err := upgradeIngress(raw.Raw)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		obj, gvk, err := decoder.Decode(data, nil, nil)
		if gvk != nil && gvk.Kind == "List" && gvk.Group == "" {
			err = nil
		}
		if err != nil {
			if runtime.IsNotRegisteredError(err) {
				continue // a kind the controller does not read
			}
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if gvk.Kind == "List" {
			var list struct{ Items []json.RawMessage }
			if err := json.Unmarshal(data, &list); err != nil {
				return fmt.Errorf("document %d: %w", i+1, err)
			}
			for _, item := range list.Items {
				if err := decodeInto(st, item); err != nil {
					return err
				}
			}
			continue
		}
		if _, cluster := obj.(*corev1.Namespace); cluster {
			// cluster-scoped: keyed by name alone
		} else if m, ok := obj.(interface {
			GetNamespace() string
			SetNamespace(string)
		}); ok && m.GetNamespace() == "" {
			m.SetNamespace("default")
		}
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
		st.Upsert(obj)
	}
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
// good objects (logged). The first load's error is returned.
func WatchManifests(ctx context.Context, dir string, st *Store, log *slog.Logger, every time.Duration) error {
	objs, err := LoadManifests(dir)
	if err != nil {
		return err
	}
	st.Replace(objs)
	last := fingerprint(dir)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fp := fingerprint(dir)
			if fp == last {
				continue
			}
			last = fp
			objs, err := LoadManifests(dir)
			if err != nil {
				log.Error("manifests folder changed but does not load; keeping the last good objects", "dir", dir, "error", err)
				continue
			}
			log.Info("manifests folder reloaded", "dir", dir)
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
