package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

// command is one subcommand of the legate binary.
type command struct {
	summary string
	run     func(args []string) int
	// plain marks a command that parses no flags: the dispatcher answers
	// -h/--help for it with usage, its argument synopsis (a command with a
	// FlagSet prints its flags itself).
	plain bool
	usage string
}

// commands holds every subcommand by name; files register theirs in init.
var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	if _, dup := commands[name]; dup {
		panic("legate: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}

// registerPlain registers a command that takes no flags; usage is its
// argument synopsis, printed for -h or --help.
func registerPlain(name, summary, usage string, run func(args []string) int) {
	register(name, summary, run)
	c := commands[name]
	c.plain, c.usage = true, usage
	commands[name] = c
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// plainArgs looks through the arguments of a command without flags: help
// is set when one asks for help (-h, -help or --help anywhere, or "help"
// first) before a "--", which rest drops (what follows it are operands).
func plainArgs(args []string) (rest []string, help bool) {
	for i, a := range args {
		switch {
		case a == "--":
			return append(args[:i:i], args[i+1:]...), false
		case a == "-h" || a == "-help" || a == "--help" || (i == 0 && a == "help"):
			return nil, true
		}
	}
	return args, false
}

// parseFlags parses a subcommand's flags; ok is false when the command
// should return code at once: 0 after -h/--help (the flag package printed
// the usage), 2 on a bad flag.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// printUsage answers -h/--help for a command without flags.
func printUsage(name string, c command) {
	fmt.Fprintf(os.Stderr, "usage: legate %s %s\n\n%s\n", name, c.usage, c.summary)
}
