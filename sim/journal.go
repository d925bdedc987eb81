package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

var (
	errStoreDown = errors.New("sim: journal write failed")
	errAckLost   = errors.New("sim: journal acknowledgement lost")
	errFull      = errors.New("sim: journal full")
	errLoadFail  = errors.New("sim: journal read failed")
)

// simJournal sits in front of journal.Memory, shared by every incarnation.
// Appends are not written at once: they queue, in call order, for a flush
// task that writes them all (one round, as the NATS journal's flusher), so
// a crash can catch appends not yet written; the seed decides how many of
// them were. Memory.Fail injects write faults; Memory.Complete queues the
// done calls as tasks of the appending incarnation.
type simJournal struct {
	s *simulator
	// fullUntil: every write before this time (ms) is refused
	// (faultJournalFull).
	fullUntil int64
	mem       *journal.Memory
	pending   []pendingWrite
	flushQd   bool

	// What Memory holds, kept from the Fail hook's decisions (it alone
	// decides whether a record is stored), so the checker can ask "is this
	// event durable?" without reading the journal.
	scheduled map[msgid.ID]int32 // → the message's op + 1 (0: not stored)
	cancelled map[msgid.ID]bool
	maxStamp  uint64        // the largest stamp of a stored id
	events    map[int64]int // slot → stored events
	nEvents   int

	// firedAcked holds the ids whose Fired event an append acknowledged
	// to the actors (done called without error, seen through every
	// wrapper: what the actors were told, not what the store holds).
	// A message may be delivered again only while its Fired event was
	// never acknowledged.
	firedAcked map[msgid.ID]bool
	// appended maps the id of every Scheduled event the actors appended
	// (seen by ackWatch, stored or not) to its request, from its body (-1
	// for a body of no request): what tock may publish.
	appended map[msgid.ID]int32

	// quarSeen is the journal's quarantine count at the last check
	// (checkQuarantine): reads check every record against its slot, and
	// only a record the simulator injected may be refused.
	quarSeen int64
	// injected lists the corrupt-record fault's records in sequence order;
	// injRead counts those a read went past (each must have been
	// quarantined). lastRecord is the encoding of the last write, which
	// the fault damages (encoded at once: the actors reuse their events).
	injected []injection
	// unread indexes, by slot, the injected records no read went past
	// yet: every read checks its own slot's, not every injection.
	unread     map[int64][]int
	injRead    int
	lastRecord []byte

	completeInc *incarnation // incarnation of the write being stored
	quiet       bool         // no faults (crash resolution, drain)
}

type pendingWrite struct {
	inc    *incarnation
	slot   int64
	events []journal.Event
	done   func(uint64, error)
}

func newSimJournal(s *simulator) *simJournal {
	j := &simJournal{s: s, mem: journal.NewMemory(),
		scheduled: map[msgid.ID]int32{}, cancelled: map[msgid.ID]bool{}, events: map[int64]int{},
		firedAcked: map[msgid.ID]bool{}, appended: map[msgid.ID]int32{}}
	j.mem.Complete = func(f func()) { s.queue.push(task{inc: j.completeInc, fn: f}) }
	j.mem.Fail = j.decide
	// Reads check every record against its slot, as the NATS journal's do,
	// and quarantine those that fail.
	j.mem.SlotWidth = s.cfg.SlotWidth
	return j
}

// decide is Memory's Fail hook: the seeded fault plan for one write.
func (j *simJournal) decide(slot int64, events []journal.Event) (bool, error) {
	store, err := true, error(nil)
	if !j.quiet {
		if now := j.s.nowMs(); now < j.fullUntil {
			return false, errFull
		} else if j.s.faults.draw(faultJournalFull) == faultJournalFull {
			j.fullUntil = now + 1 + j.s.frng.Int64N(30_000)
			j.s.hist(-1, "fault journal-full: every write refused until %s", fmtMs(j.fullUntil))
			return false, errFull
		}
		f := j.s.faults.draw(faultAppendLost, faultAppendAckLost)
		if f != faultNone {
			j.s.hist(-1, "fault %s on slot %d: %s", f, slot, describe(events))
		}
		switch f {
		case faultAppendLost:
			store, err = false, errStoreDown
		case faultAppendAckLost:
			store, err = true, errAckLost
		}
	}
	if store {
		for _, ev := range events {
			switch ev.Kind {
			case journal.Scheduled:
				j.storeScheduled(ev)
			case journal.Cancelled:
				j.cancelled[ev.ID] = true
			}
		}
		j.events[slot] += len(events)
		j.nEvents += len(events)
		j.s.observeStorage()
	}
	return store, err
}

// storeScheduled records a stored Scheduled event and checks that its id
// is new: not one of another message, and stamped above every id stored
// before its incarnation started. After a restart with the clock behind
// (clock-back), only Journal.Newest lifts the stamps of the new
// incarnation above those of the old; without it, ids repeat once one of
// the new ones meets an old one's deliver time.
func (j *simJournal) storeScheduled(ev journal.Event) {
	op, err := strconv.Atoi(string(ev.Body))
	if err != nil || op < 0 || op >= len(j.s.ops) {
		op = -1 // a body of no request: delivered reports it
	}
	if prev := j.scheduled[ev.ID]; prev != 0 && int(prev-1) != op {
		j.s.fail("unique-ids", op, "id %s stored for message %d, already stored for message %d", ev.ID, op, prev-1)
	}
	if inc := j.completeInc; inc != nil && ev.ID.Stamp() <= inc.stampFloor && j.scheduled[ev.ID] == 0 {
		j.s.fail("unique-ids", op, "id %s of incarnation %d has stamp %d, not above the %d of the ids stored before it started: ids can repeat",
			ev.ID, inc.n, ev.ID.Stamp(), inc.stampFloor)
	}
	j.scheduled[ev.ID] = int32(op + 1)
	j.maxStamp = max(j.maxStamp, ev.ID.Stamp())
}

func (j *simJournal) Append(slot int64, events []journal.Event, done func(uint64, error)) {
	if w := j.s.cfg.watch; w >= 0 {
		for _, ev := range events {
			if ev.Kind == journal.Scheduled && string(ev.Body) == strconv.Itoa(w) {
				j.s.hist(w, "append of slot %d by incarnation %d queued: %s", slot, j.s.cur.n, describe(events))
				inner := done
				done = func(seq uint64, err error) {
					j.s.hist(w, "append of slot %d completed: seq %d, err %v", slot, seq, err)
					inner(seq, err)
				}
			}
		}
	}
	j.pending = append(j.pending, pendingWrite{inc: j.s.cur, slot: slot, events: events, done: done})
	if !j.flushQd {
		j.flushQd = true
		j.s.queue.push(task{fn: j.flush})
	}
}

// flush writes every queued append, in call order.
func (j *simJournal) flush() {
	j.flushQd = false
	writes := j.pending
	j.pending = nil
	for _, w := range writes {
		if w.inc != nil && w.inc.dead {
			continue // resolved at the crash
		}
		if len(w.events) > 0 && journal.Validate(w.events) == nil {
			j.lastRecord = journal.EncodeRecord(j.lastRecord[:0], w.events)
		}
		j.corrupt(w.slot) // a bad record before this one
		j.completeInc = w.inc
		if j.watched(w.slot) {
			j.s.hist(-1, "append to slot %d by incarnation %d: %s", w.slot, w.inc.n, describe(w.events))
		}
		j.mem.Append(w.slot, w.events, w.done)
		j.completeInc = nil
	}
}

// crash resolves the appends of a dying incarnation that were not written
// yet: a prefix of them (length drawn from the seed) reached the store, the
// rest did not; nobody hears about any of them.
func (j *simJournal) crash(inc *incarnation) (stored, lost int) {
	var mine []pendingWrite
	rest := j.pending[:0]
	for _, w := range j.pending {
		if w.inc == inc {
			mine = append(mine, w)
		} else {
			rest = append(rest, w)
		}
	}
	j.pending = rest
	k := j.s.frng.IntN(len(mine) + 1)
	j.quiet = true
	for _, w := range mine[:k] {
		if j.watched(w.slot) {
			j.s.hist(-1, "crash stores append to slot %d by incarnation %d: %s", w.slot, w.inc.n, describe(w.events))
		}
		j.completeInc = inc // dead: the done call is dropped
		j.mem.Append(w.slot, w.events, nil)
	}
	j.completeInc = nil
	j.quiet = false
	return k, len(mine) - k
}

// watched reports whether slot holds the watched message.
func (j *simJournal) watched(slot int64) bool {
	w := j.s.cfg.watch
	return w >= 0 && j.s.ops[w].reqAt/j.s.cfg.SlotWidth.Milliseconds() == slot
}

func (j *simJournal) Load(ctx context.Context, slot int64) ([]journal.Event, uint64, error) {
	j.corrupt(slot)
	if j.watched(slot) {
		evs, seq, _ := j.memLoad(ctx, slot)
		j.s.hist(-1, "load of slot %d (seq %d): %s", slot, seq, describe(evs))
	}
	if !j.quiet && j.s.faults.draw(faultLoadFail) == faultLoadFail {
		j.s.hist(-1, "fault load-fail on slot %d", slot)
		return nil, 0, fmt.Errorf("load slot %d: %w", slot, errLoadFail)
	}
	return j.memLoad(ctx, slot)
}

// Scan is Load's streaming form, with the same faults.
func (j *simJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	j.corrupt(slot)
	if j.watched(slot) {
		evs, seq, _ := j.memLoad(ctx, slot)
		j.s.hist(-1, "scan of slot %d (seq %d): %s", slot, seq, describe(evs))
	}
	if !j.quiet && j.s.faults.draw(faultLoadFail) == faultLoadFail {
		j.s.hist(-1, "fault load-fail on slot %d", slot)
		return 0, fmt.Errorf("load slot %d: %w", slot, errLoadFail)
	}
	seq, err := j.mem.Scan(ctx, slot, fn)
	if err == nil { // a scan that ended early did not read every record
		j.passed(slot, seq, false)
	}
	j.checkQuarantine()
	return seq, err
}

// Read is a refill's read of some records, with Scan's faults.
func (j *simJournal) Read(ctx context.Context, slot int64, seqs []uint64, fn func(uint64, []journal.Event) error) error {
	j.corrupt(slot)
	if !j.quiet && j.s.faults.draw(faultLoadFail) == faultLoadFail {
		j.s.hist(-1, "fault load-fail on a read of slot %d", slot)
		return fmt.Errorf("read slot %d: %w", slot, errLoadFail)
	}
	err := j.mem.Read(ctx, slot, seqs, fn)
	j.checkQuarantine()
	return err
}

func (j *simJournal) Tail(ctx context.Context, slot int64) ([]journal.Event, uint64, error) {
	evs, seq, err := j.mem.Tail(ctx, slot)
	if err == nil {
		j.passed(slot, seq, true)
	}
	j.checkQuarantine()
	return evs, seq, err
}

// memLoad is Memory.Load for every read, the simulator's own included:
// any read may quarantine a record, and each is checked.
func (j *simJournal) memLoad(ctx context.Context, slot int64) ([]journal.Event, uint64, error) {
	evs, seq, err := j.mem.Load(ctx, slot)
	if err == nil {
		j.passed(slot, seq, false)
	}
	j.checkQuarantine()
	return evs, seq, err
}

// passed notes that a read of slot went past its records up to sequence
// last (tail: its last record alone): the injected ones among them must
// now be quarantined.
func (j *simJournal) passed(slot int64, last uint64, tail bool) {
	waiting := j.unread[slot]
	if len(waiting) == 0 {
		return
	}
	kept := waiting[:0]
	for _, i := range waiting {
		in := &j.injected[i]
		switch {
		case in.gone || in.read:
		case in.seq <= last && (!tail || in.seq == last):
			in.read = true
			j.injRead++
		default:
			kept = append(kept, i)
		}
	}
	if len(kept) == 0 {
		delete(j.unread, slot)
		return
	}
	j.unread[slot] = kept
}

// checkQuarantine checks what the journal refused since the last check.
// Every event tock writes passes journal.Check, so a refused record of
// tock's own means a replay skipped real events; every injected record
// fails it, so one read and not refused was trusted. (A record injected
// where no read comes again, into a purged slot say, is never refused:
// only those read are counted.)
func (j *simJournal) checkQuarantine() {
	q := j.mem.Quarantined()
	fresh := q.Recent[max(0, len(q.Recent)-int(q.Count-j.quarSeen)):]
	j.quarSeen = q.Count
	for _, e := range fresh {
		if in := j.injection(e.Seq); in == nil || in.slot != e.Slot {
			j.s.fail("quarantine", -1, "the journal refused record %d of slot %d, one tock wrote: %s", e.Seq, e.Slot, e.Reason)
			return
		}
	}
	switch {
	case q.Count > int64(len(j.injected)):
		j.s.fail("quarantine", -1, "the journal refused %d records, more than the %d injected: it refused records tock wrote", q.Count, len(j.injected))
	case q.Count < int64(j.injRead):
		j.s.fail("quarantine", -1, "reads went past %d injected records and the journal refused only %d: it trusted %s", j.injRead, q.Count, j.trusted(q))
	}
}

// injection is the injected record of sequence seq, or nil.
func (j *simJournal) injection(seq uint64) *injection {
	i, ok := slices.BinarySearchFunc(j.injected, seq, func(in injection, seq uint64) int { return cmp.Compare(in.seq, seq) })
	if !ok {
		return nil
	}
	return &j.injected[i]
}

// trusted names the latest injected record read and not among q's recent
// entries: one the journal let through.
func (j *simJournal) trusted(q journal.QuarantineStats) string {
	for i := len(j.injected) - 1; i >= 0; i-- {
		in := j.injected[i]
		if in.read && !slices.ContainsFunc(q.Recent, func(e journal.QuarantineEntry) bool { return e.Seq == in.seq }) {
			return fmt.Sprintf("e.g. the %s record %d of slot %d", in.kind, in.seq, in.slot)
		}
	}
	return "some of them"
}

func (j *simJournal) Slots(ctx context.Context) ([]int64, error) { return j.mem.Slots(ctx) }

func (j *simJournal) Newest(ctx context.Context) (int64, error) { return j.mem.Newest(ctx) }

func (j *simJournal) PurgeUpTo(ctx context.Context, slot int64, seq uint64) error {
	if j.watched(slot) {
		j.s.hist(-1, "purge of slot %d up to seq %d", slot, seq)
	}
	if err := j.mem.PurgeUpTo(ctx, slot, seq); err != nil {
		return err
	}
	for i := range j.injected {
		if in := &j.injected[i]; in.slot == slot && in.seq <= seq {
			in.gone = true
		}
	}
	evs, _, err := j.memLoad(ctx, slot)
	if err != nil {
		return err
	}
	j.nEvents -= j.events[slot] - len(evs)
	if len(evs) == 0 {
		delete(j.events, slot)
	} else {
		j.events[slot] = len(evs)
	}
	j.s.observePurge(slot)
	return nil
}

// ackWatch is the journal the actors see, outside every test wrapper: it
// records in firedAcked the Fired events whose append was acknowledged,
// and in appended the ids of the Scheduled events appended.
type ackWatch struct {
	journal.Journal
	j *simJournal
}

func (w ackWatch) Append(slot int64, events []journal.Event, done func(uint64, error)) {
	var fired []msgid.ID // taken now: a wrapper may change events
	for _, ev := range events {
		switch ev.Kind {
		case journal.Fired, journal.Dead:
			// Either settles the message for good: no reload may fire it again.
			fired = append(fired, ev.ID)
		case journal.Scheduled:
			if _, ok := w.j.appended[ev.ID]; !ok {
				w.j.appended[ev.ID] = int32(w.j.s.opOf(ev.Body))
			}
		}
	}
	if len(fired) > 0 {
		inner := done
		done = func(seq uint64, err error) {
			if err == nil {
				for _, id := range fired {
					w.j.firedAcked[id] = true
				}
			}
			inner(seq, err)
		}
	}
	w.Journal.Append(slot, events, done)
}

// Close is a no-op: the journal outlives every incarnation.
func (j *simJournal) Close() error { return nil }

func describe(events []journal.Event) string {
	var b []byte
	for i, ev := range events {
		if i == 8 {
			b = append(b, fmt.Sprintf(" …(%d more)", len(events)-i)...)
			break
		}
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, ev.Kind.String()...)
		if !ev.ID.IsZero() {
			b = append(b, ':')
			b = append(b, ev.ID.String()[16:26]...) // the stamp's low bits
			b = append(b, '@')
			b = strconv.AppendInt(b, ev.At%100000, 10)
		}
	}
	return string(b)
}
