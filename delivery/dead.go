package delivery

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/actors/slot"
)

// Dead letters: a delivery whose target refuses it for good, or whose
// retry policy runs out, is stored in the dead-letter stream instead,
// with its body and headers, and reported dead to its slot.
const (
	// DeadStream is the dead-letter stream, in the application account
	// (it is for users to read); DeadSubjects are its subjects, one per
	// message id (DeadSubject).
	DeadStream   = "TOCK_DLQ"
	DeadSubjects = "tock.dead.>"

	// Per-message retry policy, set by the producer (the gateway checks
	// them and stores them under these exact names); they do not travel
	// to the target.
	HeaderMaxAttempts = "Tock-Max-Attempts"
	HeaderMaxAge      = "Tock-Max-Age"

	// Headers a dead letter carries besides the message's own (and
	// Tock-Id, Tock-Deliver-At, Nats-Msg-Id as a delivery has them).
	HeaderTarget     = "Tock-Target"
	HeaderDeadReason = "Tock-Dead-Reason"
	HeaderAttempts   = "Tock-Attempts"

	// Headers of a dead letter from a JetStream consumer (package
	// deadletter): the stream, the consumer that gave up on it, and the
	// message's sequence in the stream.
	HeaderStream    = "Tock-Stream"
	HeaderConsumer  = "Tock-Consumer"
	HeaderStreamSeq = "Tock-Stream-Seq"
)

// DeadSubject is the dead-letter stream's subject of message id.
func DeadSubject(id string) string { return "tock.dead." + id }

// Policy bounds how long a delivery is retried before it is dead-lettered.
// Zero fields: no bound of that kind.
type Policy struct {
	MaxAttempts int
	MaxAge      time.Duration // since the first attempt of this process
}

// policy is the delivery's own, from its headers, over p's defaults.
func (p Policy) of(d slot.Delivery) Policy {
	if v := d.Header[HeaderMaxAttempts]; len(v) > 0 {
		if n, err := strconv.Atoi(v[0]); err == nil && n > 0 {
			p.MaxAttempts = n
		}
	}
	if v := d.Header[HeaderMaxAge]; len(v) > 0 {
		if a, err := time.ParseDuration(v[0]); err == nil && a > 0 {
			p.MaxAge = a
		}
	}
	return p
}

// permanentCodes are the JetStream error codes of a publish that will be
// refused however often it is retried: the message, not the moment, is
// wrong for the stream.
var permanentCodes = map[jetstream.ErrorCode]bool{
	10054: true, // message size exceeds maximum allowed
	10097: true, // header size exceeds maximum allowed
	10109: true, // invalid operation on sealed stream
	10060: true, // expected stream does not match
	10063: true, // expected stream sequence does not match
	10070: true, // wrong last msg ID
	10071: true, // wrong last sequence
	10164: true, // wrong last sequence
	10165: true, // invalid per-message TTL
	10166: true, // per-message TTL is disabled
}

// Permanent reports whether err says the target will never take the
// message. Everything else (timeouts, no responders, a full stream, a
// leader change) is transient and retried under the policy.
func Permanent(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && permanentCodes[api.ErrorCode]
}

// giveUp says why j should be dead-lettered after err, or "".
func (p *Publisher) giveUp(j *job, err error) string {
	if Permanent(err) {
		return fmt.Sprintf("the target refused it for good after %d attempts: %v", j.attempt, err)
	}
	pol := p.cfg.Policy.of(j.d)
	if pol.MaxAttempts > 0 && j.attempt >= pol.MaxAttempts {
		return fmt.Sprintf("%d attempts failed (%s %d); last error: %v", j.attempt, HeaderMaxAttempts, pol.MaxAttempts, err)
	}
	if age := p.clk.Now().Sub(j.first); pol.MaxAge > 0 && age >= pol.MaxAge {
		return fmt.Sprintf("still failing after %s and %d attempts (%s %s); last error: %v", age.Round(time.Millisecond), j.attempt, HeaderMaxAge, pol.MaxAge, err)
	}
	return ""
}

// deadMessage is the dead letter of j: the delivery's message, under
// DeadSubject, with the reason and the attempts.
func (p *Publisher) deadMessage(j *job) *nats.Msg {
	msg := p.message(j.d)
	msg.Subject = DeadSubject(j.d.ID.String())
	// The policy headers stay: a redrive keeps the producer's policy.
	for _, k := range []string{HeaderMaxAttempts, HeaderMaxAge} {
		if v, ok := j.d.Header[k]; ok {
			msg.Header[k] = v
		}
	}
	msg.Header.Set(HeaderTarget, j.d.Target)
	msg.Header.Set(HeaderDeadReason, oneLine(j.dead))
	msg.Header.Set(HeaderAttempts, strconv.Itoa(j.attempt))
	return msg
}

// oneLine keeps a reason fit for a header value.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	return string(b)
}
