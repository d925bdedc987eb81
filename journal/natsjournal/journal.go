// Package natsjournal is tock's journal on NATS JetStream: one stream,
// a subject per near slot and one per far day (layout.go), appends
// group-committed by one flusher. It implements journal.Journal; the
// events, their codec and the contract live in package journal, which
// knows nothing of NATS.
package natsjournal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pingcap/failpoint"

	"github.com/tockd/tock/journal"
)

var (
	// ErrSlotWidthMismatch: the journal stream was created for another slot
	// width. Ids map to slots by width, so reusing the data with another
	// width would look for messages in the wrong slots.
	ErrSlotWidthMismatch = errors.New("journal slot width mismatch")
)

// SlotWidthKey is the stream metadata key holding the slot width in ms.
const SlotWidthKey = "tock_slot_width_ms"

const (
	DefaultStream        = "TOCK_JOURNAL"
	defaultPrefix        = "tock.journal"
	defaultAckTimeout    = 5 * time.Second
	defaultMaxQueueBytes = 64 << 20
	// recordMargin is kept free below the server's max payload for the
	// headers a future version or a proxy might add.
	recordMargin = 1024
	// duplicateWindow is the server's minimum: records carry no msg ids,
	// so a longer window would only cost server memory.
	duplicateWindow = 100 * time.Millisecond
	// maxAcksPending bounds the publishes awaiting acks; a round larger
	// than this waits for acks of its own first records.
	maxAcksPending = 16384
)

// Config configures New. Zero fields take defaults, except
// SlotWidth, which is required.
type Config struct {
	// Stream is the JetStream stream name. Default TOCK_JOURNAL.
	Stream string
	// Prefix of slot subjects: slot k lives on Prefix.k. Default tock.journal.
	Prefix string
	// SlotWidth is the time span of one slot, a positive whole number of
	// milliseconds. It is stored in the stream metadata; opening a stream
	// made with another width fails with ErrSlotWidthMismatch.
	SlotWidth time.Duration
	// AckTimeout bounds each group-commit round and each read request.
	// Default 5s.
	AckTimeout time.Duration
	// MaxRecordBytes caps one stored record. Default: the server's max
	// payload less 1 KiB.
	MaxRecordBytes int
	// MaxQueueBytes caps the encoded appends waiting for the next round;
	// beyond it Append fails with ErrUnavailable instead of growing memory
	// without bound while the server is slow or away. Default 64 MiB.
	MaxQueueBytes int
	// BucketWidth is the span of deliver times one far subject holds
	// (layout.go), rounded up to whole slots. Default 24 h. It is
	// stored in the stream metadata; a stream made with another width
	// keeps its own.
	BucketWidth time.Duration
	// FineWindow is how long before its start a bucket opens into one
	// subject per slot. Default 24 h. It must exceed the scheduler's
	// horizon, so every slot the scheduler loads ahead of time is open.
	FineWindow time.Duration
	// Now is the clock that opens buckets. Default time.Now.
	Now func() time.Time
	// Logger gets the flusher's warnings. Default: discarded.
	Logger *slog.Logger
	// ReadConn, if set, carries the journal's reads (slot scans, subject
	// listings). The server answers a batched direct get on the connection
	// that asked, in that connection's turn: a big slot's load on the
	// connection deliveries use would hold their publishes back behind
	// megabytes of records. Default: the journal's own connection.
	ReadConn *nats.Conn
	// QuarantineStream and QuarantinePrefix name the stream and subjects
	// that keep copies of refused records (quarantine.go). Defaults:
	// TOCK_QUARANTINE on tock.quarantine.>, or Stream_QUARANTINE on
	// Prefix_quarantine.> for a journal not under the default names.
	QuarantineStream, QuarantinePrefix string
	// SkipRecordCheck trusts every record that decodes: only for tests
	// that store events of any shape in any slot (the contract suite).
	SkipRecordCheck bool
}

func (c Config) withDefaults(nc *nats.Conn) (Config, error) {
	if c.SlotWidth <= 0 || c.SlotWidth%time.Millisecond != 0 {
		return c, fmt.Errorf("journal: slot width %v is not a positive whole number of milliseconds", c.SlotWidth)
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = defaultPrefix
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = defaultAckTimeout
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = defaultMaxQueueBytes
	}
	if c.BucketWidth <= 0 {
		c.BucketWidth = defaultBucketWidth
	}
	if c.FineWindow <= 0 {
		c.FineWindow = defaultFineWindow
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReadConn == nil {
		c.ReadConn = nc
	}
	maxPayload := int(nc.MaxPayload())
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = maxPayload - recordMargin
	}
	if c.MaxRecordBytes <= 0 || c.MaxRecordBytes > maxPayload {
		return c, fmt.Errorf("journal: max record bytes %d does not fit the server's max payload %d", c.MaxRecordBytes, maxPayload)
	}
	return c, nil
}

func (c Config) widthMs() string {
	return strconv.FormatInt(c.SlotWidth.Milliseconds(), 10)
}

// bucketMs is the bucket width in ms, a whole number of slots.
func (c Config) bucketMs() int64 {
	w := c.SlotWidth.Milliseconds()
	return max(1, (c.BucketWidth.Milliseconds()+w-1)/w) * w
}

// Journal is the JetStream journal.Journal: one stream, one subject per
// near slot and one per far day.
//
// Appends are group-committed by one flusher goroutine, which also runs
// the done callbacks, in call order: done must be quick, and must not call
// Close (Close waits for the flusher). Several consecutive Appends to one
// slot may share a record, and so a sequence and a Tail.
type Journal struct {
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	widthMs     int64
	bucketSlots int64 // slots per bucket

	mu     sync.Mutex
	queue  []*op
	qbytes int
	closed bool
	// opened is the highest open bucket: every bucket up to it is open.
	opened int64
	// far holds the buckets above opened that may have far records.
	far map[int64]struct{}
	// stale holds opened buckets whose far records are still to be
	// purged, up to that sequence.
	stale map[int64]uint64
	// newest is the largest At stored, or found stored at start.
	newest atomic.Int64
	// metaAt is the newest value stored in the meta record (flusher only).
	metaAt int64
	// quar counts refused records; quarPrefix is where their copies go.
	quar       journal.QuarantineLog
	quarPrefix string
	wake       chan struct{} // buffered 1: "the queue or closed changed"
	stopped    chan struct{} // closed when the flusher has returned
}

var _ journal.Journal = (*Journal)(nil)

// op is one Append, encoded.
type op struct {
	slot int64
	// chunks are records on their own (EncodeRecord output); more than one
	// if the Append exceeds MaxRecordBytes.
	chunks [][]byte
	size   int
	maxAt  int64 // the largest At of its events
	farOK  bool  // may go to its slot's far bucket (farEligible)
	done   func(uint64, error)
	err    error     // failed before publishing
	recs   []*record // where its chunks went
	meta   *record   // the round's meta record, which it needs stored too
}

// record is one message of a round.
type record struct {
	slot   int64 // the slot, or for a far record the bucket
	subj   string
	header nats.Header
	data   []byte
	// parts are the chunks group packs into data, and size the length
	// they make together (see group).
	parts [][]byte
	size  int
	fut   jetstream.PubAckFuture
	seq   uint64
	err   error
}

// New opens the journal on nc, creating or updating its stream. It
// does not own nc: close the journal before the connection.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Journal, error) {
	cfg, err := cfg.withDefaults(nc)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc,
		// The round deadline decides; this only frees lost acks' state.
		jetstream.WithPublishAsyncTimeout(2*cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(maxAcksPending),
		jetstream.WithDefaultTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	stream, err := ensureStream(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	if limit := int(stream.CachedInfo().Config.MaxMsgSize); limit > 0 && limit < cfg.MaxRecordBytes {
		// An operator's message size limit on the stream wins: records
		// above it would be refused.
		cfg.MaxRecordBytes = limit
	}
	n := &Journal{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		stream:  stream,
		widthMs: cfg.SlotWidth.Milliseconds(),
		far:     make(map[int64]struct{}),
		stale:   make(map[int64]uint64),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	bucketMs, err := strconv.ParseInt(stream.CachedInfo().Config.Metadata[BucketWidthKey], 10, 64)
	if err != nil || bucketMs <= 0 || bucketMs%n.widthMs != 0 {
		return nil, fmt.Errorf("journal stream %s: bad %s %q", cfg.Stream, BucketWidthKey, stream.CachedInfo().Config.Metadata[BucketWidthKey])
	}
	n.bucketSlots = bucketMs / n.widthMs
	qStream, qPrefix := cfg.quarantineNames()
	n.quarPrefix = qPrefix
	if err := ensureQuarantine(ctx, js, qStream, qPrefix); err != nil {
		// Refused records are skipped all the same; only their copies fail.
		cfg.Logger.Warn("journal: no quarantine stream; refused records will not be copied", "stream", qStream, "err", err)
	}
	newest, err := n.Newest(ctx)
	if err != nil {
		return nil, err
	}
	n.newest.Store(newest)
	n.metaAt = newest // what the meta record holds, or less: no rewrite needed
	far, err := n.listFar(ctx)
	if err != nil {
		return nil, err
	}
	n.opened = math.MinInt64
	for _, b := range far {
		n.far[b] = struct{}{}
	}
	// Open what is due before anyone reads: a slot the scheduler recovers
	// at start must be listed by Slots, which reads only slot subjects.
	if err := n.openUpTo(n.openTarget(cfg.Now().UnixMilli())); err != nil {
		return nil, fmt.Errorf("journal stream %s: %w", cfg.Stream, err)
	}
	go n.flush()
	return n, nil
}

// MaxRecordBytes is the effective record size cap. One event's encoding
// (roughly its body, target and headers plus 40 bytes) must fit in it.
func (n *Journal) MaxRecordBytes() int { return n.cfg.MaxRecordBytes }

func (n *Journal) subject(slot int64) string {
	return n.cfg.Prefix + "." + strconv.FormatInt(slot, 10)
}

// Append encodes events at once, in the caller's goroutine (so callers
// encode in parallel and may reuse events afterwards), and queues them for
// the next round.
func (n *Journal) Append(slot int64, events []journal.Event, done func(seq uint64, err error)) {
	if done == nil {
		done = func(uint64, error) {} // fire and forget; not worth a crash in the flusher
	}
	o := &op{slot: slot, done: done, farOK: n.farEligible(slot, events)}
	for i := range events {
		o.maxAt = max(o.maxAt, events[i].At)
	}
	if err := journal.Validate(events); err != nil {
		o.err = fmt.Errorf("append slot %d: %w", slot, err)
	} else if o.chunks, o.err = n.encode(events); o.err != nil {
		o.err = fmt.Errorf("append slot %d: %w", slot, o.err)
	}
	for _, c := range o.chunks {
		o.size += len(c)
	}
	if !n.enqueue(o) {
		go done(0, fmt.Errorf("append slot %d: %w", slot, journal.ErrClosed))
	}
}

// encode is journal.EncodeChunks, but a record that fits is encoded into
// one buffer of its size: grown from nil, a 256-byte schedule was copied
// through five reallocations on every Append.
func (n *Journal) encode(events []journal.Event) ([][]byte, error) {
	if est := encodedSize(events); est <= n.cfg.MaxRecordBytes {
		return [][]byte{journal.EncodeRecord(make([]byte, 0, est), events)}, nil
	}
	return journal.EncodeChunks(events, n.cfg.MaxRecordBytes)
}

// encodedSize bounds the encoding of events as one record from above: a
// varint takes at most 10 bytes (journal/codec.go has the layout).
func encodedSize(events []journal.Event) int {
	const varint = binary.MaxVarintLen64
	size := 1 + varint // version, count
	for i := range events {
		ev := &events[i]
		// head, At, deliver time, id stamp and random part, deliver delta, target, header count, body
		size += 1 + 4*varint + 16 + varint + len(ev.Target) + varint + varint + len(ev.Body)
		for k, vs := range ev.Header {
			size += 2*varint + len(k)
			for _, v := range vs {
				size += varint + len(v)
			}
		}
	}
	return size
}

// enqueue queues o for the flusher, which calls its done even if o failed
// already: done must not run inside Append, and in order is nicer.
func (n *Journal) enqueue(o *op) bool {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return false
	}
	if o.err == nil && n.qbytes > 0 && n.qbytes+o.size > n.cfg.MaxQueueBytes {
		o.err = fmt.Errorf("append slot %d: %w: %d bytes already queued", o.slot, journal.ErrUnavailable, n.qbytes)
	}
	n.queue = append(n.queue, o)
	n.qbytes += o.size
	n.mu.Unlock()
	n.signal()
	return true
}

func (n *Journal) signal() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// flush is the flusher goroutine: one round at a time, so a round's
// records are stored (or failed) before the next round's are sent, which
// keeps each slot's records in call order even across failures.
//
// Between rounds it opens the far buckets whose time has come
// (layout.go): no append is being written while a bucket's records
// are copied, so none can slip between the copy and the purge.
func (n *Journal) flush() {
	defer close(n.stopped)
	timer := time.AfterFunc(time.Hour, n.signal)
	defer timer.Stop()
	for {
		timer.Reset(n.openDue())
		ops, closed := n.take()
		if len(ops) > 0 {
			recs := n.group(ops)
			n.publishRound(recs, n.cfg.AckTimeout)
			if len(ops) > 0 && ops[0].meta != nil && ops[0].meta.err == nil {
				n.metaAt, _ = strconv.ParseInt(ops[0].meta.header.Get(newestHeader), 10, 64)
			}
			for _, o := range ops {
				o.finish()
			}
			continue
		}
		if closed {
			return
		}
	}
}

// take takes every queued op, or waits for a signal if there are none; it
// reports whether the journal is closed.
func (n *Journal) take() ([]*op, bool) {
	n.mu.Lock()
	if len(n.queue) > 0 {
		ops := n.queue
		n.queue, n.qbytes = nil, 0
		n.mu.Unlock()
		return ops, false
	}
	closed := n.closed
	n.mu.Unlock()
	if !closed {
		<-n.wake
	}
	return nil, closed
}

// group packs the chunks of ops into records: each chunk joins the last
// record of its slot if it fits, or starts a new one. Later records of a
// slot only ever get later chunks, so publishing records in creation order
// keeps each slot's order.
//
// An op whose slot's bucket is far goes to the bucket's far subject,
// where records mix the bucket's slots. The route is decided here, not in
// Append, so that it changes only between rounds, where buckets open.
func (n *Journal) group(ops []*op) []*record {
	type key struct {
		far bool
		idx int64
	}
	var recs []*record
	last := make(map[key]*record)
	n.mu.Lock()
	opened := n.opened
	for _, o := range ops {
		if b := n.bucketOf(o.slot); o.err == nil && o.farOK && b > opened {
			n.far[b] = struct{}{} // before the record exists: loads read it from now on
		}
	}
	n.mu.Unlock()
	for _, o := range ops {
		if o.err != nil {
			continue
		}
		if o.maxAt > n.newest.Load() {
			n.newest.Store(o.maxAt) // the flusher is the only writer
		}
		o.meta = nil
		k := key{idx: o.slot}
		if b := n.bucketOf(o.slot); o.farOK && b > opened {
			k = key{far: true, idx: b}
		}
		for _, c := range o.chunks {
			r := last[k]
			if r == nil || r.size+len(c)-1 > n.cfg.MaxRecordBytes {
				r = &record{slot: k.idx, subj: n.subject(k.idx), size: len(c)}
				if k.far {
					r.subj = n.farSubject(k.idx)
				}
				last[k] = r
				recs = append(recs, r)
			} else {
				r.size += len(c) - 1 // AppendBatches drops the version byte
			}
			r.parts = append(r.parts, c)
			if len(o.recs) == 0 || o.recs[len(o.recs)-1] != r {
				o.recs = append(o.recs, r)
			}
		}
	}
	for _, r := range recs {
		r.pack()
	}
	if meta := n.metaRecord(); meta != nil {
		for _, o := range ops {
			o.meta = meta
		}
		recs = append([]*record{meta}, recs...)
	}
	return recs
}

// pack joins r's parts into r.data. The record's size is known by then,
// so it is allocated once: growing it append by append copied every
// record about twice over and was the largest allocation of an ingest
// (a round packs thousands of appends into a few dozen records).
func (r *record) pack() {
	if len(r.parts) == 1 {
		r.data = r.parts[0] // a chunk is a record on its own
	} else {
		r.data = append(make([]byte, 0, r.size), r.parts[0]...)
		for _, c := range r.parts[1:] {
			r.data = journal.AppendBatches(r.data, c)
		}
	}
	r.parts = nil
}

// metaRecord returns a record for the meta subject when the largest At
// stored has passed the bound the meta record holds, nil otherwise. The
// bound is set metaSlack above that At, so under load the meta subject is
// written about once per metaSlack, not once per round. The record rolls
// the subject up: one meta record is kept.
func (n *Journal) metaRecord() *record {
	newest := n.newest.Load()
	if newest <= n.metaAt {
		return nil
	}
	return &record{subj: n.metaSubject(), header: nats.Header{
		newestHeader:        []string{strconv.FormatInt(newest+metaSlack.Milliseconds(), 10)},
		jetstream.MsgRollup: []string{jetstream.MsgRollupSubject},
	}}
}

func (n *Journal) metaSubject() string { return n.cfg.Prefix + "." + metaToken }

// publishRound sends all records pipelined, then waits for their acks,
// giving the round timeout in all.
func (n *Journal) publishRound(recs []*record, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for _, r := range recs {
		n.send(r, deadline)
	}
	// A context, not a timer: its Done channel stays closed for every
	// record still waiting once the deadline has passed.
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, r := range recs {
		if r.fut != nil {
			n.await(r, ctx.Done())
			// Failpoint appendAckLost: the record is stored, but its
			// appends fail as if its ack had been lost.
			failpoint.Inject("appendAckLost", func() {
				if r.err == nil {
					r.err = appendErr(r.slot, errRoundTimeout)
				}
			})
		}
	}
}

func (n *Journal) send(r *record, deadline time.Time) {
	wait := time.Until(deadline)
	if wait <= 0 {
		r.err = appendErr(r.slot, errRoundTimeout)
		return
	}
	// Failpoint appendFail: the record is not published; its appends fail
	// with ErrUnavailable, as if the server had refused it.
	failpoint.Inject("appendFail", func() {
		r.err = appendErr(r.slot, errors.New("failpoint appendFail"))
		failpoint.Return()
	})
	msg := &nats.Msg{Subject: r.subj, Data: r.data, Header: r.header}
	// No retries: a retry is sent later from a timer, possibly after the
	// next round's records, which would break the slot's order.
	fut, err := n.js.PublishMsgAsync(msg, jetstream.WithRetryAttempts(0), jetstream.WithStallWait(wait))
	if err != nil {
		r.err = appendErr(r.slot, err)
		return
	}
	r.fut = fut
}

var errRoundTimeout = errors.New("no acknowledgement within the ack timeout")

// await sets r's seq or error from its ack. After the round's deadline it
// only takes acks that are already there.
func (n *Journal) await(r *record, expired <-chan struct{}) {
	select {
	case ack := <-r.fut.Ok():
		r.seq = ack.Sequence
		return
	case err := <-r.fut.Err():
		r.err = appendErr(r.slot, err)
		return
	default:
	}
	select {
	case ack := <-r.fut.Ok():
		r.seq = ack.Sequence
	case err := <-r.fut.Err():
		r.err = appendErr(r.slot, err)
	case <-expired:
		r.err = appendErr(r.slot, errRoundTimeout)
	}
}

// finish calls done with the seq of o's last record, or the first error of
// any of its records: a split append is stored only if all parts are.
func (o *op) finish() {
	if o.err != nil {
		o.done(0, o.err)
		return
	}
	if o.meta != nil && o.meta.err != nil {
		o.done(0, o.meta.err)
		return
	}
	for _, r := range o.recs {
		if r.err != nil {
			o.done(0, r.err)
			return
		}
	}
	o.done(o.recs[len(o.recs)-1].seq, nil)
}

// appendErr classifies every publish failure (timeout, no responders,
// server error such as storage full) as unavailability: the caller's
// remedy is the same, retry or reload later.
func appendErr(slot int64, err error) error {
	return fmt.Errorf("append slot %d: %w: %w", slot, journal.ErrUnavailable, err)
}

// readErr wraps a failed read. Cancellation is the caller's own doing and
// is not unavailability.
func readErr(what string, slot int64, err error) error {
	return fmt.Errorf("%s slot %d: %w", what, slot, unavailable(err))
}

func unavailable(err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", journal.ErrUnavailable, err)
}

// Load collects what Scan passes.
func (n *Journal) Load(ctx context.Context, slot int64) ([]journal.Event, uint64, error) {
	var events []journal.Event
	last, err := n.Scan(ctx, slot, func(_ uint64, evs []journal.Event) error {
		events = append(events, evs...)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return events, last, nil
}

// Scan replays slot's records with batched direct gets, decoding one
// record at a time. A slot whose bucket is not open may have events in
// the bucket's far records too: those are read first (layout.go says
// why that order) and passed in sequence order among the slot's own.
func (n *Journal) Scan(ctx context.Context, slot int64, fn func(seq uint64, events []journal.Event) error) (uint64, error) {
	far, hasFar := n.isFar(slot)
	var farRecs []seqEvents
	if far && hasFar {
		var err error
		if farRecs, err = n.loadFar(ctx, slot); err != nil {
			return 0, scanErr(slot, err)
		}
	}
	var farLast uint64
	if len(farRecs) > 0 {
		farLast = farRecs[len(farRecs)-1].seq
	}
	passFar := func(before uint64) error {
		for len(farRecs) > 0 && farRecs[0].seq < before {
			if err := fn(farRecs[0].seq, farRecs[0].events); err != nil {
				return callerErr{err}
			}
			farRecs = farRecs[1:]
		}
		return nil
	}
	var buf []journal.Event
	subj, check := n.subject(slot), n.slotCheck(slot)
	last, err := n.scan(ctx, subj, func(seq uint64, data []byte) error {
		if err := passFar(seq); err != nil {
			return err
		}
		// data is the message's own buffer, never reused: bodies alias it.
		var ok bool
		if buf, ok = n.decode(buf[:0], subj, seq, slot, data, check); !ok {
			return nil // quarantined: the rest of the slot loads
		}
		if err := fn(seq, buf); err != nil {
			return callerErr{err}
		}
		return nil
	})
	if err == nil {
		err = passFar(math.MaxUint64)
	}
	if err != nil {
		return 0, scanErr(slot, err)
	}
	return max(last, farLast), nil
}

// callerErr carries an error of Scan's fn through the read loop unchanged.
type callerErr struct{ err error }

func (e callerErr) Error() string { return e.err.Error() }

func scanErr(slot int64, err error) error {
	var ce callerErr
	switch {
	case errors.As(err, &ce):
		return ce.err
	case errors.Is(err, journal.ErrCorrupt):
		return err
	}
	return readErr("load", slot, err)
}

// Tail decodes slot's last record. A last record that fails to decode or
// check is quarantined and comes back as no events: it closes nothing, so
// recovery loads the slot instead of failing.
func (n *Journal) Tail(ctx context.Context, slot int64) ([]journal.Event, uint64, error) {
	subj := n.subject(slot)
	msg, err := n.stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, readErr("tail", slot, err)
	}
	events, _ := n.decode(nil, subj, msg.Sequence, slot, msg.Data, n.slotCheck(slot))
	return events, msg.Sequence, nil
}

// Newest is the largest of the server's time of the stream's last write,
// the bound in the meta record, and what this journal stored since it
// opened. The meta record is what keeps the promise: the server's time
// alone would not bound an At ahead of it (stamps, and so At, run ahead of
// the clock after it stepped back, and an external server's clock may lag
// tock's), and a purge may remove the record holding the largest At.
func (n *Journal) Newest(ctx context.Context) (int64, error) {
	info, err := n.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("newest: %w", unavailable(err))
	}
	newest := n.newest.Load()
	if !info.State.LastTime.IsZero() {
		newest = max(newest, info.State.LastTime.UnixMilli())
	}
	msg, err := n.stream.GetLastMsgForSubject(ctx, n.metaSubject())
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return 0, fmt.Errorf("newest: %w", unavailable(err))
	default:
		if v, err := strconv.ParseInt(msg.Header.Get(newestHeader), 10, 64); err == nil {
			newest = max(newest, v)
		}
	}
	return newest, nil
}

// PurgeUpTo purges slot's records with sequence ≤ seq.
func (n *Journal) PurgeUpTo(ctx context.Context, slot int64, seq uint64) error {
	if seq == 0 {
		return nil // a purge sequence of 0 would mean "no limit"
	}
	if err := n.purgeSubject(ctx, n.subject(slot), seq); err != nil {
		return readErr("purge", slot, err)
	}
	return nil
}

// purgeSubject purges subj's records with sequence ≤ seq (seq > 0).
func (n *Journal) purgeSubject(ctx context.Context, subj string, seq uint64) error {
	opts := []jetstream.StreamPurgeOpt{jetstream.WithPurgeSubject(subj)}
	if seq < math.MaxUint64 {
		// The server purges "up to but not including" this sequence.
		opts = append(opts, jetstream.WithPurgeSequence(seq+1))
	}
	return n.stream.Purge(ctx, opts...)
}

// Close stops accepting appends, lets the flusher commit what is queued,
// and waits for it. It does not close the connection.
func (n *Journal) Close() error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.signal()
	<-n.stopped
	n.js.CleanupPublisher()
	return nil
}
