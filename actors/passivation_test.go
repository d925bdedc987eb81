package actors

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

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
