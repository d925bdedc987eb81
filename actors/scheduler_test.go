package actors

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// TestScheduleRepliesAfterAppend: the producer hears OK, and the message
// is handed to the publisher, only once the append is acknowledged — even
// when its time comes while the acknowledgement is outstanding.
func TestScheduleRepliesAfterAppend(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	h.holdCompletions()

	at := ms(500 * time.Millisecond)
	ch := h.schedule("a", at)
	eventually(t, "the append", func() bool { return h.heldCompletions() == 1 })
	h.quiet()
	h.noReply(ch, "before the append completed")

	h.advanceTo(at) // due now, but not durable yet
	h.noReply(ch, "due, before the append completed")
	if n := h.pub.count(); n != 0 {
		t.Fatalf("%d deliveries before the append completed", n)
	}

	h.releaseCompletions()
	r := h.await(ch)
	want := slot.Result{Status: slot.OK, Record: slot.Record{ID: r.Record.ID, Target: "a", DeliverAt: at.UnixMilli(), State: slot.Pending}}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	if got := r.Record.ID.DeliverAt(); got != at.UnixMilli() {
		t.Errorf("id deliver time %d, want %d", got, at.UnixMilli())
	}
	eventually(t, "the delivery", func() bool { return h.pub.count() == 1 })
	h.quiet()
	h.pub.mu.Lock()
	d := h.pub.delivered[0]
	h.pub.mu.Unlock()
	wantD := slot.Delivery{ID: r.Record.ID, Target: "a", DeliverAt: at.UnixMilli(), Header: journal.Header{"K": {"a"}}, Body: []byte("body of a")}
	if diff := cmp.Diff(wantD, d); diff != "" {
		t.Errorf("delivery (-want +got):\n%s", diff)
	}
}

// TestDeliveryConfirmedIsRecorded: a confirmed delivery is recorded as
// Fired and reads as delivered; an unconfirmed one is neither, and keeps
// its slot from closing until it is confirmed.
func TestDeliveryConfirmedIsRecorded(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	h.pub.holdTarget("slow")
	at := ms(500 * time.Millisecond)
	fast := h.mustSchedule("fast", at)
	slow := h.mustSchedule("slow", at)
	names := map[msgid.ID]string{fast.ID: "fast", slow.ID: "slow"}
	idx := slotOfTime(at, h.cfg.SlotWidth)

	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{fast.ID, slow.ID}, h.pub.ids()); diff != "" {
		t.Fatalf("deliveries (-want +got):\n%s", diff)
	}
	want := []string{"scheduled:fast", "scheduled:slow", "fired:fast"}
	if diff := cmp.Diff(want, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	if r := h.get(fast.ID); r.Status != slot.OK || r.Record.State != slot.Delivered || r.Record.DoneAt != at.UnixMilli() {
		t.Errorf("get fast = %+v, want delivered at %d", r, at.UnixMilli())
	}
	if r := h.get(slow.ID); r.Status != slot.OK || r.Record.State != slot.Delivering || r.Record.DoneAt != 0 {
		t.Errorf("get slow = %+v, want delivering", r)
	}

	// Its time is over, but an unconfirmed delivery keeps the slot open.
	end := ms(1500 * time.Millisecond)
	h.advanceTo(end)
	if diff := cmp.Diff(want, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal before the confirmation (-want +got):\n%s", diff)
	}

	if !h.pub.confirm(slow.ID) {
		t.Fatal("no confirmation held for slow")
	}
	want = append(want, "fired:slow", "closed")
	eventually(t, "fired and closed records", func() bool { return len(h.j.events(t, idx)) == len(want) })
	if diff := cmp.Diff(want, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal after the confirmation (-want +got):\n%s", diff)
	}
	if r := h.get(slow.ID); r.Record.State != slot.Delivered || r.Record.DoneAt != end.UnixMilli() {
		t.Errorf("get slow = %+v, want delivered at %d", r, end.UnixMilli())
	}
	if st := h.stats(); st.Fired != 2 || st.Scheduled != 2 {
		t.Errorf("stats %+v: want 2 scheduled, 2 fired", st)
	}
	if n := h.pub.count(); n != 2 {
		t.Errorf("%d deliveries, want 2", n)
	}
}

// TestNeverEarly: a message is handed out when the clock reaches its
// deliver time, not a moment before.
func TestNeverEarly(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(1234 * time.Millisecond)
	r := h.mustSchedule("a", at)
	other := h.mustSchedule("b", at.Add(time.Millisecond))

	h.advanceTo(at.Add(-time.Millisecond))
	h.advanceTo(at.Add(-time.Microsecond))
	if n := h.pub.count(); n != 0 {
		t.Fatalf("%d deliveries before the deliver time", n)
	}
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{r.ID}, h.pub.ids()); diff != "" {
		t.Fatalf("deliveries at the deliver time (-want +got):\n%s", diff)
	}
	h.advanceTo(at.Add(time.Millisecond))
	if diff := cmp.Diff([]msgid.ID{r.ID, other.ID}, h.pub.ids()); diff != "" {
		t.Fatalf("deliveries a millisecond later (-want +got):\n%s", diff)
	}
}

// TestPastMeansNow: a deliver time in the past is due at once.
func TestPastMeansNow(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	h.advanceTo(ms(10 * time.Second))
	r := h.mustSchedule("a", ms(time.Second))
	if want := ms(10 * time.Second).UnixMilli(); r.DeliverAt != want {
		t.Errorf("deliver at %d, want now (%d)", r.DeliverAt, want)
	}
	eventually(t, "the delivery", func() bool { return h.pub.count() == 1 })
}

// TestColdPath: a message beyond the horizon costs no memory; get and
// cancel load its slot and let it go again; the horizon brings it back in
// time to deliver it.
func TestColdPath(t *testing.T) {
	cfg := defaultConfig()
	cfg.Horizon = time.Second
	h := newHarness(t, cfg)
	h.start()
	base := h.stats()

	at := ms(time.Hour + 500*time.Millisecond)
	idx := slotOfTime(at, cfg.SlotWidth)
	keep := h.mustSchedule("keep", at)
	drop := h.mustSchedule("drop", at)
	names := map[msgid.ID]string{keep.ID: "keep", drop.ID: "drop"}
	if diff := cmp.Diff([]string{"scheduled:keep", "scheduled:drop"}, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	st := h.stats()
	if st.ResidentEntries != 0 || st.ActiveSlots != base.ActiveSlots {
		t.Errorf("after cold schedules: %d resident, %d active slots; want 0 and %d", st.ResidentEntries, st.ActiveSlots, base.ActiveSlots)
	}
	if ok, _ := h.j.loadCounts(idx); ok != 0 {
		t.Errorf("slot loaded %d times by cold schedules", ok)
	}

	if r := h.get(keep.ID); r.Status != slot.OK || r.Record != keep {
		t.Errorf("get keep = %+v, want OK %+v", r, keep)
	}
	h.waitActive(base.ActiveSlots)
	r := h.cancel(drop.ID)
	wantDrop := drop
	wantDrop.State, wantDrop.DoneAt = slot.Cancelled, t0.UnixMilli()
	if diff := cmp.Diff(slot.Result{Status: slot.OK, Record: wantDrop}, r); diff != "" {
		t.Errorf("cancel drop (-want +got):\n%s", diff)
	}
	h.waitActive(base.ActiveSlots)
	if r := h.get(drop.ID); r.Record != wantDrop {
		t.Errorf("get drop = %+v, want %+v", r, wantDrop)
	}
	h.waitActive(base.ActiveSlots)
	h.quiet()
	if st := h.stats(); st.ResidentEntries != 0 {
		t.Errorf("%d entries resident after the lookups", st.ResidentEntries)
	}
	if ok, _ := h.j.loadCounts(idx); ok != 3 {
		t.Errorf("slot loaded %d times, want once per lookup (3)", ok)
	}

	// Near its time the horizon loads it (one jump: every slot on the way
	// loads, finds nothing and leaves).
	h.man.Set(at.Add(-cfg.Horizon))
	h.quiet()
	if n := h.pub.count(); n != 0 {
		t.Fatalf("%d deliveries before the deliver time", n)
	}
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{keep.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// TestCancel: a cancel before firing wins; after firing it conflicts and
// says why; unknown ids are not found.
func TestCancel(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	gone := h.mustSchedule("gone", at)
	kept := h.mustSchedule("kept", at)

	h.advanceTo(ms(100 * time.Millisecond))
	r := h.cancel(gone.ID)
	wantGone := gone
	wantGone.State, wantGone.DoneAt = slot.Cancelled, ms(100*time.Millisecond).UnixMilli()
	if diff := cmp.Diff(slot.Result{Status: slot.OK, Record: wantGone}, r); diff != "" {
		t.Errorf("cancel before firing (-want +got):\n%s", diff)
	}
	if r := h.cancel(gone.ID); r.Status != slot.Conflict || r.Record != wantGone {
		t.Errorf("second cancel = %+v, want conflict with %+v", r, wantGone)
	}

	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{kept.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	r = h.cancel(kept.ID)
	wantKept := kept
	wantKept.State, wantKept.DoneAt = slot.Delivered, at.UnixMilli()
	if diff := cmp.Diff(slot.Result{Status: slot.Conflict, Record: wantKept}, r); diff != "" {
		t.Errorf("cancel after firing (-want +got):\n%s", diff)
	}
	if r := h.get(gone.ID); r.Record != wantGone {
		t.Errorf("get gone = %+v", r)
	}

	for name, id := range map[string]msgid.ID{
		"in a loaded slot":     msgid.New(at.UnixMilli(), 1),
		"in an unloaded slot":  msgid.New(ms(time.Hour).UnixMilli(), 1),
		"in the past":          msgid.New(t0.Add(-time.Hour).UnixMilli(), 1),
		"beyond the max delay": msgid.New(ms(1000*time.Hour).UnixMilli(), 1),
	} {
		want := slot.Result{Status: slot.NotFound, Record: slot.Record{ID: id}}
		if diff := cmp.Diff(want, h.get(id)); diff != "" {
			t.Errorf("get %s (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff(want, h.cancel(id)); diff != "" {
			t.Errorf("cancel %s (-want +got):\n%s", name, diff)
		}
	}
	h.quiet()
	if n := h.pub.count(); n != 1 {
		t.Errorf("%d deliveries, want 1", n)
	}
}

// TestFIFOAtEqualTimes: messages due at the same time are delivered in
// the order they were accepted, across appends; earlier times go first.
func TestFIFOAtEqualTimes(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(700 * time.Millisecond)
	const n = 50
	chs := make([]<-chan slot.Result, n)
	for i := range n {
		if i == n/2 {
			// Let some appends complete, so the rest ride in later ones.
			h.quiet()
		}
		chs[i] = h.schedule("fifo", at)
	}
	first := h.mustSchedule("first", at.Add(-time.Millisecond))
	want := []msgid.ID{first.ID}
	for _, ch := range chs {
		r := h.await(ch)
		if r.Status != slot.OK {
			t.Fatalf("schedule: %v", r.Status)
		}
		want = append(want, r.Record.ID)
	}
	if !slices.IsSortedFunc(want[1:], func(a, b msgid.ID) int { return cmpStamp(a, b) }) {
		t.Errorf("ids are not in acceptance order")
	}
	h.advanceTo(at)
	if diff := cmp.Diff(want, h.pub.ids()); diff != "" {
		t.Errorf("delivery order (-want +got):\n%s", diff)
	}
}

func cmpStamp(a, b msgid.ID) int {
	switch {
	case a.Stamp() < b.Stamp():
		return -1
	case a.Stamp() > b.Stamp():
		return 1
	}
	return 0
}

// TestRestart: a new scheduler on the same journal delivers what fell due
// while none ran, and does not deliver again what was recorded as fired.
func TestRestart(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	done := h.mustSchedule("done", ms(500*time.Millisecond))
	overdue := h.mustSchedule("overdue", ms(1500*time.Millisecond))
	cancelled := h.mustSchedule("cancelled", ms(1500*time.Millisecond))
	far := h.mustSchedule("far", ms(time.Hour))
	if r := h.cancel(cancelled.ID); r.Status != slot.OK {
		t.Fatalf("cancel: %v", r.Status)
	}
	h.advanceTo(ms(500 * time.Millisecond))
	if diff := cmp.Diff([]msgid.ID{done.ID}, h.pub.ids()); diff != "" {
		t.Fatalf("deliveries before the stop (-want +got):\n%s", diff)
	}
	h.stop()
	if n := h.man.Pending(); n != 0 {
		t.Errorf("%d timers still armed after Stop", n)
	}

	h.man.Set(ms(5 * time.Second)) // down for a while
	h.start()
	eventually(t, "the overdue delivery", func() bool { return h.pub.times(overdue.ID) == 1 })
	h.quiet()
	if diff := cmp.Diff([]msgid.ID{done.ID, overdue.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	for _, c := range []struct {
		rec    slot.Record
		state  slot.State
		doneAt int64
	}{
		{done, slot.Delivered, ms(500 * time.Millisecond).UnixMilli()},
		{overdue, slot.Delivered, ms(5 * time.Second).UnixMilli()},
		{cancelled, slot.Cancelled, t0.UnixMilli()},
		{far, slot.Pending, 0},
	} {
		want := c.rec
		want.State, want.DoneAt = c.state, c.doneAt
		if diff := cmp.Diff(slot.Result{Status: slot.OK, Record: want}, h.get(c.rec.ID)); diff != "" {
			t.Errorf("get %s (-want +got):\n%s", c.rec.Target, diff)
		}
	}
	// Ids accepted after the restart are new.
	again := h.mustSchedule("again", ms(5500*time.Millisecond))
	for _, r := range []slot.Record{done, overdue, cancelled, far} {
		if again.ID.Stamp() <= r.ID.Stamp() {
			t.Errorf("stamp after restart %d ≤ stamp before %d", again.ID.Stamp(), r.ID.Stamp())
		}
	}
	h.advanceTo(ms(5500 * time.Millisecond))
	if h.pub.times(again.ID) != 1 || h.pub.times(done.ID) != 1 {
		t.Errorf("deliveries after restart: %v", h.pub.ids())
	}
}

// TestRetention: a finished slot's records are purged once retention has
// passed since it closed; then its ids are not found.
func TestRetention(t *testing.T) {
	cfg := defaultConfig()
	cfg.Retention = 2 * time.Second
	h := newHarness(t, cfg)
	h.start()
	at := ms(500 * time.Millisecond)
	idx := slotOfTime(at, cfg.SlotWidth)
	r := h.mustSchedule("a", at)
	names := map[msgid.ID]string{r.ID: "a"}

	h.advanceTo(at)
	closedAt := ms(time.Second) // the slot's end: it closes then
	h.advanceTo(closedAt)
	want := []string{"scheduled:a", "fired:a", "closed"}
	if diff := cmp.Diff(want, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Fatalf("journal (-want +got):\n%s", diff)
	}
	h.waitActive(0)

	h.advanceTo(closedAt.Add(cfg.Retention - time.Millisecond))
	if got := kinds(h.j.events(t, idx), names); len(got) != 3 {
		t.Errorf("purged before retention ended: %v", got)
	}
	if g := h.get(r.ID); g.Status != slot.OK || g.Record.State != slot.Delivered {
		t.Errorf("get within retention = %+v, want delivered", g)
	}
	h.waitActive(0)

	h.advanceTo(closedAt.Add(cfg.Retention))
	eventually(t, "the purge", func() bool { return len(h.j.events(t, idx)) == 0 })
	slots, err := h.mem.Slots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(slots, idx) {
		t.Errorf("purged slot %d still listed: %v", idx, slots)
	}
	eventually(t, "the purge to be counted", func() bool { return h.stats().SlotsPurged >= 1 })
	want2 := slot.Result{Status: slot.NotFound, Record: slot.Record{ID: r.ID}}
	if diff := cmp.Diff(want2, h.get(r.ID)); diff != "" {
		t.Errorf("get after purge (-want +got):\n%s", diff)
	}
}

// Ids must not repeat across a restart, even when the clock reads the same
// (or an earlier) time as before it: a repeated id would make the slot
// answer with the old message's record and drop the new one.
func TestIdsDoNotRepeatAfterRestart(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	due := ms(time.Hour)
	first := h.mustSchedule("a", due)
	h.stop()
	h.start() // the manual clock has not moved
	second := h.mustSchedule("b", due)
	if first.ID == second.ID {
		t.Fatalf("restart reissued id %s", first.ID)
	}
	if got := h.get(second.ID); got.Status != slot.OK || got.Record.Target != "b" {
		t.Errorf("get second = %+v, want target b", got)
	}
}

// TestStoredMessageFiresWhileAnAppendIsHeld: a message whose Scheduled
// event is durable is handed to the publisher at its time even while the
// slot's next append (here a cancel) is outstanding; only deliveries of
// messages not yet durable wait for the journal.
func TestStoredMessageFiresWhileAnAppendIsHeld(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	stored := h.mustSchedule("stored", at)
	other := h.mustSchedule("other", ms(900*time.Millisecond))

	h.holdCompletions()
	cancelled := make(chan slot.Result, 1)
	h.s.Cancel(other.ID, func(r slot.Result) { cancelled <- r })
	eventually(t, "the cancel's append", func() bool { return h.heldCompletions() == 1 })

	h.advanceTo(at)
	eventually(t, "the stored message's delivery", func() bool { return h.pub.count() == 1 })
	if diff := cmp.Diff([]msgid.ID{stored.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	h.noReply(cancelled, "before the cancel's append completed")
	h.releaseCompletions()
	if r := h.await(cancelled); r.Status != slot.OK || r.Record.State != slot.Cancelled {
		t.Errorf("cancel = %+v, want cancelled", r)
	}
}

// TestBodyBudget: a slot loaded with more body bytes than its budget
// keeps the rest in the journal and brings them back as they come due;
// every message is delivered once, in order, with its own body.
func TestBodyBudget(t *testing.T) {
	cfg := defaultConfig()
	cfg.MaxBodyBytes = 40 // about three bodies of "body of mNN"
	h := newHarness(t, cfg)
	h.start()
	at := ms(time.Hour)
	var want []string
	for i := range 20 {
		name := fmt.Sprintf("m%02d", i)
		h.mustSchedule(name, at.Add(time.Duration(i)*10*time.Millisecond)) // cold: beyond the horizon
		want = append(want, "body of "+name)
	}
	h.man.Set(at.Add(-cfg.Horizon))
	h.advanceTo(at.Add(time.Second))
	h.quiet()
	if diff := cmp.Diff(want, h.pub.bodies()); diff != "" {
		t.Errorf("bodies delivered (-want +got):\n%s", diff)
	}
	st := h.stats()
	if st.Refills < 5 {
		t.Errorf("%d refills for 20 bodies with room for about 3", st.Refills)
	}
	// Each refill read the records it needed, not the whole slot again.
	if ok, _ := h.j.loadCounts(slotOfTime(at, h.cfg.SlotWidth)); ok != 1 || st.RefillScans != 0 {
		t.Errorf("the slot was scanned %d times (%d by refills), want once: its load", ok, st.RefillScans)
	}
}
