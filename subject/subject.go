// Package subject holds tock's rules for the subjects it publishes to: what
// a target may be at all, what a producer may never schedule to, and the
// operator's allow-list (--allow-targets). The gateway applies all three to
// every schedule; a journal replay applies the first (journal.Check), since
// a message an earlier tock accepted stays deliverable.
package subject

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinels the errors of Valid and Schedulable wrap.
var (
	// ErrInvalid: not a subject tock can publish to (empty token,
	// wildcard, space, control character, invalid UTF-8).
	ErrInvalid = errors.New("invalid subject")
	// ErrReserved: a subject that belongs to NATS or to tock itself.
	ErrReserved = errors.New("reserved subject")
)

// Inbox is the first token of the inboxes of tock's own connections (the
// replies to its journal writes and deliveries). No target may start
// with it, so nobody can forge those replies through a delivery.
const Inbox = "_TOCK"

// reservedSchedule are first tokens a producer may never schedule to, on
// top of what Valid refuses: nats.go's default inbox (a delivery there
// would answer someone's request), and the server's reply subjects for
// service imports (_R_) and gateways (_GR_).
var reservedSchedule = [...]string{"_INBOX", "_R_", "_GR_"}

// Valid reports whether s is a subject tock may publish a message to: one
// or more non-empty dot-separated tokens of valid UTF-8 with no wildcard,
// whitespace or control character, not $-prefixed (the server's and
// JetStream's API), not under tock's own "tock." subjects nor its inboxes
// (Inbox). The error says what is wrong without repeating s.
func Valid(s string) error {
	if plain(s) {
		return reservedFirst(s, false)
	}
	return slow(s, false)
}

// Schedulable is Valid plus what a producer may never schedule to, though
// an earlier tock may have accepted it: the first tokens _INBOX, _R_ and
// _GR_, and Unicode format characters (category Cf: bidi controls such as
// U+202E, zero-width characters, soft hyphens), which let a subject read
// as another one in logs and tools.
func Schedulable(s string) error {
	if plain(s) {
		return reservedFirst(s, true)
	}
	return slow(s, true)
}

// plain reports whether s is tokens of printable ASCII with no wildcard:
// the common case, checked in one pass over the bytes (every schedule is
// checked). Anything else goes to slow, which also says what is wrong.
func plain(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	dot := false // the previous byte was a dot
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c <= ' ' || c >= 0x7f || c == '*' || c == '>':
			return false
		case c == '.':
			if dot {
				return false
			}
			dot = true
		default:
			dot = false
		}
	}
	return true
}

func slow(s string, schedule bool) error {
	if s == "" {
		return invalid("empty subject")
	}
	if !utf8.ValidString(s) {
		return invalid("not valid UTF-8")
	}
	for _, r := range s {
		switch {
		case r == '*' || r == '>':
			return invalid("wildcards (* and >) are not allowed")
		case unicode.IsSpace(r):
			return invalid("whitespace is not allowed")
		case unicode.IsControl(r):
			return invalid("control characters are not allowed")
		case schedule && unicode.Is(unicode.Cf, r):
			return invalid("Unicode format characters (bidi controls, zero-width characters) are not allowed")
		}
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return invalid("empty token")
	}
	return reservedFirst(s, schedule)
}

// reservedFirst checks the namespaces of a structurally valid s.
func reservedFirst(s string, schedule bool) error {
	if s[0] == '$' {
		return reserved("$-prefixed system subjects are not allowed")
	}
	first, _, _ := strings.Cut(s, ".")
	switch first {
	case "tock":
		return reserved("tock's own subjects (tock.>) are not allowed")
	case Inbox:
		return reserved("tock's inboxes (" + Inbox + ".>) are not allowed")
	}
	if schedule {
		for _, r := range reservedSchedule {
			if first == r {
				return reserved("reply subjects (" + r + ".>) are not allowed")
			}
		}
	}
	return nil
}

type ruleError struct {
	kind error
	why  string
}

func (e *ruleError) Error() string { return e.why }
func (e *ruleError) Unwrap() error { return e.kind }

func invalid(why string) error  { return &ruleError{ErrInvalid, why} }
func reserved(why string) error { return &ruleError{ErrReserved, why} }
