package natsjournal

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/journal"
)

// JetStream API subjects the jetstream package does not wrap: batched
// direct get, and paged stream info.
const (
	apiDirectGet  = "$JS.API.DIRECT.GET."
	apiStreamInfo = "$JS.API.STREAM.INFO."
)

// Reply headers of direct gets.
const (
	statusHdr     = "Status"
	descrHdr      = "Description"
	numPendingHdr = "Nats-Num-Pending"
)

const (
	// scanBatch and scanMaxBytes size one batched direct get: enough to
	// amortize the round trip, small enough that the server's goroutine
	// producing it does not hold a CPU for long (a slot loading next to
	// one that fires on 2 cores), and well within the subscription's
	// pending limits (64 MiB by default).
	scanBatch    = 256
	scanMaxBytes = 2 << 20
)

// directGetRequest is the server's JSApiMsgGetRequest, batch form.
type directGetRequest struct {
	Seq      uint64 `json:"seq"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// scan passes subj's records to fn in order and returns the last sequence
// seen. It asks for records in batches: one round trip per batch instead of
// one per record, which is what makes a big slot's replay fast.
func (n *Journal) scan(ctx context.Context, subj string, fn func(seq uint64, data []byte) error) (uint64, error) {
	sub, err := n.cfg.ReadConn.SubscribeSync(n.cfg.ReadConn.NewInbox())
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	var last uint64
	for {
		more, err := n.scanBatch(ctx, sub, subj, last+1, func(seq uint64, data []byte) error {
			last = seq
			return fn(seq, data)
		})
		if err != nil || !more {
			return last, err
		}
	}
}

// scanBatch requests one batch from seq on and reads replies up to its end
// of batch marker. It reports whether records may follow the batch.
func (n *Journal) scanBatch(ctx context.Context, sub *nats.Subscription, subj string, seq uint64, fn func(uint64, []byte) error) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AckTimeout)
	defer cancel()
	req, err := json.Marshal(directGetRequest{Seq: seq, NextFor: subj, Batch: scanBatch, MaxBytes: scanMaxBytes})
	if err != nil {
		return false, err
	}
	if err := n.cfg.ReadConn.PublishRequest(apiDirectGet+n.cfg.Stream, sub.Subject, req); err != nil {
		return false, err
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, err
		}
		if status := msg.Header.Get(statusHdr); status != "" && len(msg.Data) == 0 {
			return batchEnd(msg, status)
		}
		seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, fmt.Errorf("direct get reply without a sequence: %w", err)
		}
		if got := msg.Header.Get(jetstream.SubjectHeader); got != subj {
			return false, fmt.Errorf("direct get for %s returned record %d of %s", subj, seq, got)
		}
		if err := fn(seq, msg.Data); err != nil {
			return false, err
		}
		if msg.Header.Get(numPendingHdr) == "" {
			// A server without batch support sends one record and no end
			// marker; go on from the next sequence.
			return true, nil
		}
	}
}

// readWindow bounds the direct gets one Read has in flight: enough to
// hide the round trips, few enough that the replies buffered (records of
// up to the server's max payload each) stay small.
const readWindow = 16

// Read gets the records at seqs with direct gets by sequence, readWindow
// at a time, and passes those that still belong to slot: on its own
// subject, or on its bucket's far subject (only its events). Records
// gone, or of another subject, are skipped.
func (n *Journal) Read(ctx context.Context, slot int64, seqs []uint64, fn func(seq uint64, events []journal.Event) error) error {
	sub, err := n.cfg.ReadConn.SubscribeSync(n.cfg.ReadConn.NewInbox())
	if err != nil {
		return readErr("read", slot, err)
	}
	defer sub.Unsubscribe()
	bucket := n.bucketOf(slot)
	subj, farSubj := n.subject(slot), n.farSubject(bucket)
	var buf []journal.Event
	for len(seqs) > 0 {
		window := seqs[:min(len(seqs), readWindow)]
		seqs = seqs[len(window):]
		recs, err := n.getRecords(ctx, sub, window)
		if err != nil {
			return readErr("read", slot, err)
		}
		for _, r := range recs {
			var ok bool
			switch r.subj {
			case subj:
				buf, ok = n.decode(buf[:0], subj, r.seq, slot, r.data, n.slotCheck(slot))
			case farSubj:
				buf, ok = n.decode(buf[:0], farSubj, r.seq, bucket, r.data, n.farCheck(bucket))
				buf = slices.DeleteFunc(buf, func(ev journal.Event) bool { return n.slotOfMs(ev.ID.DeliverAt()) != slot })
			}
			if !ok || len(buf) == 0 {
				continue
			}
			if err := fn(r.seq, buf); err != nil {
				return err
			}
		}
	}
	return nil
}

// rawRecord is a stored message as a direct get returns it.
type rawRecord struct {
	seq  uint64
	subj string
	data []byte
}

// getRecords sends a direct get for each of seqs and collects the
// replies, in sequence order; records not found are left out.
func (n *Journal) getRecords(ctx context.Context, sub *nats.Subscription, seqs []uint64) ([]rawRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.AckTimeout)
	defer cancel()
	for _, seq := range seqs {
		req, err := json.Marshal(directGetRequest{Seq: seq})
		if err != nil {
			return nil, err
		}
		if err := n.cfg.ReadConn.PublishRequest(apiDirectGet+n.cfg.Stream, sub.Subject, req); err != nil {
			return nil, err
		}
	}
	recs := make([]rawRecord, 0, len(seqs))
	for range seqs {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, err
		}
		if status := msg.Header.Get(statusHdr); status != "" && len(msg.Data) == 0 {
			if _, err := batchEnd(msg, status); err != nil {
				return nil, err
			}
			continue // 404: purged since
		}
		seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("direct get reply without a sequence: %w", err)
		}
		recs = append(recs, rawRecord{seq: seq, subj: msg.Header.Get(jetstream.SubjectHeader), data: msg.Data})
	}
	slices.SortFunc(recs, func(a, b rawRecord) int { return cmp.Compare(a.seq, b.seq) })
	return recs, nil
}

// batchEnd interprets a status reply: 404 is the end of the records, 204
// the end of a batch, with a count of records left.
func batchEnd(msg *nats.Msg, status string) (bool, error) {
	switch status {
	case "404":
		return false, nil
	case "204":
		return msg.Header.Get(numPendingHdr) != "0", nil
	case "503":
		return false, nats.ErrNoResponders
	}
	return false, fmt.Errorf("direct get: status %s %s", status, msg.Header.Get(descrHdr))
}

// streamInfoPage is the part of a stream info reply Slots reads.
type streamInfoPage struct {
	Error *jetstream.APIError `json:"error"`
	State struct {
		Subjects map[string]uint64 `json:"subjects"`
	} `json:"state"`
	Total int `json:"total"`
}

// Slots lists the slots with records on their own subjects. Slots whose
// bucket is not open yet may have records only in the bucket's far
// subject and are then not listed: they are not due before their bucket
// opens, FineWindow ahead, and New opens every bucket that is due.
func (n *Journal) Slots(ctx context.Context) ([]int64, error) {
	subjects, err := n.subjects(ctx, n.cfg.Prefix+".*")
	if err != nil {
		return nil, fmt.Errorf("slots: %w", unavailable(err))
	}
	seen := make(map[int64]struct{}, len(subjects))
	for _, subj := range subjects {
		if slot, ok := n.parseSlot(subj); ok {
			seen[slot] = struct{}{}
		}
	}
	slots := make([]int64, 0, len(seen))
	for s := range seen {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	return slots, nil
}

// subjects lists the stream's subjects matching filter, from the
// stream's per-subject counts. The server pages those 100,000 subjects at
// a time, sorted as text. jetstream's Stream.Info pages by the number of
// distinct subjects seen so far, which can repeat a request forever if
// subjects are created and purged meanwhile; this pages by the count the
// server returned, so it always ends. A subject created or purged while a
// listing of more than 100,000 subjects runs may be missed.
func (n *Journal) subjects(ctx context.Context, filter string) ([]string, error) {
	seen := make(map[string]struct{})
	for offset := 0; ; {
		page, err := n.subjectPage(ctx, filter, offset)
		if err != nil {
			return nil, err
		}
		for subj := range page.State.Subjects {
			seen[subj] = struct{}{}
		}
		offset += len(page.State.Subjects)
		if len(page.State.Subjects) == 0 || offset >= page.Total {
			break
		}
	}
	return slices.Collect(maps.Keys(seen)), nil
}

func (n *Journal) subjectPage(ctx context.Context, filter string, offset int) (*streamInfoPage, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.AckTimeout)
		defer cancel()
	}
	req, err := json.Marshal(map[string]any{"subjects_filter": filter, "offset": offset})
	if err != nil {
		return nil, err
	}
	msg, err := n.cfg.ReadConn.RequestWithContext(ctx, apiStreamInfo+n.cfg.Stream, req)
	if err != nil {
		return nil, err
	}
	var page streamInfoPage
	if err := json.Unmarshal(msg.Data, &page); err != nil {
		return nil, fmt.Errorf("stream info reply: %w", err)
	}
	if page.Error != nil {
		return nil, page.Error
	}
	return &page, nil
}

// parseSlot reads the slot of a journal subject. Subjects under the prefix
// that are not slots (not written by a journal) are ignored.
func (n *Journal) parseSlot(subj string) (int64, bool) {
	rest, ok := strings.CutPrefix(subj, n.cfg.Prefix+".")
	if !ok {
		return 0, false
	}
	slot, err := strconv.ParseInt(rest, 10, 64)
	return slot, err == nil
}
