package gateway

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/msgid"
)

// Redrive: a dead letter scheduled again.
const (
	PrefixRedrive   = "tock.redrive." // + id
	SubjectRedrive  = PrefixRedrive + "*"
	EndpointRedrive = "redrive"
)

// RedriveResponse is the reply to an accepted redrive: the new message,
// and the dead one it came from.
//
//	{"id":"…","target":"…","deliver_at":"…","redriven_from":"…"}
type RedriveResponse struct {
	ScheduleResponse
	RedrivenFrom string `json:"redriven_from"`
}

// deadLetterHeaders are what delivery adds to a dead letter; a redrive
// drops them and schedules the message with its own headers.
var deadLetterHeaders = []string{
	delivery.HeaderID, delivery.HeaderDeliverAt, delivery.HeaderTarget, delivery.HeaderDeadReason,
	delivery.HeaderAttempts, jetstream.MsgIDHeader,
	delivery.HeaderStream, delivery.HeaderConsumer, delivery.HeaderStreamSeq,
}

// redrive reads the dead letter of the id in the subject and schedules it
// again, to its target, with its body and headers, at the request's
// Tock-Deliver-At or Tock-Delay or at once; once accepted, the dead letter
// is deleted. The stream read is a JetStream request, so it runs off the
// handler's goroutine, which serves every other request too.
func (g *Gateway) redrive(req micro.Request, x *exchange) {
	text := strings.TrimPrefix(req.Subject(), PrefixRedrive)
	id, e := ParseID(text)
	if e != nil {
		x.finish(answer{err: e})
		return
	}
	when := nats.Header{}
	for k, vs := range req.Headers() {
		if strings.EqualFold(k, HeaderDeliverAt) || strings.EqualFold(k, HeaderDelay) {
			when[k] = vs
		}
	}
	if len(when) == 0 {
		when.Set(HeaderDelay, "0s")
	}
	go g.redriveFrom(id, when, x)
}

func (g *Gateway) redriveFrom(id msgid.ID, when nats.Header, x *exchange) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var m *jetstream.RawStreamMsg
	stream, err := g.js.Stream(ctx, delivery.DeadStream)
	if err == nil {
		m, err = stream.GetLastMsgForSubject(ctx, delivery.DeadSubject(id.String()))
	}
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		x.finish(answer{err: &Error{Code: CodeNotFound, Description: "no dead letter with id " + quote(id.String())}})
		return
	case err != nil:
		x.finish(answer{err: &Error{Code: CodeUnavailable, Description: oneLine("cannot read the dead-letter stream " + delivery.DeadStream + ": " + err.Error())}})
		return
	}
	h := nats.Header{}
	for k, vs := range m.Header {
		h[k] = vs
	}
	for _, k := range deadLetterHeaders {
		delete(h, k)
	}
	for k, vs := range when {
		h[k] = vs
	}
	// Checked again as a new schedule: the allow-list or the limits may
	// have changed since.
	sr, e := ParseScheduleTo(m.Header.Get(delivery.HeaderTarget), h, m.Data, g.clk.Now(), g.cfg)
	if e != nil {
		x.finish(answer{err: e})
		return
	}
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.stopped {
		x.finish(answer{err: ShuttingDown()})
		return
	}
	g.s.Schedule(sr, func(res slot.Result) {
		resp, e := ScheduleReply(res)
		if e != nil {
			x.finish(answer{err: e})
			return
		}
		// Off the scheduler's goroutine: deleting is another request.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := stream.DeleteMsg(ctx, m.Sequence); err != nil {
				g.log.Warn("redrive: the dead letter stays in the stream", "id", id.String(), "seq", m.Sequence, "err", err)
			}
			x.finish(jsonAnswer(RedriveResponse{ScheduleResponse: resp, RedrivenFrom: id.String()}, nil))
		}()
	})
}
