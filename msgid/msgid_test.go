package msgid

import (
	"errors"
	"math/bits"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	token       = regexp.MustCompile(`^[0-9a-v]{39}$`)
	legacyToken = regexp.MustCompile(`^[0-9a-v]{26}$`)
)

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		at            int64
		stamp, random uint64
	}{
		{0, 0, 0}, {1, 1, 0}, {1763719200250, 1849563924709376, 0}, {1<<62 - 1, 1<<64 - 1, 0}, // legacy
		{0, 0, 1}, {1, 1, 1 << 63}, {1763719200250, 1849563924709376, 0x9e3779b97f4a7c15}, {-1, 1<<64 - 1, 1<<64 - 1},
	} {
		id := Compose(c.at, c.stamp, c.random)
		s := id.String()
		form := token
		if c.random == 0 {
			form = legacyToken
		}
		if !form.MatchString(s) {
			t.Errorf("%q is not a %s subject token", s, form)
		}
		if got := string(id.Append([]byte("x"))); got != "x"+s {
			t.Errorf("Append = %q, want %q", got, "x"+s)
		}
		got, err := Parse(s)
		if err != nil || got != id || got.DeliverAt() != c.at || got.Stamp() != c.stamp || got.Random() != c.random {
			t.Errorf("Parse(%q) = %v (%d, %d, %d), %v; want (%d, %d, %d)", s, got, got.DeliverAt(), got.Stamp(), got.Random(), err, c.at, c.stamp, c.random)
		}
		if got.Legacy() != (c.random == 0) {
			t.Errorf("%s: Legacy() = %v with random part %d", s, got.Legacy(), c.random)
		}
	}
}

// An id written before ids had a random part prints and parses exactly as
// it did then: these strings are what the 16-byte ids printed (the first
// is the README's example). The last is a new id, encoded independently.
func TestText(t *testing.T) {
	for s, want := range map[string]ID{
		"000038fud2dk46gvsq4je40000":              New(1795269630786, 1882476646272860160),
		"000038fud2dk46gvsq4je400000i6hb7h6lsrro": Compose(1795269630786, 1882476646272860160, 0x0123456789abcdef),
		"0000000000000000000000000g":              New(0, 4),
		"00000000000000000000000000":              {},
	} {
		if got := want.String(); got != s {
			t.Errorf("New(%d, %d).String() = %q, want %q", want.DeliverAt(), want.Stamp(), got, s)
		}
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %d/%d, %v; want %d/%d", s, got.DeliverAt(), got.Stamp(), err, want.DeliverAt(), want.Stamp())
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := Compose(1763719200250, 42, 0x0123456789abcdef).String()
	legacy := New(1763719200250, 42).String()
	for _, s := range []string{
		"", "short", good + "0", good[:38], good[:37], legacy + "0", legacy[:25], // length
		"W" + good[1:], "z" + good[1:], "." + good[1:], // outside the alphabet
		"W" + legacy[1:], "z" + legacy[1:],
		good[:38] + "1", good[:38] + "4", // spare bits set: not canonical
		legacy[:25] + "1",
		legacy + strings.Repeat("0", 13), // zero random part: only the short form is canonical
	} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// Text order equals byte order equals (deliver time, stamp, random) order:
// ids sort in firing order whichever form is compared, legacy or not.
func TestOrder(t *testing.T) {
	ids := []ID{
		New(5, 9), Compose(5, 9, 1), Compose(5, 9, 1<<63), New(5, 10), Compose(5, 10, 7), New(6, 0),
		Compose(6, 0, 1<<64-1), New(1<<40, 3), Compose(1<<40, 2, 1<<64-1), New(0, 1<<63), Compose(0, 1<<63-1, 1<<64-1),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		ids = append(ids, Compose(r.Int64N(4), uint64(r.IntN(4)), uint64(r.IntN(3))*r.Uint64()))
	}
	slices.SortFunc(ids, ID.Compare)
	for i := 1; i < len(ids); i++ {
		a, b := ids[i-1], ids[i]
		if a == b {
			continue
		}
		if a.String() >= b.String() {
			t.Errorf("text order differs: %s ≥ %s", a, b)
		}
		if a.DeliverAt() > b.DeliverAt() || a.DeliverAt() == b.DeliverAt() && (a.Stamp() > b.Stamp() || a.Stamp() == b.Stamp() && a.Random() >= b.Random()) {
			t.Errorf("byte order is not (deliver time, stamp, random) order: %d/%d/%d before %d/%d/%d",
				a.DeliverAt(), a.Stamp(), a.Random(), b.DeliverAt(), b.Stamp(), b.Random())
		}
	}
}

// zeroFirst returns 0 n times, then draws from its generator.
type zeroFirst struct {
	n int
	r *rand.Rand
}

func (z *zeroFirst) Uint64() uint64 {
	if z.n > 0 {
		z.n--
		return 0
	}
	return z.r.Uint64()
}

func TestMintNeverLegacy(t *testing.T) {
	src := &zeroFirst{n: 3, r: rand.New(rand.NewPCG(3, 4))}
	id := Mint(1000, 1<<20, src)
	if id.Legacy() || id.DeliverAt() != 1000 || id.Stamp() != 1<<20 {
		t.Fatalf("Mint = %d/%d/%d, want 1000/%d and a random part", id.DeliverAt(), id.Stamp(), id.Random(), 1<<20)
	}
	if len(id.String()) != Len {
		t.Errorf("%s: %d characters, want %d", id, len(id.String()), Len)
	}
}

// Ids minted from crypto/rand for the same deliver time in the same
// millisecond differ in their random part as unrelated 64-bit values do:
// knowing one id (and when the next was scheduled) does not give the
// next. 10,000 draws: all distinct, none a small step from the one before,
// no step repeated (a counter, even a scrambled one like x·k, repeats its
// step), and each of the 64 bits set in about half of them.
func TestMintUnpredictable(t *testing.T) {
	const n = 10_000
	var st Stamper
	seen := make(map[uint64]bool, n)
	steps := make(map[uint64]bool, n)
	var ones [64]int
	var prev ID
	for i := range n {
		id := Mint(1763719200250, st.Next(1763719200000), Crypto)
		r := id.Random()
		if seen[r] {
			t.Fatalf("id %d repeats random part %x", i, r)
		}
		seen[r] = true
		for b := range 64 {
			ones[b] += int(r >> b & 1)
		}
		if i > 0 {
			// The parts an attacker can predict differ by one stamp; the
			// random parts differ in about 32 bits, never in just a few.
			if id.Stamp() != prev.Stamp()+1 || id.DeliverAt() != prev.DeliverAt() {
				t.Fatalf("same millisecond: stamps %d then %d", prev.Stamp(), id.Stamp())
			}
			if d := bits.OnesCount64(r ^ prev.Random()); d < 8 {
				t.Fatalf("random parts %x and %x differ in %d bits", prev.Random(), r, d)
			}
			if diff := r - prev.Random(); diff < 1<<20 || -diff < 1<<20 {
				t.Fatalf("random parts %x and %x are %d apart: sequential", prev.Random(), r, int64(diff))
			}
			if steps[r-prev.Random()] {
				t.Fatalf("id %d: step %x from the previous random part seen before", i, r-prev.Random())
			}
			steps[r-prev.Random()] = true
		}
		prev = id
	}
	for b, c := range ones {
		// Binomial(10000, 0.5): sd 50; 400 away is 8 sd.
		if c < n/2-400 || c > n/2+400 {
			t.Errorf("bit %d set in %d of %d random parts", b, c, n)
		}
	}
}

func TestStamperGrows(t *testing.T) {
	var s Stamper
	var last uint64
	// Same millisecond, a clock stepping back, then forward again.
	for _, now := range []int64{1000, 1000, 1000, 999, 500, 1001, 1001, 2000} {
		v := s.Next(now)
		if v <= last {
			t.Fatalf("Next(%d) = %d after %d: not increasing", now, v, last)
		}
		last = v
	}
	if got, want := s.Next(5000), uint64(5000)<<20; got != want {
		t.Errorf("after the clock moved on, Next(5000) = %d, want %d (wall time again)", got, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(New(1763719200250, 7).String())
	f.Add(Compose(1763719200250, 7, 99).String())
	f.Add("0000000000000000000000000a")
	f.Add("000000000000000000000000000000000000001")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		if id.String() != s {
			t.Fatalf("Parse(%q) accepted a non-canonical form of %s", s, id)
		}
	})
}
