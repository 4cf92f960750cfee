// Command legate is an Envoy-compatible service proxy and a Contour-compatible
// Kubernetes control plane in one binary.
//
// Subcommands register themselves in the commands table (see command.go), so
// each one lives in its own file: proxy, validate, config, quickstart, version,
// controller, bootstrap, discover.
package main

import (
	"fmt"
	"os"
	"sort"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run dispatches to a subcommand and returns the process exit code.
func run(args []string) int {
	if len(args) == 0 || isHelp(args[0]) {
		usage()
		return 0
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = []string{"version"}
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "legate: unknown command %q\n\n", args[0])
		usage()
		return 2
	}
	if cmd.plain {
		// A command without flags answers -h/--help wherever it is
		// (legate config upgrade --help, legate validate f.yaml --help);
		// after "--" every argument is an operand (a file named --help).
		rest, help := plainArgs(args[1:])
		if help {
			printUsage(args[0], cmd)
			return 0
		}
		return cmd.run(rest)
	}
	return cmd.run(args[1:])
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: legate <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-12s %s\n", n, commands[n].summary)
	}
}
