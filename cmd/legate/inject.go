package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/legateproxy/legate/internal/mesh"
	"github.com/legateproxy/legate/internal/mesh/inject"
)

func init() {
	register("inject", "add the Legate sidecar to the pods of Kubernetes manifests (as istioctl kube-inject)", runInject)
	register("wait", "wait until a URL answers 200 (the injected proxy's postStart hook)", runWait)
}

// injectSidecarFlags are the options of the injected containers, shared by
// `legate inject` and `legate controller`.
type injectSidecarFlags struct {
	image, pullPolicy, xdsAddress, caAddress string
	hold                                     bool
	// trustDomain is the controller's --trust-domain (legate inject: its
	// own flag).
	trustDomain string
}

func (s *injectSidecarFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.image, "sidecar-image", inject.DefaultImage, "image of the injected init and proxy containers")
	fs.StringVar(&s.pullPolicy, "sidecar-image-pull-policy", "", "imagePullPolicy of the injected containers: Always, IfNotPresent or Never (default: the API server's)")
	fs.StringVar(&s.xdsAddress, "mesh-xds-address", "legate-controller.legate-system.svc:8001", "controller xDS address HOST:PORT the sidecars dial")
	fs.StringVar(&s.caAddress, "mesh-ca-address", fmt.Sprintf("legate-controller.legate-system.svc:%d", mesh.CAPort), "controller certificate authority HOST:PORT the sidecars dial")
	fs.BoolVar(&s.hold, "hold-application-until-proxy-starts", false, "start the proxy before the application containers in every pod (annotation "+mesh.HoldApplication+" overrides)")
}

func (s *injectSidecarFlags) config() inject.Config {
	return inject.Config{Image: s.image, ImagePullPolicy: corev1.PullPolicy(s.pullPolicy), XDSAddress: s.xdsAddress, CAAddress: s.caAddress,
		HoldApplicationUntilProxyStarts: s.hold, TrustDomain: s.trustDomain}
}

func runInject(args []string) int {
	fs := flag.NewFlagSet("legate inject", flag.ContinueOnError)
	in := fs.String("f", "", "YAML or JSON manifests to inject (- for stdin); also --filename")
	fs.StringVar(in, "filename", "", "same as -f")
	out := fs.String("o", "", "write the result here (default stdout); also --output")
	fs.StringVar(out, "output", "", "same as -o")
	logLevel := fs.String("log-level", "info", "debug, info, warning, error")
	var s injectSidecarFlags
	s.register(fs)
	fs.StringVar(&s.trustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain of the controller's CA (its --trust-domain)")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *in == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "legate inject: usage: legate inject -f FILE|- [-o OUT]")
		return 2
	}
	log, _, err := newLogger(*logLevel, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate inject:", err)
		return 2
	}
	if err := injectFile(*in, *out, s.config(), log); err != nil {
		fmt.Fprintln(os.Stderr, "legate inject:", err)
		return 1
	}
	return 0
}

// injectFile injects in (a file, or - for stdin) into out (a file, or
// stdout when empty).
func injectFile(in, out string, cfg inject.Config, log *slog.Logger) error {
	var r io.Reader = os.Stdin
	if in != "-" {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	if out == "" {
		return inject.YAML(r, os.Stdout, cfg, log)
	}
	// Written beside and renamed: -o may name the input file.
	tmp, err := os.CreateTemp(filepath.Dir(out), ".legate-inject-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := inject.YAML(r, tmp, cfg, log); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// waitFlags are `legate wait`'s options, Istio's `pilot-agent wait`
// defaults.
type waitFlags struct {
	url                         string
	timeout, period, reqTimeout time.Duration
}

func newWaitFlags() (*flag.FlagSet, *waitFlags) {
	fs := flag.NewFlagSet("legate wait", flag.ContinueOnError)
	w := &waitFlags{}
	fs.StringVar(&w.url, "url", fmt.Sprintf("http://127.0.0.1:%d/healthz/ready", mesh.ReadinessPort), "URL to poll")
	fs.DurationVar(&w.timeout, "timeout", 60*time.Second, "give up after this long")
	fs.DurationVar(&w.period, "period", 500*time.Millisecond, "time between attempts")
	fs.DurationVar(&w.reqTimeout, "request-timeout", 500*time.Millisecond, "timeout of one attempt")
	return fs, w
}

func runWait(args []string) int {
	fs, w := newWaitFlags()
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	if err := waitReady(ctx, w.url, w.period, w.reqTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "legate wait:", err)
		return 1
	}
	return 0
}

// waitReady polls url until it answers 200 or ctx ends (Istio's
// `pilot-agent wait`).
func waitReady(ctx context.Context, url string, period, reqTimeout time.Duration) error {
	c := &http.Client{Timeout: reqTimeout}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("--url %q: %w", url, err)
		}
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else if ctx.Err() == nil || last == "" {
			// An attempt the overall deadline cut short says nothing
			// new: the last real answer is the useful report.
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready (last: %s): %w", url, last, ctx.Err())
		case <-time.After(period):
		}
	}
}
