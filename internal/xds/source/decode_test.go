package source

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/legateproxy/legate/internal/stats"
	xdsclient "github.com/legateproxy/legate/internal/xds/client"
	"github.com/legateproxy/legate/internal/xds/resource"
)

// decodedHandler records the decoded updates it is given and the names of
// the updates refused before it (xdsclient.Rejecter).
type decodedHandler struct {
	updates  []map[string]*resource.Decoded
	rejected [][]string
}

func (h *decodedHandler) Update(_ string, res map[string]*resource.Decoded) error {
	h.updates = append(h.updates, res)
	return nil
}

func (h *decodedHandler) Rejected(names []string) { h.rejected = append(h.rejected, names) }

const (
	goodRoutes = `version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r1
- "@type": type.googleapis.com/envoy.service.discovery.v3.Resource
  name: r2
  resource:
    "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: r2
`
	// badRoutes has a route configuration that fails validation (a virtual
	// host with no domains) and one of the wrong type.
	badRoutes = `version_info: "2"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r1
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: bad
  virtual_hosts:
  - name: vh
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: c
`
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestFileDecodes: a watched file's resources reach the handler decoded
// (a Resource wrapper unwrapped); a file with a resource that fails is
// rejected before the handler, which as a Rejecter learns the names.
func TestFileDecodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rds.yaml")
	if err := os.WriteFile(path, []byte(goodRoutes), 0o644); err != nil {
		t.Fatal(err)
	}
	st := xdsclient.NewStats(stats.NewStore().Scope(""))
	h := &decodedHandler{}
	f := newFile(path, time.Hour, quietLog())
	f.Subscribe(xdsclient.RouteType, nil, h, st)
	f.check()
	if len(h.updates) != 1 || h.updates[0]["r1"] == nil || h.updates[0]["r2"] == nil {
		t.Fatalf("good file: updates %v", h.updates)
	}
	if _, err := resource.As[*routev3.RouteConfiguration](h.updates[0]["r2"]); err != nil {
		t.Errorf("r2: %v", err)
	}
	// A new identity (size) makes check read the file again.
	if err := os.WriteFile(path, []byte(badRoutes), 0o644); err != nil {
		t.Fatal(err)
	}
	f.check()
	if len(h.updates) != 1 {
		t.Errorf("the handler saw a rejected file")
	}
	if len(h.rejected) != 1 || !slices.Equal(h.rejected[0], []string{"bad", "r1"}) {
		t.Errorf("rejected %v, want [[bad r1]]", h.rejected)
	}
	if st.Rejected.Value() != 1 || st.Success.Value() != 1 {
		t.Errorf("update_rejected %d update_success %d, want 1 and 1", st.Rejected.Value(), st.Success.Value())
	}
}

// restClusters answers every REST poll with one body.
type restClusters struct{ body string }

func (c restClusters) DialCluster(context.Context, string) (net.Conn, error) {
	return nil, net.ErrClosed
}

func (c restClusters) Do(_ context.Context, _ string, req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(c.body)), Request: req}, nil
}

// TestRESTDecodes: a REST poll's resources reach the handler decoded; a
// response with a resource that fails is rejected before the handler and
// the version is not taken.
func TestRESTDecodes(t *testing.T) {
	m := New(Options{Stats: stats.NewStore(), Log: quietLog(), Clusters: restClusters{goodRoutes},
		StaticCluster: func(n string) bool { return n == "xds" }})
	r := m.restClient(restSource(nil).GetApiConfigSource(), xdsclient.RouteType)
	st := xdsclient.NewStats(stats.NewStore().Scope(""))
	h := &decodedHandler{}
	r.Subscribe(xdsclient.RouteType, nil, h, st)
	r.fetch(context.Background())
	if len(h.updates) != 1 || h.updates[0]["r1"] == nil || h.updates[0]["r2"] == nil || r.version != "1" {
		t.Fatalf("good poll: updates %v, version %q", h.updates, r.version)
	}
	r.clusters = restClusters{badRoutes}
	r.fetch(context.Background())
	if len(h.updates) != 1 || r.version != "1" {
		t.Errorf("a rejected poll was applied: %d updates, version %q", len(h.updates), r.version)
	}
	if len(h.rejected) != 1 || !slices.Equal(h.rejected[0], []string{"bad", "r1"}) {
		t.Errorf("rejected %v, want [[bad r1]]", h.rejected)
	}
	if st.Rejected.Value() != 1 {
		t.Errorf("update_rejected = %d, want 1", st.Rejected.Value())
	}
}
