package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/msgid"
)

var (
	// Targets from the benchmark's brief; ingest at least as fast as the
	// stronger plain JetStream run (plainRates.stronger).
	tIngestVsJS     = &Target{OnRatio: true, Op: GE, Limit: 1}
	tIngestVsNative = &Target{OnRatio: true, Op: GT, Limit: 1}
	tStorage        = &Target{OnRatio: true, Op: LE, Limit: 1.3}
	tBurst          = &Target{Op: GE, Limit: 60_000}
	tP99            = &Target{Op: LE, Limit: 5}
	tP999           = &Target{Op: LE, Limit: 20}
	tMax            = &Target{Op: LE, Limit: 50}
	tZero           = &Target{Op: EQ, Limit: 0}
	tHeapPerMsg     = &Target{Op: LE, Limit: 40}
	tIngestRSS      = &Target{Op: LE, Limit: 100} // settled RSS growth per pending message
	tIngestHeap     = &Target{Op: LE, Limit: 20}  // settled heap per pending message
	tHeapVsNative   = &Target{OnRatio: true, Op: LE, Limit: 0.1}
	tReady          = &Target{Op: LE, Limit: 3}
	// Flat ingest: the slowest checkpoint window within 30% of the fastest.
	tFlat = &Target{Op: GE, Limit: 0.7}
)

const year = 365 * 24 * time.Hour

// durabilityPlainMax caps the messages of each plain JetStream run with
// --sync always.
const durabilityPlainMax = 50_000

// newChildWithStream starts a child and creates stream cfg on it; the
// connection it returns is the caller's to close.
func (r *runner) newChildWithStream(ctx context.Context, name string, cfg jetstream.StreamConfig, extra ...string) (*child, *nats.Conn, error) {
	c, err := r.newChild(ctx, name, extra...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s child: %w", name, err)
	}
	nc, err := c.connect("bench-info")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := createStream(ctx, nc, cfg); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nc, nil
}

// targetStream is a file-stored stream capturing one target subject.
func targetStream(name, subject string) jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage}
}

// spread returns due(i): n deliver times evenly over [from, from+span).
func spread(from time.Time, span time.Duration, n int) func(int) time.Time {
	return func(i int) time.Time {
		return from.Add(time.Duration(float64(span) * float64(i) / float64(n)))
	}
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// ingest: accept rate of tock against plain JetStream and native
// schedules, and the storage each needs per message.
func (r *runner) ingest(ctx context.Context) error {
	n := r.o.SizeOf("ingest")
	// The first deliver time is two minutes ahead, so that no slot is
	// loaded (10 s before it starts) until the memory has settled.
	first := time.Now().Add(2 * time.Minute)
	due := spread(first, time.Hour-2*time.Minute, n)

	c, err := r.newChild(ctx, "ingest-tock")
	if err != nil {
		return fmt.Errorf("ingest: tock child: %w", err)
	}
	before, err := r.readMemory(ctx, c)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	p, elapsed, err := r.tockIngest(ctx, c, "ingest tock", "bench.ingest", n, due, nil, nil)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	accepted := p.accepted.Load()
	tockRate := float64(accepted) / elapsed.Seconds()
	fmt.Fprintf(r.log, "ingest tock: waiting for the memory to settle\n")
	after, waited, err := r.settledMemory(ctx, c)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	if time.Now().After(first.Add(-10 * time.Second)) {
		r.rep.note("ingest: the first slot was due to load before the memory was read: its messages count in the memory figures")
	}
	nc, err := c.connect("bench-info")
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	st, err := journalState(ctx, nc)
	nc.Close()
	if err != nil {
		return fmt.Errorf("ingest: journal: %w", err)
	}
	tockDisk := dirSize(c.data)
	c.stop()

	refs, jsBytes, jsDisk, err := r.plainRefs(ctx, "ingest", n)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}

	nativeRate, nativeBytes := math.NaN(), math.NaN()
	natc, err := r.newChild(ctx, "ingest-native")
	if err != nil {
		return fmt.Errorf("ingest: native child: %w", err)
	}
	if err := r.nativeIngest(ctx, natc, "BENCH_NATIVE", "ingest native", n, due, &nativeRate, &nativeBytes); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	natc.stop()

	bestName, bestRate := refs.stronger()
	r.ingestTock, r.ingestJS = tockRate, bestRate
	r.rep.add("ingest", "accepted/s", UnitRate, tockRate, bestName, bestRate, tIngestVsJS, "against the stronger of the two plain JetStream runs below")
	r.rep.add("ingest", "accepted/s", UnitRate, tockRate, "native schedules", nativeRate, tIngestVsNative, "")
	refs.report(r.rep, "ingest", "")
	memNote := fmt.Sprintf("%s → %s over %s pending, read %.0f s after the ingest (after a forced GC; settled = two readings in a row within 1%%)",
		formatValue(float64(before.rss), UnitBytes), formatValue(float64(after.rss), UnitBytes), groupThousands(accepted), waited.Seconds())
	r.rep.value("ingest", "RSS growth/pending msg, settled", UnitBPerMsg, float64(after.rss-before.rss)/float64(accepted), tIngestRSS, memNote)
	r.rep.value("ingest", "heap/pending msg, settled", UnitBPerMsg, float64(after.heap.alloc-before.heap.alloc)/float64(accepted), tIngestHeap,
		fmt.Sprintf("HeapAlloc %s → %s", formatValue(float64(before.heap.alloc), UnitBytes), formatValue(float64(after.heap.alloc), UnitBytes)))
	perMsg := float64(st.Bytes) / float64(accepted)
	r.rep.add("storage", "journal bytes/pending msg", UnitBPerMsg, perMsg, "plain JetStream, no headers", jsBytes, tStorage,
		fmt.Sprintf("TOCK_JOURNAL holds %s in %s records for %s pending; the plain messages carry no deliver time", formatValue(float64(st.Bytes), UnitBytes), groupThousands(int64(st.Msgs)), groupThousands(accepted)))
	r.rep.add("storage", "native stream bytes/schedule", UnitBPerMsg, nativeBytes, "plain JetStream, no headers", jsBytes, nil, "")
	r.rep.add("storage", "data dir bytes/pending msg", UnitBPerMsg, float64(tockDisk)/float64(accepted), "plain JetStream, no headers", jsDisk, nil, "on-disk size of the whole data directory")
	return nil
}

// plainRefs measures the plain JetStream reference on fresh children
// started with extra: from this process (plainFill), then inside the
// child's own process (--bench-plain). It returns the rates and, from the
// first run, the stream's and the data dir's bytes per message.
func (r *runner) plainRefs(ctx context.Context, scenario string, n int, extra ...string) (refs plainRates, perMsg, diskPerMsg float64, err error) {
	c, err := r.newChild(ctx, scenario+"-js", extra...)
	if err != nil {
		return refs, 0, 0, fmt.Errorf("JetStream child: %w", err)
	}
	refs.separate, perMsg, diskPerMsg, err = r.plainFill(ctx, c, scenario+" JetStream, separate process", n)
	if err != nil {
		return refs, 0, 0, err
	}
	c.stop()
	if refs.inProcess, err = r.plainInProcess(ctx, scenario, n, extra...); err != nil {
		return refs, 0, 0, err
	}
	return refs, perMsg, diskPerMsg, nil
}

// plainFill creates the plain stream on c and publishes n messages to it
// from this process with plainPublish. It returns the PubAck rate, the
// stream's bytes per message and the data dir's bytes per message.
func (r *runner) plainFill(ctx context.Context, c *child, label string, n int) (rate, perMsg, diskPerMsg float64, err error) {
	nc, err := c.connect("bench-js")
	if err != nil {
		return 0, 0, 0, err
	}
	defer nc.Close()
	if err := createStream(ctx, nc, plainStreamConfig()); err != nil {
		return 0, 0, 0, err
	}
	var done atomicCounter
	stop := r.progress(countProgress(label, "PubAck'd", n, done.Load))
	res := plainPublish(ctx, nc, plainSubject, n, r.o.PlainWindow, r.body, &done.Int64)
	stop()
	if rate, err = r.plainRate(label, n, res); err != nil {
		return 0, 0, 0, err
	}
	st, err := streamState(ctx, nc, plainStream)
	if err != nil {
		return 0, 0, 0, err
	}
	if st.Msgs == 0 {
		return 0, 0, 0, fmt.Errorf("%s: stream is empty", label)
	}
	return rate, float64(st.Bytes) / float64(st.Msgs), float64(dirSize(c.data)) / float64(st.Msgs), nil
}

// plainInProcess runs the plain reference inside a fresh child (started
// with extra) against its own embedded server and returns its rate.
func (r *runner) plainInProcess(ctx context.Context, scenario string, n int, extra ...string) (float64, error) {
	label := scenario + " JetStream, in the server's process"
	spec := PlainSpec{N: n, Window: r.o.PlainWindow, Size: r.o.Size}
	c, err := r.newChild(ctx, scenario+"-js-inproc", append([]string{"--bench-plain", spec.String()}, extra...)...)
	if err != nil {
		return 0, fmt.Errorf("in-process JetStream child: %w", err)
	}
	defer c.stop()
	fmt.Fprintf(r.log, "%s: %s publishes inside the child\n", label, groupThousands(int64(n)))
	res, err := c.plainResult(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", label, err)
	}
	fmt.Fprintf(r.log, "%s: %s PubAck'd, %s/s\n", label, groupThousands(res.Acked), shortCount(res.Rate()))
	return r.plainRate(label, n, res)
}

// plainRate is a run's PubAck rate; a run without any PubAck is an error,
// a partial one a note.
func (r *runner) plainRate(label string, n int, res PlainResult) (float64, error) {
	if res.Acked == 0 {
		return 0, fmt.Errorf("%s: nothing PubAck'd: %s", label, res.Error)
	}
	if res.Failed > 0 || res.Error != "" {
		r.rep.note("%s: %s of %s PubAck'd, %d failed (first error: %s)", label, groupThousands(res.Acked), groupThousands(int64(n)), res.Failed, res.Error)
	}
	return res.Rate(), nil
}

// plainRates are the two runs of the plain JetStream reference.
type plainRates struct{ separate, inProcess float64 }

// stronger names the faster run and returns its rate: every ratio of an
// ingest rate to plain JetStream is quoted against it.
func (p plainRates) stronger() (string, float64) {
	if p.inProcess > p.separate {
		return "plain JetStream, in-process", p.inProcess
	}
	return "plain JetStream, separate process", p.separate
}

// report adds one row per run; qualifier ("" or ", sync always") follows
// "plain JetStream" in the metric.
func (p plainRates) report(rep *Report, scenario, qualifier string) {
	rep.value(scenario, "plain JetStream PubAck/s"+qualifier+", separate process", UnitRate, p.separate, nil, "published from the bench process")
	rep.value(scenario, "plain JetStream PubAck/s"+qualifier+", in-process", UnitRate, p.inProcess, nil,
		"the same loop inside the `tock serve` child, against its own embedded server (hidden flag --bench-plain)")
}

// nativeIngest publishes n native schedules due at due(i) to a fresh stream
// and stores the PubAck rate and the stream's bytes per schedule.
func (r *runner) nativeIngest(ctx context.Context, c *child, stream, label string, n int, due func(int) time.Time, rate, perMsg *float64) error {
	nc, err := c.connect("bench-info")
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := createStream(ctx, nc, nativeStream(stream)); err != nil {
		return err
	}
	if *rate, err = r.jsIngest(ctx, c, label, n, func(i int) *nats.Msg { return nativeMsg(i, due(i), r.body) }); err != nil {
		return err
	}
	st, err := streamState(ctx, nc, stream)
	if err != nil {
		return err
	}
	if st.Msgs > 0 {
		*perMsg = float64(st.Bytes) / float64(st.Msgs)
	}
	return nil
}

// acceptedSet records accepted ids by request index.
type acceptedSet struct {
	mu  sync.Mutex
	ids []msgid.ID
	ok  []bool
}

func newAcceptedSet(n int) *acceptedSet {
	return &acceptedSet{ids: make([]msgid.ID, n), ok: make([]bool, n)}
}

func (a *acceptedSet) add(i int, id msgid.ID, _ time.Time) {
	a.mu.Lock()
	a.ids[i], a.ok[i] = id, true
	a.mu.Unlock()
}

// first returns the id of the lowest request index accepted.
func (a *acceptedSet) first() (msgid.ID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, ok := range a.ok {
		if ok {
			return a.ids[i], true
		}
	}
	return msgid.ID{}, false
}

// missing counts accepted ids that are not in got.
func (a *acceptedSet) missing(got map[msgid.ID]int) (missing int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, id := range a.ids {
		if a.ok[i] && got[id] == 0 {
			missing++
		}
	}
	return missing
}

type shrinkResult struct {
	after    int64     // journal bytes when the watch ended
	at, from time.Time // when it shrank (zero: not within the wait); the wait's start
}

// watchShrink polls the journal until it holds at most a tenth of its
// peak. With one-minute slots a slot closes at its end, so the wait
// starts from the later of the last delivery and the slot's end, plus
// retention, and gives up 60 s after that.
func watchShrink(ctx context.Context, nc *nats.Conn, T, last time.Time, retention time.Duration, peak *int64) shrinkResult {
	if st, err := journalState(ctx, nc); err == nil {
		*peak = max(*peak, int64(st.Bytes))
	}
	from := T.Truncate(time.Minute).Add(time.Minute)
	if last.After(from) {
		from = last
	}
	from = from.Add(retention)
	res := shrinkResult{after: -1, from: from}
	for deadline := from.Add(60 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		if st, err := journalState(ctx, nc); err == nil {
			res.after = int64(st.Bytes)
			if res.after <= *peak/10 {
				res.at = time.Now()
				break
			}
		}
	}
	return res
}

// burst: everything due at the same instant, into a stream.
func (r *runner) burst(ctx context.Context) error {
	n := r.o.SizeOf("burst")
	lead := r.o.leadFor(n, 15*time.Second, 5*time.Second)
	const retention = 5 * time.Second

	c, nc, err := r.newChildWithStream(ctx, "burst-tock", targetStream("BENCH_BURST", "bench.burst"), "--retention", retention.String())
	if err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	defer nc.Close()
	T := time.Now().Add(lead).Truncate(time.Millisecond)
	acc := newAcceptedSet(n)
	p, _, err := r.tockIngest(ctx, c, "burst tock", "bench.burst", n, func(int) time.Time { return T }, acc.add, nil)
	if err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	if late := time.Since(T); late > 0 {
		r.rep.note("burst: accepting took %v longer than the lead of %v: the burst overlapped ingest", late.Round(time.Millisecond), lead)
	}
	accepted := uint64(p.accepted.Load())
	peak := int64(0)
	if st, err := journalState(ctx, nc); err == nil {
		peak = int64(st.Bytes)
	}
	expected := time.Duration(float64(n) / 60_000 * float64(time.Second))
	got, last, err := r.waitCount(ctx, nc, "BENCH_BURST", "", accepted, T.Add(5*expected+60*time.Second), 20*time.Second, "burst tock")
	if err != nil {
		return fmt.Errorf("burst: %w", err)
	}
	// The journal should shrink once the slot closed and retention passed.
	// Watch for it while the ids are read back and the native reference
	// runs, so the time measured is tock's, not the bench's.
	shrink := make(chan shrinkResult, 1)
	go func() { shrink <- watchShrink(ctx, nc, T, last, retention, &peak) }()
	ids, total, err := readIDs(ctx, nc, "BENCH_BURST", "", got)
	if err != nil {
		return fmt.Errorf("burst: read back: %w", err)
	}
	missing := acc.missing(ids)
	toLast := last.Sub(T)
	r.rep.note("burst: T = now + %v; fired/s = delivered / (stream's last message time − T)", lead)

	// The reference: the same burst as native schedules, on a fresh child.
	nativeRate, nativeToLast := math.NaN(), math.NaN()
	if err := r.nativeBurst(ctx, n, lead, &nativeRate, &nativeToLast); err != nil {
		r.rep.note("burst: native reference failed: %v", err)
	}
	r.rep.add("burst", "fired/s", UnitRate, float64(got)/seconds(toLast), "native schedules", nativeRate, tBurst, "")
	r.rep.add("burst", "T → last delivered", UnitSec, seconds(toLast), "native schedules", nativeToLast, nil, "")
	r.rep.value("burst", "delivered (unique Tock-Id)", UnitCount, float64(len(ids)), nil, fmt.Sprintf("of %s accepted", groupThousands(int64(accepted))))
	r.rep.value("burst", "missing", UnitCount, float64(missing), tZero, "")
	r.rep.value("burst", "duplicates", UnitCount, float64(total-uint64(len(ids))), nil, "at-least-once: reported, not a failure")
	if missing > 0 {
		r.rep.fail("burst: %d acknowledged messages missing from BENCH_BURST", missing)
	}

	sh := <-shrink
	after, shrunk, from := sh.after, sh.at, sh.from
	note := fmt.Sprintf("journal at peak %s; shrunk = at most a tenth of the peak", formatValue(float64(peak), UnitBytes))
	r.rep.add("storage", "journal bytes after burst + retention", UnitBytes, float64(after), "peak", float64(peak), nil, note)
	if shrunk.IsZero() {
		r.rep.value("storage", "journal shrink time", UnitSec, math.NaN(), nil,
			fmt.Sprintf("did not shrink within 60 s after slot end + retention (%s left)", formatValue(float64(after), UnitBytes)))
	} else {
		r.rep.value("storage", "journal shrink time", UnitSec, seconds(shrunk.Sub(from)), nil,
			"after max(last delivery, slot end) + --retention 5s")
	}
	return nil
}

// nativeBurst runs the burst as n native schedules, all @at one instant.
func (r *runner) nativeBurst(ctx context.Context, n int, lead time.Duration, rate, toLast *float64) error {
	c, nc, err := r.newChildWithStream(ctx, "burst-native", nativeStream("BENCH_NATIVE_BURST"))
	if err != nil {
		return err
	}
	defer c.stop()
	defer nc.Close()
	T := time.Now().Add(lead).Truncate(time.Millisecond)
	if _, err := r.jsIngest(ctx, c, "burst native", n, func(i int) *nats.Msg { return nativeMsg(i, T, r.body) }); err != nil {
		return err
	}
	expected := time.Duration(float64(n) / 60_000 * float64(time.Second))
	got, last, err := r.waitCount(ctx, nc, "BENCH_NATIVE_BURST", "native.target", uint64(n), T.Add(5*expected+60*time.Second), 20*time.Second, "burst native")
	if err != nil {
		return err
	}
	if got < uint64(n) {
		r.rep.note("burst: native schedules fired %d of %d", got, n)
	}
	*toLast = seconds(last.Sub(T))
	*rate = float64(got) / *toLast
	return nil
}

// latencyRecorder collects the first arrival's lateness per id.
type latencyRecorder struct {
	mu       sync.Mutex
	seen     map[msgid.ID]int
	late     []time.Duration
	early    int
	bad      int // arrivals without a parsable id or time
	arrivals int
}

func newLatencyRecorder(n int) *latencyRecorder {
	return &latencyRecorder{seen: make(map[msgid.ID]int, n), late: make([]time.Duration, 0, n)}
}

func (l *latencyRecorder) record(now time.Time, id msgid.ID, due time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.arrivals++
	l.seen[id]++
	if l.seen[id] > 1 {
		return
	}
	if now.Before(due) {
		l.early++
	}
	l.late = append(l.late, now.Sub(due))
}

// subscribe records every delivery on subject, received by a core
// subscription of nc without a pending limit: lateness is the receive time
// less its Tock-Deliver-At.
func (l *latencyRecorder) subscribe(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		now := time.Now()
		id, idErr := msgid.Parse(m.Header.Get(delivery.HeaderID))
		due, err := time.Parse(time.RFC3339Nano, m.Header.Get(delivery.HeaderDeliverAt))
		if idErr != nil || err != nil {
			l.mu.Lock()
			l.bad++
			l.mu.Unlock()
			return
		}
		l.record(now, id, due)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	return sub, nil
}

func (l *latencyRecorder) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// precision: lateness of deliveries spread over a window.
func (r *runner) precision(ctx context.Context) error {
	n := r.o.SizeOf("precision")
	span := r.o.precisionSpan()
	lead := r.o.leadFor(n, 10*time.Second, 3*time.Second)

	c, nc, err := r.newChildWithStream(ctx, "precision-tock", targetStream("BENCH_PRECISION", "bench.precision"))
	if err != nil {
		return fmt.Errorf("precision: %w", err)
	}
	defer nc.Close()
	// The receiving side has its own connection, so the producer's
	// traffic does not delay it.
	rc, err := c.connect("bench-receiver")
	if err != nil {
		return fmt.Errorf("precision: %w", err)
	}
	defer rc.Close()
	rec := newLatencyRecorder(n)
	sub, err := rec.subscribe(rc, "bench.precision")
	if err != nil {
		return fmt.Errorf("precision: %w", err)
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("precision: %w", err)
	}

	T0 := time.Now().Add(lead)
	acc := newAcceptedSet(n)
	p, _, err := r.tockIngest(ctx, c, "precision tock", "bench.precision", n, spread(T0, span, n), acc.add, nil)
	if err != nil {
		return fmt.Errorf("precision: %w", err)
	}
	if late := time.Since(T0); late > 0 {
		r.rep.note("precision: accepting ended %v after the first deliver time: early deliveries overlapped ingest", late.Round(time.Millisecond))
	}
	accepted := int(p.accepted.Load())
	if err := r.waitArrivals(ctx, "precision tock", accepted, rec.unique, T0.Add(span+30*time.Second)); err != nil {
		return fmt.Errorf("precision: %w", err)
	}
	time.Sleep(500 * time.Millisecond) // let duplicates show
	_ = sub.Unsubscribe()
	rec.mu.Lock()
	tock := summarize(rec.late)
	missing := acc.missing(rec.seen)
	early, dups, bad := rec.early, rec.arrivals-len(rec.seen), rec.bad
	rec.mu.Unlock()

	native, nerr := r.nativePrecision(ctx, n, span, lead)
	if nerr != nil {
		r.rep.note("precision: native reference failed: %v", nerr)
	}
	ref := "native schedules"
	r.rep.add("precision", "lateness p50", UnitMs, tock.p50, ref, native.p50, nil, "")
	r.rep.add("precision", "lateness p99", UnitMs, tock.p99, ref, native.p99, tP99, "")
	r.rep.add("precision", "lateness p99.9", UnitMs, tock.p999, ref, native.p999, tP999, "")
	r.rep.add("precision", "lateness max", UnitMs, tock.max, ref, native.max, tMax, "")
	r.rep.value("precision", "early", UnitCount, float64(early), tZero, "received before its Tock-Deliver-At")
	r.rep.value("precision", "lost", UnitCount, float64(missing), tZero, fmt.Sprintf("of %s accepted", groupThousands(int64(accepted))))
	r.rep.value("precision", "duplicates", UnitCount, float64(dups), nil, "")
	r.rep.note("precision: %s/s for %v; tock lateness = core-subscription receive time − Tock-Deliver-At; native lateness = ordered-consumer receive time − its exact @at time (native accepts RFC 3339 with a fraction; its fired copies are stored by the server, not published on core NATS, so a consumer must read them)",
		groupThousands(int64(float64(n)/span.Seconds())), span)
	if early > 0 {
		r.rep.fail("precision: %d messages delivered before their deliver time", early)
	}
	if missing > 0 {
		r.rep.fail("precision: %d acknowledged messages never arrived", missing)
	}
	if bad > 0 {
		r.rep.fail("precision: %d deliveries without a valid Tock-Id or Tock-Deliver-At", bad)
	}
	return nil
}

// waitArrivals waits until count() reaches want, the deadline passes or
// nothing arrives for 20 s.
func (r *runner) waitArrivals(ctx context.Context, label string, want int, count func() int, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	stop := r.progress(countProgress(label, "delivered", want, func() int64 { return int64(count()) }))
	defer stop()
	prev, lastChange := 0, time.Now()
	for {
		got := count()
		if got >= want {
			return nil
		}
		if got != prev {
			prev, lastChange = got, time.Now()
		} else if got > 0 && time.Since(lastChange) > 20*time.Second {
			return nil // the caller reports what is missing
		}
		select {
		case <-ctx.Done():
			if prev > 0 {
				return nil
			}
			return fmt.Errorf("%s: nothing arrived: %w", label, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// nativePrecision runs the precision load as native schedules.
func (r *runner) nativePrecision(ctx context.Context, n int, span, lead time.Duration) (latencyStats, error) {
	none := latencyStats{p50: math.NaN(), p99: math.NaN(), p999: math.NaN(), max: math.NaN()}
	c, nc, err := r.newChildWithStream(ctx, "precision-native", nativeStream("BENCH_NATIVE_PRECISION"))
	if err != nil {
		return none, err
	}
	defer c.stop()
	defer nc.Close()
	rc, err := c.connect("bench-receiver")
	if err != nil {
		return none, err
	}
	defer rc.Close()
	js, err := jetstream.New(rc)
	if err != nil {
		return none, err
	}
	s, err := js.Stream(ctx, "BENCH_NATIVE_PRECISION")
	if err != nil {
		return none, err
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"native.target"}})
	if err != nil {
		return none, err
	}
	var mu sync.Mutex
	var late []time.Duration
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		due, err := time.Parse(time.RFC3339Nano, m.Headers().Get("Bench-Deliver-At"))
		if err != nil {
			return
		}
		mu.Lock()
		late = append(late, now.Sub(due))
		mu.Unlock()
	})
	if err != nil {
		return none, err
	}
	defer cc.Stop()
	T0 := time.Now().Add(lead)
	if _, err := r.jsIngest(ctx, c, "precision native", n, func(i int) *nats.Msg { return nativeMsg(i, spread(T0, span, n)(i), r.body) }); err != nil {
		return none, err
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(late) }
	if err := r.waitArrivals(ctx, "precision native", n, count, T0.Add(span+30*time.Second)); err != nil {
		return none, err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(late) < n {
		r.rep.note("precision: native schedules delivered %d of %d", len(late), n)
	}
	return summarize(late), nil
}

// capacity: many far-future messages: accept rate over time, heap, RSS
// and disk.
func (r *runner) capacity(ctx context.Context) error {
	n := r.o.SizeOf("capacity")
	w := r.o.window()
	// Spread over a year minus two minutes: starting a minute ahead, the
	// last one stays inside the default --max-delay of 365 days.
	due := spread(time.Now().Add(time.Minute), year-2*time.Minute, n)

	c, err := r.newChild(ctx, "capacity-tock")
	if err != nil {
		return fmt.Errorf("capacity: tock child: %w", err)
	}
	before, err := r.readMemory(ctx, c)
	if err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	// Warm up a fresh process and connection with schedules due at once:
	// they are delivered, not pending, so the 1k checkpoint measures the
	// pending count and not a cold start.
	warm := 2 * w
	now := func(int) time.Time { return time.Now() }
	if _, _, err := r.tockIngest(ctx, c, "capacity warm-up", "bench.warmup", warm, now, nil, nil); err != nil {
		return fmt.Errorf("capacity: warm-up: %w", err)
	}
	r.rep.note("capacity: after a warm-up of %s schedules due at once (delivered, so not pending); the memory baseline is taken before it, so whatever the warm-up leaves counts against tock", groupThousands(int64(warm)))
	var checkpoints []int
	for _, cp := range []int{1_000, 100_000, 1_000_000, 10_000_000} {
		if cp <= n {
			checkpoints = append(checkpoints, cp)
		}
	}
	// Each checkpoint's rate is taken over w accepts that follow it (the
	// last one's over the w before it): a window that began at the first
	// request would measure the client's warm-up, not the pending count.
	// The ingest pauses at each checkpoint below n, so the window starts
	// once the pipeline is full again, a window's worth of requests later.
	window := func(cp int) (lo, hi int64) {
		if lo := cp + r.o.Inflight; cp < n && lo+w <= n {
			return int64(lo), int64(lo + w)
		}
		return int64(max(0, n-w)), int64(n)
	}
	watch := map[int64]bool{}
	for _, cp := range checkpoints {
		lo, hi := window(cp)
		watch[lo], watch[hi] = true, true
	}
	// The ingest stops at each checkpoint below n for the memory to
	// settle; clock leaves those pauses out of the window times.
	var mu sync.Mutex
	var paused time.Duration
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(-paused) }
	at := map[int64]time.Time{}
	onCount := func(k int64) {
		if watch[k] {
			t := clock()
			mu.Lock()
			at[k] = t
			mu.Unlock()
		}
	}
	var stops []int
	for _, cp := range checkpoints {
		if cp < n {
			stops = append(stops, cp)
		}
	}
	mem := map[int]cpMemory{}
	atStop := func(k int, accepted int64) error {
		t0 := time.Now()
		fmt.Fprintf(r.log, "capacity tock: %s pending, waiting for the memory to settle\n", groupThousands(accepted))
		m, waited, err := r.settledMemory(ctx, c)
		mem[stops[k]] = cpMemory{m, waited, accepted}
		mu.Lock()
		paused += time.Since(t0)
		mu.Unlock()
		return err
	}
	start := clock()
	p, elapsed, err := r.tockIngestStops(ctx, c, "capacity tock", "bench.capacity", n, due, nil, onCount, stops, atStop)
	if err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	accepted := p.accepted.Load()
	after, waited, err := r.settledMemory(ctx, c)
	if err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	mem[n] = cpMemory{after, waited, accepted}
	nc, err := c.connect("bench-info")
	if err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	st, err := journalState(ctx, nc)
	nc.Close()
	if err != nil {
		return fmt.Errorf("capacity: journal: %w", err)
	}
	disk := dirSize(c.data)
	c.stop()

	mu.Lock()
	at[0] = start
	var rates []float64
	for _, cp := range checkpoints {
		lo, hi := window(cp)
		t0, ok0 := at[lo]
		t1, ok1 := at[hi]
		rate := math.NaN()
		if ok0 && ok1 && t1.After(t0) {
			rate = float64(hi-lo) / t1.Sub(t0).Seconds()
			rates = append(rates, rate)
		}
		r.rep.value("capacity", fmt.Sprintf("accepted/s at %s pending", shortCount(float64(cp))), UnitRate, rate, nil,
			fmt.Sprintf("over accepts %s to %s", groupThousands(lo), groupThousands(hi)))
	}
	mu.Unlock()
	flat := math.NaN()
	if len(rates) > 1 {
		flat = slices.Min(rates) / slices.Max(rates)
	}
	r.rep.value("capacity", "accepted/s overall", UnitRate, float64(accepted)/elapsed.Seconds(), nil, "pauses at the checkpoints left out")
	r.rep.value("capacity", "flatness (min/max checkpoint rate)", UnitRatio, flat, tFlat, "1 = the accept rate does not depend on how much is pending")
	for _, cp := range checkpoints {
		mem[cp].report(r.rep, shortCount(float64(cp)), before)
	}
	_, _, step := r.o.settleWaits()
	r.rep.note("capacity: memory at a checkpoint is read once the ingest paused there and the memory settled (every %v a forced GC, then HeapAlloc and VmRSS, until two readings agree within 1%%); growth is over the baseline before the warm-up", step)

	// Native reference: heap per pending schedule.
	nn := min(n, 1_000_000)
	if r.o.Quick {
		nn = min(n, 20_000)
	}
	nativePer, nativeDisk := math.NaN(), math.NaN()
	if err := r.nativeCapacity(ctx, nn, &nativePer, &nativeDisk); err != nil {
		r.rep.note("capacity: native reference failed: %v", err)
	}
	perMsg := float64(after.heap.alloc-before.heap.alloc) / float64(accepted)
	r.rep.value("capacity", "heap before ingest", UnitBytes, float64(before.heap.alloc), nil, fmt.Sprintf("HeapAlloc after a forced GC; RSS %s", formatValue(float64(before.rss), UnitBytes)))
	r.rep.value("capacity", "heap after ingest", UnitBytes, float64(after.heap.alloc), nil, fmt.Sprintf("HeapInuse %s, Sys %s", formatValue(float64(after.heap.inuse), UnitBytes), formatValue(float64(after.heap.sys), UnitBytes)))
	r.rep.value("capacity", "RSS after ingest", UnitBytes, float64(after.rss), nil, "")
	r.rep.value("capacity", "heap bytes/pending msg", UnitBPerMsg, perMsg, tHeapPerMsg, fmt.Sprintf("(after − before) / %s; includes the embedded server's per-subject index", groupThousands(accepted)))
	r.rep.add("capacity", "heap bytes/pending msg", UnitBPerMsg, perMsg, fmt.Sprintf("native (%s)", shortCount(float64(nn))), nativePer, tHeapVsNative, "both settled")
	r.rep.add("capacity", "journal bytes/pending msg", UnitBPerMsg, float64(st.Bytes)/float64(accepted), "native stream", nativeDisk, nil,
		fmt.Sprintf("data dir %s in all, %.1f B/msg", formatValue(float64(disk), UnitBytes), float64(disk)/float64(accepted)))
	return nil
}

// cpMemory is the settled memory at a capacity checkpoint.
type cpMemory struct {
	m        memReading
	waited   time.Duration
	accepted int64
}

// report adds the checkpoint's rows: RSS next to heap, absolute and as
// growth per pending message over the baseline.
func (c cpMemory) report(rep *Report, at string, base memReading) {
	n := float64(c.accepted)
	rep.add("capacity", "RSS at "+at+" pending", UnitBytes, float64(c.m.rss), "heap", float64(c.m.heap.alloc), nil,
		fmt.Sprintf("settled after %.1f s; ratio = RSS / heap", c.waited.Seconds()))
	rep.add("capacity", "RSS growth/pending msg at "+at, UnitBPerMsg, float64(c.m.rss-base.rss)/n, "heap", float64(c.m.heap.alloc-base.heap.alloc)/n, nil, "")
}

func (r *runner) nativeCapacity(ctx context.Context, n int, perSchedule, diskPer *float64) error {
	c, nc, err := r.newChildWithStream(ctx, "capacity-native", nativeStream("BENCH_NATIVE_CAP"))
	if err != nil {
		return err
	}
	defer c.stop()
	defer nc.Close()
	before, err := c.heap(ctx)
	if err != nil {
		return err
	}
	due := spread(time.Now().Add(time.Minute), year-2*time.Minute, n)
	if _, err := r.jsIngest(ctx, c, "capacity native", n, func(i int) *nats.Msg { return nativeMsg(i, due(i), r.body) }); err != nil {
		return err
	}
	settled, _, err := r.settledMemory(ctx, c)
	if err != nil {
		return err
	}
	after := settled.heap
	st, err := streamState(ctx, nc, "BENCH_NATIVE_CAP")
	if err != nil {
		return err
	}
	*perSchedule = float64(after.alloc-before.alloc) / float64(n)
	if st.Msgs > 0 {
		*diskPer = float64(st.Bytes) / float64(st.Msgs)
	}
	return nil
}

// recovery: kill -9 with deliveries due, restart, and time the way back.
func (r *runner) recovery(ctx context.Context) error {
	n := r.o.SizeOf("recovery")
	lead := r.o.leadFor(n, 10*time.Second, 3*time.Second)
	width := 20 * time.Second
	if r.o.Quick {
		width = 5 * time.Second
	}
	c, nc, err := r.newChildWithStream(ctx, "recovery-tock", targetStream("BENCH_RECOVERY", "bench.recovery"))
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	nc.Close()
	T := time.Now().Add(lead)
	acc := newAcceptedSet(n)
	p, _, err := r.tockIngest(ctx, c, "recovery tock", "bench.recovery", n, spread(T, width, n), acc.add, nil)
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	accepted := uint64(p.accepted.Load())
	if late := time.Since(T); late > 0 {
		r.rep.note("recovery: accepting ended %v after the first deliver time", late.Round(time.Millisecond))
	}
	c.kill()
	fmt.Fprintf(r.log, "recovery: killed tock with %s accepted; restarting at T+2s\n", groupThousands(int64(accepted)))
	if err := sleepUntil(ctx, T.Add(2*time.Second)); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}

	c2, err := r.launch(c.data, c.logPath)
	if err != nil {
		return fmt.Errorf("recovery: restart: %w", err)
	}
	start := c2.started
	deadline := start.Add(time.Duration(float64(n)/10_000*float64(time.Second)) + 120*time.Second)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	// (b) first delivery, by a core subscription made as early as possible.
	firstCh := make(chan time.Time, 1)
	go func() {
		for wctx.Err() == nil && c2.alive() == nil {
			sc, err := nats.Connect(c2.url(), nats.Timeout(200*time.Millisecond), nats.MaxReconnects(0))
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			defer sc.Close()
			var once sync.Once
			if _, err := sc.Subscribe("bench.recovery", func(*nats.Msg) {
				now := time.Now()
				once.Do(func() { firstCh <- now })
			}); err != nil {
				return
			}
			<-wctx.Done()
			return
		}
	}()
	// (a) ready: the first successful schedule reply.
	ready, err := waitScheduleReady(wctx, c2)
	if err != nil {
		return fmt.Errorf("recovery: restarted tock: %w", err)
	}
	nc2, err := c2.connect("bench-info")
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	defer nc2.Close()
	got, _, err := r.waitCount(wctx, nc2, "BENCH_RECOVERY", "", accepted, deadline, 30*time.Second, "recovery tock")
	if err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	allAt := time.Since(start)
	var first time.Duration = -1
	select {
	case t := <-firstCh:
		first = t.Sub(start)
	case <-time.After(time.Second):
	}
	ids, total, err := readIDs(ctx, nc2, "BENCH_RECOVERY", "", got)
	if err != nil {
		return fmt.Errorf("recovery: read back: %w", err)
	}
	missing := acc.missing(ids)
	c2.stop()

	jsReady, jsNote := math.NaN(), ""
	if v, note, err := r.jsRecovery(ctx, n); err != nil {
		r.rep.note("recovery: JetStream reference failed: %v", err)
	} else {
		jsReady, jsNote = v, note
	}
	r.rep.add("recovery", "restart → first schedule reply", UnitSec, seconds(ready), "plain JetStream: all msgs back", jsReady, tReady, jsNote)
	firstVal := math.NaN()
	if first >= 0 {
		firstVal = seconds(first)
	}
	r.rep.value("recovery", "restart → first delivery", UnitSec, firstVal, nil, "seen by a core subscription connected as soon as the server accepted clients")
	r.rep.value("recovery", "restart → all delivered", UnitSec, seconds(allAt), nil, fmt.Sprintf("%s in BENCH_RECOVERY", groupThousands(int64(got))))
	r.rep.value("recovery", "delivered (unique Tock-Id)", UnitCount, float64(len(ids)), nil, fmt.Sprintf("of %s accepted", groupThousands(int64(accepted))))
	r.rep.value("recovery", "missing", UnitCount, float64(missing), tZero, "")
	r.rep.value("recovery", "duplicates", UnitCount, float64(total-uint64(len(ids))), nil, "")
	r.rep.note("recovery: deliver times over [T, T+%v], T = now + %v; SIGKILL after all accepted, restart at T+2s on the same data dir", width, lead)
	if missing > 0 {
		r.rep.fail("recovery: %d acknowledged messages missing after the restart", missing)
	}
	return nil
}

// waitScheduleReady polls a fresh child with schedule requests (due in an
// hour, to an uncaptured subject) until one is answered with an id, and
// returns the time since the process started.
func waitScheduleReady(ctx context.Context, c *child) (time.Duration, error) {
	for {
		if err := c.alive(); err != nil {
			return 0, err
		}
		if nc, err := nats.Connect(c.url(), nats.Timeout(200*time.Millisecond), nats.MaxReconnects(0)); err == nil {
			for ctx.Err() == nil {
				m := nats.NewMsg("tock.schedule.bench.ready")
				m.Header.Set("Tock-Delay", "1h")
				res, err := nc.RequestMsg(m, time.Second)
				if err == nil && res.Header.Get("Nats-Service-Error-Code") == "" && len(res.Data) > 0 && res.Data[0] == '{' {
					nc.Close()
					return time.Since(c.started), nil
				}
				if err != nil && !nc.IsConnected() {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			nc.Close()
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no schedule reply: %w; log tail:\n%s", ctx.Err(), c.logTail(20))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// jsRecovery: a plain stream with n messages, SIGKILL, restart: seconds
// from the process start until stream info shows all n.
func (r *runner) jsRecovery(ctx context.Context, n int) (float64, string, error) {
	c, err := r.newChild(ctx, "recovery-js")
	if err != nil {
		return 0, "", fmt.Errorf("JetStream child: %w", err)
	}
	if _, _, _, err := r.plainFill(ctx, c, "recovery JetStream", n); err != nil {
		return 0, "", err
	}
	c.kill()
	c2, err := r.launch(c.data, c.logPath)
	if err != nil {
		return 0, "", fmt.Errorf("restart: %w", err)
	}
	defer c2.stop()
	wctx, cancel := context.WithTimeout(ctx, 120*time.Second+time.Duration(float64(n)/10_000*float64(time.Second)))
	defer cancel()
	var last uint64
	for {
		if err := c2.alive(); err != nil {
			return 0, "", err
		}
		if nc, err := nats.Connect(c2.url(), nats.Timeout(200*time.Millisecond), nats.MaxReconnects(0)); err == nil {
			st, err := streamState(wctx, nc, plainStream)
			nc.Close()
			if err == nil {
				last = st.Msgs
				if st.Msgs >= uint64(n) {
					return seconds(time.Since(c2.started)), "", nil
				}
			}
		}
		select {
		case <-wctx.Done():
			if last > 0 {
				return seconds(time.Since(c2.started)), fmt.Sprintf("plain JetStream recovered only %d of %d messages", last, n), nil
			}
			return 0, "", fmt.Errorf("stream not back: %w", wctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// durability: ingest with the server fsyncing every write.
func (r *runner) durability(ctx context.Context) error {
	n := r.o.SizeOf("durability")
	due := spread(time.Now().Add(time.Minute), time.Hour-time.Minute, n)
	c, err := r.newChild(ctx, "durability-tock", "--sync", "always")
	if err != nil {
		return fmt.Errorf("durability: tock child: %w", err)
	}
	p, elapsed, err := r.tockIngest(ctx, c, "durability tock", "bench.durability", n, due, nil, nil)
	if err != nil {
		return fmt.Errorf("durability: %w", err)
	}
	tockRate := float64(p.accepted.Load()) / elapsed.Seconds()
	c.stop()
	// JetStream with --sync always fsyncs every message: its rate is
	// steady after a few seconds, so its runs are capped.
	refs, _, _, err := r.plainRefs(ctx, "durability", min(n, durabilityPlainMax), "--sync", "always")
	if err != nil {
		return fmt.Errorf("durability: %w", err)
	}
	bestName, bestRate := refs.stronger()
	r.rep.add("durability", "accepted/s, sync always", UnitRate, tockRate, bestName+", sync always", bestRate, nil, "against the stronger of the two plain JetStream runs")
	refs.report(r.rep, "durability", ", sync always")
	if n > durabilityPlainMax {
		r.rep.note("durability: the plain JetStream runs publish %s messages each (fsync-bound; tock's run has %s)", groupThousands(durabilityPlainMax), groupThousands(int64(n)))
	}
	if r.ingestTock > 0 {
		r.rep.add("durability", "tock accepted/s, sync always", UnitRate, tockRate, "tock, sync interval", r.ingestTock, nil, "interval figure from the ingest scenario of this run")
		r.rep.add("durability", "JetStream accepted/s, sync always", UnitRate, bestRate, "JetStream, sync interval", r.ingestJS, nil, "the stronger run of each")
	}
	return nil
}
