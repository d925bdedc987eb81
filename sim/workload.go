package sim

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/msgid"
)

type opKind uint8

const (
	kindUniform opKind = iota // deliver time uniform over the span
	kindBurst                 // many due at the same millisecond
	kindLong                  // delay close to the maximum
	kindPast                  // a deliver time in the past: at once
)

var kindTargets = []string{"t.uniform", "t.burst", "t.long", "t.past"}

const (
	statusNone        = 0
	statusOK          = uint8(slot.OK)
	statusUnavailable = uint8(slot.Unavailable)
)

// op is one schedule request and everything observed about it.
type op struct {
	kind      opKind
	status    uint8 // the schedule's answer; 0 none yet
	replies   uint8
	cancel    uint8 // the cancel's answer (slot.Status); 0 none
	cancelQd  bool  // a cancel was sent
	issueAt   int64
	reqAt     int64 // requested deliver time
	id        msgid.ID
	deliverAt int64  // the accepted deliver time (from the ack)
	cancelAck uint64 // trace position just after an OK cancel's answer
	// deliveries
	deliveries  int32 // attempts that reached the target
	dead        int32 // dead letters stored for it (its target refuses it)
	handedOut   int32 // Publish calls: firing began
	handedAt    int64 // the last Publish call's time, ms
	handedInc   int   // the last Publish call's incarnation
	firstAt     int64
	lastInc     int
	lastAckLost bool
	sentInc     int  // incarnation the schedule request went to
	afterBack   bool // issued right after a clock-back restart, not at issueAt
}

// plan draws the workload and, with faults, the fault moments, and arms
// their timers; it returns the latest deliver time.
func (s *simulator) plan(rng *rand.Rand) int64 {
	kinds := kindsOf(s.cfg.Workload)
	t0 := start.UnixMilli()
	span := s.cfg.Span.Milliseconds()
	bursts := make([]int64, s.cfg.Bursts)
	for i := range bursts {
		bursts[i] = t0 + rng.Int64N(span)
	}
	s.ops = make([]op, s.cfg.Messages)
	maxDeliver := t0 + span
	for i := range s.ops {
		o := &s.ops[i]
		if len(kinds) == 0 {
			o.kind = kindUniform
		} else {
			o.kind = kinds[rng.IntN(len(kinds))]
		}
		switch o.kind {
		case kindUniform:
			o.reqAt = t0 + rng.Int64N(span)
			o.issueAt = t0 + rng.Int64N(o.reqAt-t0+1)
		case kindBurst:
			o.reqAt = bursts[rng.IntN(len(bursts))]
			o.issueAt = t0 + rng.Int64N(o.reqAt-t0+1)
		case kindLong:
			o.issueAt = t0 + rng.Int64N(max(1, span/20))
			o.reqAt = o.issueAt + span - rng.Int64N(max(1, span/100)) // up to the maximum delay
		case kindPast:
			o.issueAt = t0 + rng.Int64N(span)
			o.reqAt = o.issueAt - rng.Int64N(int64(time.Hour/time.Millisecond))
		}
		maxDeliver = max(maxDeliver, o.reqAt)
	}
	if s.cfg.Faults {
		s.planFaults(rng)
	}
	// Armed after the faults, which take some requests over: without
	// faults in the same order as ever, so ties between them keep it.
	for i := range s.ops {
		if s.ops[i].afterBack {
			continue // issued after the restart, by clockBack
		}
		n := i
		s.clk.AfterFunc(time.Duration(s.ops[i].issueAt-t0)*time.Millisecond, func() {
			s.queue.push(task{fn: func() { s.issue(n) }})
		})
	}
	return maxDeliver
}

// planFaults draws the crash, clock-jump and clock-back moments and arms
// their timers.
func (s *simulator) planFaults(rng *rand.Rand) {
	t0 := start.UnixMilli()
	span := s.cfg.Span.Milliseconds()
	for range 2 + rng.IntN(5) {
		s.clk.AfterFunc(time.Duration(rng.Int64N(span))*time.Millisecond, func() {
			s.queue.push(task{fn: s.crash})
		})
	}
	for range 1 + rng.IntN(3) {
		jump := time.Second + time.Duration(rng.Int64N(int64(min(6*time.Hour, s.cfg.Span/4))))
		var pause func()
		pause = func() {
			if wait := s.backUntil - s.nowMs(); wait > 0 {
				// A pause would carry the clock past a clock-back's window
				// (below) before anything is stamped in it: later.
				s.at(nil, time.Duration(wait)*time.Millisecond, pause)
				return
			}
			if !s.faults.fire(faultClockJump) {
				return
			}
			s.faults.note(faultClockJump)
			s.hist(-1, "clock jumps %v", jump)
			s.clk.Set(s.clk.Now().Add(jump))
			s.extend(s.nowMs())
		}
		s.clk.AfterFunc(time.Duration(rng.Int64N(span))*time.Millisecond, func() {
			s.queue.push(task{fn: pause})
		})
	}
	for range 1 + rng.IntN(2) {
		at := time.Duration(rng.Int64N(span)) * time.Millisecond
		// How far the clock lands behind the newest stamp stored: minutes
		// to hours (at most a quarter of the span), log-uniform.
		behind := time.Duration(logUniform(rng, 1, max(1, int(min(6*time.Hour, s.cfg.Span/4)/time.Minute))))*time.Minute +
			time.Duration(rng.Int64N(60_000))*time.Millisecond
		again := time.Duration(1+rng.Int64N(behind.Milliseconds())) * time.Millisecond
		// Three requests come right after the restart, while the clock is
		// behind the stamps stored before: the ids a forgotten Newest would
		// repeat. A request moves only if its deliver time stays within the
		// maximum delay, and only once.
		var moved []int
		var delays []time.Duration
		for range 3 {
			if len(s.ops) == 0 {
				break
			}
			n, d := rng.IntN(len(s.ops)), time.Duration(1+rng.Int64N(1000))*time.Millisecond
			if o := &s.ops[n]; !o.afterBack && o.reqAt-(t0+at.Milliseconds()) <= span {
				o.afterBack = true
				moved, delays = append(moved, n), append(delays, d)
			}
		}
		s.clk.AfterFunc(at, func() {
			s.queue.push(task{fn: func() {
				s.clockBack(behind, again)
				for i, n := range moved {
					s.at(nil, delays[i], func() { s.issue(n) })
				}
			}})
		})
	}
}

func (s *simulator) issue(n int) {
	o := &s.ops[n]
	s.trace.event(evRequest, s.nowMs(), msgid.ID{}, uint64(n))
	s.hist(n, "schedule requested for %s (%s) by incarnation %d", fmtMs(o.reqAt), kindTargets[o.kind], s.cur.n)
	o.sentInc = s.cur.n
	s.sched.Schedule(actors.ScheduleRequest{
		Target: kindTargets[o.kind], DeliverAt: o.reqAt, Body: []byte(strconv.Itoa(n)),
	}, func(r slot.Result) { s.guard(func() { s.scheduleReply(n, r) }) })
}

func (s *simulator) scheduleReply(n int, r slot.Result) {
	o := &s.ops[n]
	now := s.nowMs()
	s.trace.event(evScheduleReply, now, r.Record.ID, uint64(r.Status)<<56|uint64(r.Record.DeliverAt))
	s.hist(n, "schedule answered %s, id %s, deliver at %s", statusName(r.Status), r.Record.ID, fmtMs(r.Record.DeliverAt))
	o.replies++
	if o.replies > 1 {
		s.fail("reply-once", n, "schedule of message %d answered %d times", n, o.replies)
		return
	}
	o.id = r.Record.ID
	if other, dup := s.ids[o.id]; dup && int(other) != n {
		s.fail("unique-ids", n, "message %d got id %s, already given to message %d", n, o.id, other)
		return
	}
	s.ids[o.id] = int32(n)
	s.extend(max(now, r.Record.DeliverAt))
	switch r.Status {
	case slot.OK:
		o.status = statusOK
		o.deliverAt = r.Record.DeliverAt
		if s.j.scheduled[o.id] == 0 {
			s.fail("5-no-false-acks", n, "schedule of %s acknowledged but its Scheduled event is not in the journal", o.id)
			return
		}
		if o.deliverAt < o.reqAt || o.deliverAt != o.id.DeliverAt() || o.deliverAt > max(o.reqAt, now) {
			s.fail("accepted-time", n, "requested %s, accepted %s (id says %s) at %s",
				fmtMs(o.reqAt), fmtMs(o.deliverAt), fmtMs(o.id.DeliverAt()), fmtMs(now))
			return
		}
		s.followUps(n)
	case slot.Unavailable:
		o.status = statusUnavailable
	default:
		s.fail("schedule-status", n, "schedule answered %s", statusName(r.Status))
	}
}

// followUps plans the cancel, get and retention requests of an acked message.
func (s *simulator) followUps(n int) {
	o := &s.ops[n]
	now := s.nowMs()
	rng := s.wrng
	if s.wl["cancel"] && rng.IntN(10) == 0 {
		var at int64
		if rng.IntN(2) == 0 {
			at = o.deliverAt + rng.Int64N(5) - 3 // racing the fire
		} else {
			at = now + rng.Int64N(max(o.deliverAt-now, 0)+1)
		}
		s.at(nil, time.Duration(max(at-now, 0))*time.Millisecond, func() { s.sendCancel(n) })
	}
	if s.wl["get"] && rng.IntN(10) == 0 {
		at := now + rng.Int64N(max(o.deliverAt-now, 0)+2*s.cfg.SlotWidth.Milliseconds()+1)
		s.at(nil, time.Duration(at-now)*time.Millisecond, func() { s.sendGet(n, false) })
	}
	if s.wl["retention"] && rng.IntN(20) == 0 {
		at := max(o.deliverAt, now) + (s.cfg.Retention + 2*s.cfg.SlotWidth + time.Minute).Milliseconds()
		s.at(nil, time.Duration(at-now)*time.Millisecond, func() { s.sendGet(n, true) })
	}
}

func (s *simulator) sendCancel(n int) {
	o := &s.ops[n]
	o.cancelQd = true
	s.trace.event(evCancelRequest, s.nowMs(), o.id, uint64(n))
	s.hist(n, "cancel requested by incarnation %d", s.cur.n)
	replied := false
	s.sched.Cancel(o.id, func(r slot.Result) { s.guard(func() { s.cancelReply(n, r, &replied) }) })
}

func (s *simulator) cancelReply(n int, r slot.Result, replied *bool) {
	o := &s.ops[n]
	{
		now := s.nowMs()
		s.trace.event(evCancelReply, now, o.id, uint64(r.Status)<<8|uint64(r.Record.State))
		s.hist(n, "cancel answered %s (state %s)", statusName(r.Status), r.Record.State)
		if *replied {
			s.fail("reply-once", n, "cancel of %s answered twice", o.id)
			return
		}
		*replied = true
		o.cancel = uint8(r.Status)
		switch r.Status {
		case slot.OK:
			o.cancelAck = s.trace.n
			if !s.j.cancelled[o.id] {
				s.fail("5-no-false-acks", n, "cancel of %s acknowledged but its Cancelled event is not in the journal", o.id)
				return
			}
			if o.handedOut > 0 {
				// Delivery began before the cancel was answered, yet it was
				// answered OK: only a fault (crash, or a reload after a
				// failed append, forgetting an unconfirmed delivery) can do it.
				s.rep.Cancels["cancel-ok-after-fire"]++
				if !s.cfg.Faults {
					s.fail("4-cancel-wins", n, "cancel of %s answered ok although its delivery began", o.id)
				}
			}
		case slot.Conflict:
			if o.handedOut == 0 {
				s.fail("4-cancel-wins", n, "cancel of %s answered conflict (state %s) but its delivery never began", o.id, r.Record.State)
			}
		case slot.NotFound:
			if now < o.deliverAt+s.cfg.Retention.Milliseconds() {
				s.fail("1-no-loss", n, "cancel of acknowledged %s found nothing before its retention ended", o.id)
			}
		}
	}
}

func (s *simulator) sendGet(n int, afterRetention bool) {
	o := &s.ops[n]
	s.trace.event(evGetRequest, s.nowMs(), o.id, uint64(n))
	s.hist(n, "get requested (after retention: %v)", afterRetention)
	replied := false
	s.sched.Get(o.id, func(r slot.Result) { s.guard(func() { s.getReply(n, r, &replied, afterRetention) }) })
}

func (s *simulator) getReply(n int, r slot.Result, replied *bool, afterRetention bool) {
	o := &s.ops[n]
	{
		now := s.nowMs()
		s.rep.Gets++
		s.trace.event(evGetReply, now, o.id, uint64(r.Status)<<8|uint64(r.Record.State))
		s.hist(n, "get answered %s (state %s)", statusName(r.Status), r.Record.State)
		if *replied {
			s.fail("reply-once", n, "get of %s answered twice", o.id)
			return
		}
		*replied = true
		switch r.Status {
		case slot.OK:
			switch {
			case r.Record.State == slot.Delivered && o.deliveries == 0:
				s.fail("get-consistency", n, "get of %s says delivered; it never was", o.id)
			case r.Record.State == slot.Dead && o.dead == 0:
				s.fail("get-consistency", n, "get of %s says dead; it was never dead-lettered", o.id)
			case r.Record.State == slot.Cancelled && !o.cancelQd:
				s.fail("get-consistency", n, "get of %s says cancelled; no cancel was sent", o.id)
			case afterRetention && !s.cfg.Faults:
				s.fail("6-retention", n, "get of %s after its retention still finds it (%s)", o.id, r.Record.State)
			}
		case slot.NotFound:
			if now < o.deliverAt+s.cfg.Retention.Milliseconds() {
				s.fail("1-no-loss", n, "get of acknowledged %s found nothing before its retention ended", o.id)
			}
		}
	}
}

func fmtMs(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000") }

func statusName(st slot.Status) string {
	switch st {
	case slot.OK:
		return "ok"
	case slot.NotFound:
		return "notfound"
	case slot.Conflict:
		return "conflict"
	case slot.Unavailable:
		return "unavailable"
	case slot.Busy:
		return "busy"
	}
	return "none"
}
