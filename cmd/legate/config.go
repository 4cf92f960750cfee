package main

import (
	"fmt"
	"os"

	"github.com/legateproxy/legate/internal/config"
)

func init() {
	registerPlain("config", "config tools: legate config upgrade FILE prints the v3 form of a v2-era config", "upgrade FILE", runConfig)
}

func runConfig(args []string) int {
	if len(args) != 2 || args[0] != "upgrade" {
		fmt.Fprintln(os.Stderr, "usage: legate config upgrade FILE")
		return 2
	}
	b, warns, err := config.LoadBootstrap(args[1], "")
	for _, w := range warns {
		fmt.Fprintf(os.Stderr, "# %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", args[1], err)
		return 1
	}
	out, err := config.ToYAML(b)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", args[1], err)
		return 1
	}
	os.Stdout.Write(out)
	return 0
}
