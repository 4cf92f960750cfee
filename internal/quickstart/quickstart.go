// Package quickstart holds the embedded demo: a bootstrap that proxies
// :10000 to two built-in backends, and the backends themselves.
package quickstart

import (
	_ "embed"
	"fmt"
	"net"
	"net/http"
	"os"
)

// Config is the demo bootstrap (Envoy v3 YAML).
//
//go:embed quickstart.yaml
var Config string

// BackendPorts are the demo backends' ports on 127.0.0.1.
var BackendPorts = []int{18081, 18082}

// StartBackends starts the demo backends and returns a function that stops
// them. Each answers with its name, so alternating responses show load
// balancing at work.
func StartBackends() (func(), error) {
	var servers []*http.Server
	host, _ := os.Hostname()
	for i, port := range BackendPorts {
		name := fmt.Sprintf("backend-%d", i+1)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return nil, fmt.Errorf("demo backend %s: %w", name, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("content-type", "text/plain")
			fmt.Fprintf(w, "Hello from %s (%s:%d) — you asked for %s %s via %s\n", name, host, port, r.Method, r.URL.RequestURI(), r.Header.Get("x-forwarded-proto"))
		})
		s := &http.Server{Handler: mux}
		servers = append(servers, s)
		go s.Serve(ln)
	}
	return func() {
		for _, s := range servers {
			s.Close()
		}
	}, nil
}
