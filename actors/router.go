package actors

import (
	"container/heap"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// Messages the router receives.
type (
	scheduleCmd struct {
		req   ScheduleRequest
		reply func(slot.Result)
	}
	lookupCmd struct { // cancel or get
		id     msgid.ID
		cancel bool
		reply  func(slot.Result)
	}
	// coldFlush appends the schedules batched for slots not in memory.
	coldFlush struct{}
	// coldDone answers the Scheduled events of one cold batch.
	coldDone struct {
		index int64
		batch *coldBatch
		err   error
	}
	// passivate is a slot actor asking to leave memory.
	passivate struct {
		index     int64
		pid       *actor.PID
		handled   uint64
		done      bool   // finished: nothing pending
		wakeAt    int64  // Unix ms the slot's timer fires next; 0: none
		closedSeq uint64 // >0: the slot is finished; purge up to here after retention
		closedAt  int64
	}
	horizonTick struct{}
	purgeTick   struct{}
	purgeDone   struct {
		p   purgeEntry
		err error
		// live: the slot's replay left messages pending; nothing was
		// purged. verified: a verifyOnly entry found the slot finished.
		live, verified bool
	}
	// stay refuses a passivation; pinned tells the actor it is inside the
	// horizon and must stay until finished.
	stay     struct{ pinned bool }
	statsReq struct{}
)

// coldBatch is the schedules for one slot not in memory that the router
// took since its last coldFlush, appended to the journal as one.
type coldBatch struct {
	events  []journal.Event
	replies []func(slot.Result)
}

type slotRef struct {
	pid       *actor.PID
	forwarded uint64 // commands sent, compared with the actor's count on passivation
	// lookup: loaded only to answer a get or cancel, counted in
	// router.lookups until it leaves or the horizon reaches it.
	lookup bool
}

// router owns the map from slot number to slot actor. Every command passes
// through it, so it alone decides when a slot enters or leaves memory:
//   - slots whose start is within the horizon are activated ahead of time
//     and stay until they are finished;
//   - a schedule for a slot beyond the horizon is appended to the journal
//     directly ("cold"): far-future messages cost no memory at all. Cold
//     schedules are batched per slot until the coldFlush the first of them
//     queued behind the router's mailbox, so a burst of them makes one
//     append, one acknowledgement message and one reply loop per slot
//     instead of one of each per schedule. Any other message appends the
//     batches first, so a slot can never be loaded, nor the horizon move,
//     while one of its schedules waits in a batch.
//   - cancel and get load the slot they name, which leaves again once idle;
//     at most Config.MaxLookupSlots such slots are loaded at once, and
//     lookups of others wait in a bounded queue (beyond it: Busy).
type router struct {
	env     *env
	active  map[int64]*slotRef
	stamper msgid.Stamper
	// horizon is the highest slot activated because its time came near.
	horizon      int64
	horizonTimer clock.Timer
	purges       purgeHeap
	purgeTimer   clock.Timer
	purging      bool
	restarted    bool         // Started after a supervisor restart: recover again
	initial      []int64      // slots to load at start: unfinished or near
	initialPurge []purgeEntry // finished slots found at start
	self         *actor.PID
	props        func(index int64, pinned bool) *actor.Props
	root         *actor.RootContext
	cold         map[int64]*coldBatch // cold schedules not yet appended, by slot
	coldOrder    []int64              // the slots of cold, in order of their first schedule
	coldQueued   bool                 // a coldFlush is in the mailbox
	coldFree     []*coldBatch         // answered batches, for reuse
	lookups      int                  // active slots loaded only for lookups
	waiting      []*lookupCmd         // lookups waiting for room among them, oldest first
}

// Reuse of answered cold batches. Grown append by append for every
// flush, their slices were most of what the router allocated during an
// ingest. Schedules sent in deliver-time order fill one slot's batch with
// the whole mailbox (thousands), so a few large batches are kept rather
// than many small ones; the bounds keep what an idle router holds to
// about 1.5 MB (96 bytes an entry).
const (
	maxColdFree    = 8
	maxColdFreeCap = 2048
)

func (r *router) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *scheduleCmd, *coldFlush, *actor.Restarting:
	default:
		r.flushCold()
	}
	switch m := ctx.Message().(type) {
	case *actor.Restarting:
		// protoactor stops every child before restarting a parent, and the
		// producer hands back this same struct: forget the dead children and
		// plan again from the journal, exactly as at start. Batched cold
		// schedules are dropped unanswered: nothing was promised for them.
		r.stopTimers()
		r.active = make(map[int64]*slotRef)
		r.purges, r.purging = nil, false
		r.cold, r.coldOrder, r.coldQueued = nil, nil, false
		for _, m := range r.waiting {
			m.reply(slot.Result{Status: slot.Unavailable, Record: slot.Record{ID: m.id}})
		}
		r.lookups, r.waiting = 0, nil
		r.restarted = true
	case *actor.Started:
		r.self = ctx.Self()
		if r.restarted {
			rctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
			err := r.recover(rctx)
			cancel()
			if err != nil {
				panic(fmt.Errorf("router restart: %w", err)) // the supervisor tries again
			}
		}
		for _, idx := range r.initial {
			r.activate(ctx, idx)
		}
		r.initial = nil
		for _, p := range r.initialPurge {
			heap.Push(&r.purges, p)
		}
		r.initialPurge = nil
		r.advanceHorizon(ctx)
		r.armPurge()
	case *actor.Stopping:
		r.stopTimers()
	case *scheduleCmd:
		r.schedule(ctx, m)
	case *coldFlush:
		r.coldQueued = false
		r.flushCold()
	case *lookupCmd:
		r.lookup(ctx, m)
	case *coldDone:
		r.coldDone(ctx, m)
	case *passivate:
		r.passivate(ctx, m)
	case *horizonTick:
		r.advanceHorizon(ctx)
	case *purgeTick:
		r.purgeDue()
	case *purgeDone:
		r.purging = false
		r.purgeDone(ctx, m)
		r.purgeDue()
	case *statsReq:
		st := r.env.stats.snapshot(len(r.active))
		st.LookupSlots, st.LookupsWaiting = r.lookups, len(r.waiting)
		ctx.Respond(st)
	}
}

func (r *router) now() int64 { return clock.Millis(r.env.clock.Now()) }

func (r *router) slotOf(ms int64) int64 { return ms / r.env.widthMs }

func (r *router) schedule(ctx actor.Context, m *scheduleCmd) {
	now := r.now()
	at := max(m.req.DeliverAt, now) // the past means now
	stamp := r.stamper.Next(now)
	ev := journal.Event{
		// At never lags the stamp's millisecond (stamps run ahead of the
		// clock after a restart above Journal.Newest), so Newest, the
		// largest stored At, bounds every stamp ever stored.
		Kind: journal.Scheduled, ID: msgid.Mint(at, stamp, r.env.random), At: max(now, int64(stamp>>20)),
		Target: m.req.Target, DeliverAt: at, Header: m.req.Header, Body: m.req.Body,
	}
	idx := r.slotOf(at)
	in := slot.Schedule{Event: ev, To: m.reply}
	if ref := r.active[idx]; ref != nil {
		r.forward(ctx, ref, in)
		return
	}
	if idx <= r.horizon {
		r.forward(ctx, r.activate(ctx, idx), in)
		return
	}
	b := r.cold[idx]
	if b == nil {
		if r.cold == nil {
			r.cold = make(map[int64]*coldBatch)
		}
		b = r.newColdBatch()
		r.cold[idx] = b
		r.coldOrder = append(r.coldOrder, idx)
	}
	b.events = append(b.events, ev)
	b.replies = append(b.replies, m.reply)
	if !r.coldQueued {
		r.coldQueued = true
		ctx.Send(r.self, &coldFlush{})
	}
}

// flushCold appends every cold batch, each as one append of its slot.
func (r *router) flushCold() {
	if len(r.coldOrder) == 0 {
		return
	}
	self, root := r.self, r.root
	for _, idx := range r.coldOrder {
		b := r.cold[idx]
		r.env.journal.Append(idx, b.events, func(_ uint64, err error) {
			root.Send(self, &coldDone{index: idx, batch: b, err: err})
		})
	}
	clear(r.cold)
	r.coldOrder = r.coldOrder[:0]
}

func (r *router) coldDone(ctx actor.Context, m *coldDone) {
	if m.err != nil {
		r.env.log.Warn("journal append failed", "slot", m.index, "err", m.err)
		r.env.stats.appendErrors.Add(1)
		// The records may be stored all the same (a lost acknowledgement).
		// If the horizon passed the slot meanwhile and it left memory, it
		// may have loaded before the records were written: load it again,
		// so a stored message still fires on time (an empty slot leaves
		// again).
		if r.active[m.index] == nil && m.index <= r.horizon {
			r.activate(ctx, m.index)
		}
		m.batch.answer(slot.Unavailable)
		return
	}
	// The slot may have been loaded while the append was in flight and
	// missed the events; Adopt is idempotent, so hand them over regardless.
	// If the horizon passed the slot meanwhile and it already left memory
	// (it looked empty), load it again: nothing else ever would.
	ref := r.active[m.index]
	if ref == nil && m.index <= r.horizon {
		ref = r.activate(ctx, m.index)
	}
	for _, ev := range m.batch.events {
		r.env.stats.count(journal.Scheduled)
		if ref != nil {
			r.forward(ctx, ref, slot.Adopt{Event: ev})
		}
	}
	m.batch.answer(slot.OK)
	r.recycle(m.batch)
}

func (r *router) newColdBatch() *coldBatch {
	if n := len(r.coldFree); n > 0 {
		b := r.coldFree[n-1]
		r.coldFree = r.coldFree[:n-1]
		return b
	}
	return &coldBatch{}
}

// recycle keeps an answered batch for reuse. The journal is done with its
// events (done was called); its bodies and reply funcs are dropped, so
// the batch pins no garbage.
func (r *router) recycle(b *coldBatch) {
	if len(r.coldFree) >= maxColdFree || cap(b.events) > maxColdFreeCap {
		return
	}
	clear(b.events)
	clear(b.replies)
	b.events, b.replies = b.events[:0], b.replies[:0]
	r.coldFree = append(r.coldFree, b)
}

// answer replies to every schedule of b with status st.
func (b *coldBatch) answer(st slot.Status) {
	for i, ev := range b.events {
		rec := slot.Record{ID: ev.ID, Target: ev.Target, DeliverAt: ev.DeliverAt, State: slot.Pending}
		b.replies[i](slot.Result{Status: st, Record: rec})
	}
}

func (r *router) lookup(ctx actor.Context, m *lookupCmd) {
	at := m.id.DeliverAt()
	if at < 0 || at > r.now()+r.env.maxDelayMs+r.env.widthMs {
		m.reply(slot.Result{Status: slot.NotFound, Record: slot.Record{ID: m.id}})
		return
	}
	var in slot.Input = slot.Get{ID: m.id, To: m.reply}
	if m.cancel {
		in = slot.Cancel{ID: m.id, To: m.reply}
	}
	idx := r.slotOf(at)
	ref := r.active[idx]
	if ref == nil {
		if !r.lookupRoom() {
			if len(r.waiting) >= r.env.cfg.MaxLookupSlots*lookupQueuePerSlot {
				r.env.stats.lookupsRefused.Add(1)
				m.reply(slot.Result{Status: slot.Busy, Record: slot.Record{ID: m.id}})
				return
			}
			r.waiting = append(r.waiting, m)
			return
		}
		ref = r.activate(ctx, idx)
		ref.lookup = true
		r.lookups++
	}
	r.forward(ctx, ref, in)
}

// lookupRoom reports whether one more slot may load for a lookup.
func (r *router) lookupRoom() bool {
	return r.env.cfg.MaxLookupSlots <= 0 || r.lookups < r.env.cfg.MaxLookupSlots
}

// lookupLeft notes that ref no longer counts as a lookup slot, and lets
// waiting lookups take the room.
func (r *router) lookupLeft(ctx actor.Context, ref *slotRef) {
	if !ref.lookup {
		return
	}
	ref.lookup = false
	r.lookups--
	for len(r.waiting) > 0 && r.lookupRoom() {
		m := r.waiting[0]
		r.waiting[0] = nil
		r.waiting = r.waiting[1:]
		r.lookup(ctx, m)
	}
}

func (r *router) forward(ctx actor.Context, ref *slotRef, in slot.Input) {
	ref.forwarded++
	ctx.Send(ref.pid, &command{in: in})
}

func (r *router) activate(ctx actor.Context, idx int64) *slotRef {
	if ref := r.active[idx]; ref != nil {
		return ref
	}
	props := r.props(idx, idx <= r.horizon)
	// A name of its own for every activation: a passivated actor of this
	// slot may still be stopping, and its late messages (a passivation
	// request above all) must never be taken for the new actor's, which
	// they would be if it reused the name and so the pid.
	pid := ctx.SpawnPrefix(props, "slot-"+strconv.FormatInt(idx, 10)+"-")
	ref := &slotRef{pid: pid}
	r.active[idx] = ref
	return ref
}

func (r *router) passivate(ctx actor.Context, m *passivate) {
	ref := r.active[m.index]
	if ref == nil || !ref.pid.Equal(m.pid) {
		return
	}
	// A slot whose timer is due within the horizon may have begun firing
	// since it asked (its timer is not a command the router counts): it
	// must stay, or its successor would fire again what it handed out.
	// The horizon tick would pin it anyway; a clock that jumped gets here
	// first.
	near := m.index <= r.horizon || (m.wakeAt != 0 && m.wakeAt <= r.now()+r.env.horizonMs)
	if ref.forwarded != m.handled || (near && !m.done) {
		// A command is on its way, or the slot's time came near while it
		// asked: it stays, and asks again once idle and allowed.
		ctx.Send(m.pid, &stay{pinned: near})
		return
	}
	delete(r.active, m.index)
	ctx.Stop(m.pid)
	r.lookupLeft(ctx, ref)
	if m.closedSeq > 0 {
		heap.Push(&r.purges, purgeEntry{at: m.closedAt + r.env.retentionMs, index: m.index, seq: m.closedSeq, closedAt: m.closedAt})
		r.armPurge()
	}
}

// advanceHorizon activates every slot whose start has come within the
// horizon, then sleeps until the next one does.
func (r *router) advanceHorizon(ctx actor.Context) {
	now := r.now()
	upTo := r.slotOf(now + r.env.horizonMs)
	from := r.horizon + 1
	r.horizon = max(r.horizon, upTo)
	for idx := from; idx <= upTo; idx++ {
		if ref := r.active[idx]; ref != nil {
			ctx.Send(ref.pid, &stay{pinned: true}) // loaded for a get; now it must stay
			r.lookupLeft(ctx, ref)
			continue
		}
		r.activate(ctx, idx)
	}
	next := (r.horizon+1)*r.env.widthMs - r.env.horizonMs
	if r.horizonTimer != nil {
		r.horizonTimer.Stop()
	}
	self, root := r.self, r.root
	r.horizonTimer = r.env.clock.AfterFunc(time.Duration(next-now)*time.Millisecond, func() { root.Send(self, &horizonTick{}) })
}

func (r *router) armPurge() {
	if r.purging || r.purges.Len() == 0 {
		return
	}
	if r.purgeTimer != nil {
		r.purgeTimer.Stop()
	}
	self, root := r.self, r.root
	d := time.Duration(r.purges[0].at-r.now()) * time.Millisecond
	r.purgeTimer = r.env.clock.AfterFunc(max(d, 0), func() { root.Send(self, &purgeTick{}) })
}

// purgeDue removes the journal records of one finished slot whose
// retention ran out; one purge at a time, off the router's goroutine.
func (r *router) purgeDue() {
	if r.purging || r.purges.Len() == 0 || r.purges[0].at > r.now() {
		r.armPurge()
		return
	}
	p := heap.Pop(&r.purges).(purgeEntry)
	if r.active[p.index] != nil {
		// Loaded again (a late get, say): it will ask to leave and bring a
		// fresh purge entry with it.
		r.purgeDue()
		return
	}
	r.purging = true
	self, root, e := r.self, r.root, r.env
	r.env.goFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
		defer cancel()
		root.Send(self, e.purge(ctx, p))
	})
}

// purge verifies that slot p.index is finished, then (unless p is only a
// verification) removes its records up to the Closed record only:
// anything appended later survives. It runs off the router's goroutine.
//
// Why verify: the Closed a purge rests on may not tell the truth. It may
// be forged, or genuine but blind to a record stored between the load
// that closed the slot and the Closed itself (a cold schedule whose
// acknowledgement was lost, or that a crash kept from the slot). Replaying
// the slot costs one streamed read of it, once per purge; a slot it finds
// unfinished is loaded again instead, and fires what is pending.
func (e *env) purge(ctx context.Context, p purgeEntry) *purgeDone {
	if !p.verified {
		live, err := e.pendingAfterReplay(ctx, p.index)
		if err != nil || live || p.verifyOnly {
			return &purgeDone{p: p, err: err, live: live, verified: err == nil}
		}
	}
	return &purgeDone{p: p, err: e.journal.PurgeUpTo(ctx, p.index, p.seq)}
}

// pendingAfterReplay replays slot as a load would, keeping no bodies, and
// reports whether messages are left pending.
func (e *env) pendingAfterReplay(ctx context.Context, idx int64) (bool, error) {
	core := slot.New(slot.Config{Index: idx, Width: e.widthMs, MaxBodyBytes: 1})
	_, err := e.journal.Scan(ctx, idx, func(rec uint64, events []journal.Event) error {
		for i := range events {
			core.Recover(rec, events[i])
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("verify slot %d before its purge: %w", idx, err)
	}
	return core.Pending() > 0, nil
}

// purgeDone takes the outcome of a purge or verification.
func (r *router) purgeDone(ctx actor.Context, m *purgeDone) {
	switch {
	case m.err != nil:
		r.env.log.Warn("purge failed; retrying later", "slot", m.p.index, "err", m.err)
		m.p.at = r.now() + r.env.widthMs
		heap.Push(&r.purges, m.p)
	case m.live:
		// Its passivation brings a fresh purge entry once it is finished.
		r.env.log.Warn("slot marked closed still has messages pending; loading it to fire them", "slot", m.p.index)
		r.activate(ctx, m.p.index)
	case m.verified && m.p.verifyOnly:
		p := m.p
		p.at, p.verifyOnly, p.verified = p.closedAt+r.env.retentionMs, false, true
		heap.Push(&r.purges, p)
	default:
		r.env.stats.purged.Add(1)
	}
}

func (r *router) stopTimers() {
	for _, t := range []clock.Timer{r.horizonTimer, r.purgeTimer} {
		if t != nil {
			t.Stop()
		}
	}
}

type purgeEntry struct {
	at    int64 // Unix ms when retention ends (or the verification is due)
	index int64
	seq   uint64 // of the Closed record
	// closedAt is when the slot closed; verifyOnly entries (planned at
	// recovery, at once) only check the slot is finished and then plan
	// the purge for closedAt plus retention, verified: no second replay.
	closedAt             int64
	verifyOnly, verified bool
}

type purgeHeap []purgeEntry

func (h purgeHeap) Len() int           { return len(h) }
func (h purgeHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h purgeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *purgeHeap) Push(x any)        { *h = append(*h, x.(purgeEntry)) }
func (h *purgeHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
