package nodeagent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// kubeletPort is where the agent serves the part of the kubelet API the
// API server proxies for `kubectl logs` (pods/log): the Node's
// daemonEndpoints.kubeletEndpoint.
const kubeletPort = 10250

// serveKubeletAPI serves /containerLogs/{namespace}/{pod}/{container} and
// /healthz over TLS on the node's address (a self-signed certificate: the
// API server does not verify kubelets without --kubelet-certificate-authority)
// until the agent stops. Requests are not authenticated: the address is
// only reachable inside the test's network namespace.
func (a *Agent) serveKubeletAPI() error {
	cert, err := selfSignedCert(a.pool.node)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(a.pool.node.String(), strconv.Itoa(kubeletPort)))
	if err != nil {
		return fmt.Errorf("listen for the kubelet API: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/containerLogs/", a.serveLogs)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, fmt.Sprintf("%s is not served by the kubeenv node agent (only /containerLogs and /healthz are)", r.URL.Path), http.StatusNotFound)
	})
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 10 * time.Second}
	go srv.ServeTLS(l, "", "")
	go func() {
		<-a.ctx.Done()
		srv.Close()
	}()
	return nil
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/containerLogs/"), "/")
	if len(parts) != 3 {
		http.Error(w, "want /containerLogs/{namespace}/{pod}/{container}", http.StatusBadRequest)
		return
	}
	ns, pod, ctr := parts[0], parts[1], parts[2]
	v := r.URL.Query()
	q := logQuery{tail: -1, previous: v.Get("previous") == "true", timestamps: v.Get("timestamps") == "true"}
	if s := v.Get("tailLines"); s != "" {
		q.tail, _ = strconv.Atoi(s)
	}
	if s := v.Get("limitBytes"); s != "" {
		q.limit, _ = strconv.ParseInt(s, 10, 64)
	}
	if s := v.Get("sinceTime"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(w, "sinceTime: "+err.Error(), http.StatusBadRequest)
			return
		}
		q.since = t
	}
	if s := v.Get("sinceSeconds"); s != "" {
		n, _ := strconv.Atoi(s)
		q.since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	w.Header().Set("Content-Type", "text/plain")
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	stop := make(chan struct{})
	go func() {
		select {
		case <-r.Context().Done():
		case <-a.ctx.Done():
		}
		close(stop)
	}()
	if err := a.copyLog(w, flush, ns, pod, ctr, q, v.Get("follow") == "true", stop); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
	}
}

// selfSignedCert makes the kubelet API's serving certificate.
func selfSignedCert(ip interface{ String() string }) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	addr := net.ParseIP(ip.String())
	if addr == nil {
		return tls.Certificate{}, errors.New("node address is not an IP")
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "kubeenv-kubelet"},
		IPAddresses:  []net.IP{addr},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
