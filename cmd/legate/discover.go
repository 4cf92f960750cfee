package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/legateproxy/legate/internal/discover"
)

func init() {
	register("discover", "mirror a remote cluster's Services and endpoints into this one (Gimbal's Kubernetes discoverer)", runDiscover)
}

// backendNameFile is the key of the Secret Gimbal's documentation creates
// (kubectl create secret generic … --from-file=./config
// --from-literal=backend-name=NAME) that holds the backend's name; with
// the whole Secret mounted, it sits beside the kubeconfig file.
const backendNameFile = "backend-name"

// discoverFlags are legate discover's options, under the names of
// Gimbal's kubernetes-discoverer where it had the option.
type discoverFlags struct {
	backend, remoteKubeconfig, kubeconfig    string
	metricsAddress, prometheusPort, logLevel string
	resync                                   time.Duration
	workers, burst                           int
	qps                                      float64
	debug, endpoints                         bool
}

func newDiscoverFlags() (*flag.FlagSet, *discoverFlags) {
	fs := flag.NewFlagSet("legate discover", flag.ContinueOnError)
	f := &discoverFlags{}
	fs.StringVar(&f.backend, "backend-name", "", "name of the remote cluster (required, unique per discoverer: a DNS label starting with a letter); mirrors are named <backend-name>-<service>. Default: the file "+backendNameFile+" beside --discover-kubecfg-file (the Secret of Gimbal's docs mounted whole)")
	fs.StringVar(&f.remoteKubeconfig, "discover-kubecfg-file", "", "kubeconfig file of the remote cluster to discover (required)")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file of the local cluster the mirrors are written to (default: in-cluster config)")
	fs.StringVar(&f.kubeconfig, "gimbal-kubecfg-file", "", "Gimbal's name of --kubeconfig")
	fs.DurationVar(&f.resync, "resync-interval", 30*time.Minute, "how often every remote Service and local mirror is synced again (repairs hand-made changes); 0 never")
	fs.IntVar(&f.workers, "num-threads", 2, "how many Services are synced at once")
	fs.Float64Var(&f.qps, "gimbal-client-qps", 5, "queries per second to the local API server")
	fs.IntVar(&f.burst, "gimbal-client-burst", 10, "burst of queries to the local API server")
	fs.BoolVar(&f.endpoints, "write-endpoints", true, "also write each mirror's v1 Endpoints, as Gimbal did (EndpointSlices, which Legate and Contour read, are always written)")
	fs.StringVar(&f.metricsAddress, "metrics-address", "127.0.0.1:8090", "HOST:PORT serving /metrics, /healthz and /readyz (loopback unless asked: 0.0.0.0:8090 for Prometheus in a Pod)")
	fs.StringVar(&f.prometheusPort, "prometheus-listen-address", "", "Gimbal's metrics flag: a port (served on all interfaces, as Gimbal did) or HOST:PORT; replaces --metrics-address")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warning, error")
	fs.BoolVar(&f.debug, "debug", false, "Gimbal's flag: --log-level debug")
	return fs, f
}

func runDiscover(args []string) int {
	fs, f := newDiscoverFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "legate discover: unexpected arguments %q (all options are flags)\n", fs.Args())
		return 2
	}
	if f.debug {
		f.logLevel = "debug"
	}
	log, _, err := newLogger(f.logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate discover:", err)
		return 2
	}
	if err := f.resolve(log); err != nil {
		fmt.Fprintln(os.Stderr, "legate discover:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := f.run(ctx, log, nil); err != nil {
		fmt.Fprintln(os.Stderr, "legate discover:", err)
		return 1
	}
	return 0
}

// resolve checks the flags and fills in what they leave to defaults: the
// backend name from the mounted Secret, the metrics address from Gimbal's
// port flag.
func (f *discoverFlags) resolve(log *slog.Logger) error {
	if f.remoteKubeconfig == "" {
		return errors.New("--discover-kubecfg-file is required: the kubeconfig of the remote cluster (the \"config\" key of the Secret, mounted as a file)")
	}
	if f.backend == "" {
		p := filepath.Join(filepath.Dir(f.remoteKubeconfig), backendNameFile)
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("--backend-name is required (and %s could not be read: %w)", p, err)
		}
		f.backend = strings.TrimSpace(string(b))
		log.Info("read the backend name", "file", p, "backend", f.backend)
	}
	if err := discover.ValidateBackendName(f.backend); err != nil {
		return fmt.Errorf("--backend-name: %w", err)
	}
	if f.workers < 1 {
		return fmt.Errorf("--num-threads %d: use 1 or more", f.workers)
	}
	if f.resync < 0 {
		return fmt.Errorf("--resync-interval %v: use 0 (never) or a positive duration", f.resync)
	}
	if p := f.prometheusPort; p != "" {
		if n, err := strconv.Atoi(p); err == nil {
			if n < 0 || n > 65535 {
				return fmt.Errorf("--prometheus-listen-address %q: bad port", p)
			}
			f.metricsAddress = ":" + p
		} else {
			f.metricsAddress = p
		}
	}
	if _, _, err := splitHostPort(f.metricsAddress, "metrics-address"); err != nil {
		return err
	}
	return nil
}

// run mirrors until ctx ends. started, if set, gets the metrics address
// (for tests).
func (f *discoverFlags) run(ctx context.Context, log *slog.Logger, started func(metrics string)) error {
	rcfg, err := clientcmd.BuildConfigFromFlags("", f.remoteKubeconfig)
	if err != nil {
		return fmt.Errorf("--discover-kubecfg-file %s: %w", f.remoteKubeconfig, err)
	}
	remote, err := kubernetes.NewForConfig(rcfg)
	if err != nil {
		return fmt.Errorf("remote cluster client: %w", err)
	}
	lcfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	lcfg.QPS, lcfg.Burst = float32(f.qps), f.burst
	// The API server warns on every v1 Endpoints write (deprecated since
	// Kubernetes 1.33): once is enough.
	lcfg.WarningHandler = rest.NewWarningWriter(os.Stderr, rest.WarningWriterOptions{Deduplicate: true})
	local, err := kubernetes.NewForConfig(lcfg)
	if err != nil {
		return fmt.Errorf("local cluster client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d := &discover.Discoverer{Remote: remote, Local: local, Backend: f.backend, Log: log, Resync: f.resync,
		Workers: f.workers, Endpoints: f.endpoints, Metrics: discover.NewMetrics(reg, f.backend, version)}

	l, err := net.Listen("tcp", f.metricsAddress)
	if err != nil {
		return fmt.Errorf("metrics listener (--metrics-address): %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.Synced() {
			http.Error(w, "not ready: the remote and local caches have not synced yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer srv.Close()
	log.Info("discoverer started", "backend", f.backend, "remote", rcfg.Host, "local", lcfg.Host, "metrics", l.Addr().String(),
		"resync", f.resync, "workers", f.workers, "endpoints", f.endpoints)
	if started != nil {
		started(l.Addr().String())
	}
	return d.Run(ctx)
}
