package nodeagent

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podInfo is what the downward API reads that is not in the Pod object
// yet: the addresses the agent gave the pod.
type podInfo struct {
	pod    *corev1.Pod
	podIP  string
	hostIP string
}

// fieldValue is the downward API value of a fieldRef path.
func (p podInfo) fieldValue(path string) (string, error) {
	md := p.pod.ObjectMeta
	if k, ok := subscript(path, "metadata.labels"); ok {
		return md.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return md.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return md.Name, nil
	case "metadata.namespace":
		return md.Namespace, nil
	case "metadata.uid":
		return string(md.UID), nil
	case "metadata.labels":
		return formatMap(md.Labels), nil
	case "metadata.annotations":
		return formatMap(md.Annotations), nil
	case "spec.nodeName":
		return p.pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return p.pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return p.hostIP, nil
	case "status.podIP", "status.podIPs":
		return p.podIP, nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported by the kubeenv node agent", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// formatMap is the downward API's file form of labels and annotations.
func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceValue is the downward API value of a resourceFieldRef of
// container c: limits not set are the node's allocatable amount.
func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector, allocatable corev1.ResourceList) (string, error) {
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	rn := corev1.ResourceName(name)
	var q resource.Quantity
	if kind == "limits" {
		v, set := c.Resources.Limits[rn]
		if !set {
			v = allocatable[rn]
		}
		q = v
	} else {
		q = c.Resources.Requests[rn]
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))), nil
}

// containerEnv builds container c's environment (KEY=value, in order):
// the image's, HOSTNAME, the container's envFrom and env with $(VAR)
// expansion and the downward API, Secret and ConfigMap references read
// from the API. It also returns the final values by name.
func (a *Agent) containerEnv(ctx context.Context, info podInfo, c *corev1.Container, img Image, hostname string) ([]string, map[string]string, error) {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", hostname)
	ns := info.pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := a.client.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if isOptional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("envFrom ConfigMap %s: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := a.client.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if isOptional(from.SecretRef.Optional) {
					continue
				}
				return nil, nil, fmt.Errorf("envFrom Secret %s: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	lookup := func(k string) (string, bool) { v, ok := vals[k]; return v, ok }
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, lookup))
			continue
		}
		v, skip, err := a.envValue(ctx, info, c, e.ValueFrom)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if !skip {
			set(e.Name, v)
		}
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vals[k])
	}
	return env, vals, nil
}

// envValue resolves one valueFrom; skip is true for a missing optional key.
func (a *Agent) envValue(ctx context.Context, info podInfo, c *corev1.Container, from *corev1.EnvVarSource) (v string, skip bool, err error) {
	ns := info.pod.Namespace
	switch {
	case from.FieldRef != nil:
		v, err = info.fieldValue(from.FieldRef.FieldPath)
		return v, false, err
	case from.ResourceFieldRef != nil:
		v, err = resourceValue(c, from.ResourceFieldRef, a.allocatable)
		return v, false, err
	case from.ConfigMapKeyRef != nil:
		r := from.ConfigMapKeyRef
		cm, err := a.client.CoreV1().ConfigMaps(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", isOptional(r.Optional), ignoreIf(isOptional(r.Optional), fmt.Errorf("ConfigMap %s: %w", r.Name, err))
		}
		if val, ok := cm.Data[r.Key]; ok {
			return val, false, nil
		}
		return "", true, ignoreIf(isOptional(r.Optional), fmt.Errorf("ConfigMap %s has no key %q", r.Name, r.Key))
	case from.SecretKeyRef != nil:
		r := from.SecretKeyRef
		s, err := a.client.CoreV1().Secrets(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if err != nil {
			return "", true, ignoreIf(isOptional(r.Optional), fmt.Errorf("secret %s: %w", r.Name, err))
		}
		if val, ok := s.Data[r.Key]; ok {
			return string(val), false, nil
		}
		return "", true, ignoreIf(isOptional(r.Optional), fmt.Errorf("secret %s has no key %q", r.Name, r.Key))
	}
	return "", false, fmt.Errorf("valueFrom kind not supported by the kubeenv node agent")
}

func isOptional(b *bool) bool { return b != nil && *b }

func ignoreIf(cond bool, err error) error {
	if cond {
		return nil
	}
	return err
}
