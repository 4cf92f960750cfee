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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/legateproxy/legate/internal/certgen"
	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/agent"
)

func init() {
	register("sidecar", "run a mesh sidecar: get the pod's workload certificate from the controller's CA, serve it over SDS, and run the proxy on ADS", runSidecar)
}

// sidecarFlags are `legate sidecar`'s options.
type sidecarFlags struct {
	pod, namespace, ip, serviceAccount                 string
	xdsAddress, xdsServerName, caAddress, caServerName string
	rootCert, token, trustDomain, sdsSocket, stateDir  string
	adminAddress, agentAddress                         string
	bootstrapOnly, logLevel                            string
	certTTL                                            time.Duration
	delta                                              bool
}

func newSidecarFlags() (*flag.FlagSet, *sidecarFlags) {
	fs := flag.NewFlagSet("legate sidecar", flag.ContinueOnError)
	f := &sidecarFlags{}
	fs.StringVar(&f.pod, "pod-name", os.Getenv("POD_NAME"), "the pod's name (default $POD_NAME)")
	fs.StringVar(&f.namespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "the pod's namespace (default $POD_NAMESPACE)")
	fs.StringVar(&f.ip, "instance-ip", os.Getenv("INSTANCE_IP"), "the pod's IP (default $INSTANCE_IP)")
	fs.StringVar(&f.serviceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "the pod's ServiceAccount (default $SERVICE_ACCOUNT)")
	fs.StringVar(&f.xdsAddress, "xds-address", "legate-controller.legate-system.svc:8001", "the controller's xDS HOST:PORT")
	fs.StringVar(&f.xdsServerName, "xds-server-name", "", "name checked in the controller's xDS certificate (default "+certgen.ServerName+", which every certificate legate certgen makes carries, as legate bootstrap)")
	fs.StringVar(&f.caAddress, "ca-address", "legate-controller.legate-system.svc:"+strconv.Itoa(mesh.CAPort), "the controller's CA HOST:PORT")
	fs.StringVar(&f.caServerName, "ca-server-name", "", "name checked in the CA's certificate (default as --xds-server-name)")
	fs.StringVar(&f.rootCert, "root-cert", "/var/run/secrets/legate/root-cert.pem", "the CA certificate (ConfigMap "+mesh.RootCertConfigMap+"): verifies the controller, and peers through SDS "+mesh.SecretRoots)
	fs.StringVar(&f.token, "token", "/var/run/secrets/tokens/legate-token", "the projected ServiceAccount token (audience "+mesh.TokenAudience+")")
	fs.StringVar(&f.trustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain")
	fs.StringVar(&f.sdsSocket, "sds-socket", mesh.SDSSocket, "Unix socket the SDS server listens on")
	fs.StringVar(&f.stateDir, "state-dir", "/var/run/legate/sidecar", "where the workload certificate files and the bootstrap are written (created 0700; an emptyDir)")
	fs.StringVar(&f.adminAddress, "admin-address", "127.0.0.1:"+strconv.Itoa(mesh.AdminPort), "the proxy's admin API (loopback)")
	fs.StringVar(&f.agentAddress, "agent-address", "127.0.0.1:"+strconv.Itoa(mesh.AgentPort), "the agent's health server, which the readiness listener (port "+strconv.Itoa(mesh.ReadinessPort)+") routes /healthz/ready to")
	fs.DurationVar(&f.certTTL, "workload-cert-ttl", 0, "lifetime to ask the CA for (default: the CA's)")
	fs.BoolVar(&f.delta, "delta", false, "use incremental xDS (DELTA_GRPC)")
	fs.StringVar(&f.bootstrapOnly, "bootstrap-only", "", "write the bootstrap to this file and exit (no CA request)")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warning, error, critical, off")
	return fs, f
}

func runSidecar(args []string) int {
	fs, f := newSidecarFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "legate sidecar: unexpected arguments %q\n", fs.Args())
		return 2
	}
	bo, base, err := f.bootstrap()
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate sidecar:", err)
		return 1
	}
	bs, err := agent.Bootstrap(base, bo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate sidecar:", err)
		return 1
	}
	if f.bootstrapOnly != "" {
		if err := os.WriteFile(f.bootstrapOnly, bs, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "legate sidecar:", err)
			return 1
		}
		return 0
	}
	log, _, err := newLogger(f.logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate sidecar:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	path, err := f.startAgent(ctx, log, bs)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		fmt.Fprintln(os.Stderr, "legate sidecar:", err)
		return 1
	}
	// The proxy runs in this process, exactly as `legate proxy` would.
	return runProxy([]string{"-c", path, "--log-level", f.logLevel})
}

// bootstrap checks the pod's identity and builds the bootstrap's options.
func (f *sidecarFlags) bootstrap() (agent.BootstrapOptions, string, error) {
	var o agent.BootstrapOptions
	for _, r := range []struct{ v, flag, env string }{
		{f.pod, "pod-name", "POD_NAME"}, {f.namespace, "pod-namespace", "POD_NAMESPACE"},
		{f.ip, "instance-ip", "INSTANCE_IP"}, {f.serviceAccount, "service-account", "SERVICE_ACCOUNT"},
	} {
		if r.v == "" {
			return o, "", fmt.Errorf("--%s is required (or set $%s, from the downward API)", r.flag, r.env)
		}
	}
	ip, err := netip.ParseAddr(f.ip)
	if err != nil {
		return o, "", fmt.Errorf("--instance-ip %q: %w", f.ip, err)
	}
	if f.stateDir == "" {
		return o, "", errors.New("--state-dir is required")
	}
	xh, xp, err := splitHostPort(f.xdsAddress, "xds-address")
	if err != nil {
		return o, "", err
	}
	ah, ap, err := splitHostPort(f.adminAddress, "admin-address")
	if err != nil {
		return o, "", err
	}
	gh, gp, err := splitHostPort(f.agentAddress, "agent-address")
	if err != nil {
		return o, "", err
	}
	if a, err := netip.ParseAddr(ah); err != nil || !a.IsLoopback() {
		return o, "", fmt.Errorf("--admin-address %q: must be a loopback IP (the admin API can stop the proxy)", f.adminAddress)
	}
	o = agent.BootstrapOptions{
		Node:           mesh.NodeID{IP: ip, Pod: f.pod, Namespace: f.namespace},
		ServiceAccount: f.serviceAccount, StateDir: f.stateDir, SDSSocket: f.sdsSocket,
		AdminPort: ap, AgentHost: gh, AgentPort: gp,
	}
	ca, cert, key := o.BaseTLS()
	base := controller.Bootstrap(controller.BootstrapOptions{
		XDSHost: xh, XDSPort: xp, AdminHost: ah, AdminPort: ap, NodeID: o.Node.String(),
		// Istio's node cluster: the workload's name in its namespace.
		Cluster: f.serviceAccount + "." + f.namespace, Delta: f.delta,
		TLS: &controller.BootstrapTLS{CAFile: ca, CertFile: cert, KeyFile: key, ServerName: serverName(f.xdsServerName, xh)},
	})
	return o, base, nil
}

// serverName is the name checked in a controller certificate: the flag,
// else certgen's Service name, which the certificates of every install
// carry whatever the Service is called (a Helm release's
// <release>-controller.<ns>.svc is not in them), as `legate bootstrap`
// checks it.
func serverName(flagValue, _ string) string {
	if flagValue != "" {
		return flagValue
	}
	return certgen.ServerName
}

// startAgent gets the first certificate, then starts rotation, SDS and
// the health server, and writes the bootstrap; it returns the
// bootstrap's path.
func (f *sidecarFlags) startAgent(ctx context.Context, log *slog.Logger, bootstrap []byte) (string, error) {
	if err := os.MkdirAll(f.stateDir, 0o700); err != nil {
		return "", fmt.Errorf("--state-dir: %w", err)
	}
	caHost, _, err := splitHostPort(f.caAddress, "ca-address")
	if err != nil {
		return "", err
	}
	reg := prometheus.NewRegistry()
	a, err := agent.New(agent.Options{
		CAAddress: f.caAddress, CAServerName: serverName(f.caServerName, caHost),
		RootCertFile: f.rootCert, TokenFile: f.token, TrustDomain: f.trustDomain,
		Namespace: f.namespace, ServiceAccount: f.serviceAccount, TTL: f.certTTL,
		StateDir: f.stateDir, Log: log, Registry: reg,
	})
	if err != nil {
		return "", err
	}
	// Listen before the first request, so a bad socket path fails fast.
	sl, err := agent.Listen(f.sdsSocket)
	if err != nil {
		return "", err
	}
	hl, err := net.Listen("tcp", f.agentAddress)
	if err != nil {
		sl.Close()
		return "", fmt.Errorf("--agent-address: %w", err)
	}
	log.Info("requesting the workload certificate", "identity", a.Identity(), "ca", f.caAddress)
	if err := a.Start(ctx); err != nil {
		sl.Close()
		hl.Close()
		return "", err
	}
	sds := agent.NewSDS(log)
	a.Subscribe(sds.Update)
	go a.Run(ctx)
	go func() {
		if err := sds.Serve(ctx, sl); err != nil {
			log.Error("SDS server stopped", "error", err)
		}
	}()
	h := &agent.Health{Agent: a, AdminURL: "http://" + f.adminAddress, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}
	go func() {
		if err := h.Serve(ctx, hl); err != nil {
			log.Error("agent health server stopped", "error", err)
		}
	}()
	path := filepath.Join(f.stateDir, "bootstrap.yaml")
	if err := os.WriteFile(path, bootstrap, 0o600); err != nil {
		return "", fmt.Errorf("--state-dir: %w", err)
	}
	log.Info("sidecar agent started", "identity", a.Identity(), "sds", f.sdsSocket, "bootstrap", path)
	return path, nil
}
