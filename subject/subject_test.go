package subject

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

func TestValidAndSchedulable(t *testing.T) {
	for _, c := range []struct {
		s                string
		valid, schedule  error // nil: accepted
		validWhy, schWhy string
	}{
		{s: "orders.close"},
		{s: "a"},
		{s: "ünï.cödé"},
		{s: "_INBOXES.x"}, // only the whole first token is reserved
		{s: "x._INBOX"},
		{s: "", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "empty"},
		{s: "a..b", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "empty token"},
		{s: ".a", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "empty token"},
		{s: "a.", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "empty token"},
		{s: "a.*", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "wildcards"},
		{s: "a.>", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "wildcards"},
		{s: "a b", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "whitespace"},
		{s: "a\u00a0b", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "whitespace"},
		{s: "a\x7fb", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "control"},
		{s: "a\xffb", valid: ErrInvalid, schedule: ErrInvalid, validWhy: "UTF-8"},
		{s: "$JS.API.STREAM.DELETE.X", valid: ErrReserved, schedule: ErrReserved, validWhy: "$-prefixed"},
		{s: "$SYS", valid: ErrReserved, schedule: ErrReserved, validWhy: "$-prefixed"},
		{s: "tock.journal.1", valid: ErrReserved, schedule: ErrReserved, validWhy: "tock's own"},
		{s: "tock", valid: ErrReserved, schedule: ErrReserved, validWhy: "tock's own"},
		{s: "_TOCK.abc.1", valid: ErrReserved, schedule: ErrReserved, validWhy: "inboxes"},
		{s: "_INBOX.abc", schedule: ErrReserved, schWhy: "_INBOX"},
		{s: "_INBOX", schedule: ErrReserved, schWhy: "_INBOX"},
		{s: "_R_.x.y", schedule: ErrReserved, schWhy: "_R_"},
		{s: "_GR_.x.y", schedule: ErrReserved, schWhy: "_GR_"},
		{s: "orders.\u202eesolc", schedule: ErrInvalid, schWhy: "format characters"},
		{s: "orders.cl\u200bose", schedule: ErrInvalid, schWhy: "format characters"},
		{s: "\ufefforders", schedule: ErrInvalid, schWhy: "format characters"},
		{s: "orders.\u2066x", schedule: ErrInvalid, schWhy: "format characters"},
	} {
		check := func(what string, err, want error, why string) {
			t.Helper()
			if !errors.Is(err, want) || (want == nil) != (err == nil) {
				t.Errorf("%s(%q) = %v, want %v", what, c.s, err, want)
				return
			}
			if err != nil && why != "" && !strings.Contains(err.Error(), why) {
				t.Errorf("%s(%q) = %q, want it to say %q", what, c.s, err, why)
			}
		}
		check("Valid", Valid(c.s), c.valid, c.validWhy)
		why := c.schWhy
		if why == "" {
			why = c.validWhy
		}
		check("Schedulable", Schedulable(c.s), c.schedule, why)
	}
}

// TestEveryFormatCharacterRefused walks Unicode's Cf table: each one, in
// the middle of a target, is refused by Schedulable.
func TestEveryFormatCharacterRefused(t *testing.T) {
	n := 0
	visit := func(lo, hi, stride int) {
		for r := lo; r <= hi; r += stride {
			n++
			if err := Schedulable("a" + string(rune(r)) + "b"); err == nil {
				t.Errorf("U+%04X accepted", r)
			}
		}
	}
	for _, rt := range unicode.Cf.R16 {
		visit(int(rt.Lo), int(rt.Hi), int(rt.Stride))
	}
	for _, rt := range unicode.Cf.R32 {
		visit(int(rt.Lo), int(rt.Hi), int(rt.Stride))
	}
	if n < 50 {
		t.Fatalf("walked only %d format characters", n)
	}
}

func TestAllow(t *testing.T) {
	a, err := ParseAllow("orders.>, payments.*.refund,audit")
	if err != nil {
		t.Fatal(err)
	}
	if a.All() || a.String() != "orders.>,payments.*.refund,audit" {
		t.Fatalf("parsed as %q (all %v)", a.String(), a.All())
	}
	for s, want := range map[string]bool{
		"orders.close":          true,
		"orders.eu.close":       true,
		"orders":                false,
		"ordersx.close":         false,
		"payments.7.refund":     true,
		"payments.7.refund.x":   false,
		"payments.refund":       false,
		"payments.7.8.refund":   false,
		"audit":                 true,
		"audit.x":               false,
		"x.orders.close":        false,
		"payments.7.refundable": false,
	} {
		if got := a.Allows(s); got != want {
			t.Errorf("Allows(%q) = %v, want %v", s, got, want)
		}
	}
	for _, list := range []string{"", ">", " , ", "orders.>,>"} {
		a, err := ParseAllow(list)
		if err != nil || !a.All() || !a.Allows("anything.at.all") || a.String() != ">" {
			t.Errorf("ParseAllow(%q) = %v, %v: want everything", list, a, err)
		}
	}
}

func TestParseAllowRefuses(t *testing.T) {
	for list, why := range map[string]string{
		"orders..x":   "empty token",
		"orders.>.x":  "last token",
		"orders.a*":   "whole token",
		"$JS.>":       "$-prefixed",
		"tock.>":      "tock's own",
		"_INBOX.>":    "_INBOX",
		"_TOCK.*":     "inboxes",
		"ok.>,bad..x": "empty token",
		"a b":         "whitespace",
	} {
		_, err := ParseAllow(list)
		if err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseAllow(%q) = %v, want an error saying %q", list, err, why)
		}
	}
}

// FuzzSchedulable checks the one-pass fast path against the full rule:
// whatever the input, Valid and Schedulable agree with slow, and never
// accept what NATS would not route as one literal subject.
func FuzzSchedulable(f *testing.F) {
	for _, s := range []string{"orders.close", "a..b", "_INBOX.x", "$SYS", "tock.x", "a\u202eb", "a b", "*", "a.>", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, schedule := range []bool{false, true} {
			fast := Valid(s)
			if schedule {
				fast = Schedulable(s)
			}
			full := slow(s, schedule)
			if (fast == nil) != (full == nil) {
				t.Fatalf("schedule=%v %q: fast path %v, full rule %v", schedule, s, fast, full)
			}
			if fast == nil && (!Match(s, s) || !Match(">", s) || Match(s+".x", s)) {
				t.Fatalf("Match disagrees on the literal %q", s)
			}
			if fast == nil && (s == "" || strings.ContainsAny(s, " \t\r\n*>") || strings.Contains(s, "..") || s[0] == '$') {
				t.Fatalf("schedule=%v accepted %q", schedule, s)
			}
		}
	})
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{">", "a", true}, {">", "a.b.c", true},
		{"a", "a", true}, {"a", "b", false}, {"a", "a.b", false}, {"a.b", "a", false},
		{"a.*", "a.b", true}, {"a.*", "a.b.c", false}, {"a.*", "a", false},
		{"a.>", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "a", false},
		{"*.b.>", "x.b.c", true}, {"*.b.>", "x.c.c", false}, {"*", "x", true}, {"*", "x.y", false},
		{"orders.*.close", "orders.7.close", true}, {"orders.*.close", "orders.7.open", false},
	} {
		if got := Match(c.p, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}
