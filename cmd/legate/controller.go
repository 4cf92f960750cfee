package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/contourconfig"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
)

func init() {
	register("controller", "run the control plane: Kubernetes (or a manifests folder) → xDS", runController)
	register("bootstrap", "print a proxy bootstrap that points at a controller", runBootstrap)
}

// controllerFlags are legate controller's options (Contour's names where
// Contour has the same option).
type controllerFlags struct {
	kubeconfig, manifests, xdsAddress, httpAddress, ingressClass, rootNamespaces string
	envoyHTTPAddress, statusAddress, fallbackCert, watchNamespace, logLevel      string
	leaderElect                                                                  bool
	leaderNamespace, leaderName                                                  string
	httpPort, httpsPort                                                          int
	// xDS TLS: the serving certificate and key, and the CA of the
	// proxies' client certificates; insecure serves plaintext.
	xdsCA, xdsCert, xdsKey, stateDir string
	insecure                         bool
	ca                               caFlags     // controller_ca.go
	inject                           injectFlags // controller_inject.go
	mesh                             meshFlags   // controller_mesh.go
	// Contour's configuration file (--config-path) and the flags Contour
	// has for what it also configures: the access log files and format,
	// and the PROXY protocol.
	configPath, httpAccessLog, httpsAccessLog, accessLogFormat string
	// contourConfigName is a ContourConfiguration (--contour-config-name)
	// read instead of the file.
	contourConfigName string
	useProxyProtocol  bool
	contour           *contourconfig.Config
	// Gateway API: the GatewayClass controllerName, the pool of Gateway
	// addresses and whether listener ports are bound as they are.
	gatewayController, gatewayAddressPool string
	gatewayListenerPorts                  bool
}

func runController(args []string) int {
	fs, f := newControllerFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	log, _, err := newLogger(f.logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate controller:", err)
		return 2
	}
	level := f.logLevel
	if err := f.loadConfigFile(fs); err != nil {
		fmt.Fprintln(os.Stderr, "legate controller:", err)
		return 2
	}
	if err := f.loadContourConfiguration(context.Background(), fs, log); err != nil {
		fmt.Fprintln(os.Stderr, "legate controller:", err)
		return 2
	}
	if f.logLevel != level {
		// debug: true in the file.
		if log, _, err = newLogger(f.logLevel, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "legate controller:", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := f.run(ctx, log, nil); err != nil {
		fmt.Fprintln(os.Stderr, "legate controller:", err)
		return 1
	}
	return 0
}

// newControllerFlags is legate controller's flag set.
func newControllerFlags() (*flag.FlagSet, *controllerFlags) {
	fs := flag.NewFlagSet("legate controller", flag.ContinueOnError)
	f := &controllerFlags{}
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config when running in a Pod)")
	fs.StringVar(&f.manifests, "manifests", "", "read objects from YAML files in this folder instead of Kubernetes, and watch it")
	fs.StringVar(&f.xdsAddress, "xds-address", "0.0.0.0:8001", "xDS gRPC listen address")
	fs.StringVar(&f.httpAddress, "http-address", "0.0.0.0:8000", "metrics, health and debug HTTP address")
	fs.IntVar(&f.httpPort, "http-port", 8080, "port of the HTTP listener programmed into proxies")
	fs.IntVar(&f.httpsPort, "https-port", 8443, "port of the HTTPS listener programmed into proxies")
	fs.StringVar(&f.envoyHTTPAddress, "envoy-listen-address", "0.0.0.0", "address the proxies' listeners bind")
	fs.StringVar(&f.ingressClass, "ingress-class", "", "serve only Ingresses/HTTPProxies of this class (default: no class, \"legate\" or \"contour\")")
	fs.StringVar(&f.rootNamespaces, "root-namespaces", "", "comma-separated namespaces where root HTTPProxies are allowed (default: all)")
	fs.StringVar(&f.statusAddress, "ingress-status-address", "", "address written to Ingress and HTTPProxy status.loadBalancer")
	fs.StringVar(&f.fallbackCert, "fallback-certificate", "", "namespace/name of the Secret served to clients without SNI by virtual hosts that enable it")
	fs.StringVar(&f.watchNamespace, "watch-namespace", "", "watch only this namespace (default: all)")
	fs.BoolVar(&f.leaderElect, "leader-elect", false, "elect a leader among replicas; only the leader writes status (all serve xDS)")
	fs.StringVar(&f.leaderNamespace, "leader-election-namespace", "", "namespace of the leader election Lease (default: $POD_NAMESPACE or legate-system)")
	fs.StringVar(&f.leaderName, "leader-election-name", "legate-controller", "name of the leader election Lease")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warning, error")
	for _, n := range []string{"xds-ca-file", "contour-cafile"} {
		fs.StringVar(&f.xdsCA, n, "", "CA file that signs the proxies' client certificates (xDS mTLS)")
	}
	for _, n := range []string{"xds-cert-file", "contour-cert-file"} {
		fs.StringVar(&f.xdsCert, n, "", "the controller's xDS serving certificate file")
	}
	for _, n := range []string{"xds-key-file", "contour-key-file"} {
		fs.StringVar(&f.xdsKey, n, "", "the controller's xDS serving key file")
	}
	fs.StringVar(&f.stateDir, "state-dir", "", "where certificates are created when no --xds-*-file is given (default $LEGATE_STATE_DIR, $XDG_STATE_HOME/legate or ~/.local/state/legate)")
	f.ca.register(fs)
	f.inject.register(fs)
	f.mesh.register(fs)
	fs.BoolVar(&f.insecure, "insecure", false, "serve xDS in plaintext without client authentication (any client gets every resource, private keys included)")
	fs.StringVar(&f.configPath, "config-path", "", "Contour's configuration file (contour.yaml from the ConfigMap \"contour\"); flags given explicitly win over it")
	fs.StringVar(&f.contourConfigName, "contour-config-name", "", "read Contour's configuration from this ContourConfiguration in the controller's namespace ($CONTOUR_NAMESPACE, $POD_NAMESPACE or legate-system) once at start-up, instead of --config-path; its status says whether it was accepted")
	fs.StringVar(&f.httpAccessLog, "envoy-http-access-log", "/dev/stdout", "access log file of the proxies' HTTP listener")
	fs.StringVar(&f.httpsAccessLog, "envoy-https-access-log", "/dev/stdout", "access log file of the proxies' HTTPS listener")
	fs.StringVar(&f.accessLogFormat, "accesslog-format", "", "access log format: envoy or json (default: the file's accesslog-format, else envoy)")
	fs.BoolVar(&f.useProxyProtocol, "use-proxy-protocol", false, "expect the PROXY protocol on the proxies' HTTP and HTTPS listeners")
	fs.StringVar(&f.gatewayController, "gateway-controller-name", model.DefaultGatewayController, "Gateway API: manage the GatewayClasses of this spec.controllerName (Contour's is projectcontour.io/gateway-controller)")
	fs.StringVar(&f.gatewayAddressPool, "gateway-address-pool", "", "Gateway API: give each Gateway without spec.addresses its own address from this CIDR, bound by its listeners (the proxies' hosts must accept them as local, e.g. ip route add local CIDR dev lo)")
	fs.BoolVar(&f.gatewayListenerPorts, "gateway-listener-ports", false, "Gateway API: bind each Gateway listener's own port (default, as Contour: ports below 1024 are bound as port+8000, e.g. 80 as 8080)")
	return fs, f
}

// loadConfigFile reads --config-path, if given, and sets the flags the
// file also configures unless they were given on the command line
// (Contour's precedence: flags over the file).
func (f *controllerFlags) loadConfigFile(fs *flag.FlagSet) error {
	if f.configPath == "" {
		return nil
	}
	if f.contourConfigName != "" {
		return errors.New("--config-path and --contour-config-name are exclusive: read Contour's configuration from a file or from a ContourConfiguration, not both")
	}
	c, err := contourconfig.Load(f.configPath)
	if err != nil {
		return err
	}
	return f.useContourConfig(fs, c, f.configPath)
}

// useContourConfig keeps c and sets the flags it configures unless they
// were given on the command line; from names c in errors.
func (f *controllerFlags) useContourConfig(fs *flag.FlagSet, c *contourconfig.Config, from string) error {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for name, v := range c.Flags() {
		if given[name] {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return fmt.Errorf("%s: %s %q: %w", from, name, v, err)
		}
	}
	f.contour = c
	return nil
}

// loadContourConfiguration reads --contour-config-name, if given, from
// the cluster, writes its status and sets the flags it configures, as
// loadConfigFile. Contour reads it once at start-up; so does Legate.
func (f *controllerFlags) loadContourConfiguration(ctx context.Context, fs *flag.FlagSet, log *slog.Logger) error {
	if f.contourConfigName == "" {
		return nil
	}
	if f.manifests != "" {
		return errors.New("--contour-config-name reads a ContourConfiguration from the cluster: with --manifests, use --config-path")
	}
	cfg, err := kubeConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ns := contourconfig.ResourceNamespace(os.Getenv)
	c, err := contourconfig.LoadResource(ctx, dyn, ns, f.contourConfigName, log)
	if err != nil {
		return err
	}
	return f.useContourConfig(fs, c, "ContourConfiguration "+ns+"/"+f.contourConfigName)
}

// contourSettings applies Contour's configuration file (or Contour's
// defaults without one) to the model and xDS options, then the flags
// that override it.
func (f *controllerFlags) contourSettings(opt *controller.Options) error {
	c := f.contour
	if c == nil {
		c = contourconfig.Default()
	}
	if f.accessLogFormat != "" {
		cp := *c
		cp.AccessLogFormat = f.accessLogFormat
		if err := cp.Validate(); err != nil {
			return fmt.Errorf("--accesslog-format: %w", err)
		}
		c = &cp
	}
	opt.Model.Config = c.Model()
	c.ApplyXDS(&opt.XDS)
	opt.XDS.AccessLog.HTTPPath, opt.XDS.AccessLog.HTTPSPath = f.httpAccessLog, f.httpsAccessLog
	opt.XDS.UseProxyProto = f.useProxyProtocol
	return nil
}

// run starts everything and blocks until ctx ends. started, if set, gets
// the bound addresses (for tests).
func (f *controllerFlags) run(ctx context.Context, log *slog.Logger, started func(xds, http string)) error {
	if f.manifests != "" && f.kubeconfig != "" {
		return errors.New("--manifests and --kubeconfig are exclusive: read objects from a folder or from a cluster")
	}
	opt := controller.Options{Log: log, Registry: prometheus.NewRegistry(),
		BuildInfo: controller.BuildInfo{Branch: branch, Revision: revision(), Version: version}}
	opt.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opt.XDS = xdsgen.Options{HTTPAddress: f.envoyHTTPAddress, HTTPPort: uint32(f.httpPort), HTTPSPort: uint32(f.httpsPort)}
	if err := f.contourSettings(&opt); err != nil {
		return err
	}
	if f.contour != nil && f.contourConfigName != "" {
		log.Info("read Contour's ContourConfiguration", "name", f.contourConfigName, "settings", f.contour.String())
	} else if f.contour != nil {
		log.Info("read Contour's configuration file", "path", f.configPath, "settings", f.contour.String())
	}
	if err := f.mesh.apply(&opt, f); err != nil {
		return err
	}
	opt.Model.IngressClass = f.ingressClass
	opt.Model.Gateway = model.GatewayOptions{ControllerName: f.gatewayController, ListenerPorts: f.gatewayListenerPorts}
	if f.contour != nil {
		opt.Model.Gateway.GatewayRef = f.contour.GatewayRef() // gateway.gatewayRef
	}
	if f.gatewayAddressPool != "" {
		p, err := netip.ParsePrefix(f.gatewayAddressPool)
		if err != nil {
			return fmt.Errorf("--gateway-address-pool %q: %w: use a CIDR such as 198.18.0.0/24", f.gatewayAddressPool, err)
		}
		opt.Model.Gateway.AddressPool = p
	}
	if f.rootNamespaces != "" {
		for _, ns := range strings.Split(f.rootNamespaces, ",") {
			opt.Model.RootNamespaces = append(opt.Model.RootNamespaces, strings.TrimSpace(ns))
		}
	}
	if f.fallbackCert != "" {
		ns, name, ok := strings.Cut(f.fallbackCert, "/")
		if !ok {
			return fmt.Errorf("--fallback-certificate %q: use namespace/name", f.fallbackCert)
		}
		opt.Model.FallbackCertificate = &types.NamespacedName{Namespace: ns, Name: name}
		opt.XDS.FallbackSecret = ns + "/" + name + "/cert"
	}

	store := source.NewStore()
	xs := xdsserver.New(log, xdsserver.NewMetrics(opt.Registry))
	xl, err := net.Listen("tcp", f.xdsAddress)
	if err != nil {
		return fmt.Errorf("xDS listener: %w", err)
	}
	hl, err := net.Listen("tcp", f.httpAddress)
	if err != nil {
		xl.Close()
		return fmt.Errorf("HTTP listener: %w", err)
	}

	if f.manifests != "" {
		w := source.ManifestWatch{Dir: f.manifests, Log: log, Every: time.Second, Metrics: source.NewManifestMetrics(opt.Registry)}
		if err := source.WatchManifestsWith(ctx, w, store); err != nil {
			return err
		}
	} else {
		cfg, err := kubeConfig(f.kubeconfig)
		if err != nil {
			return err
		}
		if c := f.contour; c != nil {
			// kubernetesClientQPS and kubernetesClientBurst (client-go's defaults otherwise).
			if c.KubernetesClientQPS > 0 {
				cfg.QPS = c.KubernetesClientQPS
			}
			if c.KubernetesClientBurst > 0 {
				cfg.Burst = c.KubernetesClientBurst
			}
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		k := &source.Kube{Client: client, Dynamic: dyn, Log: log, Namespace: f.watchNamespace}
		if err := k.Run(ctx, store); err != nil {
			return err
		}
		opt.Status = &status.Writer{Client: client, Dynamic: dyn, Log: log, Address: f.statusAddress, GatewayController: f.gatewayController}
		if f.leaderElect {
			le, err := f.leaderElector(client, log)
			if err != nil {
				return err
			}
			opt.IsLeader = le.IsLeader
			go func() {
				for ctx.Err() == nil {
					le.Run(ctx)
				}
			}()
		}
	}
	c := controller.New(store, xs, opt)
	if opt.IsLeader != nil {
		// A new leader writes status at once.
		go func() {
			was := false
			for ctx.Err() == nil {
				time.Sleep(time.Second)
				is := opt.IsLeader()
				if is && !was {
					store.Touch()
				}
				was = is
			}
		}()
	}
	tlsFiles, err := f.xdsTLS(log)
	if err != nil {
		xl.Close()
		hl.Close()
		return err
	}
	if err := f.startCA(ctx, log, opt.Registry, tlsFiles); err != nil {
		xl.Close()
		hl.Close()
		return err
	}
	if err := f.startInjector(ctx, log, opt.Registry, tlsFiles); err != nil {
		xl.Close()
		hl.Close()
		return err
	}
	errs := make(chan error, 2)
	if tlsFiles == nil {
		go func() { errs <- xs.Serve(ctx, xl) }()
	} else {
		go func() { errs <- xs.ServeTLS(ctx, xl, *tlsFiles) }()
	}
	go func() { errs <- c.ServeHTTP(ctx, hl, opt.Registry) }()
	go c.Run(ctx)
	log.Info("controller started", "xds", xl.Addr().String(), "http", hl.Addr().String(), "source", sourceName(f))
	if started != nil {
		started(xl.Addr().String(), hl.Addr().String())
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

// xdsTLS decides how xDS is served: with the given certificate files,
// with ones generated in the state directory when none are given, or —
// only with --insecure — in plaintext.
func (f *controllerFlags) xdsTLS(log *slog.Logger) (*xdsserver.TLSFiles, error) {
	given := f.xdsCA != "" || f.xdsCert != "" || f.xdsKey != ""
	if f.insecure {
		if given {
			return nil, errors.New("--insecure with --xds-*-file: choose one")
		}
		log.Warn("serving xDS in plaintext without client authentication (--insecure): any client that reaches the xDS port gets every resource, private keys included")
		return nil, nil
	}
	if given {
		if f.xdsCA == "" || f.xdsCert == "" || f.xdsKey == "" {
			return nil, errors.New("xDS TLS needs all of --xds-ca-file, --xds-cert-file and --xds-key-file")
		}
		return &xdsserver.TLSFiles{CA: f.xdsCA, Cert: f.xdsCert, Key: f.xdsKey}, nil
	}
	state := f.stateDir
	if state == "" {
		var err error
		if state, err = certgen.StateDir(); err != nil {
			return nil, fmt.Errorf("%w (or pass --xds-ca-file, --xds-cert-file and --xds-key-file, or --insecure)", err)
		}
	}
	dir := certgen.XDSDir(state)
	created, err := certgen.Ensure(dir, certgen.Options{Namespace: os.Getenv("POD_NAMESPACE")})
	if err != nil {
		return nil, fmt.Errorf("xDS certificates in %s: %w (pass --xds-*-file, or --insecure)", dir, err)
	}
	if created {
		log.Info("created xDS certificates; `legate bootstrap` on this machine uses them", "dir", dir)
	}
	return &xdsserver.TLSFiles{CA: filepath.Join(dir, certgen.CAFile), Cert: filepath.Join(dir, certgen.ControllerCertFile),
		Key: filepath.Join(dir, certgen.ControllerKeyFile)}, nil
}

func sourceName(f *controllerFlags) string {
	if f.manifests != "" {
		return "manifests " + f.manifests
	}
	if f.kubeconfig != "" {
		return "kubeconfig " + f.kubeconfig
	}
	return "in-cluster"
}

func kubeConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no --kubeconfig and not in a cluster (%w): pass --kubeconfig FILE, or --manifests DIR to run without Kubernetes", err)
	}
	return cfg, nil
}

func (f *controllerFlags) leaderElector(client kubernetes.Interface, log *slog.Logger) (*leaderelection.LeaderElector, error) {
	ns := f.leaderNamespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		ns = "legate-system"
	}
	id, _ := os.Hostname()
	id += "_" + strconv.Itoa(os.Getpid())
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, ns, f.leaderName, client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id})
	if err != nil {
		return nil, fmt.Errorf("leader election: %w", err)
	}
	return leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true, Name: f.leaderName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { log.Info("became leader: writing status", "lease", ns+"/"+f.leaderName) },
			OnStoppedLeading: func() { log.Info("lost leadership: no longer writing status") },
		},
	})
}

func splitHostPort(s, flagName string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("--%s %q: %w (use HOST:PORT)", flagName, s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--%s %q: bad port", flagName, s)
	}
	return h, port, nil
}

func runBootstrap(args []string) int {
	fs := flag.NewFlagSet("legate bootstrap", flag.ContinueOnError)
	xdsAddr := fs.String("xds-address", "legate-controller:8001", "controller xDS address HOST:PORT")
	adminAddr := fs.String("admin-address", "127.0.0.1:9001", "proxy admin address HOST:PORT")
	healthAddr := fs.String("health-address", "", "HOST:PORT of a listener serving /ready and /stats from the admin API (e.g. 0.0.0.0:8002 for kubelet probes)")
	nodeID := fs.String("node-id", "", "node id (default: $POD_NAME, or the host name)")
	cluster := fs.String("node-cluster", "legate", "node cluster")
	delta := fs.Bool("delta", false, "use incremental xDS (DELTA_GRPC)")
	var caFile, certFile, keyFile string
	for _, n := range []string{"xds-ca-file", "envoy-cafile"} {
		fs.StringVar(&caFile, n, "", "CA file that signs the controller's certificate")
	}
	for _, n := range []string{"xds-cert-file", "envoy-cert-file"} {
		fs.StringVar(&certFile, n, "", "the proxy's xDS client certificate file")
	}
	for _, n := range []string{"xds-key-file", "envoy-key-file"} {
		fs.StringVar(&keyFile, n, "", "the proxy's xDS client key file")
	}
	serverName := fs.String("xds-server-name", certgen.ServerName, "name verified in the controller's certificate (and sent as SNI)")
	stateDir := fs.String("state-dir", "", "where a local controller keeps its generated certificates (default as legate controller)")
	insecure := fs.Bool("insecure", false, "connect to a controller started with --insecure (plaintext)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	err := func() error {
		o := controller.BootstrapOptions{NodeID: *nodeID, Cluster: *cluster, Delta: *delta}
		var err error
		if o.TLS, err = bootstrapTLS(caFile, certFile, keyFile, *serverName, *stateDir, *insecure); err != nil {
			return err
		}
		if o.XDSHost, o.XDSPort, err = splitHostPort(*xdsAddr, "xds-address"); err != nil {
			return err
		}
		if o.AdminHost, o.AdminPort, err = splitHostPort(*adminAddr, "admin-address"); err != nil {
			return err
		}
		if *healthAddr != "" {
			if o.HealthHost, o.HealthPort, err = splitHostPort(*healthAddr, "health-address"); err != nil {
				return err
			}
		}
		if o.NodeID == "" {
			o.NodeID = os.Getenv("POD_NAME")
		}
		if o.NodeID == "" {
			o.NodeID, _ = os.Hostname()
		}
		out := controller.Bootstrap(o)
		if fs.NArg() > 0 {
			return os.WriteFile(fs.Arg(0), []byte(out), 0o644)
		}
		_, err = os.Stdout.WriteString(out)
		return err
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate bootstrap:", err)
		return 1
	}
	return 0
}

// bootstrapTLS picks the proxy's xDS client certificate: the files given,
// or those a controller on this machine created in its state directory.
func bootstrapTLS(ca, cert, key, serverName, stateDir string, insecure bool) (*controller.BootstrapTLS, error) {
	given := ca != "" || cert != "" || key != ""
	if insecure {
		if given {
			return nil, errors.New("--insecure with --xds-*-file: choose one")
		}
		return nil, nil
	}
	if given {
		if ca == "" || cert == "" || key == "" {
			return nil, errors.New("xDS TLS needs all of --xds-ca-file, --xds-cert-file and --xds-key-file")
		}
		return &controller.BootstrapTLS{CAFile: ca, CertFile: cert, KeyFile: key, ServerName: serverName}, nil
	}
	if stateDir == "" {
		var err error
		if stateDir, err = certgen.StateDir(); err != nil {
			return nil, err
		}
	}
	dir := certgen.XDSDir(stateDir)
	// A controller started a moment ago (`legate controller … &` then
	// `legate bootstrap`) may still be writing them.
	for i := 0; i < 50 && !certgen.Has(dir); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if !certgen.Has(dir) {
		return nil, fmt.Errorf("no xDS client certificate: pass --xds-ca-file, --xds-cert-file and --xds-key-file (in Kubernetes, from the Secret `legate certgen` made), start legate controller on this machine first (it creates them in %s), or use --insecure for a controller started with --insecure", dir)
	}
	abs := func(n string) string {
		p, err := filepath.Abs(filepath.Join(dir, n))
		if err != nil {
			return filepath.Join(dir, n)
		}
		return p
	}
	return &controller.BootstrapTLS{CAFile: abs(certgen.CAFile), CertFile: abs(certgen.ProxyCertFile), KeyFile: abs(certgen.ProxyKeyFile), ServerName: serverName}, nil
}
