package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

type watchOpts struct {
	clientOpts
	count   int
	forDur  time.Duration
	bodyMax int
}

func watchFlags(o *watchOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	fs.IntVar(&o.count, "count", 0, "stop after `N` messages (0: no limit)")
	fs.Var(newDurationValue(&o.forDur, 0), "for", "stop after this `duration` (0: no limit); with --count, exit 1 if fewer arrived")
	fs.IntVar(&o.bodyMax, "body-max", 80, "print at most this many `bytes` of each body")
	addClientFlags(fs, &o.clientOpts)
	return fs
}

func parseWatch(args []string) (*watchOpts, string, error) {
	o := new(watchOpts)
	pos, err := parseArgs(watchFlags(o), args)
	if err != nil {
		return nil, "", err
	}
	if len(pos) != 1 {
		return nil, "", usagef("want exactly one SUBJECT, got %d arguments", len(pos))
	}
	if o.count < 0 || o.forDur < 0 || o.bodyMax < 0 {
		return nil, "", usagef("--count, --for and --body-max must not be negative")
	}
	return o, pos[0], nil
}

func runWatch(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("watch")
	o, subject, err := parseWatch(args)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	var (
		mu      sync.Mutex // guards n, stopped and writes to stdout and stderr
		n       int
		stopped bool
		done    = make(chan struct{})
	)
	// note reports connection trouble until the watch stops.
	note := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			fmt.Fprintf(stderr, "tock watch: "+format+"\n", a...)
		}
	}
	nc, err := o.connect(c.name,
		nats.MaxReconnects(-1), // a watch outlives restarts of the server
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { note("disconnected: %v", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { note("reconnected to %s", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	defer nc.Close()

	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if stopped || o.count > 0 && n >= o.count {
			return
		}
		n++
		io.WriteString(stdout, formatDelivery(now, m, o.bodyMax)+"\n")
		if n == o.count {
			close(done)
		}
	})
	if err == nil && o.count > 0 {
		err = sub.AutoUnsubscribe(o.count)
	}
	if err == nil {
		err = nc.FlushTimeout(o.timeout) // the subscription is live from here on
	}
	if err != nil {
		mu.Lock()
		stopped = true
		mu.Unlock()
	}
	if errors.Is(err, nats.ErrBadSubject) {
		return failUsage(c, usagef("invalid subject %q", subject), stdout, stderr)
	}
	if err != nil {
		return failUsage(c, fmt.Errorf("subscribe to %q: %w", subject, err), stdout, stderr)
	}
	note("watching %s on %s", subject, nc.ConnectedUrlRedacted())

	var expired <-chan time.Time
	if o.forDur > 0 {
		t := time.NewTimer(o.forDur)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-done:
	case <-ctx.Done():
	case <-expired:
	}
	mu.Lock()
	stopped = true
	got := n
	mu.Unlock()
	sub.Unsubscribe()
	if o.count > 0 && got < o.count && ctx.Err() == nil {
		fmt.Fprintf(stderr, "tock watch: %d of %d messages within %s\n", got, o.count, formatDuration(o.forDur))
		return 1
	}
	return 0
}

// formatDelivery is the line watch prints for m received at recv:
// RECEIVED-AT SUBJECT TOCK-ID LATENESS "BODY".
func formatDelivery(recv time.Time, m *nats.Msg, bodyMax int) string {
	var b strings.Builder
	b.WriteString(recv.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	b.WriteByte(' ')
	b.WriteString(m.Subject)
	b.WriteByte(' ')
	if id := m.Header.Get(hdrID); id != "" {
		b.WriteString(id)
	} else {
		b.WriteByte('-')
	}
	b.WriteByte(' ')
	if at, ok := parseDeliveredAt(m.Header.Get(hdrDeliverAt)); ok {
		b.WriteString(formatLateness(recv.Sub(at)))
	} else {
		b.WriteByte('-')
	}
	b.WriteByte(' ')
	body := truncate(m.Data, bodyMax)
	b.WriteString(strconv.Quote(string(body)))
	if len(body) < len(m.Data) {
		fmt.Fprintf(&b, "… (%d bytes)", len(m.Data))
	}
	return b.String()
}

// parseDeliveredAt reads a Tock-Deliver-At header: RFC 3339 as tock
// delivers it, or Unix milliseconds.
func parseDeliveredAt(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), true
	}
	return time.Time{}, false
}

// formatLateness prints d in milliseconds rounded to 0.1 ms: "12.3ms", "-0.4ms".
func formatLateness(d time.Duration) string {
	tenths := d.Round(100*time.Microsecond) / (100 * time.Microsecond)
	sign := ""
	if tenths < 0 {
		sign, tenths = "-", -tenths
	}
	return fmt.Sprintf("%s%d.%dms", sign, tenths/10, tenths%10)
}
