package source

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestStoreConfigMaps: only ConfigMaps with a ca.crt (BackendTLSPolicy CA
// bundles) are kept, and one that loses its ca.crt leaves the store with
// a rebuild instead of serving its old bundle.
func TestStoreConfigMaps(t *testing.T) {
	k := types.NamespacedName{Namespace: "x", Name: "ca"}
	meta := metav1.ObjectMeta{Name: "ca", Namespace: "x"}
	st := NewStore()
	if st.Upsert(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "x"}, Data: map[string]string{"settings": "x"}}) {
		t.Error("a ConfigMap without ca.crt was kept")
	}
	if !st.Upsert(&corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"ca.crt": "pem"}}) {
		t.Fatal("a ConfigMap with ca.crt was not kept")
	}
	if !st.Upsert(&corev1.ConfigMap{ObjectMeta: meta, BinaryData: map[string][]byte{"ca.crt": []byte("pem")}}) {
		t.Error("a ConfigMap with a binary ca.crt was not kept")
	}
	if o, kind := st.Take(); kind != KindConfig || o.ConfigMaps[k] == nil {
		t.Fatalf("after adding: kind %v, kept %v", kind, o.ConfigMaps[k] != nil)
	}
	if st.Upsert(&corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"other": "x"}}) {
		t.Error("a ConfigMap updated without ca.crt was kept")
	}
	if o, kind := st.Take(); kind != KindConfig || o.ConfigMaps[k] != nil {
		t.Errorf("after the update: kind %v, kept %v; want a rebuild without it", kind, o.ConfigMaps[k] != nil)
	}
}

// TestTrimConfigMap: the informer keeps a ConfigMap's metadata and its
// ca.crt, nothing else.
func TestTrimConfigMap(t *testing.T) {
	in := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ca", Namespace: "x", Labels: map[string]string{"a": "b"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Data: map[string]string{"ca.crt": "pem", "big": "xxxxxxxx"}, BinaryData: map[string][]byte{"blob": {1}}}
	out, err := trimConfigMap(in)
	if err != nil {
		t.Fatal(err)
	}
	cm := out.(*corev1.ConfigMap)
	if len(cm.Data) != 1 || cm.Data["ca.crt"] != "pem" || cm.BinaryData != nil || cm.ManagedFields != nil || cm.Labels["a"] != "b" {
		t.Errorf("trimmed: %+v", cm)
	}
}
