package gateway

import (
	"encoding/json"
	"time"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/msgid"
)

// ScheduleResponse is the JSON reply to an accepted schedule:
//
//	{"id":"…","target":"orders.remind","deliver_at":"2026-11-21T10:05:00.250Z"}
type ScheduleResponse struct {
	ID        string `json:"id"`
	Target    string `json:"target"`
	DeliverAt string `json:"deliver_at"`
}

// CancelResponse is the JSON reply to a successful cancel:
//
//	{"id":"…","state":"cancelled"}
type CancelResponse struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// GetResponse is the JSON reply to a get. DeliveredAt is set only when
// State is "delivered", CancelledAt only when it is "cancelled", DeadAt
// and DeadReason only when it is "dead" (dead-lettered; see Redrive):
//
//	{"id":"…","target":"…","deliver_at":"…","state":"delivered","delivered_at":"…"}
type GetResponse struct {
	ID          string `json:"id"`
	Target      string `json:"target"`
	DeliverAt   string `json:"deliver_at"`
	State       string `json:"state"`
	DeliveredAt string `json:"delivered_at,omitempty"`
	CancelledAt string `json:"cancelled_at,omitempty"`
	DeadAt      string `json:"dead_at,omitempty"`
	DeadReason  string `json:"dead_reason,omitempty"`
}

// ScheduleReply turns the scheduler's answer to a schedule into the reply.
func ScheduleReply(res slot.Result) (ScheduleResponse, *Error) {
	switch res.Status {
	case slot.OK:
		r := res.Record
		if r.ID.IsZero() {
			return ScheduleResponse{}, Internal("scheduler accepted a message without an id")
		}
		return ScheduleResponse{ID: r.ID.String(), Target: r.Target, DeliverAt: FormatMillis(r.DeliverAt)}, nil
	case slot.Unavailable:
		return ScheduleResponse{}, Unavailable()
	}
	return ScheduleResponse{}, unexpected("schedule", res.Status)
}

// CancelReply turns the scheduler's answer to a cancel of id into the reply.
func CancelReply(id msgid.ID, res slot.Result) (CancelResponse, *Error) {
	switch res.Status {
	case slot.OK:
		return CancelResponse{ID: id.String(), State: slot.Cancelled.String()}, nil
	case slot.NotFound:
		return CancelResponse{}, NotFound(id.String())
	case slot.Conflict:
		if !validState(res.Record.State) {
			return CancelResponse{}, Internal("scheduler reported a conflict in state %d", res.Record.State)
		}
		return CancelResponse{}, Conflict(id.String(), res.Record.State)
	case slot.Unavailable:
		return CancelResponse{}, Unavailable()
	case slot.Busy:
		return CancelResponse{}, LookupsBusy()
	}
	return CancelResponse{}, unexpected("cancel", res.Status)
}

// GetReply turns the scheduler's answer to a get of id into the reply.
func GetReply(id msgid.ID, res slot.Result) (GetResponse, *Error) {
	switch res.Status {
	case slot.OK:
		r := res.Record
		if !validState(r.State) {
			return GetResponse{}, Internal("scheduler reported state %d", r.State)
		}
		g := GetResponse{ID: id.String(), Target: r.Target, DeliverAt: FormatMillis(r.DeliverAt), State: r.State.String()}
		switch r.State {
		case slot.Delivered:
			g.DeliveredAt = FormatMillis(r.DoneAt)
		case slot.Cancelled:
			g.CancelledAt = FormatMillis(r.DoneAt)
		case slot.Dead:
			g.DeadAt, g.DeadReason = FormatMillis(r.DoneAt), r.Reason
		}
		return g, nil
	case slot.NotFound:
		return GetResponse{}, NotFound(id.String())
	case slot.Unavailable:
		return GetResponse{}, Unavailable()
	case slot.Busy:
		return GetResponse{}, LookupsBusy()
	}
	return GetResponse{}, unexpected("get", res.Status)
}

func validState(s slot.State) bool { return s >= slot.Pending && s <= slot.Dead }

func unexpected(op string, s slot.Status) *Error {
	return Internal("scheduler answered %s with unexpected status %d", op, s)
}

// AppendScheduleReply appends the JSON reply to an accepted schedule of r
// to dst: byte for byte what encoding/json writes for ScheduleReply's
// response, which the tests check. Every schedule is answered with one,
// and marshalling it by reflection, with two strings made on the way, was
// a tenth of the gateway's share of an ingest.
func AppendScheduleReply(dst []byte, r slot.Record) []byte {
	dst = append(dst, `{"id":"`...)
	dst = r.ID.Append(dst)
	dst = append(dst, `","target":`...)
	dst = appendJSONString(dst, r.Target)
	dst = append(dst, `,"deliver_at":"`...)
	dst = appendMillis(dst, r.DeliverAt)
	return append(dst, `"}`...)
}

// appendJSONString appends s as encoding/json quotes it. Printable ASCII
// that json leaves alone is copied; anything else (quotes, backslashes,
// the HTML characters json escapes, non-ASCII) goes through json itself.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// millisLayout is FormatMillis's layout.
const millisLayout = "2006-01-02T15:04:05.000Z"

// appendMillis appends FormatMillis(ms) to dst. Years 0 to 9999 (every
// time tock accepts) are written by hand; time.Format walks its layout
// for every call.
func appendMillis(dst []byte, ms int64) []byte {
	t := time.UnixMilli(ms).UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, millisLayout)
	}
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, '.')
	dst = appendDigits(dst, t.Nanosecond()/int(time.Millisecond), 3)
	return append(dst, 'Z')
}

// appendDigits appends v (0 ≤ v < 10^width) zero-padded to width digits.
func appendDigits(dst []byte, v, width int) []byte {
	var buf [4]byte
	for i := width - 1; i >= 0; i-- {
		buf[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[:width]...)
}
