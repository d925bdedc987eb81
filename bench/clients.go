package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/msgid"
)

// requestTimeout is how long a schedule request may stay unanswered
// before the sweep counts it as timed out and frees its slot.
const requestTimeout = 30 * time.Second

// acceptFunc receives an accepted schedule: its request index, id and deliver time.
type acceptFunc func(i int, id msgid.ID, deliverAt time.Time)

// producer sends pipelined schedule requests to tock on one connection:
// one wildcard inbox subscription, at most inflight requests outstanding.
type producer struct {
	nc       *nats.Conn
	inbox    string
	sub      *nats.Subscription
	slots    chan struct{}
	onAccept acceptFunc    // nil: replies are only counted
	onCount  func(n int64) // called with the accepted count after each accept

	mu      sync.Mutex
	sent    map[int]int64 // request index → send time (unix ns), outstanding only
	errs    map[string]int
	drained chan struct{} // signalled when sent becomes empty

	accepted, timedOut, errCount atomic.Int64
}

func newProducer(nc *nats.Conn, inflight int, onAccept acceptFunc) (*producer, error) {
	p := &producer{nc: nc, inbox: nc.NewInbox(), slots: make(chan struct{}, inflight), onAccept: onAccept,
		sent: map[int]int64{}, errs: map[string]int{}, drained: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(p.inbox+".*", p.reply)
	if err != nil {
		return nil, fmt.Errorf("reply subscription: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	p.sub = sub
	return p, nc.Flush()
}

// reply handles one answer from tock.
func (p *producer) reply(m *nats.Msg) {
	i, err := strconv.Atoi(m.Subject[strings.LastIndexByte(m.Subject, '.')+1:])
	if err != nil {
		return
	}
	p.mu.Lock()
	_, ok := p.sent[i]
	if ok {
		delete(p.sent, i)
	}
	p.mu.Unlock()
	if !ok {
		return // swept as timed out already
	}
	<-p.slots
	defer p.signalIfDrained()
	code := ""
	switch {
	case m.Header.Get("Nats-Service-Error-Code") != "":
		code = m.Header.Get("Nats-Service-Error-Code")
	case m.Header.Get("Status") == "503":
		code = "no responders"
	case !bytes.HasPrefix(m.Data, []byte(`{"id":"`)):
		code = "bad reply"
	}
	if code == "" && p.onAccept != nil {
		var r struct {
			ID        string    `json:"id"`
			DeliverAt time.Time `json:"deliver_at"`
		}
		var id msgid.ID
		err := json.Unmarshal(m.Data, &r)
		if err == nil {
			id, err = msgid.Parse(r.ID)
		}
		if err != nil {
			code = "bad reply"
		} else {
			p.onAccept(i, id, r.DeliverAt)
		}
	}
	if code != "" {
		p.errCount.Add(1)
		p.mu.Lock()
		p.errs[code]++
		p.mu.Unlock()
		return
	}
	n := p.accepted.Add(1)
	if p.onCount != nil {
		p.onCount(n)
	}
}

func (p *producer) signalIfDrained() {
	p.mu.Lock()
	empty := len(p.sent) == 0
	p.mu.Unlock()
	if empty {
		select {
		case p.drained <- struct{}{}:
		default:
		}
	}
}

// sweep counts requests outstanding for longer than requestTimeout as
// timed out and frees their slots.
func (p *producer) sweep(now time.Time) {
	limit := now.Add(-requestTimeout).UnixNano()
	p.mu.Lock()
	var stale []int
	for i, t := range p.sent {
		if t < limit {
			stale = append(stale, i)
		}
	}
	for _, i := range stale {
		delete(p.sent, i)
	}
	p.mu.Unlock()
	for range stale {
		p.timedOut.Add(1)
		<-p.slots
	}
	if len(stale) > 0 {
		p.signalIfDrained()
	}
}

// run sends n requests; fill sets the subject, headers and body of
// request i on a reused message (PublishMsg copies it out at once). It
// returns when every request is answered or timed out.
func (p *producer) run(ctx context.Context, n int, fill func(i int, m *nats.Msg)) error {
	return p.runRange(ctx, 0, n, fill)
}

// runRange is run for requests lo to hi-1: a producer may run several
// ranges one after the other, with pauses between them.
func (p *producer) runRange(ctx context.Context, lo, hi int, fill func(i int, m *nats.Msg)) error {
	stopSweep := make(chan struct{})
	defer close(stopSweep)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopSweep:
				return
			case now := <-t.C:
				p.sweep(now)
			}
		}
	}()
	m := &nats.Msg{Header: nats.Header{}}
	for i := lo; i < hi; i++ {
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("at request %d of %d to %d: %w", i, lo, hi, ctx.Err())
		}
		fill(i, m)
		m.Reply = p.inbox + "." + strconv.Itoa(i)
		p.mu.Lock()
		p.sent[i] = time.Now().UnixNano()
		p.mu.Unlock()
		if err := p.nc.PublishMsg(m); err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
	}
	if err := p.nc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	for {
		p.mu.Lock()
		left := len(p.sent)
		p.mu.Unlock()
		if left == 0 {
			return nil
		}
		select {
		case <-p.drained:
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d replies: %w", left, ctx.Err())
		}
	}
}

func (p *producer) close() { _ = p.sub.Unsubscribe() }

// errorSummary is "503×12, timeout×3" or "".
func (p *producer) errorSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p.errs)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, p.errs[k]))
	}
	if t := p.timedOut.Load(); t > 0 {
		parts = append(parts, fmt.Sprintf("timeout×%d", t))
	}
	return strings.Join(parts, ", ")
}

// body returns a body of size bytes.
func body(size int) []byte {
	b := bytes.Repeat([]byte("tock-bench "), size/11+1)
	return b[:size]
}

// scheduleFill returns a fill function for schedule requests to target
// with deliver time due(i).
func scheduleFill(target string, data []byte, due func(i int) time.Time) func(int, *nats.Msg) {
	subject := "tock.schedule." + target
	return func(i int, m *nats.Msg) {
		m.Subject = subject
		m.Header.Set("Tock-Deliver-At", due(i).UTC().Format(time.RFC3339Nano))
		m.Data = data
	}
}

// jsPublish publishes n messages made by mk with PublishMsgAsync, at most
// inflight unacknowledged, and returns how many were PubAck'd, how many
// failed, and the elapsed time from the first publish to the last ack.
func jsPublish(ctx context.Context, nc *nats.Conn, n, inflight int, mk func(i int) *nats.Msg, progress *atomic.Int64) (acked, failed int64, elapsed time.Duration, firstErr error) {
	var ok, bad atomic.Int64
	var errMu sync.Mutex
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(inflight),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) {
			ok.Add(1)
			if progress != nil {
				progress.Add(1)
			}
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			bad.Add(1)
			errMu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			errMu.Unlock()
		}))
	if err != nil {
		return 0, 0, 0, err
	}
	start := time.Now()
	for i := range n {
		if ctx.Err() != nil {
			return ok.Load(), bad.Load(), time.Since(start), fmt.Errorf("after %d of %d publishes: %w", i, n, ctx.Err())
		}
		// A long stall wait: the pending limit is the pipelining, and
		// hitting it is normal, not an error.
		if _, err := js.PublishMsgAsync(mk(i), jetstream.WithStallWait(requestTimeout)); err != nil {
			return ok.Load(), bad.Load(), time.Since(start), fmt.Errorf("publish %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ok.Load(), bad.Load(), time.Since(start), fmt.Errorf("waiting for %d PubAcks: %w", js.PublishAsyncPending(), ctx.Err())
	}
	errMu.Lock()
	defer errMu.Unlock()
	return ok.Load(), bad.Load(), time.Since(start), firstErr
}

// createStream creates (or replaces) a file stream.
func createStream(ctx context.Context, nc *nats.Conn, cfg jetstream.StreamConfig) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("create stream %s: %w", cfg.Name, err)
	}
	return nil
}

// readIDs reads every message of stream (filtered to subject) with an
// ordered consumer and counts the distinct Tock-Id headers and the copies.
func readIDs(ctx context.Context, nc *nats.Conn, stream, subject string, want uint64) (ids map[msgid.ID]int, total uint64, err error) {
	res, err := readBack(ctx, nc, stream, subject, want)
	return res.ids, res.total, err
}

// readResult is what readBack found in a target stream.
type readResult struct {
	ids   map[msgid.ID]int // copies per distinct Tock-Id
	total uint64           // messages read
	early int              // copies stored before their Tock-Deliver-At
	bad   int              // copies without a parsable Tock-Id or Tock-Deliver-At
}

// readBack reads want messages of stream (filtered to subject) with an
// ordered consumer: the distinct Tock-Id headers and their copies, and
// the copies the stream stored (its own timestamp) before their
// Tock-Deliver-At.
func readBack(ctx context.Context, nc *nats.Conn, stream, subject string, want uint64) (readResult, error) {
	res := readResult{ids: make(map[msgid.ID]int, want)}
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return res, fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return res, fmt.Errorf("ordered consumer on %s: %w", stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(10_000))
	if err != nil {
		return res, err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for res.total < want {
		m, err := it.Next()
		if err != nil {
			return res, fmt.Errorf("read %s after %d of %d: %w", stream, res.total, want, err)
		}
		res.total++
		id, idErr := msgid.Parse(m.Headers().Get("Tock-Id"))
		due, dueErr := time.Parse(time.RFC3339Nano, m.Headers().Get("Tock-Deliver-At"))
		md, mdErr := m.Metadata()
		if idErr == nil {
			res.ids[id]++
		}
		switch {
		case idErr != nil || dueErr != nil || mdErr != nil:
			res.bad++
		case md.Timestamp.Before(due):
			res.early++
		}
	}
	return res, nil
}

// progressLine prints status() to w every interval until stop is called.
func progressLine(w io.Writer, every time.Duration, status func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintln(w, status())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// countProgress returns a status function "label: 412,000/1,000,000 verb, 91k/s"
// that rates the progress since its previous call.
func countProgress(label, verb string, n int, count func() int64) func() string {
	last, lastT := int64(0), time.Now()
	return func() string {
		c, now := count(), time.Now()
		rate := float64(c-last) / now.Sub(lastT).Seconds()
		last, lastT = c, now
		return fmt.Sprintf("%s: %s/%s %s, %s/s", label, groupThousands(c), groupThousands(int64(n)), verb, shortCount(rate))
	}
}

// shortCount prints 91k, 1.2M.
func shortCount(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// atomicCounter is an atomic.Int64 with a Load method value that fits
// countProgress.
type atomicCounter struct{ atomic.Int64 }
