package sim

import (
	"context"
	"fmt"
	"strconv"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// handedOut is called for every delivery the scheduler hands to the
// publisher: firing began.
func (s *simulator) handedOut(d slot.Delivery) {
	// Checked first, whatever the body: a message no request asked for
	// reaching a target (a forged or corrupt record trusted by a replay)
	// is the harm the journal's checks exist to prevent.
	if why := s.foreign(d); why != "" {
		op := -1
		if n, ok := s.j.appended[d.ID]; ok {
			op = int(n)
		}
		s.fail("no-foreign-publish", op, "%s to %q handed to the publisher: %s", d.ID, d.Target, why)
		return
	}
	n := s.opOf(d.Body)
	if n < 0 {
		return // delivered reports it as an integrity failure
	}
	o := &s.ops[n]
	o.handedOut++
	s.hist(n, "handed out by incarnation %d (hand-out %d)", s.cur.n, o.handedOut)
	// A message is fired again within one incarnation only by a reload
	// after a failed append, which waits first: a journal that refuses
	// writes must not have the same message published as fast as appends
	// fail.
	now := s.nowMs()
	if o.handedOut > 1 && o.handedInc == s.cur.n && now-o.handedAt < actors.MinReloadWait.Milliseconds() {
		s.fail("no-refire-storm", n, "%s handed out again %d ms after the hand-out before, by the same incarnation (a reload waits at least %v)",
			d.ID, now-o.handedAt, actors.MinReloadWait)
		return
	}
	o.handedAt, o.handedInc = now, s.cur.n
	// A delivery rests on its Scheduled event alone; handing it out before
	// that event is stored could publish a message whose schedule is then
	// refused (the append fails and the producer hears 503).
	if s.j.scheduled[d.ID] == 0 {
		s.fail("durable-delivery", n, "%s handed to the publisher before its Scheduled event was stored", d.ID)
		return
	}
	// Once the journal acknowledged the Fired event, the delivery is
	// recorded for good: no crash or reload may fire the message again. Only
	// a message whose Fired event was never acknowledged may be handed out
	// again. (The publisher may still retry a hand-out made before the
	// acknowledgement, after a lost confirmation: that is the same delivery,
	// at least once, not a new one.)
	if s.j.firedAcked[d.ID] {
		s.fail("duplicate", n, "%s handed to the publisher again (by incarnation %d) after its Fired event was acknowledged", d.ID, s.cur.n)
		return
	}
	// With faults only at targets, a message whose own target was up from
	// shortly before its time on is handed out at its time: another
	// target's faults never delay it. ("Shortly before": a target's
	// deliveries in flight when it comes back are retried within
	// maxBackoff, and until then hold its share of the slot's in-flight
	// bound, which its own later messages wait for.)
	if s.targetFaultsOnly && s.ops[n].handedOut == 1 && s.ops[n].status == statusOK {
		if now := s.nowMs(); now != d.DeliverAt && s.downUntil[d.Target]+maxBackoff.Milliseconds() < d.DeliverAt {
			down := "never down"
			if u, ok := s.downUntil[d.Target]; ok {
				down = "last down until " + fmtMs(u)
			}
			s.fail("isolated", n, "%s to %s handed out %d ms late; its target was %s: other targets' faults held it up",
				d.ID, d.Target, now-d.DeliverAt, down)
		}
	}
}

// foreign says why d is not a delivery of a message the workload asked
// for, or "" if it is one: its id must be of a Scheduled event the actors
// appended for a request, and its target, headers and body those of that
// request (which sends no headers). A wrong deliver time is left to
// 2-never-early and integrity, which say more about it.
func (s *simulator) foreign(d slot.Delivery) string {
	n, ok := s.j.appended[d.ID]
	switch {
	case !ok:
		return "no Scheduled event with its id was ever appended by tock"
	case n < 0:
		return fmt.Sprintf("its Scheduled event carried body %q of no request", d.Body)
	}
	o := &s.ops[n]
	switch {
	case d.Target != kindTargets[o.kind]:
		return fmt.Sprintf("message %d was scheduled to %q", n, kindTargets[o.kind])
	case string(d.Body) != strconv.Itoa(int(n)):
		return fmt.Sprintf("body %q, message %d's is %q", d.Body, n, strconv.Itoa(int(n)))
	case len(d.Header) > 0:
		return fmt.Sprintf("headers %v, message %d was scheduled with none", d.Header, n)
	}
	return ""
}

// opOf is the request a message body names, or -1.
func (s *simulator) opOf(body []byte) int {
	n, err := strconv.Atoi(string(body))
	if err != nil || n < 0 || n >= len(s.ops) {
		return -1
	}
	return n
}

// delivered is called by the publisher for every attempt that reached the
// target; ackLost says its confirmation will be lost (a retry follows).
func (s *simulator) delivered(h handOut, ackLost bool) {
	inc, d := h.inc, h.d
	now := s.nowMs()
	s.rep.Deliveries++
	s.trace.event(evDelivery, now, d.ID, uint64(inc.n))
	n, err := strconv.Atoi(string(d.Body))
	if err != nil || n < 0 || n >= len(s.ops) {
		s.fail("integrity", -1, "delivery %s carries body %q of no request", d.ID, d.Body)
		return
	}
	o := &s.ops[n]
	// The id holds the accepted deliver time; the delivery's own field is
	// checked against it below. Early is by the scheduler's clock, which
	// after a clock-back is behind the true time (later is never early).
	if due, at := d.ID.DeliverAt(), now-inc.lag.Milliseconds(); at < due {
		s.fail("2-never-early", n, "%s delivered at %s by the clock of incarnation %d, %d ms before its time %s",
			d.ID, fmtMs(at), inc.n, due-at, fmtMs(due))
		return
	}
	s.hist(n, "delivered by incarnation %d, id %s, due %s (lateness %d ms)", inc.n, d.ID, fmtMs(d.DeliverAt), now-d.DeliverAt)
	if d.Target != kindTargets[o.kind] || (o.status != statusNone && d.ID != o.id) || d.DeliverAt != d.ID.DeliverAt() {
		s.fail("integrity", n, "delivery %s to %s (due %s) does not match the request (id %s, target %s)",
			d.ID, d.Target, fmtMs(d.DeliverAt), o.id, kindTargets[o.kind])
		return
	}
	// A hand-out after the cancel was acknowledged must never reach the
	// target. One from before (an attempt retried after a lost
	// confirmation) may, if a fault made the cancel succeed although
	// firing had begun; cancelReply counts that as cancel-ok-after-fire,
	// and without faults fails it.
	if o.cancel == uint8(slot.OK) && h.at >= o.cancelAck {
		s.fail("4-cancel-wins", n, "%s delivered after its cancel was acknowledged", d.ID)
		return
	}
	o.deliveries++
	if o.deliveries == 1 {
		o.firstAt = now
		if !s.cfg.Faults && o.status == statusOK && now != d.DeliverAt {
			s.fail("3-precise", n, "%s delivered %d ms late without faults", d.ID, now-d.DeliverAt)
			return
		}
	} else {
		cause := "reload" // the slot reloaded after a failed append and fired again
		switch {
		case o.lastAckLost:
			cause = "publish-ack-lost"
		case o.lastInc != inc.n:
			cause = "crash"
		}
		s.rep.Duplicates[cause]++
		if !s.cfg.Faults {
			s.fail("duplicate", n, "%s delivered %d times without faults", d.ID, o.deliveries)
			return
		}
		// A crash excuses a duplicate only if the delivery before it was
		// not yet recorded: an incarnation recovers from the journal, and
		// a message whose Fired event is durable is not pending there.
		if cause == "crash" && s.firedStored(d.ID) {
			s.fail("duplicate", n, "%s delivered again by incarnation %d (first by incarnation %d) although its Fired event is in the journal",
				d.ID, inc.n, o.lastInc)
			return
		}
	}
	o.lastInc, o.lastAckLost = inc.n, ackLost
}

// rejects reports whether the target refuses id for good: drawn once per
// message, at its first attempt, from the fault stream.
func (s *simulator) rejects(id msgid.ID) bool {
	r, ok := s.rejected[id]
	if !ok {
		r = s.faults.draw(faultPublishReject) == faultPublishReject
		s.rejected[id] = r
	}
	return r
}

// deadLettered is called when the publisher stores a dead letter of h:
// the target refused it for good, so it never reached the target.
func (s *simulator) deadLettered(h handOut) {
	d := h.d
	s.rep.DeadLetters++
	n := s.opOf(d.Body)
	if n < 0 {
		s.fail("integrity", -1, "dead letter %s carries body %q of no request", d.ID, d.Body)
		return
	}
	o := &s.ops[n]
	s.hist(n, "dead-lettered by incarnation %d, id %s", h.inc.n, d.ID)
	if o.deliveries > 0 {
		s.fail("delivered-or-dead", n, "%s dead-lettered, but it reached its target before", d.ID)
		return
	}
	o.dead++
}

// firedStored reports whether the journal holds a Fired event for id. It
// reads the store behind every wrapper and fault, and only on a duplicate,
// so it costs nothing on the common path.
func (s *simulator) firedStored(id msgid.ID) bool {
	evs, _, err := s.j.memLoad(context.Background(), id.DeliverAt()/s.cfg.SlotWidth.Milliseconds())
	if err != nil {
		return false
	}
	for _, ev := range evs {
		if ev.Kind == journal.Fired && ev.ID == id {
			return true
		}
	}
	return false
}

// finalChecks runs once time has passed every deliver time, the fault
// window and the retention period.
func (s *simulator) finalChecks() {
	for n := range s.ops {
		o := &s.ops[n]
		switch {
		case o.cancelQd:
			s.rep.Cancels[statusName(slot.Status(o.cancel))]++
		}
		if o.status == statusNone && o.sentInc == s.cur.n {
			s.fail("answered", n, "the schedule request of message %d was never answered, and no crash intervened", n)
			return
		}
		if o.status != statusOK || o.deliveries > 0 || o.dead > 0 {
			continue
		}
		if o.cancel == uint8(slot.OK) || (o.cancelQd && o.cancel != uint8(slot.Conflict)) {
			continue // cancelled, or a cancel of unknown outcome
		}
		s.fail("1-no-loss", n, "acknowledged %s (due %s) was never delivered nor dead-lettered", o.id, fmtMs(o.deliverAt))
		return
	}
	if s.j.nEvents != 0 || len(s.j.events) != 0 {
		slots := make([]int64, 0, len(s.j.events))
		for k := range s.j.events {
			slots = append(slots, k)
		}
		s.fail("6-retention", -1, "after every retention ran out the journal still holds %d events in %d slots (e.g. slot %d)",
			s.j.nEvents, len(slots), minOf(slots))
	}
}

func minOf(xs []int64) int64 {
	if len(xs) == 0 {
		return -1
	}
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}
