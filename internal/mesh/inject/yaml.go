package inject

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// templatePath is where each workload kind keeps its pod template; a
// Pod is its own (nil path).
var templatePath = map[string][]string{
	"Pod":                   nil,
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
}

// YAML injects the pods and pod templates of a multi-document YAML (or
// JSON) stream, as `istioctl kube-inject` does, and writes the result:
// documents of other kinds, and pods the injector skips, are written
// byte for byte; a List's items are injected one by one. Pods get what
// the webhook would give them: the same Patch, applied.
func YAML(in io.Reader, out io.Writer, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(in))
	first := true
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		res, err := injectDoc(doc, cfg, log)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if !first {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
		}
		first = false
		if _, err := out.Write(res); err != nil {
			return err
		}
	}
}

// stripComments drops comment-only lines, to tell an empty document.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			b.Write(l)
		}
	}
	return b.Bytes()
}

func injectDoc(doc []byte, cfg Config, log *slog.Logger) ([]byte, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return nil, fmt.Errorf("not YAML: %w", err)
	}
	changed, err := injectObject(obj, cfg, log)
	if err != nil {
		return nil, err
	}
	if !changed {
		if !bytes.HasSuffix(doc, []byte("\n")) {
			doc = append(doc, '\n')
		}
		return doc, nil
	}
	return yaml.Marshal(obj)
}

// injectObject injects obj in place; changed reports whether it did.
func injectObject(obj map[string]any, cfg Config, log *slog.Logger) (bool, error) {
	kind, _ := obj["kind"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	if kind == "List" || (len(kind) > 4 && kind[len(kind)-4:] == "List") {
		items, _ := obj["items"].([]any)
		changed := false
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, err := injectObject(m, cfg, log)
			if err != nil {
				return false, fmt.Errorf("items[%d]: %w", i, err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	path, ok := templatePath[kind]
	if !ok {
		return false, nil
	}
	tmpl := obj
	for _, k := range path {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return false, fmt.Errorf("%s %s: no %s", kind, name, joinPath(path))
		}
		tmpl = next
	}
	if _, ok := tmpl["metadata"].(map[string]any); !ok {
		tmpl["metadata"] = map[string]any{}
	}
	if _, ok := tmpl["spec"].(map[string]any); !ok {
		return false, fmt.Errorf("%s %s: no pod spec", kind, name)
	}
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return false, err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return false, fmt.Errorf("%s %s: pod template: %w", kind, name, err)
	}
	// The webhook sees the pod in its namespace, named after (or owned
	// by) the workload.
	if pod.Name == "" {
		pod.Name = name
	}
	if pod.Namespace == "" {
		pod.Namespace = ns
	}
	ops, skip, err := Patch(&pod, cfg)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if skip != nil {
		if log != nil {
			log.Info("not injected", "kind", kind, "name", name, "reason", skip.Message)
		}
		return false, nil
	}
	if err := Apply(tmpl, ops); err != nil {
		return false, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	return true, nil
}

func joinPath(p []string) string {
	s := ""
	for i, k := range p {
		if i > 0 {
			s += "."
		}
		s += k
	}
	return s
}
