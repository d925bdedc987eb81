package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/tockd/tock/bench"
)

// runBench runs the benchmark suite: table on stdout (stderr when the JSON
// report goes to stdout), progress on stderr.
func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("bench")
	o, err := bench.Parse(args)
	if err != nil {
		var ue *bench.UsageError
		if errors.As(err, &ue) {
			err = &usageError{ue.Msg}
		} else if !errors.Is(err, flag.ErrHelp) {
			err = &usageError{err.Error()}
		}
		return failUsage(c, err, stdout, stderr)
	}
	rep, err := bench.Run(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "tock bench: %v\n", err)
		return 1
	}
	table := stdout
	if o.JSONPath == "-" {
		table = stderr
	}
	fmt.Fprintln(table)
	if err := rep.WriteTable(table); err != nil {
		fmt.Fprintf(stderr, "tock bench: %v\n", err)
		return 1
	}
	if o.JSONPath != "" {
		if err := writeBenchJSON(o.JSONPath, rep, stdout); err != nil {
			fmt.Fprintf(stderr, "tock bench: %v\n", err)
			return 1
		}
	}
	if len(rep.Failures) > 0 {
		return 1
	}
	return 0
}

func writeBenchJSON(path string, rep *bench.Report, stdout io.Writer) error {
	if path == "-" {
		return rep.WriteJSON(stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("json report: %w", err)
	}
	if err := rep.WriteJSON(f); err != nil {
		f.Close()
		return fmt.Errorf("json report: %w", err)
	}
	return f.Close()
}
