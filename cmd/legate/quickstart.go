package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/legateproxy/legate/internal/quickstart"
	"github.com/legateproxy/legate/internal/server"
)

func init() {
	registerPlain("quickstart", "run the demo: the proxy on :10000 in front of two built-in backends", "", runQuickstart)
}

func runQuickstart(args []string) int {
	log, lv, _, _ := newProxyLogger("info", "", os.Stderr, "", false)
	stop, err := quickstart.StartBackends()
	if err != nil {
		fmt.Fprintf(os.Stderr, "legate quickstart: %v\n", err)
		return 1
	}
	defer stop()
	srv, err := server.Load(server.Options{ConfigYAML: quickstart.Config, Log: log, LogLevel: lv, Version: version, DrainTime: 5 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "legate quickstart: %v\n", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "legate quickstart: %v\n", err)
		srv.Shutdown(context.Background())
		return 1
	}
	fmt.Fprintf(os.Stderr, `
Legate is running.
  curl localhost:10000                    # alternates between backend-1 and backend-2
  curl localhost:9901/stats?filter=http   # Envoy-named stats
  curl localhost:9901/clusters            # upstream hosts and health
  Ctrl-C to stop.

`)
	return waitAndShutdown(srv, log)
}
