package actors

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tockd/tock/actors/slot"
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

// fuzzSlot is the slot FuzzQuarantine's messages go to (slots of 1 s):
// beyond the horizon at the start, so they are appended cold and the
// slot's first load reads them and the injected record back.
var fuzzSlot = slotOfTime(ms(5*time.Second), defaultConfig().SlotWidth)

// FuzzQuarantine: whatever a record of a slot holds, written into the
// journal by someone other than tock before, between and (past) after
// the slot's real records, the slot's real messages fire exactly as
// scheduled and never early, nothing else is published, and the record
// is quarantined exactly when journal.DecodeChecked refuses it for the
// slot. A record that checks is one tock could have written: its
// Scheduled events may fire too, and a real message it names (a Fired or
// Cancelled with its id, which nobody but tock can tell from tock's own)
// is not held to firing. With past, the scheduler restarts after the
// slot's time, so the slot is recovered from its tail and loaded
// overdue; otherwise it restarts before and loads at the horizon.
func FuzzQuarantine(f *testing.F) {
	w := defaultConfig().SlotWidth.Milliseconds()
	start, end := fuzzSlot*w, (fuzzSlot+1)*w
	id := msgid.Compose(start+300, 1, 7) // an id no real message gets
	sched := func(mod func(*journal.Event)) []byte {
		ev := journal.Event{Kind: journal.Scheduled, ID: id, At: start - 4000, Target: "fuzz.valid", DeliverAt: id.DeliverAt(),
			Header: journal.Header{"K": {"v"}}, Body: []byte("forged")}
		if mod != nil {
			mod(&ev)
		}
		return journal.EncodeRecord(nil, []journal.Event{ev})
	}
	valid := sched(nil)
	for _, data := range [][]byte{
		nil, {0}, {2}, {2, 0}, {1, 1, 0x3f, 0}, []byte("garbage"),
		valid, // checks: it may fire
		valid[:len(valid)-1], valid[:len(valid)/2],
		journal.EncodeRecord(nil, []journal.Event{{Kind: journal.Closed, At: end + 10}}), // checks
		journal.EncodeRecord(nil, []journal.Event{{Kind: journal.Closed, At: end - 1}}),
		journal.EncodeRecord(nil, []journal.Event{{Kind: journal.Cancelled, ID: msgid.Compose(end+5, 1, 7), At: 1}}),
		sched(func(ev *journal.Event) { ev.Target = "$SYS.x" }),
		sched(func(ev *journal.Event) { ev.Target = "tock.x" }),
		sched(func(ev *journal.Event) { ev.Target = "fuzz.*" }),
		sched(func(ev *journal.Event) { ev.DeliverAt++ }),
		sched(func(ev *journal.Event) { ev.Header = journal.Header{"K\r\nX": {"v"}} }),
		sched(func(ev *journal.Event) {
			ev.ID = msgid.Compose(end+100, 1, 7)
			ev.DeliverAt = ev.ID.DeliverAt()
		}),
	} {
		f.Add(data, false)
		f.Add(data, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, past bool) {
		fuzzQuarantine(t, data, past)
	})
}

// systemSubject reports whether target is one no record may make tock
// publish to: $-prefixed, tock's own, or holding a wildcard.
func systemSubject(target string) bool {
	return strings.HasPrefix(target, "$") || target == "tock" || strings.HasPrefix(target, "tock.") || strings.ContainsAny(target, "*>")
}

func fuzzQuarantine(t *testing.T, data []byte, past bool) {
	cfg := defaultConfig()
	h := newHarness(t, cfg)
	h.mem.SlotWidth = cfg.SlotWidth
	h.random = rand.New(rand.NewPCG(1, 2)) // the same ids every run
	idx := fuzzSlot
	evs, bad := journal.DecodeChecked(nil, data, false, journal.SlotCheck(idx, cfg.SlotWidth.Milliseconds()))

	h.man.Set(ms(2500 * time.Millisecond)) // the slot is beyond the horizon (2 s) still
	h.start()
	injected := 0
	inject := func() {
		h.mem.Inject(idx, data)
		injected++
	}
	inject() // before every real record
	real := []slot.Record{h.mustSchedule("fuzz.a", ms(5100*time.Millisecond))}
	inject() // between two
	real = append(real, h.mustSchedule("fuzz.b", ms(5400*time.Millisecond)), h.mustSchedule("fuzz.c", ms(5700*time.Millisecond)))
	h.stop()
	if past {
		inject() // the tail the recovery reads
		h.man.Set(ms(7 * time.Second))
	}
	h.start()
	h.advanceTo(ms(7500 * time.Millisecond)) // past the slot's end (6 s) and the restart

	// What a record that checks may do: fire its own Scheduled events, and
	// settle real messages whose id it names.
	forged := map[msgid.ID][]journal.Event{} // more than one if its id repeats
	named := map[msgid.ID]bool{}
	for _, ev := range evs {
		named[ev.ID] = true
		if ev.Kind == journal.Scheduled {
			forged[ev.ID] = append(forged[ev.ID], ev)
		}
	}
	want := map[msgid.ID]slot.Record{}
	for _, r := range real {
		want[r.ID] = r
	}
	fired := map[msgid.ID]int{}
	for _, d := range h.pub.deliveries() {
		fired[d.ID]++
		r, ok := want[d.ID]
		switch {
		case systemSubject(d.Target):
			// Said again here, not taken from journal.CheckTarget: a
			// check that let such a record through would also bless it.
			t.Errorf("published %s to the system or tock subject %q (record refused: %v)", d.ID, d.Target, bad)
		case ok && !named[d.ID]:
			if d.Target != r.Target || d.DeliverAt != r.DeliverAt || string(d.Body) != "body of "+r.Target ||
				!reflect.DeepEqual(d.Header, journal.Header{"K": {r.Target}}) {
				t.Errorf("real message %s delivered as %+v, scheduled as %+v", d.ID, d, r)
			}
		case ok:
		case len(forged[d.ID]) > 0:
			if !slices.ContainsFunc(forged[d.ID], func(ev journal.Event) bool {
				return d.Target == ev.Target && bytes.Equal(d.Body, ev.Body)
			}) {
				t.Errorf("the record's message %s delivered as %+v, stored as %+v", d.ID, d, forged[d.ID])
			}
		default:
			t.Errorf("published %s to %q, a message nobody scheduled (record refused: %v)", d.ID, d.Target, bad)
		}
	}
	for _, r := range real {
		if !named[r.ID] && fired[r.ID] != 1 {
			t.Errorf("real message %s (%s) delivered %d times, want once (record refused: %v)", r.ID, r.Target, fired[r.ID], bad)
		}
	}
	q := h.mem.Quarantined()
	if bad == nil && q.Count != 0 {
		t.Errorf("a record that checks was quarantined: %+v", q.Recent)
	} else if bad != nil && q.Count != int64(injected) {
		t.Errorf("quarantined %d records, want the %d injected (refused: %v): %+v", q.Count, injected, bad, q.Recent)
	}
}
