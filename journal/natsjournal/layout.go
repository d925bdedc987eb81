package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tockd/tock/journal"
)

// The journal's layout on JetStream: fine near, coarse far.
//
// Every journal subject costs the server's subject index about 150–260
// bytes of heap for as long as it has records, whatever it holds. One
// subject per one-minute slot made a year of far-future messages cost
// ~450,000 subjects (~117 MiB of server heap) at a million messages. So:
//
//   - A slot whose bucket is open lives on its own subject, Prefix.<slot>,
//     as it always did: it replays alone and is purged alone.
//   - Buckets are BucketWidth of deliver times (default a day). A bucket
//     opens FineWindow (default 24 h) before it starts. Until then, the
//     events of all its slots go to one subject, Prefix.far.<bucket>, in
//     records that mix slots (every far event names its slot through its
//     id's deliver time). A year ahead costs about 365 subjects.
//   - Opening a bucket (in the flusher, between rounds, so no append of
//     the journal runs meanwhile) reads its far records, writes each
//     slot's events in their order to the slot's own subject, and only then
//     purges the far subject. A crash in between leaves the far records and
//     some copies; the next start opens the bucket again, and the replayed
//     duplicates are harmless, because a slot replays idempotently by id
//     (a second Scheduled of a known id, a second Cancelled of a cancelled
//     one change nothing).
//   - Load of a slot whose bucket is not open reads the far subject first
//     and the slot's own subject second, keeping the slot's events and
//     merging both by stream sequence, which is the order they were
//     appended in. (Own records of a far slot exist after a restart with
//     the clock stepped back, or from a journal written before this
//     layout: such a data directory needs no migration.)
//
// Why per-message order survives the copy: while a bucket is far, every
// append of its slots goes to the far subject, and while it is open, every
// append goes to the slots' own subjects, so a message's far events are
// all later than its own-subject events from an earlier open period, and
// the copy appends them, in order, after those.
//
// The cost: a message scheduled more than FineWindow ahead is written
// twice (once far, once when its bucket opens); a get or cancel of a far
// message reads its bucket's records.

const (
	// BucketWidthKey is the stream metadata key holding the bucket width in ms.
	BucketWidthKey = "tock_bucket_width_ms"
	// farToken names the far subjects: Prefix.far.<bucket>.
	farToken = "far"
	// metaToken names the meta subject, Prefix.meta, whose one record
	// says in newestHeader the largest At stored (see Newest).
	metaToken    = "meta"
	newestHeader = "Tock-Newest"

	defaultBucketWidth = 24 * time.Hour
	defaultFineWindow  = 24 * time.Hour
	// metaSlack is how far above the largest At stored the meta record's
	// bound is set.
	metaSlack = time.Second
	// openRetry is how soon a failed bucket opening or purge is tried again.
	openRetry = time.Second
)

func (n *Journal) farSubject(bucket int64) string {
	return n.cfg.Prefix + "." + farToken + "." + strconv.FormatInt(bucket, 10)
}

// bucketOf is the bucket of slot.
func (n *Journal) bucketOf(slot int64) int64 { return journal.SlotOf(slot, n.bucketSlots) }

// slotOfMs is the slot of a deliver time.
func (n *Journal) slotOfMs(ms int64) int64 { return journal.SlotOf(ms, n.widthMs) }

// farEligible reports whether events may be stored in slot's far bucket:
// every one must name slot through its id, so that a bucket's mixed
// records can be sorted back into slots. Closed events carry no id (and
// are only written once a slot's time is over, so never far).
func (n *Journal) farEligible(slot int64, events []journal.Event) bool {
	for i := range events {
		ev := &events[i]
		if ev.Kind == journal.Closed || ev.ID.IsZero() || n.slotOfMs(ev.ID.DeliverAt()) != slot {
			return false
		}
	}
	return true
}

// openTarget is the highest bucket that must be open at now (Unix ms).
func (n *Journal) openTarget(now int64) int64 {
	return n.bucketOf(n.slotOfMs(now + n.cfg.FineWindow.Milliseconds()))
}

// isFar reports whether slot's bucket is not open yet, and whether it may
// hold far records.
func (n *Journal) isFar(slot int64) (far, hasRecords bool) {
	b := n.bucketOf(slot)
	n.mu.Lock()
	defer n.mu.Unlock()
	if b <= n.opened {
		return false, false
	}
	_, has := n.far[b]
	return true, has
}

// listFar returns the buckets that have far records.
func (n *Journal) listFar(ctx context.Context) ([]int64, error) {
	subjects, err := n.subjects(ctx, n.cfg.Prefix+"."+farToken+".>")
	if err != nil {
		return nil, fmt.Errorf("list far buckets: %w", unavailable(err))
	}
	var buckets []int64
	for _, subj := range subjects {
		rest, ok := strings.CutPrefix(subj, n.cfg.Prefix+"."+farToken+".")
		if !ok {
			continue
		}
		if b, err := strconv.ParseInt(rest, 10, 64); err == nil {
			buckets = append(buckets, b)
		}
	}
	slices.Sort(buckets)
	return buckets, nil
}

// openUpTo opens, in order, every bucket up to target that has far
// records, then marks every bucket up to target open. It stops at the
// first failure, leaving that bucket far (loads stay correct: they read
// far records until it opens). Called by New before the flusher
// starts, then only by the flusher.
func (n *Journal) openUpTo(target int64) error {
	n.mu.Lock()
	var todo []int64
	for b := range n.far {
		if b > n.opened && b <= target {
			todo = append(todo, b)
		}
	}
	n.mu.Unlock()
	slices.Sort(todo)
	for _, b := range todo {
		if err := n.openBucket(b); err != nil {
			n.mu.Lock()
			n.opened = max(n.opened, b-1)
			n.mu.Unlock()
			return err
		}
	}
	n.mu.Lock()
	n.opened = max(n.opened, target)
	n.mu.Unlock()
	return n.purgeOpened()
}

// openBucket copies bucket's far records to its slots' own subjects and
// marks it open; the far subject is purged by purgeOpened.
func (n *Journal) openBucket(bucket int64) error {
	subj := n.farSubject(bucket)
	ctx, cancel := context.WithTimeout(context.Background(), 4*n.cfg.AckTimeout)
	bySlot := make(map[int64][]journal.Event)
	var bytes int
	check := n.farCheck(bucket)
	last, err := n.scan(ctx, subj, func(seq uint64, data []byte) error {
		// A refused record is not copied: the far subject's purge drops it.
		events, ok := n.decode(nil, subj, seq, bucket, data, check)
		if !ok {
			return nil
		}
		bytes += len(data)
		for _, ev := range events {
			k := n.slotOfMs(ev.ID.DeliverAt())
			bySlot[k] = append(bySlot[k], ev)
		}
		return nil
	})
	cancel()
	if err != nil {
		return fmt.Errorf("open bucket %d: %w", bucket, unavailable(err))
	}
	var recs []*record
	for _, k := range slices.Sorted(maps.Keys(bySlot)) {
		chunks, err := journal.EncodeChunks(bySlot[k], n.cfg.MaxRecordBytes)
		if err != nil {
			return fmt.Errorf("open bucket %d: slot %d: %w", bucket, k, err)
		}
		for _, c := range chunks {
			recs = append(recs, &record{slot: k, subj: n.subject(k), data: c})
		}
	}
	// A big bucket gets time in proportion to its size.
	n.publishRound(recs, n.cfg.AckTimeout*time.Duration(1+bytes/(32<<20)))
	for _, r := range recs {
		if r.err != nil {
			return fmt.Errorf("open bucket %d: %w", bucket, r.err)
		}
	}
	n.mu.Lock()
	n.opened = max(n.opened, bucket)
	delete(n.far, bucket)
	if last > 0 {
		n.stale[bucket] = last
	}
	n.mu.Unlock()
	return nil
}

// purgeOpened purges the far records of opened buckets, up to what their
// opening copied.
func (n *Journal) purgeOpened() error {
	n.mu.Lock()
	stale := make(map[int64]uint64, len(n.stale))
	for b, seq := range n.stale {
		stale[b] = seq
	}
	n.mu.Unlock()
	var errs []error
	for b, seq := range stale {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AckTimeout)
		err := n.purgeSubject(ctx, n.farSubject(b), seq)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("purge far bucket %d: %w", b, unavailable(err)))
			continue
		}
		n.mu.Lock()
		delete(n.stale, b)
		n.mu.Unlock()
	}
	return errors.Join(errs...)
}

// openDue opens what the clock asks for and returns when to look again.
func (n *Journal) openDue() time.Duration {
	now := n.cfg.Now().UnixMilli()
	if err := n.openUpTo(n.openTarget(now)); err != nil {
		n.cfg.Logger.Warn("journal: opening far buckets failed; retrying", "err", err)
		return openRetry
	}
	n.mu.Lock()
	next := (n.opened+1)*n.bucketSlots*n.widthMs - n.cfg.FineWindow.Milliseconds()
	n.mu.Unlock()
	return time.Duration(max(next-now, 1)) * time.Millisecond
}

// loadFar returns the records of slot's far bucket, each cut down to the
// slot's events, in sequence order.
func (n *Journal) loadFar(ctx context.Context, slot int64) ([]seqEvents, error) {
	var recs []seqEvents
	bucket := n.bucketOf(slot)
	subj, check := n.farSubject(bucket), n.farCheck(bucket)
	_, err := n.scan(ctx, subj, func(seq uint64, data []byte) error {
		events, ok := n.decode(nil, subj, seq, bucket, data, check)
		if !ok {
			return nil
		}
		mine := events[:0]
		for _, ev := range events {
			if n.slotOfMs(ev.ID.DeliverAt()) == slot {
				mine = append(mine, ev)
			}
		}
		if len(mine) > 0 {
			recs = append(recs, seqEvents{seq: seq, events: mine})
		}
		return nil
	})
	return recs, err
}

type seqEvents struct {
	seq    uint64
	events []journal.Event
}

// mergeRecords merges two sequence-ordered record lists into one event
// list, in sequence order.
func mergeRecords(a, b []seqEvents) []journal.Event {
	var out []journal.Event
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && a[0].seq < b[0].seq) {
			out = append(out, a[0].events...)
			a = a[1:]
		} else {
			out = append(out, b[0].events...)
			b = b[1:]
		}
	}
	return out
}
