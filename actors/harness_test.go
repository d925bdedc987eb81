package actors

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// The tests below run the real Scheduler (router and slot actors on
// protoactor) over journal.Memory, with a Manual clock and a recording
// publisher. Time moves only when a test moves it; what remains
// asynchronous is protoactor's mailboxes, so tests wait for effects with
// eventually, or for the whole system to go idle with quiet.

// t0 lies on a boundary of every slot width the tests use.
var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

const waitFor = 10 * time.Second // bound of every real-time wait

func ms(d time.Duration) time.Time { return t0.Add(d) }

func slotOfTime(t time.Time, width time.Duration) int64 {
	return t.UnixMilli() / width.Milliseconds()
}

// eventually polls cond until it holds, failing the test after waitFor.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// countingDispatcher runs every mailbox on its own goroutine, like
// protoactor's default, and counts the runs in progress: zero means no
// actor has anything to do.
type countingDispatcher struct{ busy atomic.Int64 }

func (d *countingDispatcher) Schedule(fn func()) {
	d.busy.Add(1)
	go func() {
		defer d.busy.Add(-1)
		fn()
	}()
}

func (d *countingDispatcher) Throughput() int { return 300 }

// testJournal wraps journal.Memory with the faults its hooks cannot
// inject: Loads that fail, and appends whose write itself is held back (the
// NATS journal stores a record some time after Append returns; Memory
// stores at once).
type testJournal struct {
	*journal.Memory

	mu          sync.Mutex
	holdWrites  bool
	heldWrites  []func()
	loadFails   map[int64]int // slot → Loads still to fail
	loads       map[int64]int // slot → successful Loads
	failedLoads map[int64]int
	gates       map[int64]chan struct{} // slot → Loads wait until it is closed
	waiting     map[int64]int           // slot → Loads waiting at its gate
}

func (j *testJournal) Append(slot int64, events []journal.Event, done func(uint64, error)) {
	j.mu.Lock()
	if j.holdWrites {
		events = slices.Clone(events)
		j.heldWrites = append(j.heldWrites, func() { j.Memory.Append(slot, events, done) })
		j.mu.Unlock()
		return
	}
	j.mu.Unlock()
	j.Memory.Append(slot, events, done)
}

// Scan is how slot actors load: it waits at the slot's gate, fails as
// many times as planned, and counts the loads that went through.
func (j *testJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	j.mu.Lock()
	if gate := j.gates[slot]; gate != nil {
		j.waiting[slot]++
		j.mu.Unlock()
		<-gate
		j.mu.Lock()
		j.waiting[slot]--
	}
	if j.loadFails[slot] > 0 {
		j.loadFails[slot]--
		j.failedLoads[slot]++
		j.mu.Unlock()
		return 0, fmt.Errorf("load slot %d: %w", slot, journal.ErrUnavailable)
	}
	j.loads[slot]++
	j.mu.Unlock()
	return j.Memory.Scan(ctx, slot, fn)
}

func (j *testJournal) loadCounts(slot int64) (ok, failed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.loads[slot], j.failedLoads[slot]
}

// blockLoads makes Loads of slot wait until release is called.
func (j *testJournal) blockLoads(slot int64) (release func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	gate := make(chan struct{})
	j.gates[slot] = gate
	return func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.gates[slot] == gate {
			delete(j.gates, slot)
			close(gate)
		}
	}
}

func (j *testJournal) releaseAllLoads() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for slot, gate := range j.gates {
		delete(j.gates, slot)
		close(gate)
	}
}

func (j *testJournal) blockedLoads(slot int64) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.waiting[slot]
}

func (j *testJournal) failLoads(slot int64, n int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.loadFails[slot] = n
}

// holdAppends makes later Appends wait, unstored, for releaseAppends.
func (j *testJournal) holdAppends() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.holdWrites = true
}

func (j *testJournal) heldAppends() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.heldWrites)
}

// releaseAppends performs the held Appends, in call order, and stops holding.
func (j *testJournal) releaseAppends() {
	j.mu.Lock()
	held := j.heldWrites
	j.heldWrites, j.holdWrites = nil, false
	j.mu.Unlock()
	for _, f := range held {
		f()
	}
}

// events returns what the journal holds for slot.
func (j *testJournal) events(t *testing.T, slot int64) []journal.Event {
	t.Helper()
	evs, _, err := j.Memory.Load(context.Background(), slot)
	if err != nil {
		t.Fatalf("load slot %d: %v", slot, err)
	}
	return evs
}

// testPublisher records deliveries. Confirmations of targets in hold wait
// for confirm; the others are confirmed at once.
type testPublisher struct {
	clk clock.Clock

	mu        sync.Mutex
	delivered []slot.Delivery
	hold      map[string]bool
	waiting   map[msgid.ID][]func(slot.Outcome)
	early     []string // deliveries handed out before their time
}

func (p *testPublisher) Publish(d slot.Delivery, done func(slot.Outcome)) {
	now := clock.Millis(p.clk.Now())
	p.mu.Lock()
	if now < d.DeliverAt {
		p.early = append(p.early, fmt.Sprintf("%s due %d published at %d", d.ID, d.DeliverAt, now))
	}
	p.delivered = append(p.delivered, d)
	if p.hold[d.Target] {
		p.waiting[d.ID] = append(p.waiting[d.ID], done)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	done(slot.Outcome{})
}

func (p *testPublisher) holdTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold[target] = true
}

// confirm runs the held confirmations of id; false if there were none.
func (p *testPublisher) confirm(id msgid.ID) bool {
	p.mu.Lock()
	dones := p.waiting[id]
	delete(p.waiting, id)
	p.mu.Unlock()
	for _, done := range dones {
		done(slot.Outcome{})
	}
	return len(dones) > 0
}

// deliveries returns a copy of what was published, in publish order.
func (p *testPublisher) deliveries() []slot.Delivery {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.delivered)
}

// bodies lists the bodies delivered, in order.
func (p *testPublisher) bodies() []string {
	var out []string
	for _, d := range p.deliveries() {
		out = append(out, string(d.Body))
	}
	return out
}

// ids lists the delivered ids in publish order.
func (p *testPublisher) ids() []msgid.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]msgid.ID, len(p.delivered))
	for i, d := range p.delivered {
		out[i] = d.ID
	}
	return out
}

func (p *testPublisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.delivered)
}

func (p *testPublisher) times(id msgid.ID) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, d := range p.delivered {
		if d.ID == id {
			n++
		}
	}
	return n
}

type harness struct {
	t    *testing.T
	cfg  Config
	clk  clock.Clock
	man  *clock.Manual
	mem  *journal.Memory
	j    *testJournal
	pub  *testPublisher
	disp *countingDispatcher
	s    *Scheduler
	// random, when set before start, is Deps.Random.
	random msgid.Source

	mu         sync.Mutex
	holdAcks   bool
	heldAcks   []func()
	fail       func(slot int64, events []journal.Event) (bool, error)
	dupReplies atomic.Int64
}

func defaultConfig() Config {
	return Config{SlotWidth: time.Second, Horizon: 2 * time.Second, Retention: time.Hour, MaxDelay: 48 * time.Hour}
}

// newHarness prepares a scheduler over an empty journal at t0; start runs it.
func newHarness(t *testing.T, cfg Config) *harness {
	h := &harness{t: t, cfg: cfg, man: clock.NewManual(t0), mem: journal.NewMemory(), disp: &countingDispatcher{}}
	h.clk = h.man
	h.mem.Complete = h.complete
	h.mem.Fail = func(slot int64, events []journal.Event) (bool, error) {
		h.mu.Lock()
		f := h.fail
		h.mu.Unlock()
		if f == nil {
			return true, nil
		}
		return f(slot, events)
	}
	h.j = &testJournal{Memory: h.mem, loadFails: map[int64]int{}, loads: map[int64]int{}, failedLoads: map[int64]int{},
		gates: map[int64]chan struct{}{}, waiting: map[int64]int{}}
	h.pub = &testPublisher{clk: h.man, hold: map[string]bool{}, waiting: map[msgid.ID][]func(slot.Outcome){}}
	t.Cleanup(func() {
		h.j.releaseAllLoads()
		if h.s != nil {
			h.stop()
		}
		if n := h.dupReplies.Load(); n > 0 {
			t.Errorf("%d reply funcs were called more than once", n)
		}
		h.pub.mu.Lock()
		defer h.pub.mu.Unlock()
		for _, e := range h.pub.early {
			t.Errorf("early delivery: %s", e)
		}
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	s, err := Start(context.Background(), h.cfg, Deps{Journal: h.j, Publisher: h.pub, Clock: h.clk, Dispatcher: h.disp, Random: h.random})
	if err != nil {
		h.t.Fatalf("start: %v", err)
	}
	h.s = s
	h.quiet()
}

func (h *harness) stop() {
	h.t.Helper()
	if err := h.s.Stop(waitFor); err != nil {
		h.t.Errorf("stop: %v", err)
	}
	h.s = nil
}

// complete runs journal completions, unless they are being held.
func (h *harness) complete(f func()) {
	h.mu.Lock()
	if h.holdAcks {
		h.heldAcks = append(h.heldAcks, f)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.disp.busy.Add(1) // a completion on its way counts as work for quiet
	go func() {
		defer h.disp.busy.Add(-1)
		f()
	}()
}

// holdCompletions makes journal completions wait for releaseCompletions;
// the records are stored meanwhile, as with a slow acknowledgement.
func (h *harness) holdCompletions() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holdAcks = true
}

func (h *harness) heldCompletions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.heldAcks)
}

func (h *harness) releaseCompletions() {
	h.mu.Lock()
	held := h.heldAcks
	h.heldAcks, h.holdAcks = nil, false
	h.mu.Unlock()
	for _, f := range held {
		f()
	}
}

// setFail installs a Memory.Fail policy; nil stores everything.
func (h *harness) setFail(f func(slot int64, events []journal.Event) (bool, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = f
}

// quiet waits until no mailbox runs and no journal completion is on its way.
func (h *harness) quiet() {
	h.t.Helper()
	eventually(h.t, "the actors to go idle", func() bool { return h.disp.busy.Load() == 0 })
}

// advanceTo moves the clock to t one timer deadline at a time, letting the
// actors settle after each: what a real clock does with fast actors, minus
// the waiting.
func (h *harness) advanceTo(t time.Time) {
	h.t.Helper()
	h.quiet()
	for {
		at, ok := h.man.NextDeadline()
		if !ok || at.After(t) {
			break
		}
		if now := h.man.Now(); at.Before(now) {
			at = now
		}
		h.man.Set(at)
		h.quiet()
	}
	h.man.Set(t)
	h.quiet()
}

// backOff lets a slot whose append failed wait out its first back-off
// (at most appendRetry) and reload.
func (h *harness) backOff() {
	h.t.Helper()
	h.advanceTo(h.man.Now().Add(appendRetry))
}

func (h *harness) replyFunc() (func(slot.Result), <-chan slot.Result) {
	ch := make(chan slot.Result, 1)
	var called atomic.Bool
	return func(r slot.Result) {
		if called.Swap(true) {
			h.dupReplies.Add(1)
			return
		}
		ch <- r
	}, ch
}

func (h *harness) schedule(target string, at time.Time) <-chan slot.Result {
	f, ch := h.replyFunc()
	h.s.Schedule(ScheduleRequest{
		Target: target, DeliverAt: at.UnixMilli(),
		Header: journal.Header{"K": {target}}, Body: []byte("body of " + target),
	}, f)
	return ch
}

func (h *harness) get(id msgid.ID) slot.Result {
	h.t.Helper()
	f, ch := h.replyFunc()
	h.s.Get(id, f)
	return h.await(ch)
}

func (h *harness) cancel(id msgid.ID) slot.Result {
	h.t.Helper()
	f, ch := h.replyFunc()
	h.s.Cancel(id, f)
	return h.await(ch)
}

// mustSchedule schedules and waits for an OK.
func (h *harness) mustSchedule(target string, at time.Time) slot.Record {
	h.t.Helper()
	r := h.await(h.schedule(target, at))
	if r.Status != slot.OK {
		h.t.Fatalf("schedule %s at %v: status %v", target, at, r.Status)
	}
	return r.Record
}

func (h *harness) await(ch <-chan slot.Result) slot.Result {
	h.t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitFor):
		h.t.Fatal("timed out waiting for a reply")
		return slot.Result{}
	}
}

// noReply asserts that ch has no reply yet.
func (h *harness) noReply(ch <-chan slot.Result, what string) {
	h.t.Helper()
	select {
	case r := <-ch:
		h.t.Fatalf("%s: unexpected reply %+v", what, r)
	default:
	}
}

func (h *harness) stats() Stats {
	h.t.Helper()
	st, err := h.s.Stats(waitFor)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// waitActive waits until the router holds n slots.
func (h *harness) waitActive(n int) {
	h.t.Helper()
	eventually(h.t, fmt.Sprintf("%d active slots", n), func() bool { return h.stats().ActiveSlots == n })
}

// kinds summarises journal events as "kind:target" ("closed" has none).
func kinds(evs []journal.Event, names map[msgid.ID]string) []string {
	var out []string
	for _, ev := range evs {
		s := ev.Kind.String()
		if n, ok := names[ev.ID]; ok {
			s += ":" + n
		}
		out = append(out, s)
	}
	return out
}
