package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/legateproxy/legate/internal/certgen"
)

func init() {
	register("certgen", "create the xDS mTLS certificates (files, or Kubernetes Secrets with --kube)", runCertgen)
}

// runCertgen is Contour's certgen for Legate: a CA, the controller's
// serving certificate and the proxies' client certificate.
func runCertgen(args []string) int {
	fs := flag.NewFlagSet("legate certgen", flag.ContinueOnError)
	outDir := fs.String("output-dir", "", "write PEM files here (default: the state directory legate controller and legate bootstrap use)")
	kube := fs.Bool("kube", false, "write Kubernetes Secrets ("+certgen.ControllerSecret+", "+certgen.ProxySecret+", "+certgen.CASecret+") instead of files")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	namespace := fs.String("namespace", "", "namespace of the Secrets and of the controller's Service (default $POD_NAMESPACE or legate-system)")
	overwrite := fs.Bool("overwrite", false, "replace existing certificates")
	lifetime := fs.Duration("lifetime", 365*24*time.Hour, "certificate lifetime")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ns := *namespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		ns = "legate-system"
	}
	err := func() error {
		if *kube {
			cfg, err := kubeConfig(*kubeconfig)
			if err != nil {
				return err
			}
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			set, err := certgen.Generate(certgen.Options{Namespace: ns, Lifetime: *lifetime})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			msg, err := certgen.WriteSecrets(ctx, client, ns, set, *overwrite)
			if err != nil {
				return err
			}
			fmt.Println(msg)
			return nil
		}
		dir := *outDir
		if dir == "" {
			state, err := certgen.StateDir()
			if err != nil {
				return err
			}
			dir = certgen.XDSDir(state)
		}
		if certgen.Has(dir) && !*overwrite {
			fmt.Printf("kept the existing certificates in %s (--overwrite replaces them)\n", dir)
			return nil
		}
		set, err := certgen.Generate(certgen.Options{Namespace: ns, Lifetime: *lifetime})
		if err != nil {
			return err
		}
		if err := set.Write(dir); err != nil {
			return err
		}
		fmt.Printf("wrote %s, %s/%s (controller) and %s/%s (proxies) in %s\n", certgen.CAFile, certgen.ControllerCertFile, certgen.ControllerKeyFile, certgen.ProxyCertFile, certgen.ProxyKeyFile, dir)
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate certgen:", err)
		return 1
	}
	return 0
}
