package subject

import (
	"fmt"
	"strings"
)

// Allow is an allow-list of NATS subject patterns (tokens, * for one
// token, a final > for one or more): the targets an operator lets
// producers schedule to. The zero Allow allows every subject.
type Allow struct {
	patterns []string // nil: everything
	text     string
}

// ParseAllow reads a comma-separated list of patterns, as --allow-targets
// takes it ("orders.>,payments.*.refund"). An empty list or ">" alone
// allows everything. A pattern with an empty token, a wildcard inside a
// token, a > that is not last, or a reserved namespace is refused: it
// would either match nothing or promise something Schedulable refuses.
func ParseAllow(list string) (Allow, error) {
	var a Allow
	var texts []string
	for p := range strings.SplitSeq(list, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := checkPattern(p); err != nil {
			return Allow{}, fmt.Errorf("allowed target pattern %q: %w", p, err)
		}
		if p == ">" {
			return Allow{}, nil
		}
		a.patterns = append(a.patterns, p)
		texts = append(texts, p)
	}
	a.text = strings.Join(texts, ",")
	return a, nil
}

func checkPattern(p string) error {
	tokens := strings.Split(p, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return invalid("empty token")
		case t == ">" && i != len(tokens)-1:
			return invalid("> must be the last token")
		case t == "*" || t == ">":
		case strings.ContainsAny(t, "*>"):
			return invalid("a wildcard must be a whole token")
		}
	}
	// The literal tokens must form a schedulable subject: stand a token in
	// for each wildcard.
	lit := make([]string, len(tokens))
	for i, t := range tokens {
		if t == "*" || t == ">" {
			t = "x"
		}
		lit[i] = t
	}
	return Schedulable(strings.Join(lit, "."))
}

// All reports whether a allows every subject.
func (a Allow) All() bool { return a.patterns == nil }

// String is the list as ParseAllow read it, ">" for everything.
func (a Allow) String() string {
	if a.All() {
		return ">"
	}
	return a.text
}

// Allows reports whether subject s (no wildcards) matches a pattern of a.
func (a Allow) Allows(s string) bool {
	if a.patterns == nil {
		return true
	}
	for _, p := range a.patterns {
		if Match(p, s) {
			return true
		}
	}
	return false
}

// Match reports whether subject s (no wildcards) matches the NATS subject
// pattern p (tokens, * for one token, a final > for one or more), without
// splitting either: it runs for every delivery against every stream's
// subjects (delivery's capture set).
func Match(p, s string) bool {
	for {
		pt, prest, pmore := strings.Cut(p, ".")
		if pt == ">" {
			return s != ""
		}
		st, srest, smore := strings.Cut(s, ".")
		if pt != "*" && pt != st {
			return false
		}
		if !pmore || !smore {
			return !pmore && !smore
		}
		p, s = prest, srest
	}
}
