// Package deadletter gives JetStream consumers tock's dead-letter queue.
// When a watched consumer has delivered a message max_deliver times
// without an ack, the server publishes a max-deliveries advisory; tock
// copies the message it names into TOCK_DLQ, where `tock dead` lists it
// and `tock redrive` publishes it to its subject again.
//
// The advisories are core NATS messages, lost when nobody listens, so a
// stream of tock's (AdvisoryStream, in the application account) captures
// them and tock consumes that: an advisory published while tock is down
// waits there, and one is acknowledged only once its dead letter is
// stored.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/gateway"
	"github.com/tockd/tock/msgid"
)

const (
	// AdvisoryStream captures the max-deliveries advisories of the
	// watched consumers until tock has moved their messages.
	AdvisoryStream = "TOCK_DLQ_ADVISORIES"
	// AdvisoryPrefix + STREAM.CONSUMER is the server's subject for them.
	AdvisoryPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
	advisoryType   = "io.nats.jetstream.advisory.v1.max_deliver"
	durable        = "tock"
)

// Source is a consumer whose exhausted messages become dead letters.
type Source struct{ Stream, Consumer string }

func (s Source) String() string { return s.Stream + ":" + s.Consumer }

func (s Source) advisorySubject() string { return AdvisoryPrefix + s.Stream + "." + s.Consumer }

// ParseSource parses STREAM:CONSUMER.
func ParseSource(v string) (Source, error) {
	stream, consumer, ok := strings.Cut(v, ":")
	if !ok {
		return Source{}, fmt.Errorf("%q: want STREAM:CONSUMER", v)
	}
	s := Source{Stream: stream, Consumer: consumer}
	for _, n := range []string{stream, consumer} {
		if err := checkName(n); err != nil {
			return Source{}, fmt.Errorf("%q: %w", v, err)
		}
	}
	return s, nil
}

// checkName applies JetStream's rule for stream and consumer names: a
// name is one subject token, without wildcards or path separators.
func checkName(n string) error {
	if n == "" {
		return errors.New("empty name")
	}
	if i := strings.IndexAny(n, " \t\r\n.*>/\\"); i >= 0 {
		return fmt.Errorf("name %q holds %q, which JetStream names may not", n, n[i])
	}
	return nil
}

// Watcher moves the exhausted messages of its sources into TOCK_DLQ.
type Watcher struct {
	js  jetstream.JetStream
	log *slog.Logger
	cc  jetstream.ConsumeContext

	mu      sync.Mutex
	stamper msgid.Stamper
}

// Start watches sources (none: nil, nil). retention bounds how long an
// advisory waits in AdvisoryStream for tock, as it bounds dead letters.
func Start(ctx context.Context, nc *nats.Conn, sources []Source, retention time.Duration, log *slog.Logger) (*Watcher, error) {
	if len(sources) == 0 {
		return nil, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("dead letters of consumers: %w", err)
	}
	subjects := make([]string, 0, len(sources))
	for _, s := range sources {
		subjects = append(subjects, s.advisorySubject())
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        AdvisoryStream,
		Description: "max-deliveries advisories of the consumers tock dead-letters (tock serve --dead-letter), until tock has moved their messages to " + delivery.DeadStream,
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      retention,
	})
	if err != nil {
		return nil, fmt.Errorf("create the advisory stream %s: %w", AdvisoryStream, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 64,
	})
	if err != nil {
		return nil, fmt.Errorf("consume the advisory stream %s: %w", AdvisoryStream, err)
	}
	w := &Watcher{js: js, log: log}
	if w.cc, err = cons.Consume(w.handle); err != nil {
		return nil, fmt.Errorf("consume the advisory stream %s: %w", AdvisoryStream, err)
	}
	return w, nil
}

// Stop stops consuming advisories; those not yet handled wait for the
// next start.
func (w *Watcher) Stop() {
	if w != nil {
		w.cc.Stop()
	}
}

// advisory is the part of the server's JSConsumerDeliveryExceededAdvisory
// tock reads.
type advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// handle moves the message of one advisory. A failure to read or store it
// is retried with back-off; an advisory tock cannot use is dropped with a
// warning.
func (w *Watcher) handle(m jetstream.Msg) {
	var a advisory
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.Type != advisoryType || a.StreamSeq == 0 ||
		m.Subject() != AdvisoryPrefix+a.Stream+"."+a.Consumer {
		w.log.Warn("dead letters: dropped an advisory tock cannot use", "subject", m.Subject(), "err", err, "type", a.Type)
		_ = m.Term()
		return
	}
	if err := w.move(a); err != nil {
		n := uint64(1)
		if md, e := m.Metadata(); e == nil {
			n = md.NumDelivered
		}
		wait := min(time.Duration(1<<min(n, 6))*100*time.Millisecond, 10*time.Second)
		w.log.Warn("dead letters: cannot move a message yet; retrying", "stream", a.Stream, "consumer", a.Consumer, "seq", a.StreamSeq, "in", wait, "err", err)
		_ = m.NakWithDelay(wait)
		return
	}
	_ = m.Ack()
}

// move copies message a.StreamSeq of a.Stream into the dead-letter stream
// and, from a work-queue stream (where nothing else will ever take it),
// deletes it. A message the stream no longer holds is reported and
// skipped: there is nothing left to keep.
func (w *Watcher) move(a advisory) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := w.js.Stream(ctx, a.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		w.log.Warn("dead letters: the stream is gone, and the message with it", "stream", a.Stream, "consumer", a.Consumer, "seq", a.StreamSeq)
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.Stream, err)
	}
	raw, err := stream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		w.log.Warn("dead letters: the stream no longer holds the message", "stream", a.Stream, "consumer", a.Consumer, "seq", a.StreamSeq)
		return nil
	}
	if err != nil {
		return fmt.Errorf("read message %d of %s: %w", a.StreamSeq, a.Stream, err)
	}
	dead := w.letter(a, raw)
	// The same advisory handled twice (tock died before its ack) is one
	// dead letter: the stream drops the repeat by its message id.
	// (The stream is checked on the PubAck, not with an expected-stream
	// header, which would stay on the dead letter and make its redrive a
	// schedule with a reserved header.)
	ack, err := w.js.PublishMsg(ctx, dead)
	if err != nil {
		return fmt.Errorf("store the dead letter: %w", err)
	}
	if ack.Stream != delivery.DeadStream {
		return fmt.Errorf("store the dead letter: stream %s took it, not %s", ack.Stream, delivery.DeadStream)
	}
	if stream.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy {
		if err := stream.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			w.log.Warn("dead letters: stored, but the message stays in its work queue too", "stream", a.Stream, "seq", a.StreamSeq, "err", err)
		}
	}
	w.log.Info("dead letter", "stream", a.Stream, "consumer", a.Consumer, "seq", a.StreamSeq, "subject", raw.Subject, "id", dead.Header.Get(delivery.HeaderID))
	return nil
}

// letter is the dead letter of raw: its body and those of its headers a
// schedule may carry (so that a redrive is a valid schedule), under a new
// tock id, with where it came from and why.
func (w *Watcher) letter(a advisory, raw *jetstream.RawStreamMsg) *nats.Msg {
	now := time.Now().UnixMilli()
	w.mu.Lock()
	stamp := w.stamper.Next(now)
	w.mu.Unlock()
	id := msgid.Mint(now, stamp, msgid.Crypto).String()
	msg := nats.NewMsg(delivery.DeadSubject(id))
	msg.Data = raw.Data
	for k, vs := range raw.Header {
		if gateway.CheckHeader(k, vs) == nil {
			msg.Header[k] = vs
		}
	}
	msg.Header.Set(delivery.HeaderID, id)
	msg.Header.Set(delivery.HeaderTarget, raw.Subject)
	msg.Header.Set(delivery.HeaderDeadReason, fmt.Sprintf("consumer %s of stream %s delivered it %d times without an ack (its max_deliver)", a.Consumer, a.Stream, a.Deliveries))
	msg.Header.Set(delivery.HeaderAttempts, strconv.FormatUint(a.Deliveries, 10))
	msg.Header.Set(delivery.HeaderStream, a.Stream)
	msg.Header.Set(delivery.HeaderConsumer, a.Consumer)
	msg.Header.Set(delivery.HeaderStreamSeq, strconv.FormatUint(a.StreamSeq, 10))
	msg.Header.Set(jetstream.MsgIDHeader, "tock-dlq:"+a.Stream+":"+a.Consumer+":"+strconv.FormatUint(a.StreamSeq, 10))
	return msg
}
