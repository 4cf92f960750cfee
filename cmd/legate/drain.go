package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

func init() {
	register("drain", "fail a proxy's health checks, then wait (a Kubernetes preStop hook)", runDrain)
}

// runDrain is what a preStop hook runs in an image without a shell: it
// POSTs /healthcheck/fail to the proxy's admin API, so /ready fails and the
// Pod leaves its Services' endpoints, then waits so load balancers notice
// before Kubernetes sends SIGTERM (which drains connections).
func runDrain(args []string) int {
	fs := flag.NewFlagSet("legate drain", flag.ContinueOnError)
	admin := fs.String("admin-address", "127.0.0.1:9001", "proxy admin address HOST:PORT")
	wait := fs.Duration("wait", 15*time.Second, "time to wait after failing health checks")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post("http://"+*admin+"/healthcheck/fail", "text/plain", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "legate drain:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "legate drain: /healthcheck/fail answered %s\n", resp.Status)
		return 1
	}
	time.Sleep(*wait)
	return 0
}
