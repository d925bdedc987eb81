// Package slot is the pure state machine of one time slot: every message
// due within [Index*Width, (Index+1)*Width) milliseconds.
//
// It follows etcd-io/raft's shape. Recover replays stored events; Step
// applies one input at a given time and queues what must happen; Ready
// hands those effects out, and Persisted (raft's Advance) tells the slot
// its events are durable. The package has no goroutines, clock or I/O:
// time is an argument, and faults arrive as inputs.
//
// The slot itself holds back what must wait for the journal
// (durability.go): a Ready's Replies and Deliveries may be sent and handed
// to the publisher at once. The caller must:
//  1. persist Ready.Events, if any, as one journal append, and Step
//     Persisted once the journal acknowledged it (a Ready carries new
//     Events only after the previous ones were Persisted);
//  2. send Ready.Replies and hand Ready.Deliveries to the publisher;
//  3. arm a timer for Ready.WakeAt and Step(Tick) when it fires.
//
// If an append fails, the state machine is ahead of the journal: the caller
// answers Abandon's replies (all unavailable), drops the slot and Recovers
// a new one from the journal.
package slot

import (
	"slices"
	"unicode/utf8"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// Config fixes a slot's identity and flow limits.
type Config struct {
	Index int64 // slot number: deliver times in [Index*Width, (Index+1)*Width)
	Width int64 // milliseconds
	// MaxInFlight bounds deliveries handed out and not yet confirmed; more
	// due messages wait (a backlog), so a slow target cannot exhaust memory.
	MaxInFlight int
	// MaxInFlightPerTarget bounds one target's deliveries handed out and
	// not yet confirmed (0: MaxInFlight/4). A target at its bound stops
	// counting against MaxInFlight: a target that rejects, stalls or
	// acks slowly holds at most this many, and the slot's other targets
	// fire on as if it were not there.
	MaxInFlightPerTarget int
	// MaxPerStep bounds deliveries handed out by one Step, so a burst does
	// not starve cancels and gets queued behind it.
	MaxPerStep int
	// MaxBodyBytes bounds the body bytes a load keeps in memory (0: no
	// bound). Messages recovered beyond it keep only their entry; their
	// bodies are brought back from the journal before they fire, the
	// earliest first (refill.go). Messages scheduled while the slot is in
	// memory always keep theirs: their Scheduled event may not be durable
	// yet, so the journal could not give the body back.
	MaxBodyBytes int
}

// Default flow limits.
const (
	DefaultMaxInFlight = 8192
	DefaultMaxPerStep  = 1024
)

// Input is something that happens to a slot.
type Input interface{ isInput() }

// Schedule accepts a new message. Event is the complete Scheduled event;
// To is handed back in the Reply.
type Schedule struct {
	Event journal.Event
	To    any
}

// Adopt adds a Scheduled event that is already durable (written while the
// slot was not in memory). Idempotent; no reply.
type Adopt struct{ Event journal.Event }

// Cancel cancels a pending message.
type Cancel struct {
	ID msgid.ID
	To any
}

// Get asks for a message's record.
type Get struct {
	ID msgid.ID
	To any
}

// Tick only advances time: due messages fire and a finished slot closes.
type Tick struct{}

// Published confirms that a delivery was settled: published (PubAck'd for
// stream targets), or, with Dead set, stored in the dead-letter stream
// instead because its target refused it for good or its retry policy ran
// out; Reason says why (at most journal.MaxDeadReason bytes are kept).
type Published struct {
	ID     msgid.ID
	Dead   bool
	Reason string
}

// Resettle gives a slot recovered after a failed append the outcomes the
// slot before it learned and could not store (Outcomes of the failed
// batch and of Unrecorded): each is recorded as if its confirmation came
// now, rather than fired again. Outcomes for messages already settled are
// ignored.
type Resettle struct{ Outcomes []Published }

// Outcomes returns the settlements that events record: a Published for
// every Fired event, with Dead and the reason for every Dead one.
func Outcomes(events []journal.Event) []Published {
	var out []Published
	for _, ev := range events {
		switch ev.Kind {
		case journal.Fired:
			out = append(out, Published{ID: ev.ID})
		case journal.Dead:
			out = append(out, Published{ID: ev.ID, Dead: true, Reason: string(ev.Body)})
		}
	}
	return out
}

func (Resettle) isInput()  {}
func (Schedule) isInput()  {}
func (Adopt) isInput()     {}
func (Cancel) isInput()    {}
func (Get) isInput()       {}
func (Tick) isInput()      {}
func (Published) isInput() {}

// Reply answers the input that carried To.
type Reply struct {
	To     any
	Result Result
}

// Delivery is a message to publish now.
type Delivery struct {
	ID        msgid.ID
	Target    string
	DeliverAt int64
	Header    journal.Header
	Body      []byte
}

// Ready is what the caller must do after a Step, in the order of the
// package comment.
type Ready struct {
	Events     []journal.Event
	Replies    []Reply
	Deliveries []Delivery
	// WakeAt is when the slot next needs a Tick (Unix ms; ≤ now means at
	// once); 0 means no timer: it waits for inputs only.
	WakeAt int64
	// Refill asks for a refill: the next due message's body is not in
	// memory, or soon will not be (refill.go). The caller runs one
	// (BeginRefill; the records it names, or else all of the slot's, to
	// RefillEvents; EndRefill; then Step(Tick)), and may step the slot
	// meanwhile: no second refill is asked for before EndRefill.
	Refill bool
	// Limited names the flow limit that stopped the last step's firing
	// while messages were still due: a backlog. Informational (counted in
	// the scheduler's stats); the caller need do nothing about it, since
	// WakeAt or a confirmation brings the next step.
	Limited Limit
}

// Limit is a flow limit of Config.
type Limit uint8

// The flow limits.
const (
	NoLimit       Limit = iota
	LimitPerStep        // MaxPerStep deliveries handed out by the step
	LimitInFlight       // MaxInFlight deliveries unconfirmed, or a target's MaxInFlightPerTarget
)

func (l Limit) String() string {
	switch l {
	case LimitPerStep:
		return "per-step"
	case LimitInFlight:
		return "in-flight"
	}
	return "none"
}

// IsEmpty reports whether the Ready asks for nothing but a timer.
func (r Ready) IsEmpty() bool {
	return len(r.Events) == 0 && len(r.Replies) == 0 && len(r.Deliveries) == 0
}

// Slot is one time slot's state. Not safe for concurrent use.
type Slot struct {
	cfg      Config
	st       store // the messages; st.due holds pending ones, cancelled ones are skipped when popped
	pending  int   // entries in state Pending
	inFlight int   // entries in state Delivering
	// busy counts each target's entries in state Delivering (by target
	// number); stuck is the sum over targets at MaxInFlightPerTarget, which
	// MaxInFlight does not count.
	busy  []int32
	stuck int
	// parked holds, per target, due entries popped while the target was
	// at its bound, in due order; confirmations to it put them back.
	parked   [][]int32
	closed   bool  // a Closed event ends the log and nothing happened since
	closedAt int64 // At of that Closed event
	ready    Ready // the current step's effects, before gating
	dur      durability
	// persisted: the current step was a Persisted input.
	persisted bool
	// refill: a refill was asked for (Ready.Refill) and has not ended;
	// blocked: firing waits for it, a cold body being next; wanted holds
	// the entries the refill in progress brings back.
	refill  bool
	blocked bool
	wanted  map[msgid.ID]int32
	// wantBytes: body bytes of the wanted entries not warmed yet.
	wantBytes int
	// reasons: why each dead-lettered message was (its records say it).
	reasons map[msgid.ID]string
}

// New returns an empty slot.
func New(cfg Config) *Slot {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxPerStep <= 0 {
		cfg.MaxPerStep = DefaultMaxPerStep
	}
	if cfg.MaxInFlightPerTarget <= 0 {
		cfg.MaxInFlightPerTarget = max(1, cfg.MaxInFlight/4)
	}
	s := &Slot{cfg: cfg}
	s.st.init()
	s.st.budget = max(cfg.MaxBodyBytes, 0)
	return s
}

// Start and End bound the slot's deliver times, Unix ms: [Start, End).
func (s *Slot) Start() int64 { return s.cfg.Index * s.cfg.Width }
func (s *Slot) End() int64   { return (s.cfg.Index + 1) * s.cfg.Width }

// Len is the number of messages held, including delivered and cancelled
// ones kept for queries.
func (s *Slot) Len() int { return len(s.st.entries) }

// Pending is the number of messages not yet delivered or cancelled.
func (s *Slot) Pending() int { return s.pending + s.inFlight }

// InFlight is the number of deliveries handed out and not yet confirmed.
func (s *Slot) InFlight() int { return s.inFlight }

// Done reports whether the slot is finished: its Closed event is the last
// thing that happened, so nothing remains to deliver and it may leave memory.
func (s *Slot) Done() bool { return s.closed || (len(s.st.entries) == 0 && s.Pending() == 0) }

// ClosedAt is when the slot closed (Unix ms), if Done after a Closed event.
func (s *Slot) ClosedAt() int64 { return s.closedAt }

// Reserve prepares for the recovery of events, so a large slot loads
// without growing its tables step by step. Optional.
func (s *Slot) Reserve(events []journal.Event) {
	n, bodies := 0, 0
	for i := range events {
		if events[i].Kind == journal.Scheduled {
			n++
			bodies += len(events[i].Body)
		}
	}
	s.st.reserve(n, bodies)
}

// Recover applies a stored event, from the journal record seq, during
// replay. It queues no effects; messages that were being delivered when
// the log ends are pending again and fire once more (at least once, with
// the same id).
func (s *Slot) Recover(seq uint64, ev journal.Event) {
	switch ev.Kind {
	case journal.Scheduled:
		if _, ok := s.st.lookup(ev.ID); !ok {
			resident := s.cfg.MaxBodyBytes <= 0 || s.st.live+len(ev.Body) <= s.cfg.MaxBodyBytes
			s.st.due.append(s.st.add(ev, resident, seq))
			s.pending++
		}
	case journal.Cancelled:
		if e := s.entry(ev.ID); e != nil && e.state == Pending {
			s.finish(e, Cancelled, ev.At)
			s.st.compact() // a reload of a finished slot keeps no bodies
		}
	case journal.Fired:
		if e := s.entry(ev.ID); e != nil && e.state == Pending {
			s.finish(e, Delivered, ev.At)
			s.st.compact()
		}
	case journal.Dead:
		if e := s.entry(ev.ID); e != nil && e.state == Pending {
			s.finish(e, Dead, ev.At)
			s.setReason(e.id, string(ev.Body))
			s.st.compact()
		}
	case journal.Closed:
		// A Closed is written only once nothing is pending, so one that
		// finds messages pending is not the slot's own (forged, or it
		// raced a cold schedule stored after the load it closed): trusting
		// it would let the slot leave memory, and be purged, with them.
		if s.Pending() == 0 {
			s.closed, s.closedAt = true, ev.At
		}
		return
	}
	s.closed = false
}

// Step applies in at time now (Unix ms), then fires what is due and closes
// the slot if it is finished.
func (s *Slot) Step(now int64, in Input) {
	switch in := in.(type) {
	case Schedule:
		s.schedule(in)
	case Adopt:
		if s.entry(in.Event.ID) == nil {
			s.add(in.Event)
			s.closed = false
		}
	case Cancel:
		s.cancel(now, in)
	case Get:
		s.get(in)
	case Published:
		s.delivered(now, in)
	case Resettle:
		for _, p := range in.Outcomes {
			s.delivered(now, p)
		}
	case Persisted:
		s.persisted = true
	case Tick:
	}
	s.fire(now)
	s.maybeClose(now)
	s.ready.WakeAt = s.wakeAt(now)
}

// Ready returns the effects queued since the last call and clears them.
func (s *Slot) Ready() Ready {
	step := s.ready
	s.ready = Ready{WakeAt: step.WakeAt}
	rd := s.dur.gate(step, s.persisted)
	s.persisted = false
	return rd
}

// entry returns the message with id, or nil. The pointer is valid until
// the next add.
func (s *Slot) entry(id msgid.ID) *entry {
	i, ok := s.st.lookup(id)
	if !ok {
		return nil
	}
	return &s.st.entries[i]
}

func (s *Slot) schedule(in Schedule) {
	if e := s.entry(in.Event.ID); e != nil {
		s.reply(in.To, OK, e)
		return
	}
	e := s.add(in.Event)
	s.closed = false
	s.ready.Events = append(s.ready.Events, in.Event)
	s.reply(in.To, OK, e)
}

func (s *Slot) cancel(now int64, in Cancel) {
	e := s.entry(in.ID)
	switch {
	case e == nil:
		s.ready.Replies = append(s.ready.Replies, Reply{To: in.To, Result: Result{Status: NotFound, Record: Record{ID: in.ID}}})
	case e.state != Pending:
		s.reply(in.To, Conflict, e)
	default:
		s.finish(e, Cancelled, now)
		s.closed = false
		s.ready.Events = append(s.ready.Events, journal.Event{Kind: journal.Cancelled, ID: e.id, At: now})
		s.reply(in.To, OK, e)
	}
}

func (s *Slot) get(in Get) {
	if e := s.entry(in.ID); e != nil {
		s.reply(in.To, OK, e)
		return
	}
	s.ready.Replies = append(s.ready.Replies, Reply{To: in.To, Result: Result{Status: NotFound, Record: Record{ID: in.ID}}})
}

func (s *Slot) delivered(now int64, in Published) {
	e := s.entry(in.ID)
	if e == nil || (e.state != Delivering && e.state != Pending) {
		return // a confirmation for a message already settled: nothing to record
	}
	// Pending happens after a reset: the delivery handed out by the old
	// incarnation was confirmed; record it rather than fire again.
	s.closed = false
	if in.Dead {
		reason := truncateReason(in.Reason)
		s.finish(e, Dead, now)
		s.setReason(in.ID, reason)
		s.ready.Events = append(s.ready.Events, journal.Event{Kind: journal.Dead, ID: in.ID, At: now, Body: []byte(reason)})
		return
	}
	s.finish(e, Delivered, now)
	s.ready.Events = append(s.ready.Events, journal.Event{Kind: journal.Fired, ID: in.ID, At: now})
}

// setReason keeps why id was dead-lettered, for its record. Dead letters
// are rare, so a map beside the compact entries costs nothing otherwise.
func (s *Slot) setReason(id msgid.ID, reason string) {
	if s.reasons == nil {
		s.reasons = make(map[msgid.ID]string)
	}
	s.reasons[id] = reason
}

// truncateReason cuts a reason to journal.MaxDeadReason bytes, on a rune
// boundary.
func truncateReason(r string) string {
	if len(r) <= journal.MaxDeadReason {
		return r
	}
	cut := journal.MaxDeadReason
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut]
}

// fire hands out due messages in (deliver time, acceptance) order, up to
// the flow limits.
func (s *Slot) fire(now int64) {
	n := 0
	defer func() {
		if n > 0 {
			s.prefetch()
		}
	}()
	for {
		if s.inFlight-s.stuck >= s.cfg.MaxInFlight || n >= s.cfg.MaxPerStep {
			if s.due(now) {
				s.ready.Limited = LimitPerStep
				if s.inFlight-s.stuck >= s.cfg.MaxInFlight {
					s.ready.Limited = LimitInFlight
				}
			}
			return
		}
		i := s.st.due.peek()
		if i < 0 || s.st.entries[i].deliverAt > now {
			return
		}
		if e := &s.st.entries[i]; e.state == Pending && s.targetFull(e.target) {
			s.ready.Limited = LimitInFlight
			if len(s.st.targets) == 1 {
				return // no other target to let past: wait, as at MaxInFlight
			}
			s.st.due.pop()
			s.park(e.target, i)
			continue
		}
		if e := &s.st.entries[i]; e.state == Pending && e.cold {
			s.blocked = true
			s.askRefill()
			return
		}
		s.st.due.pop()
		e := &s.st.entries[i]
		if e.state != Pending {
			continue // cancelled while queued
		}
		e.state = Delivering
		s.pending--
		s.inFlight++
		s.busyInc(e.target)
		s.ready.Deliveries = append(s.ready.Deliveries, Delivery{
			ID: e.id, Target: s.st.targets[e.target], DeliverAt: e.deliverAt, Header: s.st.header(e), Body: s.st.body(e),
		})
		n++
	}
}

// due reports whether a pending message is due at now. It drops the
// cancelled entries at the top of the heap, as fire and wakeAt do.
func (s *Slot) due(now int64) bool {
	for {
		i := s.st.due.peek()
		if i < 0 {
			return false
		}
		if e := &s.st.entries[i]; e.state == Pending {
			return e.deliverAt <= now
		}
		s.st.due.pop()
	}
}

func (s *Slot) maybeClose(now int64) {
	if s.closed || now < s.End() || s.Pending() > 0 || len(s.st.entries) == 0 {
		return
	}
	s.closed, s.closedAt = true, now
	s.ready.Events = append(s.ready.Events, journal.Event{Kind: journal.Closed, At: now})
}

func (s *Slot) wakeAt(now int64) int64 {
	if s.inFlight-s.stuck >= s.cfg.MaxInFlight || s.blocked {
		return 0 // confirmations, or the refill's Tick, wake it
	}
	for {
		i := s.st.due.peek()
		if i < 0 {
			break
		}
		if e := &s.st.entries[i]; e.state != Pending {
			s.st.due.pop() // drop cancelled entries so the timer is not armed for them
			continue
		} else if e.deliverAt <= now && len(s.st.targets) == 1 && s.targetFull(e.target) {
			// Due, and fire waits for the slot's one target (with more,
			// fire parks it and goes on): a confirmation wakes it.
			return 0
		} else {
			return max(e.deliverAt, now)
		}
	}
	if s.closed || len(s.st.entries) == 0 || s.inFlight > 0 {
		return 0
	}
	return max(s.End(), now) // close the slot when its time is over
}

func (s *Slot) add(ev journal.Event) *entry {
	if e := s.entry(ev.ID); e != nil {
		return e
	}
	i := s.st.add(ev, true, 0)
	s.st.due.push(i)
	s.pending++
	return &s.st.entries[i]
}

// finish settles e; body and headers are dropped, the record stays for queries.
func (s *Slot) finish(e *entry, st State, at int64) {
	switch e.state {
	case Pending:
		s.pending--
	case Delivering:
		s.inFlight--
		s.busyDec(e.target)
	}
	e.state, e.doneAt = st, at
	s.st.drop(e)
}

// targetFull reports whether target t has MaxInFlightPerTarget deliveries
// unconfirmed.
func (s *Slot) targetFull(t uint32) bool {
	return int(t) < len(s.busy) && int(s.busy[t]) >= s.cfg.MaxInFlightPerTarget
}

func (s *Slot) busyInc(t uint32) {
	for int(t) >= len(s.busy) {
		s.busy = append(s.busy, 0)
	}
	s.busy[t]++
	if int(s.busy[t]) == s.cfg.MaxInFlightPerTarget {
		s.stuck += s.cfg.MaxInFlightPerTarget
	}
}

// busyDec counts a confirmation to target t and gives its parked entries
// back to the due heap, as many pending ones as it now has room for.
func (s *Slot) busyDec(t uint32) {
	if int(s.busy[t]) == s.cfg.MaxInFlightPerTarget {
		s.stuck -= s.cfg.MaxInFlightPerTarget
	}
	s.busy[t]--
	if int(t) >= len(s.parked) {
		return
	}
	q := s.parked[t]
	room := s.cfg.MaxInFlightPerTarget - int(s.busy[t])
	for len(q) > 0 && room > 0 {
		i := q[0]
		q = q[1:]
		if s.st.entries[i].state == Pending { // cancelled ones just go
			s.st.due.push(i)
			room--
		}
	}
	if len(q) == 0 {
		q = nil // let a long queue's array go
	}
	s.parked[t] = q
}

// park keeps due entry i of target t aside until t has room. Entries come
// in due order from the heap, except one scheduled (earlier) while others
// were parked, so it goes in at its place.
func (s *Slot) park(t uint32, i int32) {
	for int(t) >= len(s.parked) {
		s.parked = append(s.parked, nil)
	}
	q := s.parked[t]
	j := len(q)
	for j > 0 && s.st.due.less(i, q[j-1]) {
		j--
	}
	s.parked[t] = slices.Insert(q, j, i)
}

func (s *Slot) reply(to any, st Status, e *entry) {
	r := s.st.record(e)
	if e.state == Dead {
		r.Reason = s.reasons[e.id]
	}
	s.ready.Replies = append(s.ready.Replies, Reply{To: to, Result: Result{Status: st, Record: r}})
}
