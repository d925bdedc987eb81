package actors

import (
	"testing"
	"time"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// TestBadRecordsCannotDropMessages: records a slot could not have written
// itself (garbage, a foreign id, a Closed that finds a message pending)
// neither stop the start nor keep a message from firing, in a past slot
// (recovered from its tail) and in a live one (loaded).
func TestBadRecordsCannotDropMessages(t *testing.T) {
	cfg := defaultConfig()
	h := newHarness(t, cfg)
	h.mem.SlotWidth = cfg.SlotWidth
	h.man.Set(ms(10 * time.Second))
	past, live := slotOfTime(ms(3*time.Second), cfg.SlotWidth), slotOfTime(ms(11*time.Second), cfg.SlotWidth)
	idPast := msgid.New(ms(3500*time.Millisecond).UnixMilli(), 1)
	idLive := msgid.New(ms(11500*time.Millisecond).UnixMilli(), 2)
	store := func(slot int64, evs ...journal.Event) { h.mem.Append(slot, evs, nil) }
	sched := func(id msgid.ID) journal.Event {
		return journal.Event{Kind: journal.Scheduled, ID: id, At: ms(time.Second).UnixMilli(), Target: "orders.x", DeliverAt: id.DeliverAt()}
	}
	// A forged Closed after the slot's end and within the journal's
	// times: the recovery trusts the tail, the replay before its purge
	// must not.
	closed := journal.Event{Kind: journal.Closed, At: ms(5 * time.Second).UnixMilli()}
	store(past, sched(idPast))
	h.mem.Inject(past, []byte("garbage"))
	store(past, journal.Event{Kind: journal.Fired, ID: idLive, At: 1}) // another slot's id
	store(past, closed)
	store(live, sched(idLive))
	store(live, journal.Event{Kind: journal.Closed, At: ms(12 * time.Second).UnixMilli()})
	h.mem.Inject(live, []byte{1, 1, 0x3f, 0})

	h.start()
	h.advanceTo(ms(13 * time.Second))
	for _, id := range []msgid.ID{idPast, idLive} {
		if h.pub.times(id) == 0 {
			t.Errorf("message %s never fired", id)
		}
	}
	// garbage, the foreign Fired, and the unknown-kind record; counted
	// once each however often the slots are read.
	if q := h.mem.Quarantined(); q.Count != 3 {
		t.Errorf("quarantined %d records, want 3: %+v", q.Count, q.Recent)
	}
}

// TestClosedTail: only a Closed within the journal's times closes a past
// slot at recovery.
func TestClosedTail(t *testing.T) {
	c := journal.Event{Kind: journal.Closed, At: 100}
	for _, tc := range []struct {
		tail   []journal.Event
		newest int64
		ok     bool
	}{
		{nil, 100, false},
		{[]journal.Event{c}, 100, true},
		{[]journal.Event{{Kind: journal.Fired, At: 90}, c}, 100, true},
		{[]journal.Event{c}, 99, false}, // beyond every stored time
		{[]journal.Event{c, {Kind: journal.Fired, At: 101}}, 200, false},
	} {
		if at, ok := closedTail(tc.tail, tc.newest); ok != tc.ok || (ok && at != 100) {
			t.Errorf("closedTail(%v, %d) = %d, %v; want %v", tc.tail, tc.newest, at, ok, tc.ok)
		}
	}
}
