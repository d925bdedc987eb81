package sim

import (
	"time"

	"github.com/tockd/tock/actors/slot"
)

// publisher is the in-memory target: every publish attempt that reaches the
// target is recorded (with virtual time) and checked; confirmations come
// back as tasks of the publishing incarnation, so a crash loses them. It
// retries failed attempts like delivery.Publisher: 10 ms doubling to 5 s.
type publisher struct {
	s *simulator
}

func (p *publisher) Publish(d slot.Delivery, done func()) {
	p.s.guard(func() {
		p.s.handedOut(d)
		p.attempt(p.s.cur, d, done, 10*time.Millisecond)
	})
}

func (p *publisher) attempt(inc *incarnation, d slot.Delivery, done func(), backoff time.Duration) {
	s := p.s
	switch s.faults.draw(faultPublishFail, faultPublishAckLost, faultPublishSlow) {
	case faultPublishFail:
		p.retryLater(inc, d, done, backoff)
	case faultPublishAckLost:
		s.delivered(inc, d, true)
		p.retryLater(inc, d, done, backoff)
	case faultPublishSlow:
		s.delivered(inc, d, false)
		delay := time.Duration(1+s.frng.IntN(2000)) * time.Millisecond
		s.at(inc, delay, done)
	default:
		s.delivered(inc, d, false)
		s.queue.push(task{inc: inc, fn: done})
	}
}

func (p *publisher) retryLater(inc *incarnation, d slot.Delivery, done func(), backoff time.Duration) {
	next := min(2*backoff, 5*time.Second)
	p.s.at(inc, backoff, func() { p.attempt(inc, d, done, next) })
}
