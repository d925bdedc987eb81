package journal

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tockd/tock/subject"
)

// ErrForeign: a stored event decodes but cannot be one tock wrote into the
// slot that holds it (an id of another slot, a deliver time that is not
// its id's, a target tock would never publish to, a Closed before the
// slot's end). Such a record is quarantined like a corrupt one.
var ErrForeign = errors.New("journal event foreign to its slot")

// Check reports whether ev can be an event tock wrote into slot, for slots
// of widthMs milliseconds (slot k holds deliver times [k·w, (k+1)·w)).
// It is what a replay trusts: every event it accepts is one the slot
// could have produced itself, so a record forged with tock's own
// credentials, written by a bug or damaged on disk cannot make a slot
// publish somewhere it never would, or hold a message it cannot own.
//
// What it cannot tell apart is a well-formed Fired or Cancelled of a real
// id from a genuine one; the journal's private account is the defence
// there (docs/SECURITY.md).
func Check(slot, widthMs int64, ev *Event) error {
	if widthMs <= 0 {
		return fmt.Errorf("%w: slot width %d ms", ErrForeign, widthMs)
	}
	switch ev.Kind {
	case Scheduled:
		if err := checkID(slot, widthMs, ev); err != nil {
			return err
		}
		if ev.DeliverAt != ev.ID.DeliverAt() {
			// The router sets both from one value; the slot fires by the
			// field and lookups find the slot by the id.
			return foreign(ev, "deliver time %d is not its id's %d", ev.DeliverAt, ev.ID.DeliverAt())
		}
		if err := CheckTarget(ev.Target); err != nil {
			return foreign(ev, "%v", err)
		}
		return checkHeader(ev)
	case Cancelled, Fired:
		if err := checkID(slot, widthMs, ev); err != nil {
			return err
		}
		if hasDeliveryFields(ev) {
			return foreign(ev, "carries delivery fields")
		}
		return nil
	case Dead:
		if err := checkID(slot, widthMs, ev); err != nil {
			return err
		}
		if ev.Target != "" || ev.DeliverAt != 0 || len(ev.Header) > 0 {
			return foreign(ev, "carries delivery fields")
		}
		if len(ev.Body) > MaxDeadReason {
			return foreign(ev, "reason of %d bytes, over %d", len(ev.Body), MaxDeadReason)
		}
		return nil
	case Closed:
		if !ev.ID.IsZero() || hasDeliveryFields(ev) {
			return foreign(ev, "carries an id or delivery fields")
		}
		// A slot closes only once its time is over (slot.maybeClose).
		if floorDiv(ev.At, widthMs) <= slot {
			return foreign(ev, "at %d is before the end of slot %d", ev.At, slot)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown event kind %d", ErrForeign, uint8(ev.Kind))
}

// MaxDeadReason bounds the reason a Dead event carries, in bytes.
const MaxDeadReason = 1024

// SlotOf is the slot of a deliver time for slots of widthMs (> 0),
// rounding down for negative times too (also: the bucket of a slot).
func SlotOf(ms, widthMs int64) int64 { return floorDiv(ms, widthMs) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func checkID(slot, widthMs int64, ev *Event) error {
	if ev.ID.IsZero() {
		return foreign(ev, "has no id")
	}
	if got := floorDiv(ev.ID.DeliverAt(), widthMs); got != slot {
		return foreign(ev, "id %s belongs to slot %d", ev.ID, got)
	}
	return nil
}

func foreign(ev *Event, format string, args ...any) error {
	return fmt.Errorf("%w: %s event %s", ErrForeign, ev.Kind, fmt.Sprintf(format, args...))
}

// CheckTarget reports whether target is a subject a replayed message may
// be published to: subject.Valid, the structural rule the gateway has
// always applied ($-prefixed, tock's own subjects and inboxes refused).
// It is not the gateway's policy (subject.Schedulable, --allow-targets):
// a target an earlier tock accepted, or the policy later forbids, is still
// a message tock acknowledged.
func CheckTarget(target string) error {
	if err := subject.Valid(target); err != nil {
		return fmt.Errorf("target %q: %w", target, err)
	}
	return nil
}

// checkHeader refuses what would change the shape of the published
// message: a line break in a key or value would inject headers, a colon or
// an empty key would not parse back.
func checkHeader(ev *Event) error {
	for k, vs := range ev.Header {
		if k == "" || strings.ContainsAny(k, ":\r\n") {
			return foreign(ev, "has header key %q", k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return foreign(ev, "has header %q with a line break", k)
			}
		}
	}
	return nil
}

// CheckRecord checks every event of one record with check and reports the
// first that fails, by index. A record is judged whole: it is one append
// (or several, group-committed), and its events were written together, so
// one foreign event means the record is not tock's, and keeping its other
// events would trust exactly the bytes that just proved untrustworthy
// (a forged record can mix a real-looking Fired of a live id with a
// garbage target). Dropping the whole record loses nothing tock wrote
// unless tock itself wrote a bad event, which Validate and the gateway
// prevent.
func CheckRecord(events []Event, check func(*Event) error) error {
	for i := range events {
		if err := check(&events[i]); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
	}
	return nil
}

// SlotCheck is the check of slot's own records.
func SlotCheck(slot, widthMs int64) func(*Event) error {
	return func(ev *Event) error { return Check(slot, widthMs, ev) }
}

// DecodeChecked appends the events of record b to dst, as DecodeAppend,
// if the whole record decodes and every event passes check (nil: decode
// only). Otherwise dst comes back as it was, with the reason: an error
// wrapping ErrCorrupt or ErrForeign.
func DecodeChecked(dst []Event, b []byte, alias bool, check func(*Event) error) ([]Event, error) {
	n := len(dst)
	out, err := DecodeAppend(dst, b, alias)
	if err == nil && check != nil {
		err = CheckRecord(out[n:], check)
	}
	if err != nil {
		clear(out[n:])
		return out[:n], err
	}
	return out, nil
}
