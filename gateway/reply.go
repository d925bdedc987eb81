package gateway

import (
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
// State is "delivered", CancelledAt only when it is "cancelled":
//
//	{"id":"…","target":"…","deliver_at":"…","state":"delivered","delivered_at":"…"}
type GetResponse struct {
	ID          string `json:"id"`
	Target      string `json:"target"`
	DeliverAt   string `json:"deliver_at"`
	State       string `json:"state"`
	DeliveredAt string `json:"delivered_at,omitempty"`
	CancelledAt string `json:"cancelled_at,omitempty"`
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
		}
		return g, nil
	case slot.NotFound:
		return GetResponse{}, NotFound(id.String())
	case slot.Unavailable:
		return GetResponse{}, Unavailable()
	}
	return GetResponse{}, unexpected("get", res.Status)
}

func validState(s slot.State) bool { return s >= slot.Pending && s <= slot.Cancelled }

func unexpected(op string, s slot.Status) *Error {
	return Internal("scheduler answered %s with unexpected status %d", op, s)
}
