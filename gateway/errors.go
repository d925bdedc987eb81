package gateway

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/subject"
)

// Error codes. They equal HTTP statuses, so an HTTP door can use them as is.
const (
	CodeBadRequest  = 400 // the request is malformed or asks for something tock refuses
	CodeForbidden   = 403 // the target is valid but not one this tock serves (--allow-targets)
	CodeNotFound    = 404 // no message with that id (also for a malformed id)
	CodeConflict    = 409 // cancel of a message that is no longer pending
	CodeTooLarge    = 413 // body plus headers over Config.MaxPayload
	CodeInternal    = 500 // tock misbehaved (e.g. the scheduler answered nonsense)
	CodeUnavailable = 503 // tock cannot take the request now; retry
)

// Error is tock's error answer: the one catalogue shared by every door.
// Code is an HTTP status; Description says what is wrong and why, in one
// line (it also travels in the Nats-Service-Error header, so it never
// holds CR or LF). State is set only for CodeConflict: the message's
// current state.
type Error struct {
	Code        int    `json:"code"`
	Description string `json:"description"`
	State       string `json:"-"`
}

func (e *Error) Error() string { return strconv.Itoa(e.Code) + " " + e.Description }

// ErrorResponse is the JSON body of every error reply:
//
//	{"error":{"code":409,"description":"…"},"state":"delivered"}
//
// State is present only for a conflict.
type ErrorResponse struct {
	Error *Error `json:"error"`
	State string `json:"state,omitempty"`
}

// ErrorBody is the JSON body of the error reply for e.
func ErrorBody(e *Error) []byte {
	b, err := json.Marshal(ErrorResponse{Error: e, State: e.State})
	if err != nil { // cannot happen: two strings and an int
		return []byte(`{"error":{"code":500,"description":"cannot encode error"}}`)
	}
	return b
}

// The catalogue. Parse errors are built by the parsers; the constructors
// below are the rest, exported for other doors.

// NotFound is the answer for an id with no message; id is the text the
// client sent.
func NotFound(id string) *Error {
	return &Error{Code: CodeNotFound, Description: "no message with id " + quote(id)}
}

// Conflict is the answer to a cancel of a message in state st.
func Conflict(id string, st slot.State) *Error {
	return &Error{
		Code:        CodeConflict,
		Description: fmt.Sprintf("message %s is %s; only a pending message can be cancelled", quote(id), st),
		State:       st.String(),
	}
}

// LookupsBusy is the answer to a get or cancel that would load one slot
// more than tock keeps loaded for lookups (actors.Config.MaxLookupSlots)
// while more lookups than it queues already wait.
func LookupsBusy() *Error {
	return Overloaded("too many slots loaded to answer gets and cancels", "--max-lookup-slots")
}

// Unavailable is the answer when the journal could not store the command.
func Unavailable() *Error {
	return &Error{Code: CodeUnavailable, Description: "journal cannot take writes; retry"}
}

// Overloaded is the answer when tock holds as many requests as it may:
// what is in flight, and the flag that bounds it.
func Overloaded(what, flag string) *Error {
	return &Error{Code: CodeUnavailable, Description: "tock is overloaded: " + what + " (" + flag + "); retry with back-off"}
}

// ShuttingDown is the answer to a request that arrives while the door stops.
func ShuttingDown() *Error {
	return &Error{Code: CodeUnavailable, Description: "tock is shutting down; retry"}
}

// Internal is the answer when tock itself misbehaved.
func Internal(format string, args ...any) *Error {
	return &Error{Code: CodeInternal, Description: "internal error: " + oneLine(fmt.Sprintf(format, args...))}
}

func badRequest(format string, args ...any) *Error {
	return &Error{Code: CodeBadRequest, Description: fmt.Sprintf(format, args...)}
}

func errMissingTime() *Error {
	return badRequest("missing time header: set exactly one of %s (RFC 3339 or Unix ms) or %s (Go duration)", HeaderDeliverAt, HeaderDelay)
}

func errBothTimes() *Error {
	return badRequest("both %s and %s are set; set exactly one", HeaderDeliverAt, HeaderDelay)
}

func errRepeated(name string, n int) *Error {
	return badRequest("%s is set %d times; set it once", name, n)
}

func errBadDeliverAt(v, why string) *Error {
	return badRequest("%s %s %s", HeaderDeliverAt, quote(v), why)
}

func errBadDelay(v, why string) *Error {
	return badRequest("%s %s %s", HeaderDelay, quote(v), why)
}

func errDelayTooLong(v string, limit time.Duration) *Error {
	return badRequest("%s %s is beyond the maximum delay of %s", HeaderDelay, quote(v), humanDuration(limit))
}

// humanDuration writes whole days as days: 365d reads better than 8760h0m0s.
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}

func errDeliverAtTooLate(v string, latest int64, limit time.Duration) *Error {
	return badRequest("%s %s is beyond the maximum delay of %s from now (latest %s)",
		HeaderDeliverAt, quote(v), humanDuration(limit), FormatMillis(latest))
}

func errBadTarget(target, why string) *Error {
	return badRequest("invalid target %s: %s", quote(target), why)
}

func errTargetNotAllowed(target string, allow subject.Allow) *Error {
	return &Error{
		Code:        CodeForbidden,
		Description: fmt.Sprintf("target %s is not allowed: this tock delivers only to %s (--allow-targets)", quote(target), allow),
	}
}

func errBadHeader(name, why string) *Error {
	return badRequest("invalid header %s: %s", quote(name), why)
}

func errTooLarge(body, header, limit int) *Error {
	return &Error{
		Code: CodeTooLarge,
		Description: fmt.Sprintf("message is %d bytes (%d body + %d header), over the limit of %d bytes",
			body+header, body, header, limit),
	}
}

// quote renders client text safely inside a description: Go-quoted (so no
// control characters and valid UTF-8), cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// oneLine keeps a description fit for a header value.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}
