package main

// command is one subcommand of the legate binary.
type command struct {
	summary string
	run     func(args []string) int
}

// commands holds every subcommand by name; files register theirs in init.
var commands = map[string]command{}

func register(name, summary string, run func(args []string) int) {
	if _, dup := commands[name]; dup {
		panic("legate: command registered twice: " + name)
	}
	commands[name] = command{summary: summary, run: run}
}
