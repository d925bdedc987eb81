package actors

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// Messages a slot actor receives besides the router's commands.
type (
	// command is an input routed by the router; it counts for the
	// passivation handshake.
	command struct{ in slot.Input }
	// appended is the journal's answer to the actor's append. owner is the
	// actor instance that appended: after a supervisor restart, an answer
	// meant for the dead instance must not confirm the new one's batch.
	appended struct {
		owner  *slotActor
		seq    uint64
		err    error
		events []journal.Event
	}
	// tick wakes the slot. at is the deadline of the timer that sent it; 0
	// for a tick queued to run at once.
	tick      struct{ at int64 }
	published struct{ in slot.Published }
	// resume ends the back-off after a failed append: reload and go on.
	// owner as for appended.
	resume struct{ owner *slotActor }
	// refilled brings a refill's records: Scheduled events with bodies,
	// read for core (a reload since replaced it: then it is dropped), from
	// the records the core named or, with scan, from the whole slot.
	refilled struct {
		core *slot.Slot
		recs []refillRecord
		scan bool
		err  error
	}
)

type refillRecord struct {
	seq    uint64
	events []journal.Event
}

// slotActor is the thin shell around one slot.Slot: it appends the
// events each Ready hands out and steps Persisted when the journal
// acknowledges them, sends replies, hands deliveries to the publisher, and
// keeps the slot's timer. What must wait for the journal is the core's
// business (actors/slot/durability.go), so every Ready is performed at once.
type slotActor struct {
	env   *env
	index int64
	self  *actor.PID
	core  *slot.Slot

	appending   bool // an append is in flight (the core hands out one at a time)
	refilling   bool // a refill's read is in flight (refilled ends it)
	refillFails int  // failed refills in a row, for the back-off
	appendFails int  // failed appends in a row, for the back-off
	// suspended: an append failed and the slot waits out its back-off
	// before reloading; commands meanwhile are answered Unavailable and
	// confirmations dropped (the reload fires those messages again).
	suspended bool
	// settled: outcomes learned and not stored when an append failed
	// (the failed batch's, those stepped after it, confirmations that
	// came during the back-off); the reload records them rather than fire
	// those messages again, so a journal that refuses writes for a while
	// costs each delivered message no second delivery.
	settled []slot.Published
	lastSeq uint64 // sequence of the slot's last stored record

	timer     clock.Timer
	timerAt   int64
	tickQueue bool // a tick message is already in the mailbox

	// handled counts the commands this pid has processed, for the
	// passivation handshake. It is shared by the actor instances the
	// supervisor creates on restarts, since the router counts per pid.
	handled  *uint64
	asked    bool // passivation asked for since the last command
	pinned   bool // inside the activation horizon: stays until finished
	resident int  // entries counted in env stats
}

func newSlotActor(e *env, index int64, pinned bool, handled *uint64) actor.Actor {
	return &slotActor{env: e, index: index, pinned: pinned, handled: handled}
}

func (a *slotActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		a.load()
		a.step(slot.Tick{})
	case *actor.Restarting, *actor.Stopping:
		a.disarm()
		a.count(0)
		return
	case *command:
		*a.handled++
		a.asked = false
		if a.suspended {
			refuse(m.in)
			break
		}
		a.step(m.in)
	case *appended:
		if m.owner == a {
			a.onAppended(m)
		}
	case *resume:
		if m.owner == a && a.suspended {
			a.suspended = false
			a.load()
			settled := a.settled
			a.settled = nil
			a.step(slot.Resettle{Outcomes: settled})
		}
	case *refilled:
		if m.core == a.core {
			a.onRefilled(m)
		}
	case *tick:
		a.tickQueue = false
		if a.suspended {
			break
		}
		if m.at != 0 && m.at == a.timerAt {
			// The timer fired: none is armed any more, even if the clock
			// now reads before its deadline (a wall clock stepped back);
			// step arms a new one.
			a.timer, a.timerAt = nil, 0
		}
		a.step(slot.Tick{})
	case *published:
		if a.suspended {
			a.settled = append(a.settled, m.in)
			break
		}
		a.step(m.in)
	case *stay:
		a.asked = false
		if m.pinned && !a.pinned && a.core != nil {
			a.core.SetBodyBudget(a.env.cfg.MaxBodyBytes) // loaded for a lookup; now it fires
		}
		a.pinned = a.pinned || m.pinned
	}
	a.maybePassivate(ctx)
}

// load rebuilds the slot from the journal. A failure panics: the
// supervisor restarts the actor, which loads again after a back-off.
func (a *slotActor) load() {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	// A slot loaded only to answer a lookup keeps no stored body: it
	// needs none to answer, and lookups of many such slots cost entries
	// only. If the horizon reaches it meanwhile, its bodies come back as
	// they come due, as for a slot over its budget.
	budget := a.env.cfg.MaxBodyBytes
	if !a.pinned {
		budget = 1
	}
	core := slot.New(slot.Config{
		Index: a.index, Width: a.env.widthMs,
		MaxInFlight: a.env.cfg.MaxInFlight, MaxPerStep: a.env.cfg.MaxPerStep,
		MaxBodyBytes: budget,
	})
	// Streamed a record at a time: a big slot never holds its decoded
	// events all at once beside the store they are copied into, and its
	// load makes no more garbage than one record's worth at a time.
	var y yielder
	seq, err := a.env.journal.Scan(ctx, a.index, func(rec uint64, events []journal.Event) error {
		for i := range events {
			core.Recover(rec, events[i])
		}
		y.done(len(events))
		return nil
	})
	if err != nil {
		panic(fmt.Errorf("load slot %d: %w", a.index, err))
	}
	a.core = core
	a.lastSeq = seq
	a.appending = false
	a.refilling = false // a refill of the replaced core is dropped when it ends
	a.env.stats.loads.Add(1)
}

// yielder lets other goroutines run every yieldEvery events of a load. A
// big slot's load is a long CPU-bound loop; on a small machine the slot
// firing next door would otherwise wait for the scheduler's preemption
// (about 10 ms) to get a CPU, or to have its timer run.
type yielder struct{ n int }

const yieldEvery = 512

// Back-off of failed refills.
const (
	refillRetry    = 100 * time.Millisecond
	refillRetryMax = 5 * time.Second
)

// Back-off of failed appends: 50 ms doubling to 10 s, then 10 s.
const (
	appendRetry    = 50 * time.Millisecond
	appendRetryMax = 10 * time.Second
)

// MinReloadWait is appendBackoff's least value: a slot whose append failed
// reloads, and fires again what it was delivering, no sooner than this.
const MinReloadWait = appendRetry - appendRetry/4

// appendBackoff is the wait after the fails-th failed append in a row of
// slot index: the exponential step, less up to a quarter of it, chosen by
// the slot and the count rather than a random source, so runs in the
// simulator replay and slots that failed together reload apart.
func appendBackoff(index int64, fails int) time.Duration {
	d := min(appendRetry<<min(fails-1, 16), appendRetryMax)
	h := uint64(index)*0x9e3779b97f4a7c15 ^ uint64(fails)*0xbf58476d1ce4e5b9
	h ^= h >> 31
	return d - time.Duration(h%uint64(d/4+1))
}

// refuse answers a command that arrives while the slot backs off.
func refuse(in slot.Input) {
	switch in := in.(type) {
	case slot.Schedule:
		respond(in.To, slot.Result{Status: slot.Unavailable, Record: slot.Record{ID: in.Event.ID}})
	case slot.Cancel:
		respond(in.To, slot.Result{Status: slot.Unavailable, Record: slot.Record{ID: in.ID}})
	case slot.Get:
		respond(in.To, slot.Result{Status: slot.Unavailable, Record: slot.Record{ID: in.ID}})
	}
	// Adopt needs no answer: its event is durable, and the reload reads it.
}

func (y *yielder) done(events int) {
	if y.n += events; y.n >= yieldEvery {
		y.n = 0
		runtime.Gosched()
	}
}

func (a *slotActor) now() int64 { return clock.Millis(a.env.clock.Now()) }

func (a *slotActor) step(in slot.Input) {
	now := a.now()
	a.core.Step(now, in)
	rd := a.core.Ready()
	a.env.stats.limit(rd.Limited)
	for _, r := range rd.Replies {
		respond(r.To, r.Result)
	}
	a.publish(rd.Deliveries)
	if len(rd.Events) > 0 {
		a.appending = true
		self, root, events := a.self, a.env.system.Root, rd.Events
		a.env.journal.Append(a.index, events, func(seq uint64, err error) {
			root.Send(self, &appended{owner: a, seq: seq, err: err, events: events})
		})
	}
	a.arm(rd.WakeAt, now)
	a.count(a.core.Len())
	if rd.Refill {
		a.startRefill()
	}
}

// startRefill reads the records holding the next cold bodies the core
// wants (the slot loaded over its body budget), off the actor: the slot
// goes on firing what it has meanwhile, and refilled brings them.
func (a *slotActor) startRefill() {
	a.refilling = true
	a.readRefill(a.core.BeginRefill(), nil)
}

// readRefill reads the records seqs, or the whole slot if seqs is nil
// (keeping only the Scheduled events of want), in the background, and
// sends what it found as refilled.
func (a *slotActor) readRefill(seqs []uint64, want map[msgid.ID]bool) {
	core, self, root, j, idx := a.core, a.self, a.env.system.Root, a.env.journal, a.index
	a.env.goFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		m := &refilled{core: core, scan: seqs == nil}
		keep := func(seq uint64, events []journal.Event) error {
			var kept []journal.Event
			for _, ev := range events {
				if ev.Kind == journal.Scheduled && len(ev.Body) > 0 && (want == nil || want[ev.ID]) {
					kept = append(kept, ev) // the slice is reused; bodies stay valid
				}
			}
			if len(kept) > 0 {
				m.recs = append(m.recs, refillRecord{seq: seq, events: kept})
			}
			return nil
		}
		if m.scan {
			_, m.err = j.Scan(ctx, idx, keep)
		} else {
			m.err = j.Read(ctx, idx, seqs, keep)
		}
		root.Send(self, m)
	})
}

// onRefilled gives the core what a refill read, reads the whole slot for
// bodies that were not where the core said (once), then ends the refill
// and ticks the slot to fire them; a failed read is retried with back-off.
func (a *slotActor) onRefilled(m *refilled) {
	for _, r := range m.recs {
		a.core.RefillEvents(r.seq, r.events)
	}
	if m.err == nil && !m.scan && a.core.Missing() > 0 {
		a.env.stats.refillScans.Add(1)
		a.readRefill(nil, a.core.MissingIDs())
		return
	}
	a.refilling = false
	missing := a.core.EndRefill()
	err := m.err
	if err == nil && missing > 0 {
		err = fmt.Errorf("%d bodies not found in the journal", missing)
	}
	if err != nil {
		// Not a panic, as a failed load is: an append or deliveries may be
		// in flight, and a restarted actor would lose track of them (and
		// of the replies it holds). Firing waits, and tries again later.
		a.refillFails++
		wait := min(refillRetry<<min(a.refillFails-1, 6), refillRetryMax)
		a.env.log.Warn("slot refill failed; retrying", "slot", a.index, "in", wait, "err", err)
		self, root := a.self, a.env.system.Root
		a.env.clock.AfterFunc(wait, func() { root.Send(self, &tick{}) })
		return
	}
	a.refillFails = 0
	a.env.stats.refills.Add(1)
	if !a.tickQueue {
		a.tickQueue = true
		a.env.system.Root.Send(a.self, &tick{})
	}
}

func (a *slotActor) onAppended(m *appended) {
	a.appending = false
	if m.err != nil {
		a.env.stats.appendErrors.Add(1)
		// Everything held was stepped on top of the failed events: none of
		// it may be answered as done. Held deliveries are dropped; the
		// reloaded slot fires them again from durable state, except those
		// whose outcome is known.
		a.settled = append(a.settled, slot.Outcomes(m.events)...)
		a.settled = append(a.settled, a.core.Unrecorded()...)
		for _, r := range a.core.Abandon() {
			respond(r.To, r.Result)
		}
		a.disarm()
		// Wait before reloading: the reload fires again what was being
		// delivered, and a journal that keeps refusing would otherwise
		// have the same message published as fast as appends fail.
		a.appendFails++
		a.suspended = true
		wait := appendBackoff(a.index, a.appendFails)
		a.env.log.Warn("slot append failed; reloading from the journal after a back-off", "slot", a.index, "in", wait, "failures", a.appendFails, "err", m.err)
		self, root, owner := a.self, a.env.system.Root, a
		a.env.clock.AfterFunc(wait, func() { root.Send(self, &resume{owner: owner}) })
		return
	}
	a.appendFails = 0
	a.lastSeq = m.seq
	for _, ev := range m.events {
		a.env.stats.count(ev.Kind)
	}
	a.step(slot.Persisted{})
}

func (a *slotActor) publish(ds []slot.Delivery) {
	self, root := a.self, a.env.system.Root
	for _, d := range ds {
		id := d.ID
		a.env.publisher.Publish(d, func(o slot.Outcome) {
			root.Send(self, &published{in: slot.Published{ID: id, Dead: o.Dead, Reason: o.Reason}})
		})
	}
}

// arm keeps one timer at the slot's next wake time.
func (a *slotActor) arm(at, now int64) {
	if at == 0 {
		a.disarm()
		return
	}
	if at <= now {
		a.disarm()
		if !a.tickQueue {
			a.tickQueue = true
			a.env.system.Root.Send(a.self, &tick{})
		}
		return
	}
	if a.timer != nil && a.timerAt == at {
		return
	}
	a.disarm()
	self, root := a.self, a.env.system.Root
	d := time.UnixMilli(at).Sub(a.env.clock.Now())
	a.timer, a.timerAt = a.env.clock.AfterFunc(d, func() { root.Send(self, &tick{at: at}) }), at
}

func (a *slotActor) disarm() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer, a.timerAt = nil, 0
	}
}

// maybePassivate asks the router to stop this actor once it is idle and
// either finished or outside the activation horizon. The router decides,
// because only it knows whether a command is on its way here.
func (a *slotActor) maybePassivate(ctx actor.Context) {
	if a.asked || a.core == nil || a.suspended || a.appending || a.refilling || a.tickQueue || a.core.Holding() || a.core.InFlight() > 0 {
		return
	}
	done := a.core.Done()
	if !done && a.pinned {
		return
	}
	a.asked = true
	req := &passivate{index: a.index, pid: a.self, handled: *a.handled, done: done, wakeAt: a.timerAt}
	if a.core.Done() && a.core.Len() > 0 {
		req.closedSeq, req.closedAt = a.lastSeq, a.core.ClosedAt()
	}
	ctx.Send(ctx.Parent(), req)
}

func (a *slotActor) count(n int) {
	a.env.stats.resident.Add(int64(n - a.resident))
	a.resident = n
}

func respond(to any, r slot.Result) {
	if f, ok := to.(func(slot.Result)); ok && f != nil {
		f(r)
	}
}
