package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/bench"
	"github.com/tockd/tock/service"
)

// benchAidFlags adds the flags of `tock serve` that only `tock bench`
// passes to its children. They are parsed like the others but left out of
// `tock help serve`: they measure, they do not run tock.
//
// --bench-plain n=N,window=W,size=B,conn=tcp|pipe runs the bench's plain
// JetStream reference (bench.RunPlain) inside this process once tock is
// ready: N publishes of a B-byte body to a fresh stream of the embedded
// server, at most W unacknowledged, and prints its result as one line on
// stdout. It measures what JetStream takes with no second process on the
// machine. By hand: `tock serve --data /tmp/p --bench-plain n=1000000`.
func benchAidFlags(fs *flag.FlagSet, o *serveOpts) {
	fs.Var(&o.benchPlain, "bench-plain", "bench aid: run the plain JetStream reference in this process (`n=N,window=W,size=B,conn=tcp|pipe`)")
}

// runBenchPlain runs the plain reference against svc's server, over
// loopback TCP or (spec.Pipe) nats.InProcessServer's pipe, and prints the
// result line to stdout.
func runBenchPlain(ctx context.Context, svc *service.Service, spec bench.PlainSpec, auth []nats.Option, stdout io.Writer, log *slog.Logger) {
	opts := append(slices.Clone(auth), nats.Name("tock-bench-plain"), nats.MaxReconnects(0))
	if spec.Pipe {
		opts = append(opts, nats.InProcessServer(svc))
	}
	url := svc.ClientURL()
	var res bench.PlainResult
	if nc, err := nats.Connect(url, opts...); err != nil {
		res.Error = fmt.Sprintf("connect: %v", err)
	} else {
		res = bench.RunPlain(ctx, nc, spec)
		nc.Close()
	}
	if res.Error != "" {
		log.Warn("bench plain reference", "err", res.Error)
	}
	fmt.Fprintln(stdout, res.Line())
}
