package slot

import (
	"math"
	"slices"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// A slot bigger than its body budget (Config.MaxBodyBytes) loads every
// message's entry but only the bodies that fit; the rest stay "cold", in
// the journal, each entry keeping the sequence of the record that holds
// its body. When firing reaches a cold message, Ready.Refill asks the
// caller for those records, and the slot keeps the bodies of the
// earliest-due cold messages that fit the budget once the chunks hold
// only live bodies (at least one, so firing always moves on). A slot of S
// body bytes with budget B so reads each of its records about once more
// than a load does, in S/B refills, and never holds much more than B of
// bodies. A record the journal no longer has there (its layout moved it)
// is found by a read of the whole slot, which also updates every cold
// entry's sequence.
//
// A slot that fires asks for its next refill before firing reaches a
// cold body, once the bodies in memory are down to half the budget: the
// caller reads while the warm half fires, and firing waits only if the
// journal reads slower than the slot fires.

// askRefill sets Ready.Refill unless a refill is under way.
func (s *Slot) askRefill() {
	if !s.refill {
		s.ready.Refill, s.refill = true, true
	}
}

// prefetch asks for a refill ahead of need (see above). Called after a
// step handed out deliveries: only a slot that fires reads ahead.
func (s *Slot) prefetch() {
	if s.st.cold > 0 && s.cfg.MaxBodyBytes > 0 && s.st.live <= s.cfg.MaxBodyBytes/2 {
		s.askRefill()
	}
}

// BeginRefill chooses the cold messages whose bodies the refill brings
// back: the earliest due first, as many as fit the budget after the
// chunks are rewritten without dead bodies. It returns the sequences of
// the records holding them, ascending.
func (s *Slot) BeginRefill() []uint64 {
	s.st.rewrite()
	var cold []int32
	for i := range s.st.entries {
		if e := &s.st.entries[i]; e.cold && e.state == Pending {
			cold = append(cold, int32(i))
		}
	}
	slices.SortFunc(cold, func(a, b int32) int {
		switch {
		case s.st.due.less(a, b):
			return -1
		case s.st.due.less(b, a):
			return 1
		}
		return 0
	})
	s.wanted = make(map[msgid.ID]int32)
	var seqs []uint64
	room := s.cfg.MaxBodyBytes - s.st.live
	if s.cfg.MaxBodyBytes <= 0 {
		room = math.MaxInt // no budget (any more): every cold body
	}
	for _, i := range cold {
		e := &s.st.entries[i]
		if len(s.wanted) > 0 && int(e.n) > room {
			break
		}
		s.wanted[e.id] = i
		seqs = append(seqs, e.record())
		room -= int(e.n)
		s.wantBytes += int(e.n)
	}
	slices.Sort(seqs)
	return slices.Compact(seqs)
}

// RefillEvents takes stored events of the slot, from the record seq (a
// Journal.Read or Scan's worth, in any number of calls), and keeps the
// wanted bodies among them, and others while room is left. Other cold
// messages it meets note seq as their record's.
func (s *Slot) RefillEvents(seq uint64, events []journal.Event) {
	for i := range events {
		ev := &events[i]
		if ev.Kind != journal.Scheduled {
			continue
		}
		pos, ok := s.st.lookup(ev.ID)
		if !ok {
			continue
		}
		// A body of another size is not this message's: it stays cold
		// (and, if wanted, counts as missing).
		e := &s.st.entries[pos]
		if !e.cold || int(e.n) != len(ev.Body) {
			continue
		}
		if _, want := s.wanted[ev.ID]; want {
			s.st.warm(e, ev.Body)
			delete(s.wanted, ev.ID)
			s.wantBytes -= int(e.n)
		} else if e.state == Pending && (s.cfg.MaxBodyBytes <= 0 || s.st.live+s.wantBytes+int(e.n) <= s.cfg.MaxBodyBytes) {
			// A neighbour in a record read anyway, with room beside the
			// wanted ones: keep it rather than read the record again.
			s.st.warm(e, ev.Body)
		} else {
			e.setRecord(seq)
		}
	}
}

// SetBodyBudget changes the body budget (Config.MaxBodyBytes): a slot
// loaded with a small one (to answer a lookup) gets the full one when it
// is going to fire. Bodies already cold come back by refills as they
// come due.
func (s *Slot) SetBodyBudget(n int) {
	s.cfg.MaxBodyBytes = n
	s.st.budget = max(n, 0)
}

// Missing counts the wanted bodies a refill has not found yet, of
// messages still pending (one cancelled meanwhile needs none).
func (s *Slot) Missing() int { return len(s.MissingIDs()) }

// MissingIDs returns the ids Missing counts.
func (s *Slot) MissingIDs() map[msgid.ID]bool {
	ids := make(map[msgid.ID]bool)
	for id, i := range s.wanted {
		if e := &s.st.entries[i]; e.cold && e.state == Pending {
			ids[id] = true
		}
	}
	return ids
}

// EndRefill ends a refill and returns how many wanted bodies the events
// did not hold (only a journal that lost records gives a number above 0:
// the caller must reload the slot, or firing would ask again forever).
func (s *Slot) EndRefill() int {
	missing := s.Missing()
	s.wanted, s.wantBytes = nil, 0
	s.refill, s.blocked = false, false
	return missing
}

// BodyBytes reports the body bytes in memory (live and dead) and those of
// cold messages, left in the journal.
func (s *Slot) BodyBytes() (inMemory, cold int) {
	return s.st.live + s.st.dead, s.st.cold
}
