// Package delivery publishes due messages to their target subjects.
//
// A target that a JetStream stream captures gets a publish that waits for
// the stream's PubAck and is retried with back-off until acknowledged, so
// the message is stored at least once; Nats-Msg-Id carries the tock id, so
// the stream's duplicate window drops a repeat after a crash. A target no
// stream captures gets a plain core publish. Which streams capture what is
// listed in the background (capture.go).
package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pingcap/failpoint"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
)

// Headers tock sets on every delivered message.
const (
	HeaderID        = "Tock-Id"
	HeaderDeliverAt = "Tock-Deliver-At"
)

// TimeFormat is how tock writes times: RFC 3339, milliseconds, UTC.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Config tunes the publisher; zero fields take defaults.
type Config struct {
	MaxAckPending int // stream publishes awaiting PubAck (default 4096)
	// MaxAckPendingPerTarget bounds those of one target (default a
	// quarter of MaxAckPending), so a target that acks slowly or never
	// leaves room for the others; its further deliveries wait, parked,
	// without holding up anyone else's.
	MaxAckPendingPerTarget int
	AckTimeout             time.Duration // per publish (default 5s)
	MinBackoff             time.Duration // first retry delay (default 10ms)
	MaxBackoff             time.Duration // retry delay cap (default 5s)
	// StreamRefresh is how often the streams' subjects are listed: a
	// stream created later is noticed within it (default 1s). A listing
	// older than StreamStale, because listing fails, is not trusted:
	// every target counts as captured (default 10s).
	StreamRefresh, StreamStale time.Duration
	// Policy bounds the retries of a delivery before it is dead-lettered
	// (dead.go); a delivery's Tock-Max-Attempts and Tock-Max-Age headers
	// override it. Zero fields: no bound of that kind.
	Policy Policy
}

func (c Config) withDefaults() Config {
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 4096
	}
	if c.MaxAckPendingPerTarget <= 0 {
		c.MaxAckPendingPerTarget = max(c.MaxAckPending/4, 1)
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 10 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.StreamRefresh <= 0 {
		c.StreamRefresh = time.Second
	}
	if c.StreamStale <= 0 {
		c.StreamStale = 10 * time.Second
	}
	return c
}

type job struct {
	d       slot.Delivery
	done    func(slot.Outcome)
	attempt int       // failed attempts so far
	first   time.Time // of the first attempt, for the policy's MaxAge
	// dead, once set, is why the job is dead-lettered: it is then
	// published to the dead-letter stream, retried until stored.
	dead      string
	deadTries int // failed publishes of the dead letter
	// reserved: unpark counted this job as awaiting its PubAck before
	// handing it back to the run loop.
	reserved bool
}

// budget names the room j's publish takes and parks in: its target's, or
// the dead-letter stream's once it is dead. Taking room under one name and
// freeing it under another leaked the dead-letter stream's room until dead
// letters (and then the refusing target's own deliveries, parked behind
// them) waited for good.
func (j *job) budget() string {
	if j.dead != "" {
		return DeadStream
	}
	return j.d.Target
}

// awaited is a stream publish waiting for its PubAck.
type awaited struct {
	job      *job
	deadline time.Time
}

// Publisher implements actors.Publisher over one NATS connection. Sharing
// the connection with the journal matters: a core publish is written to
// the connection before the Fired event that records it.
//
// Stream publishes are pipelined: each carries a reply subject under the
// publisher's own inbox, and one subscription matches PubAcks back to
// their jobs. A sweep retries publishes whose PubAck did not come within
// AckTimeout. (jetstream.PublishMsgAsync does the same with a timer, two
// channels and a JSON decode per message; profiles of burst firing showed
// that bookkeeping as a large share of the publisher's cost.)
type Publisher struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	clk clock.Clock
	cfg Config
	log *slog.Logger

	inbox string // PubAcks arrive on inbox.<token>
	sub   *nats.Subscription

	captures atomic.Pointer[captureSet]
	// changes counts stream advisories; capMu orders them with storing a
	// listing, so one taken before a change never replaces its nil.
	changes atomic.Uint64
	capMu   sync.Mutex
	relist  chan struct{} // asks for a new listing of the streams
	// listFailing: the last listing failed (only New and
	// refreshCaptures touch it, one after the other).
	listFailing bool
	// advisories subscribe to stream changes (capture.go).
	advisories []*nats.Subscription

	mu      sync.Mutex
	queue   []*job
	wake    chan struct{}
	closed  bool
	next    uint64              // last token handed out
	waiting map[uint64]*awaited // by token
	// Stream publishes awaiting their PubAck, in all and per target; jobs
	// beyond the bounds wait in parked, by target, and parkOrder lists
	// those targets for a round-robin resume (one per settled publish).
	awaiting  int
	perTarget map[string]int
	parked    map[string][]*job
	parkOrder []string
	// resuming counts, per target, unparked jobs on their way back through
	// the queue: a newer job to that target parks behind them, or it could
	// overtake them while they travel.
	resuming map[string]int
	// unlisted are deliveries to a target no stream captured in a listing
	// older than them, waiting for a newer one (coreSure).
	unlisted []*job

	quit chan struct{}
	// ctx ends at Close: it bounds the JetStream requests of listings.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a publisher on nc.
func New(nc *nats.Conn, clk clock.Clock, cfg Config, log *slog.Logger) (*Publisher, error) {
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{
		nc: nc, js: js, clk: clk, cfg: cfg, log: log,
		inbox: nc.NewInbox(), perTarget: make(map[string]int), parked: make(map[string][]*job),
		resuming: make(map[string]int),
		wake:     make(chan struct{}, 1), relist: make(chan struct{}, 1),
		waiting: make(map[uint64]*awaited), quit: make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.sub, err = nc.Subscribe(p.inbox+".*", p.onAck)
	if err != nil {
		p.cancel()
		return nil, fmt.Errorf("subscribe to PubAcks: %w", err)
	}
	// Never drop a PubAck: a dropped one costs a redundant retry after
	// AckTimeout. MaxAckPending bounds what can be pending anyway.
	if err := p.sub.SetPendingLimits(-1, -1); err != nil {
		_ = p.sub.Unsubscribe()
		p.cancel()
		return nil, fmt.Errorf("PubAck subscription limits: %w", err)
	}
	for _, subj := range streamAdvisories {
		sub, err := nc.Subscribe(subj, func(*nats.Msg) { p.onStreamChange() })
		if err != nil {
			_ = p.sub.Unsubscribe()
			p.cancel()
			return nil, fmt.Errorf("subscribe to stream advisories: %w", err)
		}
		p.advisories = append(p.advisories, sub)
	}
	// The first listing before the first delivery, so a fresh start does
	// not treat every target as captured; it is bounded by AckTimeout.
	p.listCaptures()
	p.wg.Add(3)
	go p.run()
	go p.sweep()
	go p.refreshCaptures()
	return p, nil
}

// Publish queues d; done runs once it is confirmed.
func (p *Publisher) Publish(d slot.Delivery, done func(slot.Outcome)) {
	p.enqueue(&job{d: d, done: done, first: p.clk.Now()})
}

func (p *Publisher) enqueue(j *job) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return // not confirmed: the slot fires it again after a restart
	}
	p.queue = append(p.queue, j)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close stops publishing. Unconfirmed deliveries are abandoned; they were
// never recorded as fired, so they fire again on the next start.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.quit)
	p.cancel()
	_ = p.sub.Unsubscribe()
	for _, sub := range p.advisories {
		_ = sub.Unsubscribe()
	}
	p.wg.Wait()
}

func (p *Publisher) run() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		p.mu.Unlock()
		for _, j := range batch {
			if !p.send(j) {
				return
			}
		}
		select {
		case <-p.wake:
		case <-p.quit:
			return
		}
	}
}

// send publishes one job; false means the publisher is closing.
func (p *Publisher) send(j *job) bool {
	// Failpoint publishFail: the publish is not sent; it takes the retry path.
	failpoint.Inject("publishFail", func() {
		p.unreserve(j)
		p.retry(j, errors.New("failpoint publishFail"))
		failpoint.Return(true)
	})
	msg, key := p.message(j.d), j.budget()
	if j.dead != "" {
		msg = p.deadMessage(j)
	} else if !p.captured(j.d.Target) {
		p.unreserve(j) // the stream went away since it was parked
		if !p.coreSure(j.d) {
			p.awaitListing(j)
			return true
		}
		if err := p.nc.PublishMsg(msg); err != nil {
			p.retry(j, err)
			return true
		}
		j.done(slot.Outcome{})
		return true
	}
	p.mu.Lock()
	switch t := key; {
	case j.reserved:
		j.reserved = false // unpark counted it already
		p.resumed(t)
	case p.awaiting >= p.cfg.MaxAckPending || p.perTarget[t] >= p.cfg.MaxAckPendingPerTarget ||
		len(p.parked[t]) > 0 || p.resuming[t] > 0:
		// Behind the target's parked and resuming jobs too, so it keeps its order.
		p.park(j)
		p.mu.Unlock()
		return true
	default:
		p.awaiting++
		p.perTarget[t]++
	}
	p.next++
	token := p.next
	p.waiting[token] = &awaited{job: j, deadline: p.clk.Now().Add(p.cfg.AckTimeout)}
	p.mu.Unlock()
	msg.Reply = p.inbox + "." + strconv.FormatUint(token, 10)
	if err := p.nc.PublishMsg(msg); err != nil {
		if p.settle(token) != nil {
			p.retry(j, err)
		}
	}
	return true
}

// settle removes the job awaiting token's PubAck and frees its room,
// which goes to a parked job if there is one; nil means it was settled
// already (answered, or swept as timed out).
func (p *Publisher) settle(token uint64) *job {
	p.mu.Lock()
	a := p.waiting[token]
	delete(p.waiting, token)
	var resume *job
	if a != nil {
		resume = p.release(a.job.budget())
	}
	p.mu.Unlock()
	if resume != nil {
		p.enqueue(resume)
	}
	if a == nil {
		return nil
	}
	return a.job
}

// unreserve gives back the room unpark reserved for j, if it did: j is
// not going to await a PubAck after all.
func (p *Publisher) unreserve(j *job) {
	if !j.reserved {
		return
	}
	j.reserved = false
	p.mu.Lock()
	p.resumed(j.budget())
	resume := p.release(j.budget())
	p.mu.Unlock()
	if resume != nil {
		p.enqueue(resume)
	}
}

// release frees the room of one publish to target and returns the parked
// job it goes to, if any. p.mu held.
func (p *Publisher) release(target string) *job {
	p.awaiting--
	if p.perTarget[target]--; p.perTarget[target] <= 0 {
		delete(p.perTarget, target)
	}
	return p.unpark()
}

// resumed notes that an unparked job to target left the queue. p.mu held.
func (p *Publisher) resumed(target string) {
	if p.resuming[target]--; p.resuming[target] <= 0 {
		delete(p.resuming, target)
	}
}

// park holds j until its target and the publisher have room. p.mu held.
func (p *Publisher) park(j *job) {
	t := j.budget()
	if len(p.parked[t]) == 0 {
		p.parkOrder = append(p.parkOrder, t)
	}
	p.parked[t] = append(p.parked[t], j)
}

// unpark takes the first parked job of the first target, in round-robin
// order, that has room, and reserves that room for it; or nil. p.mu held. It walks at most every parked
// target: one per target that is full, and they are few unless many
// targets are slow at once.
func (p *Publisher) unpark() *job {
	if p.awaiting >= p.cfg.MaxAckPending {
		return nil
	}
	for i, t := range p.parkOrder {
		if p.perTarget[t] >= p.cfg.MaxAckPendingPerTarget {
			continue
		}
		q := p.parked[t]
		j := q[0]
		j.reserved = true
		p.awaiting++
		p.perTarget[t]++
		p.resuming[t]++
		q[0] = nil
		if q = q[1:]; len(q) == 0 {
			delete(p.parked, t)
			p.parkOrder = append(p.parkOrder[:i], p.parkOrder[i+1:]...)
		} else {
			p.parked[t] = q
			// The target goes to the back: the next resume serves another.
			p.parkOrder = append(append(p.parkOrder[:i], p.parkOrder[i+1:]...), t)
		}
		return j
	}
	return nil
}

// onAck handles a PubAck, a JetStream error or a no-responders status.
func (p *Publisher) onAck(m *nats.Msg) {
	token, err := strconv.ParseUint(m.Subject[len(p.inbox)+1:], 10, 64)
	if err != nil {
		return
	}
	j := p.settle(token)
	if j == nil {
		return // a late answer to a publish already retried
	}
	if err := pubAckError(m); err != nil {
		p.retry(j, err)
		return
	}
	// Failpoint publishAckLost: the message is stored, but taken as
	// failed and retried; the stream's duplicate window (Nats-Msg-Id)
	// drops the repeat.
	failpoint.Inject("publishAckLost", func() {
		p.retry(j, errors.New("failpoint publishAckLost"))
		failpoint.Return()
	})
	if j.dead != "" {
		p.log.Warn("delivery dead-lettered", "id", j.d.ID.String(), "target", j.d.Target, "attempts", j.attempt, "reason", j.dead)
		j.done(slot.Outcome{Dead: true, Reason: j.dead})
		return
	}
	j.done(slot.Outcome{})
}

// errNoStream reports that no stream answered a publish to a captured target.
var errNoStream = errors.New("no stream answered the publish")

// pubAckError tells a PubAck ({"stream":…,"seq":…}) from anything else.
// Only the error case is decoded: a PubAck needs no fields of its own.
func pubAckError(m *nats.Msg) error {
	if len(m.Data) == 0 {
		if m.Header.Get("Status") == "503" {
			return errNoStream
		}
		return fmt.Errorf("empty PubAck (status %q)", m.Header.Get("Status"))
	}
	if !bytes.Contains(m.Data, []byte(`"error"`)) {
		if bytes.Contains(m.Data, []byte(`"stream"`)) {
			return nil
		}
		return fmt.Errorf("not a PubAck: %q", m.Data)
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Error == nil {
		return fmt.Errorf("not a PubAck: %q", m.Data)
	}
	return r.Error
}

// sweep retries stream publishes whose PubAck is overdue.
func (p *Publisher) sweep() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.cfg.AckTimeout/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-p.quit:
			return
		}
		now := p.clk.Now()
		var overdue []uint64
		p.mu.Lock()
		for token, a := range p.waiting {
			if now.After(a.deadline) {
				overdue = append(overdue, token)
			}
		}
		p.mu.Unlock()
		for _, token := range overdue {
			if j := p.settle(token); j != nil {
				p.retry(j, nats.ErrTimeout)
			}
		}
	}
}

func (p *Publisher) retry(j *job, err error) {
	if errors.Is(err, errNoStream) || errors.Is(err, nats.ErrNoResponders) {
		p.relistSoon() // the stream went away: look again
	}
	if j.dead == "" {
		j.attempt++
		if j.dead = p.giveUp(j, err); j.dead != "" {
			p.enqueue(j) // to the dead-letter stream, at once
			return
		}
	}
	// A dead letter that cannot be stored is retried like a delivery,
	// without end: it is never dropped.
	tries := j.attempt
	if j.dead != "" {
		j.deadTries++
		tries = j.deadTries
	}
	d := p.cfg.MinBackoff << min(tries-1, 20)
	d = min(d, p.cfg.MaxBackoff)
	level := slog.LevelDebug
	if tries == 1 {
		level = slog.LevelWarn // the first failure of each; the rest would flood
	}
	p.log.Log(p.ctx, level, "delivery failed; retrying", "id", j.d.ID.String(), "target", j.d.Target, "attempt", j.attempt, "in", d, "dead_letter", j.dead != "", "err", err)
	p.clk.AfterFunc(d, func() { p.enqueue(j) })
}

func (p *Publisher) message(d slot.Delivery) *nats.Msg {
	msg := nats.NewMsg(d.Target)
	for k, vs := range d.Header {
		if k == HeaderMaxAttempts || k == HeaderMaxAge {
			continue // tock's, not the target's
		}
		msg.Header[k] = append([]string(nil), vs...)
	}
	id := d.ID.String()
	msg.Header.Set(HeaderID, id)
	msg.Header.Set(HeaderDeliverAt, time.UnixMilli(d.DeliverAt).UTC().Format(TimeFormat))
	msg.Header.Set(jetstream.MsgIDHeader, id)
	msg.Data = d.Body
	return msg
}

// captured reports whether a stream stores target, from the last
// listing (capture.go): no I/O.
func (p *Publisher) captured(target string) bool {
	return p.captures.Load().captures(target, p.clk.Now(), p.cfg.StreamStale)
}
