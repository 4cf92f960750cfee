package controller

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/testutil"
)

// metricValue scrapes the controller's /metrics for one series (as
// Prometheus writes it: name{label="value"}); -1 when absent.
func metricValue(t *testing.T, x *cp, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + x.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return -1
}

// TestManifestsDropped: manifests mode logs every object it drops (kind,
// name, namespace, file, reason) and counts it in
// legate_controller_manifest_objects_dropped_total, once per load — polls
// that find the folder unchanged log nothing —, and a document that does
// not parse is logged and counted while the last good objects stay.
func TestManifestsDropped(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a-extra.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {namespace: shop}
spec: {virtualhost: {fqdn: nameless.example.com}}
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop}
spec: {ports: [{port: 80}]}
`)
	app := `apiVersion: v1
kind: Service
metadata: {name: s, namespace: shop}
spec: {ports: [{port: 81}]}
---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: good, namespace: shop}
spec:
  virtualhost: {fqdn: good.example.com}
  routes: [{directResponsePolicy: {statusCode: 200}}]
`
	writeFile(t, dir, "b-app.yaml", app)
	st := source.NewStore()
	x := startCP(t, st, cpOptions{})
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logs, testWriter{t}), nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := source.ManifestWatch{Dir: dir, Log: log, Every: 20 * time.Millisecond, Metrics: source.NewManifestMetrics(x.reg)}
	if err := source.WatchManifestsWith(ctx, w, st); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(dir, "a-extra.yaml")
	wantLines := []string{
		"kind=Deployment name=web namespace=shop file=" + extra + " document=1 reason=unknown_kind",
		"kind=HTTPProxy name=\"\" namespace=shop file=" + extra + " document=2 reason=no_name",
		"kind=Service name=s namespace=shop file=" + extra + " document=3 reason=duplicate",
	}
	dropped := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "manifest object dropped") {
				out = append(out, l)
			}
		}
		return out
	}
	check := func(loads int) {
		t.Helper()
		lines := dropped()
		if len(lines) != loads*len(wantLines) {
			t.Errorf("%d drop lines after %d loads, want %d:\n%s", len(lines), loads, loads*len(wantLines), strings.Join(lines, "\n"))
		}
		for _, want := range wantLines {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("no log line with %q", want)
			}
		}
		for _, r := range []string{"unknown_kind", "no_name", "duplicate"} {
			if v := metricValue(t, x, `legate_controller_manifest_objects_dropped_total{reason="`+r+`"}`); v != float64(loads) {
				t.Errorf("dropped %s = %v after %d loads, want %d", r, v, loads, loads)
			}
		}
		if v := metricValue(t, x, `legate_controller_manifest_objects_dropped_total{reason="parse_error"}`); v != 0 {
			t.Errorf("dropped parse_error = %v, want 0", v)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		m := x.c.Model()
		return m != nil && m.Proxies[types.NamespacedName{Namespace: "shop", Name: "good"}] != nil
	}, "the good objects never loaded")
	check(1)

	// A change reloads the folder: its drops are logged and counted
	// again, once (the polls between found it unchanged).
	writeFile(t, dir, "b-app.yaml", app+`---
apiVersion: projectcontour.io/v1
kind: HTTPProxy
metadata: {name: more, namespace: shop}
spec:
  virtualhost: {fqdn: more.example.com}
  routes: [{directResponsePolicy: {statusCode: 200}}]
`)
	testutil.Eventually(t, 10*time.Second, func() bool {
		m := x.c.Model()
		return m != nil && m.Proxies[types.NamespacedName{Namespace: "shop", Name: "more"}] != nil
	}, "the change never loaded")
	check(2)

	// A document that does not parse: logged with its file, counted,
	// and the folder keeps its last good objects.
	writeFile(t, dir, "c-broken.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [oops\n")
	testutil.Eventually(t, 10*time.Second, func() bool {
		return metricValue(t, x, `legate_controller_manifest_objects_dropped_total{reason="parse_error"}`) == 1
	}, "the parse error was never counted")
	var line string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "does not parse") {
			line = l
		}
	}
	if !strings.Contains(line, "file="+filepath.Join(dir, "c-broken.yaml")) || !strings.Contains(line, "reason=parse_error") || !strings.Contains(line, "document=1") {
		t.Errorf("parse error log line = %q, want its file, document and reason", line)
	}
	if m := x.c.Model(); m.Proxies[types.NamespacedName{Namespace: "shop", Name: "more"}] == nil {
		t.Error("the last good objects were not kept")
	}
}
