package main

import (
	"context"
	"flag"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/gateway"
)

func statusFlags(o *clientOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	addClientFlags(fs, o)
	return fs
}

func runStatus(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("status")
	o := new(clientOpts)
	pos, err := parseArgs(statusFlags(o), args)
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	return o.request(ctx, c, nats.NewMsg(gateway.SubjectStatus), stdout, stderr)
}
