package certgen

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Secret names `legate certgen --kube` writes: TLS Secrets (tls.crt,
// tls.key) that also carry the CA (ca.crt), as Contour's contourcert and
// envoycert; and CASecret, the CA itself (tls.crt, tls.key), which only
// the controller mounts: it signs the sidecars' workload certificates
// and the injection webhook's (Istio's istio-ca-secret).
const (
	ControllerSecret = "legate-controller-cert"
	ProxySecret      = "legate-proxy-cert"
	CASecret         = "legate-ca"
)

// Secrets returns the set as the three Kubernetes Secrets.
func (s *Set) Secrets(namespace string) []*corev1.Secret {
	mk := func(name string, cert, key []byte) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Labels: map[string]string{"app.kubernetes.io/name": "legate", "app.kubernetes.io/managed-by": "legate-certgen"}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key, "ca.crt": s.CA},
		}
	}
	ca := mk(CASecret, s.CA, s.CAKey)
	delete(ca.Data, "ca.crt")
	return []*corev1.Secret{mk(ControllerSecret, s.ControllerCert, s.ControllerKey), mk(ProxySecret, s.ProxyCert, s.ProxyKey), ca}
}

// WriteSecrets creates the Secrets in the namespace. Existing ones are
// kept (so a re-run Job does not rotate under running pods) unless
// overwrite is set; all must come from one set, so when only some exist
// (an install from before the CA Secret) all are written, and the
// controller and proxies reload the new files. It reports what it did.
func WriteSecrets(ctx context.Context, c kubernetes.Interface, namespace string, s *Set, overwrite bool) (string, error) {
	secrets := s.Secrets(namespace)
	api := c.CoreV1().Secrets(namespace)
	existing := 0
	for _, sec := range secrets {
		_, err := api.Get(ctx, sec.Name, metav1.GetOptions{})
		switch {
		case err == nil:
			existing++
		case !apierrors.IsNotFound(err):
			return "", fmt.Errorf("read Secret %s/%s: %w", namespace, sec.Name, err)
		}
	}
	if existing == len(secrets) && !overwrite {
		return "kept the existing Secrets (--overwrite replaces them)", nil
	}
	for _, sec := range secrets {
		_, err := api.Create(ctx, sec, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			_, err = api.Update(ctx, sec, metav1.UpdateOptions{})
		}
		if err != nil {
			return "", fmt.Errorf("write Secret %s/%s: %w", namespace, sec.Name, err)
		}
	}
	return fmt.Sprintf("wrote Secrets %s/%s, %s/%s and %s/%s", namespace, ControllerSecret, namespace, ProxySecret, namespace, CASecret), nil
}
