package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// runner holds the state of one run.
type runner struct {
	o    *Options
	rep  *Report
	dir  string    // run directory: data dirs and child logs
	bin  string    // tock binary
	log  io.Writer // progress lines
	body []byte

	mu       sync.Mutex
	children []*child // of the current scenario, stopped when it ends
	seq      int

	// Interval-mode ingest rates from scenario ingest, for durability:
	// tock's and the stronger plain JetStream run's.
	ingestTock, ingestJS float64
}

// Run runs the selected scenarios and returns the report; progress lines
// go to progress. Failures of scenarios are in the report (and its exit
// status), not in the error, which is only for a run that could not start.
func Run(ctx context.Context, o *Options, progress io.Writer) (*Report, error) {
	bin := o.Bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: find this executable (use --bin): %w", err)
		}
		bin = exe
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("bench: tock binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "tock-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: run directory: %w", err)
	}
	r := &runner{o: o, dir: dir, bin: bin, log: progress, body: body(o.Size),
		rep: &Report{Meta: collectMeta(o), Walls: map[string]float64{}, quick: o.Quick}}
	if o.Keep {
		r.rep.note("run directory kept: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r.rep.note("every measurement runs against a fresh `%s serve` child; the references (plain JetStream, NATS native schedules) use JetStream directly on a fresh child's embedded server, with tock idle", filepath.Base(bin))
	r.rep.note("clients and server share this machine's %d CPUs; %d requests in flight per client, %d-byte bodies", r.rep.Meta.NumCPU, o.Inflight, o.Size)
	r.rep.note("plain JetStream is the strongest plain publisher we have: one pre-built %d-byte message without headers, raw publishes with a reply subject, %d unacknowledged, PubAcks counted on one inbox; it runs from the bench process and inside a child's own process, and ratios use the stronger run", o.Size, o.PlainWindow)
	if o.Quick {
		r.rep.note("quick mode: targets are printed but not asserted (met: -)")
	}
	if len(o.ServeArgs) > 0 {
		r.rep.note("every child runs with %s", strings.Join(o.ServeArgs, " "))
	}
	runs := map[string]func(context.Context) error{
		"ingest": r.ingest, "burst": r.burst, "precision": r.precision, "isolation": r.isolation, "bigload": r.bigload, "bigslot": r.bigslot,
		"capacity": r.capacity, "recovery": r.recovery, "durability": r.durability,
	}
	start := time.Now()
	for _, name := range o.Scenarios {
		if ctx.Err() != nil {
			r.rep.fail("%s: not run: %v", name, ctx.Err())
			continue
		}
		t0 := time.Now()
		fmt.Fprintf(progress, "== %s (n=%s)\n", name, groupThousands(int64(o.SizeOf(name))))
		sctx, cancel := context.WithTimeout(ctx, r.scenarioTimeout(name))
		err := r.guard(sctx, runs[name])
		cancel()
		children := r.stopChildren()
		r.rep.Walls[name] = time.Since(t0).Seconds()
		if err != nil {
			fmt.Fprintf(progress, "%s: ERROR: %v\n", name, err)
			for _, c := range children {
				fmt.Fprintf(progress, "%s: log of %s:\n%s\n", name, c.logPath, c.logTail(10))
			}
			r.rep.Rows = append(r.rep.Rows, Row{Scenario: name, Metric: "error", Unit: UnitCount, Met: "-", Note: err.Error()})
			r.rep.fail("%s: %v", name, err)
		}
		fmt.Fprintf(progress, "== %s done in %.1fs\n", name, time.Since(t0).Seconds())
	}
	r.rep.Meta.WallSeconds = time.Since(start).Seconds()
	return r.rep, nil
}

// guard runs a scenario and turns a panic into an error, so one broken
// scenario still leaves a report.
func (r *runner) guard(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return f(ctx)
}

// scenarioTimeout is a generous bound on one scenario: a stuck scenario
// becomes an error row, not a hung process.
func (r *runner) scenarioTimeout(name string) time.Duration {
	n := float64(r.o.SizeOf(name))
	d := 10*time.Minute + time.Duration(n/2_000*float64(time.Second))
	if name == "durability" {
		d += time.Duration(n / 200 * float64(time.Second)) // fsync per write is slow
	}
	return d
}

// newChild starts a fresh `tock serve` (own data dir) and waits until it
// answers; it is stopped when the scenario ends.
func (r *runner) newChild(ctx context.Context, name string, extra ...string) (*child, error) {
	r.mu.Lock()
	r.seq++
	base := filepath.Join(r.dir, fmt.Sprintf("%02d-%s", r.seq, name))
	r.mu.Unlock()
	c, err := r.launch(base+".data", base+".log", extra...)
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// launch starts a child on a new or existing data dir without waiting for
// it to answer (a restart measures that itself); it is stopped when the
// scenario ends. Its flags are --serve-arg's, then the scenario's extra
// (which win where they overlap).
func (r *runner) launch(data, logPath string, extra ...string) (*child, error) {
	c, err := startChild(r.bin, data, logPath, append(slices.Clone(r.o.ServeArgs), extra...)...)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.children = append(r.children, c)
	r.mu.Unlock()
	return c, nil
}

// stopChildren stops the scenario's children and returns them (their
// logs are worth a look when the scenario failed).
func (r *runner) stopChildren() []*child {
	r.mu.Lock()
	cs := r.children
	r.children = nil
	r.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	return cs
}

func (r *runner) progress(status func() string) (stop func()) {
	return progressLine(r.log, 2*time.Second, status)
}

// tockIngest schedules n messages to target on c with due(i) deliver
// times, pipelined, and returns the producer and the elapsed time.
func (r *runner) tockIngest(ctx context.Context, c *child, label, target string, n int, due func(int) time.Time, onAccept acceptFunc, onCount func(int64)) (*producer, time.Duration, error) {
	return r.tockIngestStops(ctx, c, label, target, n, due, onAccept, onCount, nil, nil)
}

// tockIngestStops is tockIngest with pauses: once the first stops[k]
// requests (ascending, each below n) are all answered, it calls
// atStop(k, accepted so far) before it sends the next. The elapsed time
// returned leaves the pauses out; no reply, so no onCount, falls in one.
func (r *runner) tockIngestStops(ctx context.Context, c *child, label, target string, n int, due func(int) time.Time, onAccept acceptFunc, onCount func(int64),
	stops []int, atStop func(k int, accepted int64) error) (*producer, time.Duration, error) {
	nc, err := c.connect("bench-producer")
	if err != nil {
		return nil, 0, err
	}
	defer nc.Close()
	p, err := newProducer(nc, r.o.Inflight, onAccept)
	if err != nil {
		return nil, 0, err
	}
	defer p.close()
	p.onCount = onCount
	stop := r.progress(countProgress(label, "accepted", n, p.accepted.Load))
	fill := scheduleFill(target, r.body, due)
	var elapsed time.Duration
	lo := 0
	for k, hi := range append(slices.Clone(stops), n) {
		start := time.Now()
		err = p.runRange(ctx, lo, hi, fill)
		elapsed += time.Since(start)
		if err == nil && k < len(stops) {
			err = atStop(k, p.accepted.Load())
		}
		if err != nil {
			break
		}
		lo = hi
	}
	stop()
	if err != nil {
		return p, elapsed, fmt.Errorf("%s: %w", label, err)
	}
	if p.accepted.Load() == 0 {
		return p, elapsed, fmt.Errorf("%s: nothing accepted (%s)", label, p.errorSummary())
	}
	if s := p.errorSummary(); s != "" {
		r.rep.note("%s: %s of %s accepted; errors: %s", label, groupThousands(p.accepted.Load()), groupThousands(int64(n)), s)
	}
	return p, elapsed, nil
}

// memReading is a child's memory: the heap after a forced GC, then RSS.
type memReading struct {
	heap heapStats
	rss  int64
}

func (r *runner) readMemory(ctx context.Context, c *child) (memReading, error) {
	h, err := c.heap(ctx)
	if err != nil {
		return memReading{}, err
	}
	rss, err := c.rss()
	if err != nil {
		return memReading{}, err
	}
	return memReading{h, rss}, nil
}

// settleWaits are the shortest and longest waits of settledMemory, and
// its step. The shortest outlasts the embedded server's file store, which
// keeps a message block's cache until 10 s after its last use.
func (o *Options) settleWaits() (lo, hi, step time.Duration) {
	if o.Quick {
		return time.Second, 3 * time.Second, 500 * time.Millisecond
	}
	return 12 * time.Second, 30 * time.Second, 2 * time.Second
}

// settledMemory waits for a child's memory to settle after a load and
// returns it and the wait: every step it reads the memory (forcing a GC),
// and it stops once the shortest wait is over and two readings in a row
// agree (settled), or at the longest wait.
func (r *runner) settledMemory(ctx context.Context, c *child) (memReading, time.Duration, error) {
	lo, hi, step := r.o.settleWaits()
	start := time.Now()
	var prev *memReading
	for {
		if err := sleepUntil(ctx, time.Now().Add(step)); err != nil {
			return memReading{}, 0, err
		}
		cur, err := r.readMemory(ctx, c)
		if err != nil {
			return memReading{}, 0, err
		}
		waited := time.Since(start)
		if waited >= hi || waited >= lo && prev != nil && settled(*prev, cur) {
			return cur, waited, nil
		}
		prev = &cur
	}
}

// settled reports whether two readings agree: heap and RSS each within
// 1% or 1 MiB of the earlier one.
func settled(a, b memReading) bool {
	near := func(x, y int64) bool {
		d := x - y
		if d < 0 {
			d = -d
		}
		return d <= max(x/100, 1<<20)
	}
	return near(a.heap.alloc, b.heap.alloc) && near(a.rss, b.rss)
}

// jsIngest publishes n messages made by mk to c's JetStream, pipelined.
// It returns the PubAck rate.
func (r *runner) jsIngest(ctx context.Context, c *child, label string, n int, mk func(int) *nats.Msg) (float64, error) {
	nc, err := c.connect("bench-js")
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	var done atomicCounter
	stop := r.progress(countProgress(label, "PubAck'd", n, done.Load))
	acked, failed, elapsed, err := jsPublish(ctx, nc, n, r.o.Inflight, mk, &done.Int64)
	stop()
	if err != nil && acked == 0 {
		return 0, fmt.Errorf("%s: %w", label, err)
	}
	if failed > 0 || err != nil {
		r.rep.note("%s: %s of %s PubAck'd, %d failed (first error: %v)", label, groupThousands(acked), groupThousands(int64(n)), failed, err)
	}
	return float64(acked) / elapsed.Seconds(), nil
}

// nativeStream is the stream of the native-schedule references: schedules
// on native.sched.<i>, fired into native.target, which must be a subject of
// the same stream. AllowRollup is required (the server would set it).
func nativeStream(name string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{"native.>"}, Storage: jetstream.FileStorage,
		AllowMsgSchedules: true, AllowRollup: true}
}

// nativeMsg is schedule i, due at, carrying the exact due time in a header
// of its own so that lateness can be measured on the fired copy (which
// keeps the headers).
func nativeMsg(i int, at time.Time, data []byte) *nats.Msg {
	m := nats.NewMsg(fmt.Sprintf("native.sched.%d", i))
	m.Header.Set(jetstream.ScheduleHeader, "@at "+at.UTC().Format(time.RFC3339Nano))
	m.Header.Set(jetstream.ScheduleTargetHeader, "native.target")
	m.Header.Set("Bench-Deliver-At", at.UTC().Format(time.RFC3339Nano))
	m.Data = data
	return m
}

// waitCount polls a stream's message count (of subject filter, if given)
// every 50 ms until it reaches want, the deadline passes, or it made no
// progress for stall. It returns the count and the stream's last message
// time at the end.
func (r *runner) waitCount(ctx context.Context, nc *nats.Conn, stream, filter string, want uint64, deadline time.Time, stall time.Duration, label string) (uint64, time.Time, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var count atomicCounter
	stop := r.progress(countProgress(label, "delivered", int(want), count.Load))
	defer stop()
	var last time.Time
	lastChange, prev := time.Now(), uint64(0)
	for {
		var opts []jetstream.StreamInfoOpt
		if filter != "" {
			opts = append(opts, jetstream.WithSubjectFilter(filter))
		}
		st, err := streamState(ctx, nc, stream, opts...)
		if err == nil {
			n := st.Msgs
			if filter != "" {
				n = st.Subjects[filter]
			}
			count.Store(int64(n))
			last = st.LastTime
			if n >= want {
				return n, last, nil
			}
			if n != prev {
				prev, lastChange = n, time.Now()
			} else if n > 0 && time.Since(lastChange) > stall {
				return n, last, nil // stuck: the caller reports what is missing
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && prev > 0 {
				return prev, last, nil
			}
			return prev, last, fmt.Errorf("%s: %d of %d after deadline: %w (last error: %v)", label, prev, want, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
