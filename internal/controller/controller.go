// Package controller is Legate's control plane: it reads Kubernetes
// objects (from a cluster or a folder of manifests) into a store, builds
// the model (package model) after a short debounce, renders it as Envoy
// resources (package xdsgen), serves them over xDS (internal/xds/server)
// and writes status back (package status).
//
//	source.Store ─▶ model.Build ─▶ xdsgen.Build/Endpoints ─▶ xds server ─▶ proxies
//	                     └──────────▶ status.Writer ─▶ Kubernetes
//
// A change of EndpointSlices only re-renders endpoints: routes, clusters
// and listeners are reused as they are.
//
// Sidecars (nodes with a mesh node id, sidecar.go) get a snapshot each,
// built when their first stream asks and rebuilt after every change.
package controller

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"

	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/mesh"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

// Options configure a controller.
type Options struct {
	Model model.Options
	XDS   xdsgen.Options
	// Sidecar configures the resources of mesh sidecars.
	Sidecar xdsgen.SidecarOptions
	// Debounce is the quiet time after a change before a rebuild (100 ms);
	// MaxDelay bounds the wait under continuous churn (500 ms).
	Debounce, MaxDelay time.Duration
	// Status, when set, writes status back (the leader only: see IsLeader).
	Status *status.Writer
	// IsLeader reports whether this replica may write status (nil: always).
	IsLeader func() bool
	Log      *slog.Logger
	Registry *prometheus.Registry
	// BuildInfo labels contour_build_info.
	BuildInfo BuildInfo
}

// Controller turns store changes into xDS snapshots.
type Controller struct {
	opt   Options
	store *source.Store
	xds   *xdsserver.Server

	builds     prometheus.Counter
	buildTime  prometheus.Histogram
	proxies    *prometheus.GaugeVec
	edsUpdates prometheus.Counter
	contour    *contourMetrics // Contour's names (metrics.go)

	mu      sync.Mutex
	objs    *source.Objects
	model   *model.Model
	res     *xdsgen.Resources
	ready   atomic.Bool
	version atomic.Int64

	// sideMu serializes sidecar builds, so that a later build (from
	// newer objects) is always Set last; sidecars (under mu) holds each
	// sidecar's last resources for /debug/xds.
	sideMu       sync.Mutex
	sidecars     map[string]*xdsgen.SidecarResources
	sidecarBuild prometheus.Counter
}

// New returns a controller reading st and serving through xs.
func New(st *source.Store, xs *xdsserver.Server, opt Options) *Controller {
	if opt.Debounce == 0 {
		opt.Debounce = 100 * time.Millisecond
	}
	if opt.MaxDelay == 0 {
		opt.MaxDelay = 500 * time.Millisecond
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	c := &Controller{opt: opt, store: st, xds: xs,
		builds:     prometheus.NewCounter(prometheus.CounterOpts{Name: "legate_controller_builds_total", Help: "Full model builds."}),
		edsUpdates: prometheus.NewCounter(prometheus.CounterOpts{Name: "legate_controller_endpoint_updates_total", Help: "Endpoint-only updates (no model rebuild)."}),
		buildTime:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "legate_controller_build_seconds", Help: "Time to build the model and xDS resources.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		proxies:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "legate_controller_httpproxies", Help: "HTTPProxies by status."}, []string{"status"}),
	}
	c.contour = newContourMetrics(opt.BuildInfo)
	c.sidecars = map[string]*xdsgen.SidecarResources{}
	c.sidecarBuild = prometheus.NewCounter(prometheus.CounterOpts{Name: "legate_controller_sidecar_builds_total", Help: "Sidecar snapshots built (one per sidecar per change)."})
	if opt.Registry != nil {
		opt.Registry.MustRegister(c.builds, c.edsUpdates, c.buildTime, c.proxies, c.sidecarBuild)
		opt.Registry.MustRegister(c.contour.collectors()...)
	}
	xs.SetSidecarHooks(xdsserver.SidecarHooks{Requested: c.sidecarRequested, Authorize: c.authorizeSidecar})
	return c
}

// Ready reports whether the first snapshot has been served.
func (c *Controller) Ready() bool { return c.ready.Load() }

// Model returns the last built model (nil before the first build).
func (c *Controller) Model() *model.Model {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.model
}

// Run builds after every batch of changes until ctx ends. It builds once
// at start, so an empty cluster still gets its (empty) listeners.
func (c *Controller) Run(ctx context.Context) {
	c.rebuild(ctx, source.KindConfig)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.store.Changed():
		}
		first := time.Now()
		quiet := time.NewTimer(c.opt.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				quiet.Stop()
				return
			case <-c.store.Changed():
				if time.Since(first) >= c.opt.MaxDelay {
					break wait
				}
				quiet.Reset(min(c.opt.Debounce, c.opt.MaxDelay-time.Since(first)))
			case <-quiet.C:
				break wait
			}
		}
		quiet.Stop()
		c.rebuild(ctx, source.KindNone)
	}
}

// rebuild takes the store's pending changes and serves the result.
func (c *Controller) rebuild(ctx context.Context, force source.Kind) {
	objs, kind := c.store.Take()
	kind = max(kind, force)
	if kind == source.KindNone {
		return
	}
	start := time.Now()
	c.mu.Lock()
	m, res := c.model, c.res
	var modelTime time.Duration
	full := kind == source.KindConfig || m == nil
	if full {
		m = model.Build(objs, c.opt.Model)
		modelTime = time.Since(start)
		res = xdsgen.Build(m, c.opt.XDS)
		c.builds.Inc()
	} else {
		c.edsUpdates.Inc()
	}
	eds := xdsgen.Endpoints(m, objs)
	c.objs, c.model, c.res = objs, m, res
	c.mu.Unlock()

	proxyRes := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: asResources(res.Listeners),
		resourcev3.RouteType:    asResources(res.Routes),
		resourcev3.ClusterType:  asResources(res.Clusters),
		resourcev3.EndpointType: asResources(eds),
		resourcev3.SecretType:   asResources(res.Secrets),
	}
	// Proxyless gRPC clients get api listeners and the default cluster of
	// every Service port; nothing they would NACK.
	proxyless := map[string]bool{}
	for _, sp := range m.ServicePorts {
		proxyless[sp.Cluster.Name] = true
	}
	var plClusters []types.Resource
	for _, cl := range res.Clusters {
		if proxyless[cl.Name] {
			plClusters = append(plClusters, cl)
		}
	}
	grpcRes := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: asResources(res.Proxyless),
		resourcev3.RouteType:    nil,
		resourcev3.ClusterType:  plClusters,
		resourcev3.EndpointType: asResources(eds),
	}
	if err := c.xds.Set(ctx, xdsserver.GroupProxy, proxyRes); err != nil {
		c.opt.Log.Error("xDS snapshot rejected", "error", err)
		return
	}
	if err := c.xds.Set(ctx, xdsserver.GroupProxyless, grpcRes); err != nil {
		c.opt.Log.Error("xDS snapshot rejected", "error", err)
		return
	}
	c.buildTime.Observe(time.Since(start).Seconds())
	if full {
		c.contour.rebuilt(start, modelTime, time.Since(start)-modelTime, objs)
	}
	c.version.Add(1)
	c.ready.Store(true)
	c.rebuildSidecars(ctx)
	if kind == source.KindConfig {
		counts := map[string]int{model.StatusValid: 0, model.StatusInvalid: 0, model.StatusOrphaned: 0}
		for _, st := range m.Proxies {
			counts[st.Current()]++
			if st.Current() != model.StatusValid {
				c.opt.Log.Debug("HTTPProxy not valid", "httpproxy", st.Object.String(), "status", st.Current(), "description", st.Description())
			}
		}
		for k, v := range counts {
			c.proxies.WithLabelValues(k).Set(float64(v))
		}
		if c.opt.IsLeader == nil || c.opt.IsLeader() {
			c.contour.setProxies(m)
		} else {
			c.contour.setProxies(nil)
		}
		c.opt.Log.Info("configuration built", "httpproxies", len(m.Proxies), "clusters", len(res.Clusters), "listeners", len(res.Listeners), "duration", time.Since(start).Round(time.Microsecond))
		if c.opt.Status != nil && (c.opt.IsLeader == nil || c.opt.IsLeader()) {
			if _, err := c.opt.Status.Write(ctx, m, objs); err != nil {
				// Retry soon: a conflict or a transient API error.
				go func() {
					time.Sleep(time.Second)
					c.store.Touch()
				}()
			}
		}
	}
}

func asResources[T types.Resource](in []T) []types.Resource {
	out := make([]types.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

// Handler serves /metrics, /healthz, /readyz and the debug endpoints:
// /debug/model (statuses and virtual hosts) and /debug/xds?group=proxy|grpc|<sidecar node id>
// (the resources each group of clients, or one sidecar, receives, as JSON).
func (c *Controller) Handler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	if reg != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !c.Ready() {
			http.Error(w, "not ready: no configuration built yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/debug/model", func(w http.ResponseWriter, _ *http.Request) {
		m := c.Model()
		if m == nil {
			http.Error(w, "not built yet", http.StatusServiceUnavailable)
			return
		}
		type proxy struct {
			Name, Status, Description, FQDN string
			Errors, Warnings                []model.Problem
		}
		out := struct {
			Proxies   []proxy
			Insecure  []string
			Secure    []string
			Clusters  []string
			Ingresses []*model.IngressStatus
			// ExtensionServices: valid, or not and why (with --manifests
			// there is no status to read them from).
			ExtensionServices []*model.ExtensionStatus
			NACKs             map[string]string
		}{NACKs: c.xds.NACKs()}
		for _, st := range m.Proxies {
			out.Proxies = append(out.Proxies, proxy{st.Object.String(), st.Current(), st.Description(), st.FQDN, st.Errors, st.Warnings})
		}
		sort.Slice(out.Proxies, func(i, j int) bool { return out.Proxies[i].Name < out.Proxies[j].Name })
		for _, st := range m.Extensions {
			out.ExtensionServices = append(out.ExtensionServices, st)
		}
		sort.Slice(out.ExtensionServices, func(i, j int) bool {
			return out.ExtensionServices[i].Object.String() < out.ExtensionServices[j].Object.String()
		})
		for n := range m.Insecure {
			out.Insecure = append(out.Insecure, n)
		}
		for n := range m.Secure {
			out.Secure = append(out.Secure, n)
		}
		for n := range m.Clusters {
			out.Clusters = append(out.Clusters, n)
		}
		for _, st := range m.Ingresses {
			out.Ingresses = append(out.Ingresses, st)
		}
		sort.Strings(out.Insecure)
		sort.Strings(out.Secure)
		sort.Strings(out.Clusters)
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	})
	mux.HandleFunc("/debug/xds", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		res, objs, m := c.res, c.objs, c.model
		c.mu.Unlock()
		if res == nil {
			http.Error(w, "not built yet", http.StatusServiceUnavailable)
			return
		}
		var msgs []proto.Message
		group := r.URL.Query().Get("group")
		if _, ok := mesh.ParseNodeID(group); ok {
			c.mu.Lock()
			sr := c.sidecars[group]
			c.mu.Unlock()
			if sr == nil {
				http.Error(w, "no snapshot for sidecar "+group+" (it has no stream, or was forgotten)", http.StatusNotFound)
				return
			}
			writeMessages(w, sidecarMessages(sr))
			return
		}
		if group == xdsserver.GroupProxyless {
			for _, l := range res.Proxyless {
				msgs = append(msgs, l)
			}
		} else {
			for _, l := range res.Listeners {
				msgs = append(msgs, l)
			}
			for _, x := range res.Routes {
				msgs = append(msgs, x)
			}
			for _, x := range res.Clusters {
				msgs = append(msgs, x)
			}
		}
		for _, x := range xdsgen.Endpoints(m, objs) {
			msgs = append(msgs, x)
		}
		writeMessages(w, msgs)
	})
	return mux
}

// ServeHTTP runs Handler on addr until ctx ends.
func (c *Controller) ServeHTTP(ctx context.Context, l net.Listener, reg *prometheus.Registry) error {
	srv := &http.Server{Handler: c.Handler(reg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	err := srv.Serve(l)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}
