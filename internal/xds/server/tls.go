package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// TLSFiles name the controller's xDS certificates: its serving
// certificate and key, and the CA that signs the proxies' client
// certificates. They are read again when they change (a rotated Secret
// mount), checked at most once a second.
type TLSFiles struct {
	CA, Cert, Key string
}

// certLoader holds the parsed files and reloads them when they change.
type certLoader struct {
	files TLSFiles

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cfg     *tls.Config
}

func newCertLoader(f TLSFiles) (*certLoader, error) {
	l := &certLoader{files: f}
	if _, err := l.config(); err != nil {
		return nil, err
	}
	return l, nil
}

// config returns the TLS config for the current files.
func (l *certLoader) config() (*tls.Config, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg != nil && time.Since(l.checked) < time.Second {
		return l.cfg, nil
	}
	l.checked = time.Now()
	stamp := ""
	for _, p := range []string{l.files.CA, l.files.Cert, l.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			if l.cfg != nil {
				return l.cfg, nil // keep serving with what was loaded
			}
			return nil, fmt.Errorf("xDS TLS: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	if stamp == l.stamp && l.cfg != nil {
		return l.cfg, nil
	}
	cert, err := tls.LoadX509KeyPair(l.files.Cert, l.files.Key)
	if err != nil {
		if l.cfg != nil {
			return l.cfg, nil
		}
		return nil, fmt.Errorf("xDS TLS certificate %s / %s: %w", l.files.Cert, l.files.Key, err)
	}
	caPEM, err := os.ReadFile(l.files.CA)
	if err != nil {
		return nil, fmt.Errorf("xDS TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		if l.cfg != nil {
			return l.cfg, nil
		}
		return nil, fmt.Errorf("xDS TLS CA %s: no PEM certificate in it", l.files.CA)
	}
	l.cfg = &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Every proxy must present a certificate the CA signed (Contour's
		// xDS mTLS); a connection without one gets nothing.
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2"},
	}
	l.stamp = stamp
	return l.cfg, nil
}

// rejectingCreds are gRPC's TLS credentials that report each failed
// handshake (no certificate, an unknown CA, plaintext) to onReject.
type rejectingCreds struct {
	credentials.TransportCredentials
	onReject func(remote net.Addr, err error)
}

func (c rejectingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	nc, ai, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.onReject(conn.RemoteAddr(), err)
	}
	return nc, ai, err
}

func (c rejectingCreds) Clone() credentials.TransportCredentials {
	return rejectingCreds{c.TransportCredentials.Clone(), c.onReject}
}

// serverCreds builds the xDS server's transport credentials.
func (s *Server) serverCreds(f TLSFiles) (credentials.TransportCredentials, error) {
	l, err := newCertLoader(f)
	if err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return l.config()
		},
	}
	return rejectingCreds{credentials.NewTLS(base), func(remote net.Addr, err error) {
		reason := "handshake"
		var rec tls.RecordHeaderError
		switch {
		case errors.As(err, &rec):
			reason = "not_tls"
		case errors.Is(err, context.DeadlineExceeded):
			reason = "timeout"
		}
		s.metrics.Rejected.WithLabelValues(reason).Inc()
		s.log.Warn("xDS client rejected: TLS handshake failed (proxies need a client certificate from the xDS CA)",
			"remote", remote.String(), "reason", reason, "error", err)
	}}, nil
}
