package gateway

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
	"github.com/tockd/tock/subject"
)

// Control headers of a schedule request. Exactly one must be set; neither
// travels to the target. They are matched case-insensitively.
const (
	// HeaderDeliverAt is an absolute deliver time: RFC 3339 with optional
	// fraction (2026-11-21T10:05:00.250Z, 2026-11-21T11:05:00+01:00) or
	// an integer of Unix milliseconds (1795255500250).
	HeaderDeliverAt = "Tock-Deliver-At"
	// HeaderDelay is a delay from now as a Go duration (1500ms, 5m, 24h).
	HeaderDelay = "Tock-Delay"
)

// Subjects of the NATS door.
const (
	PrefixSchedule = "tock.schedule." // + target
	PrefixCancel   = "tock.cancel."   // + id
	PrefixGet      = "tock.get."      // + id

	SubjectSchedule = PrefixSchedule + ">"
	SubjectCancel   = PrefixCancel + "*"
	SubjectGet      = PrefixGet + "*"
)

const deliverAtForm = "RFC 3339 (e.g. 2026-11-21T10:05:00.250Z) or Unix milliseconds"

// ParseDeliverAt reads a Tock-Deliver-At value into Unix milliseconds,
// rounded up to a whole millisecond so a message is never early. Times in
// the past are returned as is; times before the Unix epoch are refused.
func ParseDeliverAt(v string) (int64, *Error) {
	if v == "" {
		return 0, errBadDeliverAt(v, "is empty: want "+deliverAtForm)
	}
	if isDigits(v) {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, errBadDeliverAt(v, "is out of range as Unix milliseconds")
		}
		return ms, nil
	}
	if v[0] == '-' && isDigits(v[1:]) {
		return 0, errBadDeliverAt(v, "is before the Unix epoch")
	}
	if ms, ok := parseUTC(v); ok {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		why := "is not " + deliverAtForm
		// Say which field is out of range; other messages of time.Parse
		// echo the input, which the description already quotes.
		if pe, ok := err.(*time.ParseError); ok && strings.HasSuffix(pe.Message, "out of range") {
			why += " (" + strings.TrimPrefix(pe.Message, ": ") + ")"
		}
		return 0, errBadDeliverAt(v, why)
	}
	if t.Before(time.Unix(0, 0)) {
		return 0, errBadDeliverAt(v, "is before the Unix epoch")
	}
	ms := t.UnixMilli() // floor: nanoseconds are never negative
	if t.Nanosecond()%int(time.Millisecond) != 0 || subNanos(v) {
		ms++
	}
	return ms, nil
}

// parseUTC reads the common form of a deliver time, UTC with a dot
// fraction of at most nine digits (2026-11-21T10:05:00.250Z, what
// RFC3339Nano formatting writes), into Unix milliseconds rounded up; ok
// is false for anything else, which time.Parse then reads or refuses.
// time.Parse walks its layout on every call, and every schedule with an
// absolute time comes through here; a fuzz target checks that the two
// agree wherever parseUTC answers.
func parseUTC(v string) (ms int64, ok bool) {
	const frac = len("2006-01-02T15:04:05")
	if len(v) < frac+1 || v[len(v)-1] != 'Z' || v[4] != '-' || v[7] != '-' || v[10] != 'T' || v[13] != ':' || v[16] != ':' {
		return 0, false
	}
	num := func(i, n int) int {
		x := 0
		for _, c := range []byte(v[i : i+n]) {
			if c < '0' || c > '9' {
				return -1
			}
			x = x*10 + int(c-'0')
		}
		return x
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, minute, sec := num(11, 2), num(14, 2), num(17, 2)
	if year < 1970 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 || hour < 0 || minute < 0 || sec < 0 {
		return 0, false
	}
	if day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return 0, false
	}
	nanos := 0
	switch rest := v[frac : len(v)-1]; {
	case rest == "":
	case len(rest) < 2 || len(rest) > 10 || rest[0] != '.':
		return 0, false
	default:
		digits := rest[1:]
		if nanos = num(frac+1, len(digits)); nanos < 0 {
			return 0, false
		}
		for range 9 - len(digits) {
			nanos *= 10
		}
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nanos, time.UTC)
	ms = t.UnixMilli()
	if nanos%int(time.Millisecond) != 0 {
		ms++
	}
	return ms, true
}

// subNanos reports whether an RFC 3339 text that time.Parse accepted has
// non-zero fraction digits past the ninth, which time.Parse drops: they
// still make the time later than its whole millisecond.
func subNanos(v string) bool {
	const frac = len("2006-01-02T15:04:05") // time.Parse took a 4-digit year, so this is fixed
	if len(v) <= frac || (v[frac] != '.' && v[frac] != ',') {
		return false
	}
	for i := frac + 1 + 9; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		if v[i] != '0' {
			return true
		}
	}
	return false
}

// ParseDelay reads a Tock-Delay value: a Go duration, not negative.
func ParseDelay(v string) (time.Duration, *Error) {
	if v == "" {
		return 0, errBadDelay(v, "is empty: want a Go duration such as 1500ms, 5m or 24h")
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		switch msg := err.Error(); {
		case strings.Contains(msg, "missing unit"):
			return 0, errBadDelay(v, "has no unit: want a Go duration such as 1500ms, 5m or 24h")
		case strings.Contains(msg, "unknown unit"):
			return 0, errBadDelay(v, "has an unknown unit: want ns, us, ms, s, m or h")
		}
		return 0, errBadDelay(v, "is not a Go duration such as 1500ms, 5m or 24h, or is out of range")
	}
	if d < 0 {
		return 0, errBadDelay(v, "is negative")
	}
	return d, nil
}

// ValidateTarget checks that target is a subject a producer may schedule
// to (subject.Schedulable: tokens with no wildcard, whitespace, control
// or Unicode format character, not $-prefixed, not tock's own, not an
// inbox or reply subject) and, with a Config, one its AllowTargets allow.
func ValidateTarget(target string) *Error {
	if err := subject.Schedulable(target); err != nil {
		return errBadTarget(target, err.Error())
	}
	return nil
}

func (c Config) checkTarget(target string) *Error {
	if e := ValidateTarget(target); e != nil {
		return e
	}
	if !c.AllowTargets.Allows(target) {
		return errTargetNotAllowed(target, c.AllowTargets)
	}
	return nil
}

// ParseSchedule reads a NATS schedule request: subject is
// tock.schedule.<target>, h the request headers, body the payload. now is
// the current time. The result's Header holds every header but the two
// control headers, and its Body aliases body.
func ParseSchedule(subject string, h nats.Header, body []byte, now time.Time, cfg Config) (actors.ScheduleRequest, *Error) {
	target, ok := strings.CutPrefix(subject, PrefixSchedule)
	if !ok {
		return actors.ScheduleRequest{}, errBadTarget(subject, "subject is not under "+PrefixSchedule)
	}
	return ParseScheduleTo(target, h, body, now, cfg)
}

// ParseScheduleTo is ParseSchedule for a door that carries the target by
// itself; h may be a nats.Header or an http.Header. Checks run in this
// order: target, headers, deliver time, size.
func ParseScheduleTo(target string, h map[string][]string, body []byte, now time.Time, cfg Config) (actors.ScheduleRequest, *Error) {
	if e := cfg.checkTarget(target); e != nil {
		return actors.ScheduleRequest{}, e
	}
	// How many time header values came, and one of them: any count but
	// one is an error, so which one is kept does not matter.
	var nAt, nDelay int
	var at, delay string
	var travel journal.Header
	for k, vs := range h {
		switch {
		case strings.EqualFold(k, HeaderDeliverAt):
			if nAt += len(vs); len(vs) > 0 {
				at = vs[0]
			}
			continue
		case strings.EqualFold(k, HeaderDelay):
			if nDelay += len(vs); len(vs) > 0 {
				delay = vs[0]
			}
			continue
		}
		if strings.EqualFold(k, delivery.HeaderMaxAttempts) || strings.EqualFold(k, delivery.HeaderMaxAge) {
			name, v, e := policyHeader(k, vs)
			if e != nil {
				return actors.ScheduleRequest{}, e
			}
			if travel == nil {
				travel = make(journal.Header, len(h))
			}
			// Stored under tock's spelling: the publisher looks it up so.
			travel[name] = []string{v}
			continue
		}
		if e := CheckHeader(k, vs); e != nil {
			return actors.ScheduleRequest{}, e
		}
		if len(vs) == 0 {
			continue
		}
		if travel == nil {
			travel = make(journal.Header, len(h))
		}
		travel[k] = append([]string(nil), vs...)
	}

	var deliverAt int64
	switch {
	case nAt == 0 && nDelay == 0:
		return actors.ScheduleRequest{}, errMissingTime()
	case nAt > 0 && nDelay > 0:
		return actors.ScheduleRequest{}, errBothTimes()
	case nAt > 1:
		return actors.ScheduleRequest{}, errRepeated(HeaderDeliverAt, nAt)
	case nDelay > 1:
		return actors.ScheduleRequest{}, errRepeated(HeaderDelay, nDelay)
	case nAt == 1:
		ms, e := ParseDeliverAt(at)
		if e != nil {
			return actors.ScheduleRequest{}, e
		}
		// A time within the last partial millisecond of the limit is
		// fine: compare whole (rounded up) milliseconds.
		if latest := CeilMillis(now.Add(cfg.MaxDelay)); ms > latest {
			return actors.ScheduleRequest{}, errDeliverAtTooLate(at, latest, cfg.MaxDelay)
		}
		deliverAt = ms
	default:
		d, e := ParseDelay(delay)
		if e != nil {
			return actors.ScheduleRequest{}, e
		}
		if d > cfg.MaxDelay {
			return actors.ScheduleRequest{}, errDelayTooLong(delay, cfg.MaxDelay)
		}
		deliverAt = CeilMillis(now.Add(d))
	}

	if hb := HeaderSize(travel); len(body)+hb > cfg.MaxPayload {
		return actors.ScheduleRequest{}, errTooLarge(len(body), hb, cfg.MaxPayload)
	}
	return actors.ScheduleRequest{Target: target, DeliverAt: deliverAt, Header: travel, Body: body}, nil
}

// Bounds of the per-message retry policy.
const (
	maxPolicyAttempts = 1_000_000
	maxPolicyAge      = 365 * 24 * time.Hour
)

// policyHeader checks a Tock-Max-Attempts or Tock-Max-Age header: one
// value, a whole number of attempts from 1, or a Go duration above zero,
// both within bounds. It returns tock's spelling of the name.
func policyHeader(k string, vs []string) (string, string, *Error) {
	name := delivery.HeaderMaxAttempts
	if strings.EqualFold(k, delivery.HeaderMaxAge) {
		name = delivery.HeaderMaxAge
	}
	if len(vs) != 1 {
		return "", "", errRepeated(name, len(vs))
	}
	v := vs[0]
	if name == delivery.HeaderMaxAttempts {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > maxPolicyAttempts {
			return "", "", badRequest("%s %s is not a whole number from 1 to %d", name, quote(v), maxPolicyAttempts)
		}
		return name, v, nil
	}
	if d, err := time.ParseDuration(v); err != nil || d <= 0 || d > maxPolicyAge {
		return "", "", badRequest("%s %s is not a Go duration above 0 and at most %s", name, quote(v), humanDuration(maxPolicyAge))
	}
	return name, v, nil
}

// CheckHeader refuses a header a producer may not send along: one that
// cannot be published again as is, or one whose meaning is NATS's or
// tock's rather than the application's (reservedHeader).
func CheckHeader(k string, vs []string) *Error {
	if k == "" {
		return errBadHeader(k, "empty name")
	}
	if strings.ContainsAny(k, ":\r\n") {
		return errBadHeader(k, "name holds ':', CR or LF")
	}
	if why := reservedHeader(k); why != "" {
		return errBadHeader(k, why)
	}
	for _, v := range vs {
		if strings.ContainsAny(v, "\r\n") {
			return errBadHeader(k, "value holds CR or LF")
		}
	}
	return nil
}

// reservedHeader says why header k may not travel with a scheduled
// message, "" if it may. The table is docs/SECURITY.md's "Headers".
// Names are compared without regard to case: nats.go and nats-server
// match some of them exactly and some not, and a producer should not
// find out which by experiment.
func reservedHeader(k string) string {
	switch {
	case hasPrefixFold(k, "Nats-"):
		// Nats-Msg-Id (tock sets it to the message id, for the target
		// stream's duplicate window), Nats-Expected-* (the stream would
		// refuse the delivery), Nats-Rollup (it would purge the target's
		// subject or stream), Nats-TTL, Nats-Schedule-*, Nats-Incr,
		// Nats-Batch-*, Nats-Required-Api-Level and whatever NATS adds:
		// all change how the server stores the delivered message.
		return "Nats-* headers are reserved by NATS and change how the target's stream stores the message"
	case hasPrefixFold(k, "Tock-"):
		// Tock-Id and Tock-Deliver-At are set by tock on delivery; other
		// names are kept for tock's own control headers.
		return "Tock-* headers other than " + HeaderDeliverAt + ", " + HeaderDelay + ", " + delivery.HeaderMaxAttempts + " and " + delivery.HeaderMaxAge + " are reserved by tock"
	case strings.EqualFold(k, "Status"), strings.EqualFold(k, "Description"):
		// nats.go reads a status line into these: a delivery with
		// Status 100, 404, 408, 409 or 503 would look like a JetStream
		// control message or a no-responders reply to its consumer.
		return "Status and Description are how NATS clients read status replies"
	case strings.EqualFold(k, "KV-Operation"):
		return "KV-Operation marks deletes in JetStream key-value buckets"
	}
	return ""
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// HeaderSize is the size of h in the NATS wire encoding
// ("NATS/1.0\r\n", a "Key: value\r\n" line per value, "\r\n"), 0 for no
// values. It is what MaxPayload counts besides the body.
func HeaderSize(h map[string][]string) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	if n == 0 {
		return 0
	}
	return n + len("NATS/1.0\r\n") + len("\r\n")
}

// ParseID reads the id token of a cancel or get subject. A malformed id
// names no message: the error is a 404.
func ParseID(s string) (msgid.ID, *Error) {
	id, err := msgid.Parse(s)
	if err != nil {
		return msgid.ID{}, NotFound(s)
	}
	return id, nil
}

// CeilMillis is t in Unix milliseconds, rounded up.
func CeilMillis(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}

// FormatMillis renders Unix milliseconds as RFC 3339 in UTC with exactly
// three fraction digits: 2026-11-21T10:05:00.250Z.
func FormatMillis(ms int64) string {
	var buf [len(millisLayout)]byte
	return string(appendMillis(buf[:0], ms))
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
