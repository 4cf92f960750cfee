package source

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
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
