package features_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/legateproxy/legate/internal/testutil"
)

// BenchmarkFilterChain drives one keep-alive HTTP/1.1 connection through a
// proxy with each filter chain of bench/cmd/filtercost (router only, cors,
// rbac) to a raw loopback upstream, in process: ns/op and allocs/op are
// the whole exchange (client, proxy and upstream), so the difference
// between variants is what the filter costs the proxy, with far less
// noise than wrk. With -cpuprofile it shows where. Not a test: timing
// belongs here only.
func BenchmarkFilterChain(b *testing.B) {
	up := startRawUpstream(b, 100)
	var pols strings.Builder
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&pols, `policy-%d: {permissions: [{and_rules: {rules: [{header: {name: x-tenant, string_match: {exact: tenant-%d}}}, {url_path: {path: {prefix: /api/v%d/}}}]}}], principals: [{any: true}]}, `, i, i, i)
	}
	router := `{name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}`
	for _, v := range []struct{ name, filters, vhostExtra string }{
		{"router", "", ""},
		{"cors", `{name: envoy.filters.http.cors, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}, `,
			`, typed_per_filter_config: {envoy.filters.http.cors: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy, allow_origin_string_match: [{exact: "https://other.example"}, {suffix: ".internal.example"}, {exact: "https://app.example"}], allow_methods: "GET, POST, PUT", allow_headers: "authorization, content-type, x-tenant", expose_headers: "x-request-id", max_age: "600", allow_credentials: true}}`},
		{"rbac", `{name: envoy.filters.http.rbac, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC, rules: {action: ALLOW, policies: {` + pols.String() + `}}}}, `, ""},
	} {
		b.Run(v.name, func(b *testing.B) {
			p := testutil.StartProxy(b, cfg{
				hcm:      "http_filters: [" + v.filters + router + "]",
				vhosts:   fmt.Sprintf("[{name: all, domains: ['*'], routes: [{match: {prefix: /}, route: {cluster: up}}]%s}]", v.vhostExtra),
				clusters: "[" + staticCluster("up", "", up) + "]",
			}.String(), nil)
			c, err := net.Dial("tcp", p.Addr("http"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /api/v5/items HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: bench\r\nAccept: */*\r\nOrigin: https://app.example\r\nx-tenant: tenant-5\r\nAccept-Encoding: gzip\r\n\r\n")
			r := bufio.NewReaderSize(c, 16<<10)
			exchange := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if code := readResponse(b, r); code != 200 {
					b.Fatalf("status %d", code)
				}
			}
			exchange()
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				exchange()
			}
			b.StopTimer()
			// The process's CPU (client, proxy and upstream) per exchange:
			// unlike ns/op, it leaves out the time spent waiting for wake-ups.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the user and system CPU time of this process, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// readResponse reads one HTTP/1.1 response with a Content-Length body
// and returns its status.
func readResponse(b *testing.B, r *bufio.Reader) int {
	line, err := r.ReadSlice('\n')
	if err != nil {
		b.Fatal(err)
	}
	code, _ := strconv.Atoi(string(line[9:12]))
	n := 0
	for {
		l, err := r.ReadSlice('\n')
		if err != nil {
			b.Fatal(err)
		}
		if len(l) <= 2 {
			break
		}
		if len(l) > 16 && bytes.EqualFold(l[:15], []byte("content-length:")) {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(l[15:])))
		}
	}
	if _, err := r.Discard(n); err != nil {
		b.Fatal(err)
	}
	return code
}

// startRawUpstream answers every request on a keep-alive connection with
// a fixed 200 of size bytes, without net/http: the benchmark measures
// the proxy, not the upstream.
func startRawUpstream(b *testing.B, size int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", size, strings.Repeat("x", size)))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 16<<10)
				for {
					// GET requests: the head ends the request.
					for {
						l, err := r.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(l) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
