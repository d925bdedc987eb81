// Command tock runs the tock scheduled-message service and talks to it.
//
//	tock serve    [flags]                       run the service
//	tock schedule --to SUBJECT (--at T | --in D) [-H K:V]... [BODY|-]
//	tock cancel   ID
//	tock get      ID
//	tock status                                 show counters and the journal's size
//	tock watch    SUBJECT                       print deliveries as they arrive
//	tock sim      [--seed N] [--seeds N] [--parallel K] [--faults on|off] [--swarm on|off] [flags]  simulate
//	tock bench    (--all | --quick | --scenario LIST) [--json FILE] [flags]  benchmark against references
//	tock version
//	tock help     [VERB | all]
//
// Exit status: 0 on success, 1 when the operation failed (error reply, no
// server, timeout), 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/tockd/tock/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default behaviour so a second
	// Ctrl-C kills a shutdown that hangs.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// runFunc is the body of a verb: it gets the arguments after the verb and
// returns the exit status.
type runFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int

type command struct {
	name     string
	synopsis string // arguments after "tock NAME"
	summary  string // one line for the overview
	detail   string // paragraph(s) for "tock help NAME"
	flags    func() *flag.FlagSet
	run      runFunc
}

func commands() []*command {
	return []*command{
		{
			name:     "serve",
			synopsis: "[flags]",
			summary:  "run the tock service (embedded NATS server unless --nats-url)",
			detail: "Runs tock until SIGINT or SIGTERM, then shuts down gracefully.\n" +
				"Durations take the units of Go (ms, s, m, h) and d for days: 365d, 1d12h.\n" +
				"Sizes take a plain byte count or a suffix: 512KiB, 1MiB (also k, M; kB/MB are powers of 1000).\n" +
				"Memory: without --memory-limit or GOMEMLIMIT, Go's soft memory limit is 90% of the\n" +
				"cgroup's memory limit (v2 memory.max, v1 memory.limit_in_bytes), if there is one, so the\n" +
				"GC works harder before a container's limit is reached; the start-up log names the limit.\n" +
				"With --nats-url, that server needs JetStream, and tock's user the permissions in\n" +
				"docs/SECURITY.md.\n" + connHelp,
			flags: func() *flag.FlagSet { return serveFlags(new(serveOpts)) },
			run:   runServe,
		},
		{
			name:     "schedule",
			synopsis: "--to SUBJECT (--at TIME | --in DURATION) [-H KEY:VALUE]... [BODY | -]",
			summary:  "schedule a message, print the reply {id, target, deliver_at}",
			detail: "Publishes BODY to SUBJECT at TIME or after DURATION. BODY is taken literally;\n" +
				"\"-\" reads it from standard input; without BODY the message is empty.\n" +
				"TIME is RFC 3339 (2030-01-02T15:04:05.123Z, fraction optional) or Unix milliseconds.\n" +
				"DURATION is a Go duration, or days: 90s, 15m, 36h, 7d.\n" +
				"Every -H header travels with the message. Flags may come after BODY;\n" +
				"put BODY after -- when it starts with \"-\".\n" + connHelp,
			flags: func() *flag.FlagSet { return scheduleFlags(new(scheduleOpts)) },
			run:   runSchedule,
		},
		{
			name:     "cancel",
			synopsis: "[flags] ID",
			summary:  "cancel a pending message",
			detail:   "Prints the reply {id, state}.\n" + connHelp,
			flags:    func() *flag.FlagSet { return idFlags("cancel", new(clientOpts)) },
			run:      runCancel,
		},
		{
			name:     "get",
			synopsis: "[flags] ID",
			summary:  "show a message's state",
			detail:   "Prints the reply {id, target, deliver_at, state, delivered_at?, cancelled_at?, dead_at?, dead_reason?}.\n" + connHelp,
			flags:    func() *flag.FlagSet { return idFlags("get", new(clientOpts)) },
			run:      runGet,
		},
		{
			name:     "dead",
			synopsis: "[flags]",
			summary:  "list dead-lettered messages",
			detail: "Prints one JSON line per dead letter in TOCK_DLQ, oldest first:\n" +
				"{id, target, dead_at, reason, attempts, bytes}, plus {stream, consumer, stream_seq} for a\n" +
				"message a JetStream consumer gave up on (serve --dead-letter). Nothing is removed; `tock redrive ID`\n" +
				"schedules one again. Any JetStream client reads the stream too (nats stream view TOCK_DLQ).\n" + connHelp,
			flags: func() *flag.FlagSet { return deadFlags(new(deadOpts)) },
			run:   runDead,
		},
		{
			name:     "redrive",
			synopsis: "[flags] ID",
			summary:  "schedule a dead-lettered message again",
			detail: "Reads the dead letter of ID from TOCK_DLQ, schedules it again to its target with its\n" +
				"body and headers (at once, or at --at / --in), and deletes the dead letter.\n" +
				"Prints the reply {id, target, deliver_at, redriven_from}; id is the new message's.\n" + connHelp,
			flags: func() *flag.FlagSet { return redriveFlags(new(redriveOpts)) },
			run:   runRedrive,
		},
		{
			name:     "status",
			synopsis: "[flags]",
			summary:  "show tock's version, counters and journal size",
			detail: "Prints the reply {version, scheduler: {...}, journal: {stream, messages, bytes, subjects},\n" +
				"quarantine: {count, recent: [...]}} (journal records refused and skipped, docs/SECURITY.md).\n" +
				"The journal lives in tock's private account, so this is how a client sees its size.",
			flags: func() *flag.FlagSet { return statusFlags(new(clientOpts)) },
			run:   runStatus,
		},
		{
			name:     "watch",
			synopsis: "[flags] SUBJECT",
			summary:  "print messages delivered to SUBJECT (wildcards allowed)",
			detail: "Subscribes to SUBJECT and prints one line per message:\n" +
				"  RECEIVED-AT SUBJECT TOCK-ID LATENESS \"BODY\"\n" +
				"LATENESS is the receive time minus the Tock-Deliver-At header, in ms;\n" +
				"\"-\" stands for a missing header. Runs until interrupted, --count\n" +
				"messages have arrived or --for has passed.\n" + connHelp,
			flags: func() *flag.FlagSet { return watchFlags(new(watchOpts)) },
			run:   runWatch,
		},
		{
			name:     "sim",
			synopsis: "[--seed N] [--seeds N] [--parallel K] [--messages N] [--span D] [--faults on|off] [--fault-rates NAME=P,...] [--swarm on|off] [flags]",
			summary:  "run the deterministic simulator: real actors, virtual time, seeded faults",
			detail: "Runs the scheduler's actors over an in-memory journal and publisher in virtual\n" +
				"time, drives a seeded workload and seeded faults through them and checks the\n" +
				"invariants on every step. The same seed replays the same run; a violation\n" +
				"prints the seed, the invariant, the message's history and how to rerun.\n" +
				"With --swarm on (the default with faults) each seed also draws its own\n" +
				"configuration; the report and the rerun line show it. docs/SIMULATION.md.",
			flags: func() *flag.FlagSet { return simFlags(new(simOpts)) },
			run:   runSim,
		},
		{
			name:     "bench",
			synopsis: "(--all | --quick | --scenario LIST) [--json FILE] [--n NAME=N,...] [flags]",
			summary:  "benchmark tock against plain JetStream and NATS native schedules",
			detail: "Runs the scenarios ingest, burst, precision, isolation, bigload, capacity, recovery\n" +
				"and durability, each against fresh `tock serve` children of --bin (default: this\n" +
				"executable), and prints every figure next to its reference and target. --quick\n" +
				"uses tiny sizes and does not assert targets. Exit status 1 when a scenario failed\n" +
				"or a message was lost or early; missed targets are reported, not failures.",
			flags: func() *flag.FlagSet { return bench.FlagSet(new(bench.Options)) },
			run:   runBench,
		},
		{
			name:     "version",
			synopsis: "",
			summary:  "print the build's version",
			flags:    func() *flag.FlagSet { return flag.NewFlagSet("version", flag.ContinueOnError) },
			run:      runVersion,
		},
	}
}

func lookup(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// run dispatches to the verb named by args[0].
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printOverview(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return runHelp(args[1:], stdout, stderr)
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "tock: unknown command %q\n\n", args[0])
		printOverview(stderr)
		return 2
	}
	return c.run(ctx, args[1:], stdin, stdout, stderr)
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printOverview(stdout)
		return 0
	}
	if args[0] == "all" {
		for _, c := range commands() {
			printUsage(stdout, c)
			fmt.Fprintln(stdout)
		}
		return 0
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "tock help: unknown command %q\n\n", args[0])
		printOverview(stderr)
		return 2
	}
	printUsage(stdout, c)
	return 0
}

func printOverview(w io.Writer) {
	fmt.Fprintln(w, "tock schedules NATS messages for later delivery.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage:")
	for _, c := range commands() {
		fmt.Fprintln(w, strings.TrimRight(fmt.Sprintf("  tock %-8s %s", c.name, c.synopsis), " "))
	}
	fmt.Fprintln(w, "  tock help     [COMMAND | all]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s  %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'tock help COMMAND' or 'tock COMMAND -h' for a command's flags.")
	fmt.Fprintln(w, "Client commands connect to $TOCK_NATS_URL, else nats://127.0.0.1:4222;")
	fmt.Fprintln(w, "credentials and TLS: 'tock help schedule'.")
}

func printUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: tock %s %s\n\n", c.name, c.synopsis)
	fmt.Fprintf(w, "%s.\n", strings.ToUpper(c.summary[:1])+c.summary[1:])
	if c.detail != "" {
		fmt.Fprintln(w)
		fmt.Fprintln(w, c.detail)
	}
	fs := c.flags()
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "flags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// parseArgs parses flags and positional arguments in any order (the flag
// package alone stops at the first positional one). Everything after "--"
// is positional. Errors are returned, not printed; -h gives flag.ErrHelp.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// failUsage reports a parse error of verb c: usage on stdout and status 0
// for -h, else the error and a hint on stderr and status 2. Other errors
// are printed as they are with status 1.
func failUsage(c *command, err error, stdout, stderr io.Writer) int {
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout, c)
		return 0
	}
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "tock %s: %v\nusage: tock %s %s\nRun 'tock help %s' for details.\n",
			c.name, err, c.name, c.synopsis, c.name)
		return 2
	}
	fmt.Fprintf(stderr, "tock %s: %v\n", c.name, err)
	return 1
}

func runVersion(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("version")
	pos, err := parseArgs(c.flags(), args)
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	version, goVersion := "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				version += " " + s.Value
			}
		}
	}
	fmt.Fprintf(stdout, "tock %s %s\n", version, goVersion)
	return 0
}
