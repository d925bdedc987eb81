package slot

import (
	"slices"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// A slot bigger than its body budget (Config.MaxBodyBytes) loads every
// message's entry but only the bodies that fit; the rest stay "cold", in
// the journal. When firing reaches a cold message, Ready.Refill asks the
// caller for the slot's stored events again, and the slot keeps the bodies
// of the earliest-due cold messages that fit the budget once the chunks
// hold only live bodies (at least one, so firing always moves on). A slot
// of S body bytes with budget B so costs about S/B reads of its records,
// and never holds much more than B of bodies.

// BeginRefill chooses the cold messages whose bodies the refill brings
// back: the earliest due first, as many as fit the budget after the
// chunks are rewritten without dead bodies.
func (s *Slot) BeginRefill() {
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
	room := s.cfg.MaxBodyBytes - s.st.live
	for _, i := range cold {
		n := int(s.st.entries[i].n)
		if len(s.wanted) > 0 && n > room {
			break
		}
		s.wanted[s.st.entries[i].id] = i
		room -= n
	}
}

// RefillEvents takes stored events of the slot (a Journal.Scan's worth,
// in any number of calls) and keeps the wanted bodies among them.
func (s *Slot) RefillEvents(events []journal.Event) {
	for i := range events {
		ev := &events[i]
		if ev.Kind != journal.Scheduled {
			continue
		}
		pos, ok := s.wanted[ev.ID]
		if !ok {
			continue
		}
		// A body of another size is not this message's: it stays wanted,
		// and counts as missing.
		if e := &s.st.entries[pos]; e.cold && int(e.n) == len(ev.Body) {
			s.st.warm(e, ev.Body)
			delete(s.wanted, ev.ID)
		}
	}
}

// EndRefill ends a refill and returns how many wanted bodies the events
// did not hold (only a journal that lost records gives a number above 0:
// the caller must reload the slot, or firing would ask again forever).
func (s *Slot) EndRefill() int {
	missing := len(s.wanted)
	s.wanted = nil
	s.refill = false
	return missing
}

// BodyBytes reports the body bytes in memory (live and dead) and those of
// cold messages, left in the journal.
func (s *Slot) BodyBytes() (inMemory, cold int) {
	return s.st.live + s.st.dead, s.st.cold
}
