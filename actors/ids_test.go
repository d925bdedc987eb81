package actors

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tockd/tock/msgid"
)

// The router mints every id with a random part from Deps.Random, in the
// order it accepts schedules, whether the slot is in memory or not; by
// default from crypto/rand.
func TestIDsHaveRandomParts(t *testing.T) {
	at := []time.Time{ms(500 * time.Millisecond), ms(500 * time.Millisecond), ms(time.Hour)} // the last one cold
	t.Run("injected", func(t *testing.T) {
		h := newHarness(t, defaultConfig())
		h.random = rand.New(rand.NewPCG(7, 7))
		h.start()
		want := rand.New(rand.NewPCG(7, 7))
		for i, when := range at {
			id := h.mustSchedule("a", when).ID
			if r := want.Uint64(); id.Random() != r {
				t.Errorf("id %d: random part %x, want the source's draw %x", i, id.Random(), r)
			}
			if id.DeliverAt() != when.UnixMilli() {
				t.Errorf("id %d: deliver time %d, want %d", i, id.DeliverAt(), when.UnixMilli())
			}
		}
	})
	t.Run("default", func(t *testing.T) {
		h := newHarness(t, defaultConfig())
		h.start()
		seen := map[uint64]bool{}
		for i, when := range at {
			id := h.mustSchedule("a", when).ID
			if id.Legacy() || seen[id.Random()] {
				t.Errorf("id %d (%s): random part %x, seen before: %v", i, id, id.Random(), seen[id.Random()])
			}
			seen[id.Random()] = true
			if s := id.String(); len(s) != msgid.Len {
				t.Errorf("id %d prints as %q, %d characters", i, s, len(s))
			}
		}
	})
}
