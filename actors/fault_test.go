package actors

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

var errDown = errors.New("store down")

// failTarget fails every append carrying a Scheduled event for target.
func failTarget(target string, store bool) func(int64, []journal.Event) (bool, error) {
	return func(_ int64, events []journal.Event) (bool, error) {
		for _, ev := range events {
			if ev.Kind == journal.Scheduled && ev.Target == target {
				return store, errDown
			}
		}
		return true, nil
	}
}

// TestAppendFailure: an append that stored nothing answers Unavailable,
// delivers nothing for it, and the slot keeps working.
func TestAppendFailure(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	idx := slotOfTime(at, h.cfg.SlotWidth)
	before := h.mustSchedule("before", at)

	h.setFail(failTarget("lost", false))
	r := h.await(h.schedule("lost", at))
	if r.Status != slot.Unavailable || r.Record.ID.IsZero() {
		t.Fatalf("schedule with a failing append = %+v, want unavailable with the id", r)
	}
	lost := r.Record.ID
	h.setFail(nil)
	// While the slot backs off it answers Unavailable, and stores nothing.
	if r := h.await(h.schedule("during", at)); r.Status != slot.Unavailable {
		t.Fatalf("schedule during the back-off = %+v, want unavailable", r)
	}
	h.backOff()

	after := h.mustSchedule("after", at)
	names := map[msgid.ID]string{before.ID: "before", lost: "lost", after.ID: "after"}
	if diff := cmp.Diff([]string{"scheduled:before", "scheduled:after"}, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	if g := h.get(lost); g.Status != slot.NotFound {
		t.Errorf("get of the lost message = %+v, want not found", g)
	}
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{before.ID, after.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	if st := h.stats(); st.AppendErrors != 1 {
		t.Errorf("append errors = %d, want 1", st.AppendErrors)
	}
}

// TestAppendAckLost: an append that stored the record but lost its
// acknowledgement answers Unavailable (the producer cannot know), yet the
// reloaded slot knows the record and delivers it on time: at least once
// for everything durable.
func TestAppendAckLost(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	before := h.mustSchedule("before", at)

	h.setFail(failTarget("stored", true))
	r := h.await(h.schedule("stored", at.Add(100*time.Millisecond)))
	if r.Status != slot.Unavailable || r.Record.ID.IsZero() {
		t.Fatalf("schedule with a lost ack = %+v, want unavailable with the id", r)
	}
	stored := r.Record.ID
	h.setFail(nil)
	h.backOff()
	after := h.mustSchedule("after", at)

	if g := h.get(stored); g.Status != slot.OK || g.Record.State != slot.Pending {
		t.Errorf("get of the stored message = %+v, want pending", g)
	}
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{before.ID, after.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries at %v (-want +got):\n%s", at, diff)
	}
	h.advanceTo(at.Add(100*time.Millisecond - time.Millisecond))
	if n := h.pub.count(); n != 2 {
		t.Errorf("%d deliveries before the stored message's time", n)
	}
	h.advanceTo(at.Add(100 * time.Millisecond))
	if diff := cmp.Diff([]msgid.ID{before.ID, after.ID, stored}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// TestFiredAppendFailure: when recording a Fired event fails, nothing is
// lost and nothing is delivered twice: the reloaded slot records the
// delivery it knows was made instead of delivering the message again.
func TestFiredAppendFailure(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	idx := slotOfTime(at, h.cfg.SlotWidth)
	r := h.mustSchedule("a", at)

	var failed atomic.Bool
	h.setFail(func(_ int64, events []journal.Event) (bool, error) {
		if events[0].Kind == journal.Fired && !failed.Swap(true) {
			return false, errDown
		}
		return true, nil
	})
	h.advanceTo(at)
	h.backOff()
	eventually(t, "the delivery to be recorded", func() bool { return h.get(r.ID).Record.State == slot.Delivered })
	h.quiet()
	if n := h.pub.times(r.ID); n != 1 {
		t.Errorf("delivered %d times, want once", n)
	}
	names := map[msgid.ID]string{r.ID: "a"}
	if diff := cmp.Diff([]string{"scheduled:a", "fired:a"}, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	if g := h.get(r.ID); g.Record.State != slot.Delivered {
		t.Errorf("get = %+v, want delivered", g)
	}
}

// TestHorizonRace: a cold append whose acknowledgement is late while the
// horizon passes its slot. Whether the slot loaded before or after the
// record was written, and whether the acknowledgement arrives or is lost,
// a stored message is delivered on time, once.
func TestHorizonRace(t *testing.T) {
	for _, c := range []struct {
		name       string
		holdWrite  bool // the record is written only at release (else at once, ack late)
		ackLost    bool
		wantStatus slot.Status
	}{
		{"stored early, ack late", false, false, slot.OK},
		{"stored late", true, false, slot.OK},
		{"stored early, ack lost", false, true, slot.Unavailable},
		{"stored late, ack lost", true, true, slot.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.Horizon = time.Second
			h := newHarness(t, cfg)
			h.start()
			at := ms(5500 * time.Millisecond)
			idx := slotOfTime(at, cfg.SlotWidth)
			if c.ackLost {
				h.setFail(failTarget("race", true))
			}
			if c.holdWrite {
				h.j.holdAppends()
			} else {
				h.holdCompletions()
			}
			ch := h.schedule("race", at)
			eventually(t, "the cold append", func() bool { return h.j.heldAppends()+h.heldCompletions() == 1 })

			// The horizon reaches the slot: it loads and, if it looks
			// empty, leaves again.
			h.advanceTo(at.Add(-cfg.Horizon))
			if ok, _ := h.j.loadCounts(idx); ok != 1 {
				t.Fatalf("slot loaded %d times by the horizon, want 1", ok)
			}
			if c.holdWrite {
				h.waitActive(0)
			}
			h.noReply(ch, "before the append completed")

			if c.holdWrite {
				h.j.releaseAppends()
			} else {
				h.releaseCompletions()
			}
			r := h.await(ch)
			if r.Status != c.wantStatus {
				t.Fatalf("reply %v, want %v", r.Status, c.wantStatus)
			}
			h.quiet()
			h.setFail(nil)

			h.advanceTo(at.Add(-time.Millisecond))
			if n := h.pub.count(); n != 0 {
				t.Fatalf("%d deliveries before the deliver time", n)
			}
			h.advanceTo(at)
			if diff := cmp.Diff([]msgid.ID{r.Record.ID}, h.pub.ids()); diff != "" {
				t.Errorf("deliveries (-want +got):\n%s", diff)
			}
			if g := h.get(r.Record.ID); g.Record.State != slot.Delivered {
				t.Errorf("get = %+v, want delivered", g)
			}
		})
	}
}

// TestColdAckLost: a cold append that stored the record but lost its
// acknowledgement answers Unavailable, and the horizon later delivers it.
func TestColdAckLost(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(time.Minute)
	h.setFail(failTarget("cold", true))
	r := h.await(h.schedule("cold", at))
	if r.Status != slot.Unavailable {
		t.Fatalf("reply %v, want unavailable", r.Status)
	}
	h.setFail(nil)
	h.man.Set(at.Add(-time.Second))
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{r.Record.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// TestSupervisedLoadFailure: a slot whose journal cannot be read panics
// and is restarted with back-off until it can; the scheduler survives and
// the commands waiting for the slot are served.
func TestSupervisedLoadFailure(t *testing.T) {
	h := newHarness(t, defaultConfig())
	at := ms(1500 * time.Millisecond)
	idx := slotOfTime(at, h.cfg.SlotWidth)
	const failures = 2
	h.j.failLoads(idx, failures)
	h.start()

	ch := h.schedule("a", at)
	eventually(t, "the slot to load after restarts", func() bool {
		ok, failed := h.j.loadCounts(idx)
		return ok == 1 && failed == failures
	})
	r := h.await(ch)
	if r.Status != slot.OK {
		t.Fatalf("schedule = %v, want OK", r.Status)
	}
	if st := h.stats(); st.ActiveSlots != 1 {
		t.Errorf("active slots %d, want 1", st.ActiveSlots)
	}
	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{r.Record.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// TestSupervisedReloadFailure: an append fails and so does the reload
// that follows (the journal is down): the slot restarts, delivers what is
// durable, and — once finished — still leaves memory and gets its purge.
// The restarted actor must agree with the router on how many commands it
// has handled, or the passivation handshake never succeeds.
func TestSupervisedReloadFailure(t *testing.T) {
	cfg := defaultConfig()
	cfg.Retention = time.Second
	h := newHarness(t, cfg)
	h.start()
	at := ms(500 * time.Millisecond)
	idx := slotOfTime(at, cfg.SlotWidth)
	kept := h.mustSchedule("kept", at)

	h.setFail(failTarget("lost", false))
	h.j.failLoads(idx, 1)
	if r := h.await(h.schedule("lost", at)); r.Status != slot.Unavailable {
		t.Fatalf("schedule with a failing append = %v, want unavailable", r.Status)
	}
	h.setFail(nil)
	h.backOff()
	eventually(t, "the slot to reload after a restart", func() bool {
		ok, failed := h.j.loadCounts(idx)
		return ok == 2 && failed == 1
	})
	h.quiet()

	h.advanceTo(at)
	if diff := cmp.Diff([]msgid.ID{kept.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
	h.man.Set(ms(time.Second)) // the slot's end: it closes and asks to leave
	eventually(t, "the finished slot to leave memory (passivation handshake)", func() bool {
		return h.stats().ActiveSlots == 0
	})
	h.quiet()
	names := map[msgid.ID]string{kept.ID: "kept"}
	if diff := cmp.Diff([]string{"scheduled:kept", "fired:kept", "closed"}, kinds(h.j.events(t, idx), names)); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	h.advanceTo(ms(2 * time.Second))
	eventually(t, "the purge", func() bool { return len(h.j.events(t, idx)) == 0 })
}

// steppedClock is a Manual clock whose reading can be set back, as a wall
// clock is by an NTP step, while its timers keep running on the Manual
// time (as Go's timers run on the monotonic clock).
type steppedClock struct {
	*clock.Manual
	back atomic.Int64 // nanoseconds Now lags the Manual time
}

func (c *steppedClock) Now() time.Time {
	return c.Manual.Now().Add(-time.Duration(c.back.Load()))
}

// TestClockStepBack: a slot timer that fires while the wall clock reads
// a little before its deadline (the clock was stepped back) must be armed
// again, or the slot would wait for an input that may never come.
func TestClockStepBack(t *testing.T) {
	h := newHarness(t, defaultConfig())
	sc := &steppedClock{Manual: h.man}
	h.clk = sc
	h.start()
	at := ms(500 * time.Millisecond)
	r := h.mustSchedule("a", at)

	sc.back.Store(int64(5 * time.Millisecond))
	h.advanceTo(at) // the timer fires; the clock reads 495 ms
	if n := h.pub.count(); n != 0 {
		t.Fatalf("%d deliveries while the clock reads before the deliver time", n)
	}
	h.advanceTo(at.Add(100 * time.Millisecond))
	if diff := cmp.Diff([]msgid.ID{r.ID}, h.pub.ids()); diff != "" {
		t.Errorf("deliveries (-want +got):\n%s", diff)
	}
}

// A panicking router is restarted by its supervisor; protoactor stops its
// slot actors on the way, so it must forget them and recover from the
// journal: pending messages still fire and new commands are answered.
func TestRouterRestartRecovers(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(1500 * time.Millisecond)
	before := h.mustSchedule("before", at)

	// A reply func of nil makes the router panic while answering; the
	// public API guards against it, so send the command directly.
	h.s.system.Root.Send(h.s.router, &lookupCmd{id: msgid.New(-1, 1)})
	h.quiet()

	after := h.mustSchedule("after", at)
	if r := h.get(before.ID); r.Status != slot.OK || r.Record.State != slot.Pending {
		t.Fatalf("get after the router restart = %+v, want pending", r)
	}
	h.advanceTo(at)
	eventually(t, "both deliveries", func() bool { return h.pub.times(before.ID) == 1 && h.pub.times(after.ID) == 1 })
}

// TestNoRefireStorm: while the journal refuses every append, the slot
// reloads once per back-off (50 ms doubling to 10 s), not as fast as
// appends fail, and a message it delivered is not published again: each
// reload carries its outcome over; once the journal takes writes again
// the slot resumes by itself and records the delivery.
func TestNoRefireStorm(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	at := ms(500 * time.Millisecond)
	r := h.mustSchedule("a", at)
	var failed atomic.Int64
	h.setFail(func(int64, []journal.Event) (bool, error) { failed.Add(1); return false, errDown })
	h.advanceTo(at.Add(20 * time.Second))
	// Back-offs from at: 50, 100, ..., 6400 ms, then 10 s: 9 reloads by
	// at+20 s, each an append that fails, less up to a quarter of jitter.
	if n := h.pub.times(r.ID); n != 1 {
		t.Fatalf("published %d times in 20 s of a refusing journal, want once", n)
	}
	if n := failed.Load(); n < 8 || n > 11 {
		t.Errorf("%d failed appends in 20 s of a refusing journal, want one per back-off (8-11)", n)
	}
	if g := h.get(r.ID); g.Status != slot.Unavailable && g.Record.State != slot.Pending && g.Record.State != slot.Delivering {
		t.Errorf("get during the outage = %+v", g)
	}
	h.setFail(nil)
	h.advanceTo(at.Add(20*time.Second + appendRetryMax))
	eventually(t, "the delivery to be recorded", func() bool { return h.get(r.ID).Record.State == slot.Delivered })
	settled := h.pub.times(r.ID)
	h.advanceTo(at.Add(40 * time.Second))
	if m := h.pub.times(r.ID); m != settled {
		t.Errorf("published %d more times after the journal recovered", m-settled)
	}
}
