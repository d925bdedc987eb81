package sim

import (
	"time"

	"github.com/tockd/tock/actors/slot"
)

// publisher is the in-memory target: every publish attempt that reaches the
// target is recorded (with virtual time) and checked; confirmations come
// back as tasks of the publishing incarnation, so a crash loses them. It
// retries failed attempts like delivery.Publisher: 10 ms doubling to
// maxBackoff.
type publisher struct {
	s *simulator
}

func (p *publisher) Publish(d slot.Delivery, done func(slot.Outcome)) {
	p.s.guard(func() {
		p.s.handedOut(d)
		h := handOut{inc: p.s.cur, d: d, done: done, at: p.s.trace.n}
		p.attempt(h, 10*time.Millisecond)
	})
}

// maxBackoff is the longest wait between two attempts of a delivery.
const maxBackoff = 5 * time.Second

// handOut is one Publish call and its retries: the same delivery, at least
// once. at is the trace position when it was handed out, so a check can
// tell a retry of an earlier hand-out from a new one.
type handOut struct {
	inc  *incarnation
	d    slot.Delivery
	done func(slot.Outcome)
	at   uint64
}

func (p *publisher) attempt(h handOut, backoff time.Duration) {
	s := p.s
	if now := s.nowMs(); now < s.downUntil[h.d.Target] {
		p.retryLater(h, backoff)
		return
	} else if s.faults.draw(faultTargetDown) == faultTargetDown {
		s.downUntil[h.d.Target] = now + 1 + s.frng.Int64N(30_000)
		s.hist(-1, "fault target-down: %s refuses every attempt until %s", h.d.Target, fmtMs(s.downUntil[h.d.Target]))
		p.retryLater(h, backoff)
		return
	}
	if s.rejects(h.d.ID) {
		// The target refuses it for good: the publisher stores a dead
		// letter (always, here) and reports the message dead.
		s.deadLettered(h)
		s.queue.push(task{inc: h.inc, fn: func() { h.done(slot.Outcome{Dead: true, Reason: "sim: the target refuses it"}) }})
		return
	}
	switch s.faults.draw(faultPublishFail, faultPublishAckLost, faultPublishSlow) {
	case faultPublishFail:
		p.retryLater(h, backoff)
	case faultPublishAckLost:
		s.delivered(h, true)
		p.retryLater(h, backoff)
	case faultPublishSlow:
		s.delivered(h, false)
		delay := time.Duration(1+s.frng.IntN(2000)) * time.Millisecond
		s.at(h.inc, delay, h.published)
	default:
		s.delivered(h, false)
		s.queue.push(task{inc: h.inc, fn: h.published})
	}
}

// published confirms h as published (the simulated target never
// dead-letters).
func (h handOut) published() { h.done(slot.Outcome{}) }

func (p *publisher) retryLater(h handOut, backoff time.Duration) {
	next := min(2*backoff, maxBackoff)
	p.s.at(h.inc, backoff, func() { p.attempt(h, next) })
}
