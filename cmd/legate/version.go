package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version (and branch) are set at build time with -ldflags "-X main.version=... -X main.branch=...".
var version, branch = "dev", ""

// revision is the git SHA Go recorded in the binary ("unknown" without one).
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func init() {
	registerPlain("version", "print the version", "", func([]string) int {
		printVersion()
		return 0
	})
}

// printVersion prints the build's version (also `legate --version` and
// `legate proxy --version`, as `envoy --version`).
func printVersion() {
	fmt.Printf("legate %s (revision %s, %s, %s/%s)\n", version, revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
