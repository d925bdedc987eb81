package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/delivery"
)

type deadOpts struct {
	clientOpts
	limit int
}

func deadFlags(o *deadOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("dead", flag.ContinueOnError)
	fs.IntVar(&o.limit, "limit", 100, "list at most this `number` of dead letters, oldest first")
	addClientFlags(fs, &o.clientOpts)
	return fs
}

// deadLine is one dead letter as `tock dead` prints it.
type deadLine struct {
	ID       string `json:"id"`
	Target   string `json:"target"`
	DeadAt   string `json:"dead_at"`
	Reason   string `json:"reason"`
	Attempts int    `json:"attempts"`
	Bytes    int    `json:"bytes"`
	// Set for a message a JetStream consumer gave up on (--dead-letter):
	// where it came from.
	Stream    string `json:"stream,omitempty"`
	Consumer  string `json:"consumer,omitempty"`
	StreamSeq uint64 `json:"stream_seq,omitempty"`
}

// runDead lists the dead-letter stream, one JSON line per dead letter,
// read with an ordered consumer (nothing is acknowledged or removed).
func runDead(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("dead")
	o := new(deadOpts)
	pos, err := parseArgs(deadFlags(o), args)
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	if err == nil && o.limit < 1 {
		err = usagef("--limit must be at least 1")
	}
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	nc, err := o.connect(c.name)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	stream, err := js.Stream(rctx, delivery.DeadStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return failUsage(c, fmt.Errorf("no stream %s: is tock serving there?", delivery.DeadStream), stdout, stderr)
	}
	if err != nil {
		return failUsage(c, fmt.Errorf("%s: %w", delivery.DeadStream, err), stdout, stderr)
	}
	n := min(uint64(o.limit), stream.CachedInfo().State.Msgs)
	if n == 0 {
		return 0
	}
	cons, err := stream.OrderedConsumer(rctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return failUsage(c, fmt.Errorf("read %s: %w", delivery.DeadStream, err), stdout, stderr)
	}
	batch, err := cons.Fetch(int(n), jetstream.FetchMaxWait(o.timeout))
	if err != nil {
		return failUsage(c, fmt.Errorf("read %s: %w", delivery.DeadStream, err), stdout, stderr)
	}
	enc := json.NewEncoder(stdout)
	for m := range batch.Messages() {
		h := m.Headers()
		line := deadLine{ID: h.Get(delivery.HeaderID), Target: h.Get(delivery.HeaderTarget), Reason: h.Get(delivery.HeaderDeadReason), Bytes: len(m.Data())}
		line.Attempts, _ = strconv.Atoi(h.Get(delivery.HeaderAttempts))
		line.Stream, line.Consumer = h.Get(delivery.HeaderStream), h.Get(delivery.HeaderConsumer)
		line.StreamSeq, _ = strconv.ParseUint(h.Get(delivery.HeaderStreamSeq), 10, 64)
		if md, err := m.Metadata(); err == nil {
			line.DeadAt = md.Timestamp.UTC().Format(delivery.TimeFormat)
		}
		if err := enc.Encode(line); err != nil {
			return failUsage(c, err, stdout, stderr)
		}
	}
	if err := batch.Error(); err != nil {
		return failUsage(c, fmt.Errorf("read %s: %w", delivery.DeadStream, err), stdout, stderr)
	}
	return 0
}
