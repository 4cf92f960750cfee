// Package conformance runs every Envoy config of the shared conformance
// corpus (Envoy's own examples and the configs from the seed articles)
// through `legate proxy --mode validate`, starts the accepted ones, and
// keeps docs/compatibility.md in step with the outcome.
//
// Regenerate the document with: make docs
// (go test ./test/conformance -run TestCompatibility -update).
package conformance

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/legateproxy/legate/internal/server"
	"github.com/legateproxy/legate/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite docs/compatibility.md")

type outcome struct {
	dir, file string
	ok        bool
	kind      string // "bootstrap" or "resources"
	reason    string
	warnings  int
	served    string // what a request to the first listener returned
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// evaluate validates one file and, when accepted, serves it briefly.
// envDir stands for the directories the examples' containers have (the
// access-log directory /var/log/envoy): files that name them are read
// with the path moved under it, as ports are moved to 0.
var envDir string

func withEnv(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(data), "/var/log/envoy/") {
		return path
	}
	if envDir == "" {
		envDir = t.TempDir()
		os.MkdirAll(filepath.Join(envDir, "var/log/envoy"), 0o755)
	}
	dir := filepath.Join(envDir, filepath.Base(filepath.Dir(path)))
	os.MkdirAll(dir, 0o755)
	out := filepath.Join(dir, filepath.Base(path))
	os.WriteFile(out, []byte(strings.ReplaceAll(string(data), "/var/log/envoy/", envDir+"/var/log/envoy/")), 0o644)
	return out
}

func evaluate(t *testing.T, path string) outcome {
	o := outcome{dir: filepath.Base(filepath.Dir(path)), file: filepath.Base(path), kind: "bootstrap"}
	path = withEnv(t, path)
	if server.IsResourceFile(path) {
		o.kind = "resources"
		warns, err := server.ValidateResourceFile(path, quiet())
		o.warnings = len(warns)
		o.ok = err == nil
		if err != nil {
			o.reason = firstLine(err.Error())
		}
		return o
	}
	srv, err := server.Load(server.Options{ConfigPath: path, Log: quiet(), LogLevel: new(slog.LevelVar), DrainTime: time.Second})
	o.warnings = len(srv.Warnings)
	if err != nil {
		o.reason = firstLine(err.Error())
		return o
	}
	o.ok = true
	o.served = serve(t, path)
	return o
}

// serve starts an accepted config with every port moved to 0 (they are
// the tutorials' ports, such as 80 and 10000) and sends one request to the
// first HTTP listener.
func serve(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	y := regexp.MustCompile(`port_value:\s*\d+`).ReplaceAllString(string(data), "port_value: 0")
	// DNS servers named in configs (8.8.8.8) are never contacted: they
	// become loopback (port 0, so a lookup fails at once).
	y = regexp.MustCompile(`address:\s*"?8\.8\.[48]\.[48]"?`).ReplaceAllString(y, "address: 127.0.0.1")
	srv, err := server.Load(server.Options{ConfigYAML: y, Log: quiet(), LogLevel: new(slog.LevelVar), DrainTime: time.Second})
	if err != nil {
		return "load with port 0 failed: " + firstLine(err.Error())
	}
	if err := srv.Start(); err != nil {
		return "start failed: " + firstLine(err.Error())
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	names := make([]string, 0)
	for n := range srv.ListenerAddresses() {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "started (no listeners)"
	}
	addr := strings.Replace(srv.ListenerAddresses()[names[0]], "0.0.0.0", "127.0.0.1", 1)
	label := names[0]
	if label == "" {
		label = "the first listener"
	}
	c := &http.Client{Timeout: 3 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	if strings.Contains(y, "dynamic_forward_proxy") {
		// A forward proxy sends a request to the host it names: never to
		// this proxy itself (a loop) nor out of the machine.
		req.Host = "legate-conformance.invalid"
	}
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		return fmt.Sprintf("started; GET / on %s → %d", label, resp.StatusCode)
	}
	// A TLS listener: try each SNI the config names (and none), as a client
	// that does not verify the example's certificate would.
	snis := []string{""}
	for _, m := range serverNames.FindAllStringSubmatch(string(data), -1) {
		snis = append(snis, m[1])
	}
	for _, sni := range snis {
		tc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{ServerName: sni, InsecureSkipVerify: true},
		}}
		resp, err := tc.Get("https://" + addr + "/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if sni == "" {
			sni = "none"
		}
		return fmt.Sprintf("started; GET https:// on %s (SNI %s) → %d", label, sni, resp.StatusCode)
	}
	return "started; GET / on " + label + ": no HTTP response over TCP or TLS (a TCP proxy listener, or TLS requiring a client certificate)"
}

// serverNames finds the SNI names a config's filter chains match on.
var serverNames = regexp.MustCompile(`server_names:\s*(?:\[\s*|-\s*)?"?([A-Za-z0-9.*-]+)`)

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func corpus(t *testing.T) []string {
	shared := testutil.SharedDir(t)
	var files []string
	for _, pat := range []string{"conformance/envoy-examples/*.yaml", "conformance/seed-configs/seed00[0-3]*.yaml"} {
		m, err := filepath.Glob(filepath.Join(shared, pat))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 40 {
		t.Fatalf("conformance corpus too small (%d files): is ../shared complete?", len(files))
	}
	return files
}

// pathed matches an error that names a config path, such as
// "static_resources.listeners[0].filter_chains[0]...: unsupported @type".
var pathed = regexp.MustCompile(`^(\(root\)|[a-z_]+(\[[^\]]+\])?(\.[a-z_0-9]+(\[[^\]]+\])?)*)( \(line \d+\))?: `)

// certFiles generates the certificate files the Envoy examples read by
// relative path (certs/servercert.pem, ...), in a directory the test then
// runs from, as the examples' docker-compose setups provide them.
func certFiles(t *testing.T) string {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "certs"), 0o755)
	// The Lua example's container mounts lib/mylibrary.lua, which its
	// script requires.
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	os.WriteFile(filepath.Join(dir, "lib", "mylibrary.lua"), []byte("local M = {}\nfunction M.foobar() return \"bar\" end\nreturn M\n"), 0o644)
	ca := testutil.NewCA(t, "conformance-ca")
	os.WriteFile(filepath.Join(dir, "certs", "cacert.pem"), ca.CertPEM, 0o644)
	for _, name := range []string{"server", "client", "domain1", "domain2"} {
		l := ca.Issue(t, name, name+".example.com", "localhost")
		crt, key := name+"cert.pem", name+"key.pem"
		if strings.HasPrefix(name, "domain") {
			crt, key = name+".crt.pem", name+".key.pem"
		}
		os.WriteFile(filepath.Join(dir, "certs", crt), l.CertPEM, 0o644)
		os.WriteFile(filepath.Join(dir, "certs", key), l.KeyPEM, 0o600)
	}
	return dir
}

// envoyRejects are corpus files that Envoy itself refuses to load, with
// the reason: Legate must refuse them the same way (every other seed config
// must be accepted).
var envoyRejects = map[string]string{
	// Envoy's HttpStatusChecker: expected_statuses end is exclusive and
	// required; {start: 200} alone would never pass a health check.
	"seed000__envoy-v2-least-request-healthcheck.yaml": "Invalid http status range: expecting start < end, but found start=200 and end=0",
}

func TestCompatibility(t *testing.T) {
	var outs []outcome
	files := corpus(t)
	target := filepath.Join(testutil.RepoRoot(t), "docs", "compatibility.md")
	t.Chdir(certFiles(t))
	for _, f := range files {
		o := evaluate(t, f)
		outs = append(outs, o)
		if want, ok := envoyRejects[o.file]; ok {
			if o.ok || !strings.Contains(o.reason, want) {
				t.Errorf("%s: Envoy refuses it (%s), so must Legate: accepted %v, %s", o.file, want, o.ok, o.reason)
			}
			continue
		}
		if o.dir == "seed-configs" && !o.ok {
			t.Errorf("seed config %s must be accepted: %s", o.file, o.reason)
		}
		if !o.ok {
			if !pathed.MatchString(o.reason) {
				t.Errorf("%s: rejection does not name a config path: %q", o.file, o.reason)
			}
			if !strings.Contains(o.reason, "not supported") && !strings.Contains(o.reason, "unsupported") && !strings.Contains(o.reason, "not implemented by legate") {
				t.Errorf("%s: rejected for something other than an unsupported feature (a parse bug?): %s", o.file, o.reason)
			}
		}
		if o.ok && o.kind == "bootstrap" && strings.Contains(o.served, "failed") {
			t.Errorf("%s: accepted but does not start: %s", o.file, o.served)
		}
	}
	doc := render(outs)
	if *update {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	cur, err := os.ReadFile(target)
	if err != nil || string(cur) != doc {
		t.Fatalf("docs/compatibility.md is stale: run `make docs` and commit the result")
	}
}

// render writes the compatibility document.
func render(outs []outcome) string {
	var b strings.Builder
	ok := 0
	for _, o := range outs {
		if o.ok {
			ok++
		}
	}
	b.WriteString("# Compatibility with Envoy configurations\n\n")
	b.WriteString("Generated by `make docs` (test/conformance); the test fails when this file is stale.\n\n")
	b.WriteString("Every file of the shared conformance corpus — Envoy's own example configs and the configs of the\n")
	b.WriteString("seed articles — is checked with `legate proxy --mode validate`. Accepted bootstraps are then started\n")
	b.WriteString("(ports moved to 0) and sent one request. A rejected file names the first config path Legate does not\n")
	b.WriteString("implement; nothing is ignored silently.\n\n")
	fmt.Fprintf(&b, "**%d of %d accepted**, %d rejected.\n\n", ok, len(outs), len(outs)-ok)
	reasons := map[string]int{}
	for _, o := range outs {
		if !o.ok {
			reasons[reasonKey(o.reason)]++
		}
	}
	if len(reasons) > 0 {
		b.WriteString("## Why files are rejected\n\n| unsupported feature | files |\n|---|---|\n")
		keys := make([]string, 0, len(reasons))
		for k := range reasons {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if reasons[keys[i]] != reasons[keys[j]] {
				return reasons[keys[i]] > reasons[keys[j]]
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			fmt.Fprintf(&b, "| %s | %d |\n", k, reasons[k])
		}
		b.WriteString("\n")
	}
	b.WriteString("## Every file\n\n| file | outcome | detail |\n|---|---|---|\n")
	for _, o := range outs {
		res := "accepted"
		detail := o.served
		if o.kind == "resources" {
			detail = "xDS resource file: every resource compiles"
		}
		if !o.ok {
			res = "rejected"
			detail = o.reason
		}
		if o.warnings > 0 {
			detail += fmt.Sprintf(" (%d upgrade warnings)", o.warnings)
		}
		fmt.Fprintf(&b, "| %s/%s | %s | %s |\n", o.dir, o.file, res, strings.ReplaceAll(detail, "|", "\\|"))
	}
	return b.String()
}

var (
	typeRe  = regexp.MustCompile(`@type ([A-Za-z0-9_.]+) \(Envoy extension [a-z0-9_.]+\) is not implemented by legate`)
	fieldRe = regexp.MustCompile(`field ([A-Za-z0-9_.]+) is not supported`)
	whatRe  = regexp.MustCompile(`: (.+?) is not supported by legate`)
)

// reasonKey reduces a rejection to the feature it names.
func reasonKey(r string) string {
	if m := typeRe.FindStringSubmatch(r); m != nil {
		return "extension `" + m[1] + "`"
	}
	if m := fieldRe.FindStringSubmatch(r); m != nil {
		return "field `" + m[1] + "`"
	}
	if m := whatRe.FindStringSubmatch(r); m != nil {
		return m[1]
	}
	return r
}
