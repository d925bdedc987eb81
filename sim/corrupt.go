package sim

import (
	"context"
	"math/rand/v2"
	"slices"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// corruption is a kind of record the corrupt-record fault injects. Each
// is one no slot could have written, so reads must refuse it whole
// (journal.DecodeChecked with journal.SlotCheck) and quarantine it. None
// is a well-formed Fired or Cancelled of a real id alone: those are
// indistinguishable from tock's own (docs/SECURITY.md).
type corruption uint8

const (
	corruptGarbage   corruption = iota // random bytes
	corruptTruncated                   // a real record cut short
	corruptFlipped                     // a real record with bits flipped
	corruptOtherSlot                   // a Scheduled whose id is of another slot
	corruptDeliverAt                   // a Scheduled whose deliver time is not its id's
	corruptTarget                      // a Scheduled to a system, tock or wildcard subject
	corruptClosed                      // a Closed before the slot's end
	corruptHeader                      // a Scheduled with a line break in a header
	nCorruptions
)

var corruptionNames = [nCorruptions]string{
	corruptGarbage: "garbage", corruptTruncated: "truncated", corruptFlipped: "bit-flipped",
	corruptOtherSlot: "other-slot-id", corruptDeliverAt: "deliver-time", corruptTarget: "target",
	corruptClosed: "early-closed", corruptHeader: "header",
}

func (c corruption) String() string { return corruptionNames[c] }

// Subjects journal.CheckTarget refuses: what a forged record would most
// like tock to publish to.
var forbiddenTargets = []string{"$SYS.x", "$JS.API.STREAM.DELETE.x", "tock.x", "tock.schedule.t", "t.*", "t.>", ">"}

// Header keys and values journal.Check refuses: they would inject
// headers into the published message.
var forbiddenHeaders = []journal.Header{
	{"X\r\nInjected": {"1"}}, {"X\nInjected": {"1"}}, {"X\rInjected": {"1"}}, {"X": {"1\r\nInjected: 1"}},
}

// injection is a record the corrupt-record fault put in the journal.
type injection struct {
	slot int64
	seq  uint64
	kind corruption
	read bool // a read went past it: it must have been quarantined
	gone bool // purged
}

// corrupt is the corrupt-record fault, drawn at every write of slot here
// and every load of it; damaged copies are of the last write. The record
// goes to here or to the slot of some message, past, live or still to
// come, so that loads, replays before purges, tails at start and refills
// all meet one.
func (j *simJournal) corrupt(here int64) {
	if j.quiet || j.s.faults.draw(faultCorruptRecord) == faultNone {
		return
	}
	real := j.lastRecord
	rng := j.s.frng
	slot := j.corruptSlot(here)
	kind := corruption(rng.IntN(int(nCorruptions)))
	if len(real) == 0 && (kind == corruptTruncated || kind == corruptFlipped) {
		kind = corruptGarbage // nothing written yet to copy
	}
	data := j.corruptRecord(rng, kind, slot, real)
	seq := j.mem.Inject(slot, data)
	j.injected = append(j.injected, injection{slot: slot, seq: seq, kind: kind})
	if j.unread == nil {
		j.unread = map[int64][]int{}
	}
	j.unread[slot] = append(j.unread[slot], len(j.injected)-1)
	j.s.trace.event(evInject, j.s.nowMs(), msgid.ID{}, uint64(slot)<<8|uint64(kind))
	j.s.hist(-1, "fault corrupt-record: %s record %d (%d bytes) injected into slot %d", kind, seq, len(data), slot)
}

// corruptSlot is here half the time, else the slot of a random message:
// of its accepted deliver time once acknowledged, of its requested one
// before it is (a slot that will hold it).
func (j *simJournal) corruptSlot(here int64) int64 {
	rng, ops := j.s.frng, j.s.ops
	if rng.IntN(2) == 0 || len(ops) == 0 {
		return here
	}
	o := &ops[rng.IntN(len(ops))]
	switch {
	case o.status == statusOK:
		return j.slotOf(o.deliverAt)
	case o.status == statusNone && o.kind != kindPast:
		return j.slotOf(o.reqAt)
	}
	return here
}

func (j *simJournal) slotOf(ms int64) int64 {
	return journal.SlotOf(ms, j.s.cfg.SlotWidth.Milliseconds())
}

// corruptRecord builds the bytes of a record of kind for slot. Garbage
// and damaged copies are random, so whether one still decodes and checks
// is asked of journal.DecodeChecked (refused). Foreign records are
// foreign by construction, so that a weakened journal.Check lets them
// through, where no-foreign-publish and quarantine see them.
func (j *simJournal) corruptRecord(rng *rand.Rand, kind corruption, slot int64, real []byte) []byte {
	w := j.s.cfg.SlotWidth.Milliseconds()
	now := j.s.nowMs()
	inSlot := func() int64 { return slot*w + rng.Int64N(w) }
	switch kind {
	case corruptGarbage:
		b := make([]byte, 1+rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if rng.IntN(2) == 0 {
			b[0] = 2 // the current version: garbage the decoder must get into
		}
		return j.refused(slot, b)
	case corruptTruncated:
		// One batch, cut anywhere, lacks bytes its counts promise.
		return j.refused(slot, real[:1+rng.IntN(len(real)-1)])
	case corruptFlipped:
		rec := slices.Clone(real)
		for range 1 + rng.IntN(3) {
			rec[rng.IntN(len(rec))] ^= 1 << rng.IntN(8)
		}
		if check(slot, w, rec) == nil {
			// Still a record of the slot (a flip in a body or a stamp):
			// one that checks is no longer corrupt. Cut it instead.
			rec = rec[:len(rec)-1]
		}
		return j.refused(slot, rec)
	case corruptOtherSlot:
		d := int64(1 + rng.IntN(3))
		if rng.IntN(2) == 0 {
			d = -d
		}
		return j.forged(rng, slot, forgedScheduled(rng, (slot+d)*w+rng.Int64N(w), now))
	case corruptDeliverAt:
		ev := forgedScheduled(rng, inSlot(), now)
		d := 1 + rng.Int64N(w)
		if rng.IntN(2) == 0 {
			d = -d
		}
		ev.DeliverAt += d
		return j.forged(rng, slot, ev)
	case corruptTarget:
		ev := forgedScheduled(rng, inSlot(), now)
		ev.Target = forbiddenTargets[rng.IntN(len(forbiddenTargets))]
		return j.forged(rng, slot, ev)
	case corruptClosed:
		// At or before the slot's last millisecond: a Closed before its end.
		return j.forged(rng, slot, journal.Event{Kind: journal.Closed, At: (slot+1)*w - 1 - rng.Int64N(2*w)})
	case corruptHeader:
		ev := forgedScheduled(rng, inSlot(), now)
		ev.Header = forbiddenHeaders[rng.IntN(len(forbiddenHeaders))]
		return j.forged(rng, slot, ev)
	}
	panic("sim: unknown corruption")
}

// forgedScheduled is a Scheduled of a fresh id due at deliverAt, to a
// subject the workload never uses: a message no request asked for.
func forgedScheduled(rng *rand.Rand, deliverAt, at int64) journal.Event {
	id := msgid.Compose(deliverAt, rng.Uint64(), rng.Uint64()|1)
	return journal.Event{Kind: journal.Scheduled, ID: id, At: at, Target: "t.forged", DeliverAt: deliverAt, Body: []byte("forged")}
}

// forged encodes the foreign event bad with journal's own encoder, a third
// of the time behind a Cancelled or Fired of a real message of the slot:
// a record is refused whole, so those must not take effect either (the
// message would be lost, or a get would say cancelled).
func (j *simJournal) forged(rng *rand.Rand, slot int64, bad journal.Event) []byte {
	events := []journal.Event{bad}
	if rng.IntN(3) == 0 {
		if id, ok := j.realID(rng, slot); ok {
			kind := journal.Cancelled
			if rng.IntN(2) == 0 {
				kind = journal.Fired
			}
			events = []journal.Event{{Kind: kind, ID: id, At: j.s.nowMs()}, bad}
		}
	}
	return journal.EncodeRecord(nil, events)
}

// realID is the id of a message stored in slot, from a random Scheduled
// event on: read from the slot itself, which costs its size rather than a
// walk over every request of the run.
func (j *simJournal) realID(rng *rand.Rand, slot int64) (msgid.ID, bool) {
	evs, _, err := j.memLoad(context.Background(), slot)
	if err != nil || len(evs) == 0 {
		return msgid.ID{}, false
	}
	from := rng.IntN(len(evs))
	for i := range evs {
		if ev := &evs[(from+i)%len(evs)]; ev.Kind == journal.Scheduled && !ev.ID.IsZero() {
			return ev.ID, true
		}
	}
	return msgid.ID{}, false
}

// refused makes b a record reads of slot refuse: a version byte that does
// not exist if it still decodes and checks.
func (j *simJournal) refused(slot int64, b []byte) []byte {
	if check(slot, j.s.cfg.SlotWidth.Milliseconds(), b) == nil {
		b = slices.Clone(b)
		b[0] = 0
	}
	return b
}

func check(slot, widthMs int64, b []byte) error {
	_, err := journal.DecodeChecked(nil, b, false, journal.SlotCheck(slot, widthMs))
	return err
}
