package slot

import (
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// Persisted tells the slot that the events of the last Ready that had any
// are durable: the journal acknowledged their append.
type Persisted struct{}

func (Persisted) isInput() {}

// durability is raft's Advance for a slot: it hands out one batch of
// events at a time and holds back every reply and delivery until what it
// rests on is durable.
//
//   - A reply rests on every event stepped up to and with it: a producer
//     hears "ok" only for state the journal holds, and an answer (a get, a
//     not-found) never overtakes a change stepped before it.
//   - A delivery rests only on its own message's Scheduled event. Any other
//     delivery goes out at once, not behind the Fired and Cancelled appends
//     in flight: at 10,000 fires/s, waiting for every earlier append made
//     each message inherit the journal's round trip and its hiccups.
//
// Batches are numbered from 1; a batch is handed out only when the one
// before it is durable, so at most one append per slot is in flight and
// everything stepped meanwhile rides in the next (group commit per slot).
type durability struct {
	unsent   []journal.Event // stepped, not handed out yet: batch sent+1
	sent     uint64          // batches handed out
	durable  uint64          // batches acknowledged: every one ≤ durable
	replies  []heldReply
	delivs   []heldDelivery
	unstored map[msgid.ID]uint64 // message → batch of its Scheduled event, while not durable
}

type heldReply struct {
	batch uint64
	r     Reply
}

type heldDelivery struct {
	batch uint64
	d     Delivery
}

// gate turns one step's effects into what may happen now; persisted says
// the step was a Persisted, whose releases come first.
func (d *durability) gate(step Ready, persisted bool) Ready {
	rd := Ready{WakeAt: step.WakeAt, Limited: step.Limited, Refill: step.Refill}
	if persisted {
		d.persisted(&rd)
	}
	if len(step.Events) > 0 {
		d.unsent = append(d.unsent, step.Events...)
		for i := range step.Events {
			if ev := &step.Events[i]; ev.Kind == journal.Scheduled {
				if d.unstored == nil {
					d.unstored = make(map[msgid.ID]uint64)
				}
				d.unstored[ev.ID] = d.sent + 1
			}
		}
	}
	restsOn := d.sent
	if len(d.unsent) > 0 {
		restsOn = d.sent + 1
	}
	for _, r := range step.Replies {
		if restsOn <= d.durable && len(d.replies) == 0 {
			rd.Replies = append(rd.Replies, r)
		} else {
			d.replies = append(d.replies, heldReply{batch: restsOn, r: r})
		}
	}
	for _, dl := range step.Deliveries {
		if b, ok := d.unstored[dl.ID]; ok && b > d.durable {
			d.delivs = append(d.delivs, heldDelivery{batch: b, d: dl})
		} else {
			rd.Deliveries = append(rd.Deliveries, dl)
		}
	}
	d.handOut(&rd)
	return rd
}

// handOut moves the unsent events into rd if no batch is in flight.
func (d *durability) handOut(rd *Ready) {
	if d.sent == d.durable && len(d.unsent) > 0 {
		rd.Events, d.unsent = d.unsent, nil
		d.sent++
	}
}

// persisted marks the batch in flight durable and releases into rd what
// rested on it; gate then hands out the next batch.
func (d *durability) persisted(rd *Ready) {
	if d.sent == d.durable {
		return // nothing in flight: a stray confirmation
	}
	d.durable = d.sent
	n := 0
	for _, h := range d.replies {
		if h.batch > d.durable {
			break // replies keep their order: a later one waits for an earlier one
		}
		rd.Replies = append(rd.Replies, h.r)
		n++
	}
	d.replies = d.replies[n:]
	kept := d.delivs[:0]
	for _, h := range d.delivs {
		if h.batch <= d.durable {
			rd.Deliveries = append(rd.Deliveries, h.d)
		} else {
			kept = append(kept, h)
		}
	}
	d.delivs = kept
	for id, b := range d.unstored {
		if b <= d.durable {
			delete(d.unstored, id)
		}
	}
}

// holding reports whether anything waits for the journal.
func (d *durability) holding() bool {
	return d.sent != d.durable || len(d.unsent) > 0 || len(d.replies) > 0 || len(d.delivs) > 0
}

// Unrecorded returns the outcomes (see Outcomes) of the events stepped
// and not yet handed out for appending: with those of a failed batch, what
// a Resettle after the reload must carry over.
func (s *Slot) Unrecorded() []Published {
	return append(Outcomes(s.dur.unsent), Outcomes(s.ready.Events)...)
}

// Abandon is for a failed append: the slot is ahead of the journal and
// must be dropped and recovered anew. It returns every reply still held,
// answered Unavailable (nothing they said is promised), and forgets the
// held deliveries, which the recovered slot fires again if they are
// stored.
func (s *Slot) Abandon() []Reply {
	held := s.dur.replies
	out := make([]Reply, 0, len(held)+len(s.ready.Replies))
	for _, h := range held {
		out = append(out, Reply{To: h.r.To, Result: Result{Status: Unavailable, Record: h.r.Result.Record}})
	}
	for _, r := range s.ready.Replies {
		out = append(out, Reply{To: r.To, Result: Result{Status: Unavailable, Record: r.Result.Record}})
	}
	s.dur = durability{}
	s.ready = Ready{}
	return out
}

// Holding reports whether events, replies or deliveries wait for the
// journal.
func (s *Slot) Holding() bool { return s.dur.holding() }
