package msgid

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"testing"
)

var token = regexp.MustCompile(`^[0-9a-v]{26}$`)

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		at    int64
		stamp uint64
	}{{0, 0}, {1, 1}, {1763719200250, 1849563924709376}, {1<<62 - 1, 1<<64 - 1}} {
		id := New(c.at, c.stamp)
		s := id.String()
		if !token.MatchString(s) {
			t.Errorf("%q is not a 26-character subject token", s)
		}
		got, err := Parse(s)
		if err != nil || got != id || got.DeliverAt() != c.at || got.Stamp() != c.stamp {
			t.Errorf("Parse(%q) = %v (%d, %d), %v; want (%d, %d)", s, got, got.DeliverAt(), got.Stamp(), err, c.at, c.stamp)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := New(1763719200250, 42).String()
	for _, s := range []string{
		"", "short", good + "0", good[:25], // length
		"W" + good[1:], "z" + good[1:], "." + good[1:], // outside the alphabet
		good[:25] + "1", // spare bits set: not canonical
	} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

// Text order equals byte order equals (deliver time, stamp) order: ids sort
// in firing order whichever form is compared.
func TestOrder(t *testing.T) {
	ids := []ID{New(5, 9), New(5, 10), New(6, 0), New(1<<40, 3), New(0, 1<<63)}
	slices.SortFunc(ids, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	for i := 1; i < len(ids); i++ {
		a, b := ids[i-1], ids[i]
		if a.String() >= b.String() {
			t.Errorf("text order differs: %s ≥ %s", a, b)
		}
		if a.DeliverAt() > b.DeliverAt() || a.DeliverAt() == b.DeliverAt() && a.Stamp() >= b.Stamp() {
			t.Errorf("byte order is not (deliver time, stamp) order: %d/%d before %d/%d", a.DeliverAt(), a.Stamp(), b.DeliverAt(), b.Stamp())
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
	f.Add("0000000000000000000000000a")
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
