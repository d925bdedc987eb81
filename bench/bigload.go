package bench

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/msgid"
)

// The bigload scenario: what loading a big slot does to firing in the
// slot next to it, on the real `tock serve` over NATS (the in-process
// benchmark of the same effect is BenchmarkNeighbourFiringDuringBigLoad
// in actors/). A fresh child runs with narrow slots; slot B, starting
// some tens of seconds ahead, is filled with n messages through the
// schedule API (beyond the horizon, so they go straight to the journal),
// and the slot before it, A, gets one message per millisecond over its
// whole span. B loads when the horizon reaches it, while A fires; the
// neighbour's lateness shows what the load cost A.
//
// Issue's target: a slot of 1,000,000 messages loads without any firing
// gap over 10 ms in a neighbouring slot.
const (
	bigloadStream    = "BENCH_BIGLOAD"
	bigloadTarget    = "bench.bigload.big"       // B's messages, captured by bigloadStream
	bigloadNeighbour = "bench.bigload.neighbour" // A's messages, core NATS

	// bigloadProbeDelay is how long after B's load begins the get probe
	// is sent: late enough that the router's horizon tick came first (a
	// get before it would load B outside the horizon, and it might load
	// twice), early enough to be queued behind the load.
	bigloadProbeDelay = 10 * time.Millisecond
)

var tBigloadMax = &Target{Op: LE, Limit: 10}

// bigloadShape is the slot width and horizon of the bigload child: narrow
// slots keep the run short.
func (o *Options) bigloadShape() (width, horizon time.Duration) {
	if o.Quick {
		return 5 * time.Second, 2 * time.Second
	}
	return 10 * time.Second, 4 * time.Second
}

// bigloadPlan is the timeline of one run: A fires over [a, b), B over
// [b, b+width), and B loads at load = b − horizon.
type bigloadPlan struct {
	width   time.Duration
	a, b    time.Time
	load    time.Time
	horizon time.Duration
}

// planBigload puts A at the first slot boundary at least lead after now.
func planBigload(now time.Time, lead, width, horizon time.Duration) bigloadPlan {
	w := width.Milliseconds()
	at := now.Add(lead).UnixMilli()
	a := time.UnixMilli((at + w - 1) / w * w)
	b := a.Add(width)
	return bigloadPlan{width: width, a: a, b: b, load: b.Add(-horizon), horizon: horizon}
}

// sinceA prints t as an offset from A's start, "A+6.000s".
func (p bigloadPlan) sinceA(t time.Time) string {
	return fmt.Sprintf("A%+.3fs", t.Sub(p.a).Seconds())
}

// bigload: a neighbour slot's firing while a big slot loads, then B's
// own delivery, complete and never early.
func (r *runner) bigload(ctx context.Context) error {
	n := r.o.SizeOf("bigload")
	width, horizon := r.o.bigloadShape()
	c, nc, err := r.newChildWithStream(ctx, "bigload-tock", targetStream(bigloadStream, bigloadTarget),
		"--slot-width", width.String(), "--horizon", horizon.String())
	if err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	defer nc.Close()
	rec := newArrivalLog(int(width.Milliseconds()))
	rc, sub, err := subscribeArrivals(c, bigloadNeighbour, rec)
	if err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	defer rc.Close()

	// A starts once B's messages are in, at 50,000/s plus slack, and
	// after the horizon, so that A's own load does not overlap the ingest.
	plan := planBigload(time.Now(), r.o.leadFor(n, 10*time.Second, 2*time.Second)+horizon, width, horizon)
	fmt.Fprintf(r.log, "bigload: A fires from %s; B (%s messages) loads at %s and fires from %s\n",
		plan.a.Format("15:04:05.000"), groupThousands(int64(n)), plan.sinceA(plan.load), plan.sinceA(plan.b))

	// The neighbour first: a few thousand requests, always in time.
	nn := int(width.Milliseconds())
	nacc := newAcceptedSet(nn)
	np, _, err := r.tockIngest(ctx, c, "bigload neighbour", bigloadNeighbour, nn,
		func(i int) time.Time { return plan.a.Add(time.Duration(i) * time.Millisecond) }, nacc.add, nil)
	if err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	bacc := newAcceptedSet(n)
	bp, elapsed, err := r.tockIngest(ctx, c, "bigload B", bigloadTarget, n, spread(plan.b, width, n), bacc.add, nil)
	if err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	ingestEnd := time.Now()
	switch {
	case ingestEnd.After(plan.load):
		r.rep.note("bigload: accepting B's messages ended %v after B's load began: the ingest overlapped the load, and B's last schedules went to the loaded slot", ingestEnd.Sub(plan.load).Round(time.Millisecond))
	case ingestEnd.After(plan.a.Add(-horizon)):
		r.rep.note("bigload: accepting B's messages ended at %s, after A's load began: the ingest overlapped A's firing", plan.sinceA(ingestEnd))
	}
	probeID, ok := bacc.first()
	if !ok {
		return fmt.Errorf("bigload: no id of B accepted")
	}
	probe := make(chan probeResult, 1)
	go func() { probe <- probeLoad(ctx, c, probeID, plan.load.Add(bigloadProbeDelay)) }()

	naccepted, baccepted := int(np.accepted.Load()), bp.accepted.Load()
	if err := r.waitArrivals(ctx, "bigload neighbour", naccepted, rec.unique, plan.b.Add(30*time.Second)); err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	// B: every accepted message in the stream, within a bound that allows
	// for firing at 20,000/s.
	deadline := plan.b.Add(width + time.Duration(float64(n)/20_000*float64(time.Second)) + 60*time.Second)
	got, last, err := r.waitCount(ctx, nc, bigloadStream, "", uint64(baccepted), deadline, 20*time.Second, "bigload B")
	if err != nil {
		return fmt.Errorf("bigload: %w", err)
	}
	_ = sub.Unsubscribe() // duplicates of the neighbour had B's span to show
	back, err := readBack(ctx, nc, bigloadStream, "", got)
	if err != nil {
		return fmt.Errorf("bigload: read back: %w", err)
	}
	r.reportBigload(bigloadResult{
		plan: plan, n: n,
		nb: rec.summary(plan), naccepted: naccepted, nmissing: nacc.missing(rec.seenIDs()),
		baccepted: baccepted, bmissing: bacc.missing(back.ids), back: back, last: last, elapsed: elapsed,
		probe: <-probe,
	})
	return nil
}

// bigloadResult is what one bigload run measured.
type bigloadResult struct {
	plan bigloadPlan
	n    int // B's requests

	nb                  neighbourSummary
	naccepted, nmissing int

	baccepted int64
	bmissing  int
	back      readResult    // B's target stream, read back
	last      time.Time     // the stream's last message time
	elapsed   time.Duration // accepting B's messages
	probe     probeResult
}

// reportBigload adds the scenario's rows, notes and failures.
func (r *runner) reportBigload(res bigloadResult) {
	res.neighbourRows(r.rep)
	res.bigRows(r.rep)
	p, nb, back := res.plan, res.nb, res.back
	r.rep.note("bigload: --slot-width %v --horizon %v; slot B holds %s messages of %d B due over its %v, to a stream; slot A before it gets one message per ms (core NATS); B loads %v before its start, while A fires; neighbour lateness = core-subscription receive time − Tock-Deliver-At",
		p.width, p.horizon, groupThousands(int64(res.n)), r.o.Size, p.width, p.horizon)
	if early := nb.early + back.early; early > 0 {
		r.rep.fail("bigload: %d messages delivered before their deliver time (neighbour %d, B %d)", early, nb.early, back.early)
	}
	if res.nmissing > 0 || res.bmissing > 0 {
		r.rep.fail("bigload: acknowledged messages never arrived: neighbour %d, B %d", res.nmissing, res.bmissing)
	}
	if bad := nb.bad + back.bad; bad > 0 {
		r.rep.fail("bigload: %d deliveries without a valid Tock-Id or Tock-Deliver-At", bad)
	}
}

// neighbourRows are the rows of slot A, the one firing while B loads.
func (res bigloadResult) neighbourRows(rep *Report) {
	const s = "bigload"
	p, nb := res.plan, res.nb
	worstNote, gapNote := "no arrivals", "fewer than two arrivals"
	if nb.all.n > 0 {
		worstNote = fmt.Sprintf("worst due at %s; B's load began at %s", p.sinceA(nb.worstDue), p.sinceA(p.load))
	}
	if nb.all.n > 1 {
		gapNote = fmt.Sprintf("over consecutive messages in deliver-time order, receive gap − deliver-time gap (the growth of lateness); worst before the one due at %s", p.sinceA(nb.gapDue))
	}
	rep.value(s, "neighbour lateness p50", UnitMs, nb.all.p50, nil, "")
	rep.value(s, "neighbour lateness p99", UnitMs, nb.all.p99, nil, "")
	rep.value(s, "neighbour lateness p99.9", UnitMs, nb.all.p999, nil, "")
	rep.value(s, "neighbour lateness max", UnitMs, nb.all.max, tBigloadMax, worstNote)
	rep.value(s, "neighbour largest gap beyond schedule", UnitMs, nb.gap, nil, gapNote)
	rep.value(s, "neighbour msgs due during B's load window", UnitCount, float64(nb.window.n), nil,
		fmt.Sprintf("deliver times in [B's load, B's start) = [%s, %s)", p.sinceA(p.load), p.sinceA(p.b)))
	rep.value(s, "neighbour lateness max, B's load window", UnitMs, nb.window.max, nil, "p99 "+formatValue(nb.window.p99, UnitMs))
	rep.value(s, "neighbour early", UnitCount, float64(nb.early), tZero, "received before its Tock-Deliver-At")
	rep.value(s, "neighbour lost", UnitCount, float64(res.nmissing), tZero, fmt.Sprintf("of %s accepted", groupThousands(int64(res.naccepted))))
	rep.value(s, "neighbour duplicates", UnitCount, float64(nb.dups), nil, "")
}

// bigRows are the rows of slot B, the big one.
func (res bigloadResult) bigRows(rep *Report) {
	const s = "bigload"
	p, back := res.plan, res.back
	load, loadNote := math.NaN(), res.probe.note
	if res.probe.err == nil {
		load = ms(res.probe.answered.Sub(p.load))
		loadNote = fmt.Sprintf("a get of one of B's ids, sent %v after the horizon reached B, is answered only once B is loaded: an upper bound", bigloadProbeDelay)
	}
	lag := math.NaN()
	if back.total > 0 {
		lag = ms(res.last.Sub(p.b.Add(p.width)))
	}
	rep.value(s, "B load: horizon → get answered", UnitMs, load, nil, loadNote)
	rep.value(s, "B accepted/s", UnitRate, float64(res.baccepted)/res.elapsed.Seconds(), nil, "")
	rep.value(s, "B end → last delivered", UnitMs, lag, nil,
		fmt.Sprintf("the stream's last message time − B's end: B's %s deliver times span %v", groupThousands(int64(res.n)), p.width))
	rep.value(s, "B delivered (unique Tock-Id)", UnitCount, float64(len(back.ids)), nil, fmt.Sprintf("of %s accepted", groupThousands(res.baccepted)))
	rep.value(s, "B lost", UnitCount, float64(res.bmissing), tZero, "")
	rep.value(s, "B early", UnitCount, float64(back.early), tZero, "stored in the target stream before its Tock-Deliver-At")
	rep.value(s, "B duplicates", UnitCount, float64(back.total-uint64(len(back.ids))), nil, "at-least-once: reported, not a failure")
}

// subscribeArrivals subscribes to subject on a connection of its own
// (so that the producers' traffic does not delay it) and records every
// arrival in rec. Closing the connection ends both.
func subscribeArrivals(c *child, subject string, rec *arrivalLog) (*nats.Conn, *nats.Subscription, error) {
	rc, err := c.connect("bench-receiver")
	if err != nil {
		return nil, nil, err
	}
	sub, err := rc.Subscribe(subject, func(m *nats.Msg) {
		now := time.Now()
		id, idErr := msgid.Parse(m.Header.Get("Tock-Id"))
		due, err := time.Parse(time.RFC3339Nano, m.Header.Get("Tock-Deliver-At"))
		rec.record(now, id, due, idErr == nil && err == nil)
	})
	if err == nil {
		err = sub.SetPendingLimits(-1, -1)
	}
	if err == nil {
		err = rc.Flush()
	}
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return rc, sub, nil
}

// probeResult is when a get probe was answered.
type probeResult struct {
	answered time.Time
	err      error
	note     string // why there is no figure
}

// probeLoad sends `tock.get.<id>` at t and returns when it was answered.
func probeLoad(ctx context.Context, c *child, id msgid.ID, t time.Time) probeResult {
	pc, err := c.connect("bench-probe")
	if err != nil {
		return probeResult{err: err, note: "probe: " + err.Error()}
	}
	defer pc.Close()
	if err := sleepUntil(ctx, t); err != nil {
		return probeResult{err: err, note: "probe: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := pc.RequestWithContext(ctx, "tock.get."+id.String(), nil)
	answered := time.Now()
	if err != nil {
		return probeResult{err: err, note: "probe: " + err.Error()}
	}
	if code := res.Header.Get("Nats-Service-Error-Code"); code != "" {
		err := fmt.Errorf("get answered %s: %s", code, res.Data)
		return probeResult{err: err, note: "probe: " + err.Error()}
	}
	return probeResult{answered: answered}
}

// arrivalLog records the first arrival of each neighbour message: its
// deliver time and lateness.
type arrivalLog struct {
	mu       sync.Mutex
	seen     map[msgid.ID]int
	due      []time.Time
	late     []time.Duration
	early    int
	bad      int // arrivals without a parsable id or time
	arrivals int
}

func newArrivalLog(n int) *arrivalLog {
	return &arrivalLog{seen: make(map[msgid.ID]int, n), due: make([]time.Time, 0, n), late: make([]time.Duration, 0, n)}
}

func (l *arrivalLog) record(now time.Time, id msgid.ID, due time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		l.bad++
		return
	}
	l.arrivals++
	l.seen[id]++
	if l.seen[id] > 1 {
		return
	}
	if now.Before(due) {
		l.early++
	}
	l.due = append(l.due, due)
	l.late = append(l.late, now.Sub(due))
}

func (l *arrivalLog) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

func (l *arrivalLog) seenIDs() map[msgid.ID]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen
}

// neighbourSummary is what the neighbour's arrivals say.
type neighbourSummary struct {
	all, window      latencyStats // every message; those due in [load, b)
	worstDue         time.Time    // deliver time of the latest one
	gap              float64      // ms: the largest lateness growth between consecutive messages
	gapDue           time.Time    // deliver time of the message after that gap
	early, bad, dups int
}

func (l *arrivalLog) summary(plan bigloadPlan) neighbourSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := neighbourSummary{early: l.early, bad: l.bad, dups: l.arrivals - len(l.seen), gap: math.NaN()}
	order := make([]int, len(l.due))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return l.due[i].Compare(l.due[j]) })
	var window []time.Duration
	worst := time.Duration(math.MinInt64)
	for k, i := range order {
		if l.late[i] > worst {
			worst, s.worstDue = l.late[i], l.due[i]
		}
		if !l.due[i].Before(plan.load) && l.due[i].Before(plan.b) {
			window = append(window, l.late[i])
		}
		if k > 0 {
			g := ms(l.late[i] - l.late[order[k-1]])
			if math.IsNaN(s.gap) || g > s.gap {
				s.gap, s.gapDue = g, l.due[i]
			}
		}
	}
	s.all, s.window = summarize(l.late), summarize(window)
	return s
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
