package source

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestUsefulSecret: only Secrets the model can use are kept.
func TestUsefulSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    corev1.Secret
		want bool
	}{
		{"tls", corev1.Secret{Type: corev1.SecretTypeTLS}, true},
		{"CA bundle", corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"ca.crt": []byte("x")}}, true},
		{"CRL", corev1.Secret{Data: map[string][]byte{"crl.pem": []byte("x")}}, true},
		{"JWKS (localJWKS)", corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"jwks.json": []byte(" {\"keys\": []}")}}, true},
		{"other Opaque data", corev1.Secret{Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("hunter2")}}, false},
		{"service account token", corev1.Secret{Type: corev1.SecretTypeServiceAccountToken, Data: map[string][]byte{"ca.crt": []byte("x")}}, false},
	} {
		if got := usefulSecret(&tc.s); got != tc.want {
			t.Errorf("%s: usefulSecret = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestStoreSecretNoLongerUseful: a kept TLS Secret updated to a type the
// store does not keep leaves the store (and triggers a rebuild) instead
// of serving its old certificate.
func TestStoreSecretNoLongerUseful(t *testing.T) {
	st := NewStore()
	tlsSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "x"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{"tls.crt": []byte("c"), "tls.key": []byte("k")}}
	if !st.Upsert(tlsSecret) {
		t.Fatal("a TLS Secret was not kept")
	}
	st.Take()
	opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "x"}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{"password": []byte("p")}}
	if st.Upsert(opaque) {
		t.Error("an Opaque Secret without CA or JWKS was kept")
	}
	o, k := st.Take()
	if k != KindConfig || o.Secrets[types.NamespacedName{Namespace: "x", Name: "s"}] != nil {
		t.Errorf("after the update: kind %v, secret kept %v; want a rebuild without it", k, o.Secrets[types.NamespacedName{Namespace: "x", Name: "s"}] != nil)
	}
}
