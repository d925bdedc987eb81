package subject

import (
	"fmt"
	"strings"
)

// Allow is an allow-list of NATS subject patterns (tokens, * for one
// token, a final > for one or more): the targets an operator lets
// producers schedule to. The zero Allow allows every subject.
type Allow struct {
	patterns [][]string // nil: everything
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
		tokens, err := parsePattern(p)
		if err != nil {
			return Allow{}, fmt.Errorf("allowed target pattern %q: %w", p, err)
		}
		if len(tokens) == 1 && tokens[0] == ">" {
			return Allow{}, nil
		}
		a.patterns = append(a.patterns, tokens)
		texts = append(texts, p)
	}
	a.text = strings.Join(texts, ",")
	return a, nil
}

func parsePattern(p string) ([]string, error) {
	tokens := strings.Split(p, ".")
	for i, t := range tokens {
		switch {
		case t == "":
			return nil, invalid("empty token")
		case t == ">" && i != len(tokens)-1:
			return nil, invalid("> must be the last token")
		case t == "*" || t == ">":
		case strings.ContainsAny(t, "*>"):
			return nil, invalid("a wildcard must be a whole token")
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
	if err := Schedulable(strings.Join(lit, ".")); err != nil {
		return nil, err
	}
	return tokens, nil
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
		if match(p, s) {
			return true
		}
	}
	return false
}

// match walks s token by token without splitting it (no allocation).
func match(pattern []string, s string) bool {
	for i, t := range pattern {
		if t == ">" {
			return s != ""
		}
		if s == "" && i > 0 {
			return false
		}
		tok, rest, more := strings.Cut(s, ".")
		if t != "*" && t != tok {
			return false
		}
		if !more {
			return i == len(pattern)-1
		}
		s = rest
	}
	return false // s has more tokens than pattern
}
