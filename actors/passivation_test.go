package actors

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/msgid"
)

// slotPIDs lists the pids of the live actors of slot idx.
func (h *harness) slotPIDs(idx int64) []*actor.PID {
	reg := h.s.system.ProcessRegistry
	prefix := "router/slot-" + strconv.FormatInt(idx, 10)
	var out []*actor.PID
	for _, bucket := range reg.LocalPIDs.LocalPIDs {
		if bucket.IsEmpty() {
			continue
		}
		bucket.IterCb(func(id string, _ any) {
			if id == prefix || strings.HasPrefix(id, prefix+"-") {
				out = append(out, actor.NewPID(reg.Address, id))
			}
		})
	}
	return out
}

// TestStalePassivationIgnored: a passivation request from an actor that
// already left must not stop the slot's next actor. A slot actor may ask to
// leave more than once (after a refusal it asks again once idle); a late
// request from a stopped incarnation that the router took for the new
// actor's would stop it with a command in its mailbox: that command's reply
// would be lost. Here the late request is sent by hand, at the worst time.
func TestStalePassivationIgnored(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	id := msgid.New(t0.Add(-time.Hour).UnixMilli(), 1)
	idx := slotOfTime(t0.Add(-time.Hour), h.cfg.SlotWidth)

	// First incarnation: a get; note its pid; it answers and leaves.
	release := h.j.blockLoads(idx)
	f, ch := h.replyFunc()
	h.s.Get(id, f)
	eventually(t, "the first slot actor to load", func() bool { return h.j.blockedLoads(idx) == 1 })
	pids := h.slotPIDs(idx)
	if len(pids) != 1 {
		t.Fatalf("slot actors %v, want one", pids)
	}
	old := pids[0]
	release()
	if r := h.await(ch); r.Status != slot.NotFound {
		t.Fatalf("get = %v, want not found", r.Status)
	}
	h.waitActive(0)
	eventually(t, "the first slot actor to stop", func() bool { return len(h.slotPIDs(idx)) == 0 })

	// Second incarnation, for a cancel still waiting in its mailbox, when
	// the first one's late request arrives (it had handled one command, as
	// the new one has been sent one).
	release = h.j.blockLoads(idx)
	f, ch = h.replyFunc()
	h.s.Cancel(id, f)
	eventually(t, "the second slot actor to load", func() bool { return h.j.blockedLoads(idx) == 1 })
	h.s.system.Root.Send(h.s.router, &passivate{index: idx, pid: old, handled: 1, done: true})
	if st := h.stats(); st.ActiveSlots != 1 { // the router handled the request before this
		t.Errorf("active slots %d after the late request, want 1", st.ActiveSlots)
	}
	release()
	if r := h.await(ch); r.Status != slot.NotFound {
		t.Fatalf("cancel = %v, want not found", r.Status)
	}
	h.waitActive(0)
}

// TestLookupsAlwaysAnswered hammers one unloaded slot with lookups, so its
// actor loads, answers and leaves over and over, racing the passivation
// handshake against new activations: every lookup must be answered.
func TestLookupsAlwaysAnswered(t *testing.T) {
	h := newHarness(t, defaultConfig())
	h.start()
	id := msgid.New(t0.Add(-time.Hour).UnixMilli(), 1)
	for i := range 300 {
		f, ch := h.replyFunc()
		if i%2 == 0 {
			h.s.Get(id, f)
		} else {
			h.s.Cancel(id, f)
		}
		if r := h.await(ch); r.Status != slot.NotFound {
			t.Fatalf("lookup %d = %v, want not found", i, r.Status)
		}
	}
	h.waitActive(0)
}

// TestLookupSlotsBounded: gets for messages in many slots beyond the
// horizon load at most MaxLookupSlots of them at once; the next ones wait
// for room, lookupQueuePerSlot per slot of the bound, and the rest are
// answered Busy. Once the loads finish, every waiting get is answered.
func TestLookupSlotsBounded(t *testing.T) {
	cfg := defaultConfig()
	cfg.MaxLookupSlots = 2
	h := newHarness(t, cfg)
	h.start()
	const slots = 2 + 2*lookupQueuePerSlot + 5 // 5 beyond the queue
	var recs []slot.Record
	for i := range slots {
		recs = append(recs, h.mustSchedule("far", ms(time.Hour+time.Duration(i)*cfg.SlotWidth)))
	}
	for _, r := range recs {
		h.j.blockLoads(slotOfTime(time.UnixMilli(r.DeliverAt), cfg.SlotWidth))
	}
	var chans []<-chan slot.Result
	for _, r := range recs {
		f, ch := h.replyFunc()
		h.s.Get(r.ID, f)
		chans = append(chans, ch)
	}
	busy := 0
	for _, ch := range chans[2+2*lookupQueuePerSlot:] {
		if res := h.await(ch); res.Status == slot.Busy {
			busy++
		}
	}
	if busy != 5 {
		t.Errorf("%d gets answered busy, want the 5 beyond the queue", busy)
	}
	loading := func() int {
		n := 0
		for _, r := range recs {
			n += h.j.blockedLoads(slotOfTime(time.UnixMilli(r.DeliverAt), cfg.SlotWidth))
		}
		return n
	}
	eventually(t, "two loads", func() bool { return loading() == 2 })
	time.Sleep(20 * time.Millisecond) // a third would show now
	st := h.stats()
	if loading := loading(); loading != 2 || st.LookupSlots != 2 || st.LookupsWaiting != 2*lookupQueuePerSlot || st.LookupsRefused != 5 {
		t.Errorf("%d loads at once, stats %+v: want 2 loading, %d waiting, 5 refused", loading, st, 2*lookupQueuePerSlot)
	}
	h.j.releaseAllLoads()
	for i, ch := range chans[:2+2*lookupQueuePerSlot] {
		if res := h.await(ch); res.Status != slot.OK || res.Record.ID != recs[i].ID {
			t.Errorf("get %d = %+v, want ok", i, res)
		}
	}
	eventually(t, "every lookup slot gone", func() bool { st := h.stats(); return st.LookupSlots == 0 && st.ActiveSlots <= 3 })
}

// TestLookupSlotFiresWithItsBodies: a slot loaded for a get keeps no
// bodies; when the horizon reaches it while it is loaded, its messages
// fire with their own bodies, read back from the journal.
func TestLookupSlotFiresWithItsBodies(t *testing.T) {
	cfg := defaultConfig()
	h := newHarness(t, cfg)
	h.start()
	at := ms(time.Hour)
	var want []string
	var first slot.Record
	for i := range 5 {
		name := fmt.Sprintf("m%d", i)
		r := h.mustSchedule(name, at.Add(time.Duration(i)*time.Millisecond))
		if i == 0 {
			first = r
		}
		want = append(want, "body of "+name)
	}
	idx := slotOfTime(at, cfg.SlotWidth)
	release := h.j.blockLoads(idx)
	f, ch := h.replyFunc()
	h.s.Get(first.ID, f)
	eventually(t, "the lookup's load", func() bool { return h.j.blockedLoads(idx) == 1 })
	// The horizon reaches the slot while it loads for the get.
	h.man.Set(at.Add(-cfg.Horizon))
	release()
	if res := h.await(ch); res.Status != slot.OK {
		t.Fatalf("get = %+v", res)
	}
	h.advanceTo(at.Add(time.Second))
	h.quiet()
	if diff := cmp.Diff(want, h.pub.bodies()); diff != "" {
		t.Errorf("bodies delivered (-want +got):\n%s", diff)
	}
	if ok, _ := h.j.loadCounts(idx); ok != 1 {
		t.Errorf("the slot loaded %d times, want once: for the get, then kept", ok)
	}
	// One refill brings all five back: pinned, the slot has its full
	// budget (none here), not the lookup's.
	if n := h.stats().Refills; n != 1 {
		t.Errorf("%d refills, want 1: none means the lookup's load kept bodies, more that pinning kept its budget", n)
	}
}
