package nodeagent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volumeFile is one file of a volume: its path in the volume, content
// and mode.
type volumeFile struct {
	path string
	data []byte
	mode os.FileMode
}

// prepareVolumes writes the pod's volumes under dir/volumes/<name>, once,
// before its containers start. It fails (and is retried) while a Secret,
// ConfigMap or ServiceAccount a volume needs is missing; a volume type the
// agent does not support fails for good (the message says which).
// Volumes are not updated afterwards.
func (a *Agent) prepareVolumes(ctx context.Context, info podInfo, dir string) (map[string]volumeDir, error) {
	out := map[string]volumeDir{}
	pod := info.pod
	for _, v := range pod.Spec.Volumes {
		path := filepath.Join(dir, "volumes", v.Name)
		if err := os.RemoveAll(path); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(path, 0o755); err != nil {
			return nil, err
		}
		var files []volumeFile
		var err error
		readOnly := true
		switch {
		case v.EmptyDir != nil:
			readOnly = false
			os.Chmod(path, 0o777)
		case v.Secret != nil:
			files, err = a.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
		case v.ConfigMap != nil:
			files, err = a.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
		case v.DownwardAPI != nil:
			files, err = a.downwardFiles(info, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
		case v.Projected != nil:
			files, err = a.projectedFiles(ctx, info, v.Projected)
		default:
			return nil, permanent(fmt.Errorf("volume %s: its type is not supported by the kubeenv node agent (emptyDir, secret, configMap, downwardAPI and projected are)", v.Name))
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for _, f := range files {
			p := filepath.Join(path, filepath.Clean("/"+f.path))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p, f.data, f.mode); err != nil {
				return nil, err
			}
			os.Chmod(p, f.mode)
		}
		out[v.Name] = volumeDir{path: path, readOnly: readOnly}
	}
	return out, nil
}

// volumeDir is a prepared volume.
type volumeDir struct {
	path     string
	readOnly bool
}

func mode(m *int32, def os.FileMode) os.FileMode {
	if m != nil {
		return os.FileMode(*m) & os.ModePerm
	}
	return def
}

// keyFiles turns a Secret's or ConfigMap's data into files: every key, or
// the items listed.
func keyFiles(kind, name string, data map[string][]byte, items []corev1.KeyToPath, def os.FileMode) ([]volumeFile, error) {
	var files []volumeFile
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			files = append(files, volumeFile{path: k, data: data[k], mode: def})
		}
		return files, nil
	}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("%s %s has no key %q", kind, name, it.Key)
		}
		files = append(files, volumeFile{path: it.Path, data: d, mode: mode(it.Mode, def)})
	}
	return files, nil
}

func (a *Agent) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) ([]volumeFile, error) {
	s, err := a.client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if isOptional(optional) {
			return nil, nil
		}
		return nil, fmt.Errorf("secret %s/%s: %w", ns, name, err)
	}
	return keyFiles("Secret", name, s.Data, items, mode(defMode, 0o644))
}

func (a *Agent) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, defMode *int32, optional *bool) ([]volumeFile, error) {
	cm, err := a.client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if isOptional(optional) {
			return nil, nil
		}
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", ns, name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return keyFiles("ConfigMap", name, data, items, mode(defMode, 0o644))
}

func (a *Agent) downwardFiles(info podInfo, items []corev1.DownwardAPIVolumeFile, defMode *int32) ([]volumeFile, error) {
	var files []volumeFile
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = info.fieldValue(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			c := findContainer(info.pod, it.ResourceFieldRef.ContainerName)
			if c == nil {
				return nil, permanent(fmt.Errorf("downwardAPI %s: no container %q", it.Path, it.ResourceFieldRef.ContainerName))
			}
			v, err = resourceValue(c, it.ResourceFieldRef, a.allocatable)
		}
		if err != nil {
			return nil, permanent(err)
		}
		files = append(files, volumeFile{path: it.Path, data: []byte(v), mode: mode(it.Mode, mode(defMode, 0o644))})
	}
	return files, nil
}

func (a *Agent) projectedFiles(ctx context.Context, info podInfo, p *corev1.ProjectedVolumeSource) ([]volumeFile, error) {
	def := mode(p.DefaultMode, 0o644)
	var files []volumeFile
	pod := info.pod
	for _, src := range p.Sources {
		var fs []volumeFile
		var err error
		switch {
		case src.Secret != nil:
			m := int32(def)
			fs, err = a.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, &m, src.Secret.Optional)
		case src.ConfigMap != nil:
			m := int32(def)
			fs, err = a.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, &m, src.ConfigMap.Optional)
		case src.DownwardAPI != nil:
			m := int32(def)
			fs, err = a.downwardFiles(info, src.DownwardAPI.Items, &m)
		case src.ServiceAccountToken != nil:
			fs, err = a.tokenFile(ctx, pod, src.ServiceAccountToken, def)
		default:
			return nil, permanent(fmt.Errorf("a projected source other than secret, configMap, downwardAPI and serviceAccountToken is not supported by the kubeenv node agent"))
		}
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	return files, nil
}

// tokenFile asks the API server for a token of the pod's ServiceAccount
// bound to the pod (TokenRequest), as the kubelet does.
func (a *Agent) tokenFile(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection, m os.FileMode) ([]volumeFile, error) {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token of ServiceAccount %s/%s: %w", pod.Namespace, sa, err)
	}
	return []volumeFile{{path: src.Path, data: []byte(tr.Status.Token), mode: m}}, nil
}

func findContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name || name == "" && i == 0 {
			return &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

// containerMounts maps container c's volumeMounts to bind mounts of the
// prepared volumes, parents before children.
func containerMounts(c *corev1.Container, vols map[string]volumeDir) ([]mountSpec, error) {
	var ms []mountSpec
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: the pod has no volume %q", vm.MountPath, vm.Name)
		}
		src := v.path
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			if vm.SubPathExpr != "" {
				return nil, fmt.Errorf("volumeMount %s: subPathExpr is not supported by the kubeenv node agent", vm.MountPath)
			}
			src = filepath.Join(v.path, filepath.Clean("/"+vm.SubPath))
			if _, err := os.Stat(src); err != nil {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			}
		}
		ms = append(ms, mountSpec{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly || v.readOnly})
	}
	sort.SliceStable(ms, func(i, j int) bool {
		return strings.Count(filepath.Clean(ms[i].Target), "/") < strings.Count(filepath.Clean(ms[j].Target), "/")
	})
	return ms, nil
}

// permanentError marks a failure that retrying does not mend.
type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }
