// Package gatewayconformance runs the official Gateway API conformance
// suite (sigs.k8s.io/gateway-api/conformance v1.6.3) against Legate: a
// real cluster whose Pods run (test/kubeenv), `legate controller`'s
// control plane and a Legate proxy following it over xDS, as a user
// runs them.
//
// The suite reads Gateway addresses from status: the controller gives
// each Gateway an address of 192.0.2.0/24 (TEST-NET-1, made local to the
// test's network namespace) and binds its listeners on their own ports
// (--gateway-address-pool, --gateway-listener-ports). The report of a
// run is in report/; `go test ./test/gatewayconformance -update`
// rewrites it.
package gatewayconformance

import (
	"context"
	"flag"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/apis/v1alpha2"
	"sigs.k8s.io/gateway-api/apis/v1alpha3"
	"sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"

	"github.com/legateproxy/legate/internal/controller"
	"github.com/legateproxy/legate/internal/controller/model"
	"github.com/legateproxy/legate/internal/controller/source"
	"github.com/legateproxy/legate/internal/controller/status"
	"github.com/legateproxy/legate/internal/controller/xdsgen"
	"github.com/legateproxy/legate/internal/testutil"
	xdsserver "github.com/legateproxy/legate/internal/xds/server"
	"github.com/legateproxy/legate/test/kubeenv"
)

var update = flag.Bool("update", false, "rewrite the checked-in conformance report (report/)")

// updateEnv carries -update into the network namespace's process.
const updateEnv = "GATEWAY_CONFORMANCE_UPDATE"

const (
	// gatewayClass is the GatewayClass the suite's Gateways name.
	gatewayClass = "legate"
	// addressPool is where Gateways get their addresses: TEST-NET-1,
	// which kubeenv leaves to tests, routed to loopback in the test's
	// network namespace so the proxy can bind any address of it.
	addressPool = "192.0.2.0/24"
	// reportFile is the checked-in report, named as the Gateway API
	// project's reports directory names them.
	reportFile = "report/standard-v1.6.3-default-report.yaml"
)

// profiles are the conformance profiles Legate claims (not UDP, nor the
// mesh ones).
var profiles = []suite.ConformanceProfileName{
	suite.GatewayHTTPConformanceProfileName,
	suite.GatewayGRPCConformanceProfileName,
	suite.GatewayTLSConformanceProfileName,
	suite.GatewayTCPConformanceProfileName,
}

// TestGatewayAPIConformance runs the suite. GATEWAY_CONFORMANCE_RUN_TEST
// runs one test of it (its ShortName) and GATEWAY_CONFORMANCE_DEBUG=1
// logs every request and response, for debugging.
func TestGatewayAPIConformance(t *testing.T) {
	if *update {
		// The test goes on in a re-executed process (its network
		// namespace), which gets no flags but its environment.
		t.Setenv(updateEnv, "1")
	}
	// The suite skips the tests of features Legate does not claim.
	t.Setenv(testutil.SubtestSkipsOKEnv, "1")
	if !kubeenv.InNetns(t) {
		return
	}
	repo := testutil.RepoRoot(t)
	env := kubeenv.Start(t, kubeenv.Options{CRDPaths: []string{
		kubeenv.GatewayAPICRDs(t, "standard"),
		filepath.Join(repo, "deploy", "crds", "projectcontour.io_httpproxies.yaml"),
		filepath.Join(repo, "deploy", "crds", "projectcontour.io_tlscertificatedelegations.yaml"),
		filepath.Join(repo, "deploy", "crds", "projectcontour.io_extensionservices.yaml"),
	}})
	if out, err := exec.Command("ip", "route", "add", "local", addressPool, "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip route add local %s dev lo: %v: %s", addressPool, err, out)
	}
	startLegate(t, env)

	log.SetLogger(zap.New(zap.WriteTo(testWriter{t}), zap.UseDevMode(true)))
	c, err := client.New(env.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []func(*runtime.Scheme) error{v1alpha3.Install, v1alpha2.Install, v1beta1.Install, gatewayv1.Install, apiextensionsv1.AddToScheme} {
		if err := install(c.Scheme()); err != nil {
			t.Fatal(err)
		}
	}
	gc := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: gatewayClass},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: model.DefaultGatewayController}}
	if err := c.Create(context.Background(), gc); err != nil {
		t.Fatal(err)
	}
	// The suite infers the supported features from the GatewayClass
	// status, which the controller writes.
	testutil.Eventually(t, 30*time.Second, func() bool {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(gc), gc); err != nil {
			return false
		}
		return len(gc.Status.SupportedFeatures) > 0
	}, "the controller never wrote the GatewayClass's supported features")

	opts := suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:     gatewayClass,
			CleanupBaseResources: true,
			CleanupTestResources: true,
			Debug:                os.Getenv("GATEWAY_CONFORMANCE_DEBUG") == "1",
			RunTest:              os.Getenv("GATEWAY_CONFORMANCE_RUN_TEST"),
			Mode:                 "default",
			TimeoutConfig:        config.DefaultTimeoutConfig(),
			ConformanceProfiles:  profiles,
			// GatewayStaticAddresses: an address of the pool is usable, one
			// outside it (TEST-NET-2's benchmark range) is not.
			UsableNetworkAddresses:   []gatewayv1.GatewaySpecAddress{{Type: ptrTo(gatewayv1.IPAddressType), Value: "192.0.2.250"}},
			UnusableNetworkAddresses: []gatewayv1.GatewaySpecAddress{{Type: ptrTo(gatewayv1.IPAddressType), Value: "198.18.0.1"}},
			Implementation: confv1.Implementation{
				Organization: "legateproxy",
				Project:      "legate",
				URL:          "https://github.com/legateproxy/legate",
				Version:      "main",
				Contact:      []string{"https://github.com/legateproxy/legate/issues"},
			},
		},
		Client:     c,
		Clientset:  env.Client,
		RestConfig: env.Config,
		ManifestFS: []fs.FS{&conformance.Manifests},
	}
	cs, err := suite.NewConformanceTestSuite(opts)
	if err != nil {
		t.Fatal(err)
	}
	// The report is complete only once every (parallel) test has ended:
	// in a cleanup, as the suite's own runner makes it.
	t.Cleanup(func() {
		checkReport(t, cs, filepath.Join(repo, "test", "gatewayconformance", reportFile), opts.RunTest == "")
	})
	cs.Setup(t, tests.ConformanceTests)
	if err := cs.Run(t, tests.ConformanceTests); err != nil {
		t.Fatal(err)
	}
}

// checkReport fails the test unless every claimed profile's core and
// extended results passed, and with -update writes the report to path
// (only after a full run that passed).
func checkReport(t *testing.T, cs *suite.ConformanceTestSuite, path string, full bool) {
	report, err := cs.Report()
	if err != nil {
		t.Fatal(err)
	}
	report.Date = "" // the checked-in report changes only with its results
	data, err := yaml.Marshal(report)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conformance report:\n%s", data)
	if !full {
		return
	}
	for _, p := range report.ProfileReports {
		if p.Core.Result != confv1.Success {
			t.Errorf("profile %s: core result %s (%d failed: %v)", p.Name, p.Core.Result, p.Core.Statistics.Failed, p.Core.FailedTests)
		}
		if p.Extended != nil && p.Extended.Result == confv1.Failure {
			t.Errorf("profile %s: extended result %s (failed: %v)", p.Name, p.Extended.Result, p.Extended.FailedTests)
		}
	}
	if os.Getenv(updateEnv) == "1" && !t.Failed() {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// startLegate runs what `legate controller --gateway-address-pool
// 192.0.2.0/24 --gateway-listener-ports` runs, watching env's API
// server, and a Legate proxy on the bootstrap `legate bootstrap` prints.
func startLegate(t *testing.T, env *kubeenv.Env) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dyn := dynamic.NewForConfigOrDie(env.Config)
	st := source.NewStore()
	if err := (&source.Kube{Client: env.Client, Dynamic: dyn, Log: logger}).Run(ctx, st); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	xs := xdsserver.New(logger, xdsserver.NewMetrics(reg))
	c := controller.New(st, xs, controller.Options{
		Model:  model.Options{Gateway: model.GatewayOptions{AddressPool: netip.MustParsePrefix(addressPool), ListenerPorts: true}},
		Status: &status.Writer{Client: env.Client, Dynamic: dyn, Log: logger},
		Log:    logger, Registry: reg,
		XDS: xdsgen.Options{HTTPAddress: "127.0.0.1", HTTPPort: uint32(testutil.FreePort(t)), HTTPSPort: uint32(testutil.FreePort(t))},
	})
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go xs.Serve(ctx, xl)
	go c.Run(ctx)
	testutil.Eventually(t, 30*time.Second, c.Ready, "controller never built its first configuration")
	port := xl.Addr().(*net.TCPAddr).Port
	testutil.StartProxy(t, controller.Bootstrap(controller.BootstrapOptions{
		XDSHost: "127.0.0.1", XDSPort: port, AdminHost: "127.0.0.1", NodeID: "conformance", Cluster: "legate",
	}), nil)
}

// testWriter logs through t.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ptrTo[T any](v T) *T { return &v }
