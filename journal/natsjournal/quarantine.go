package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/journal"
)

// Records that cannot hurt.
//
// Every record a read decodes is checked against the subject it was read
// from (journal.Check: ids of the slot, deliver times of the ids, targets
// tock could publish to, a Closed only after the slot's end; far records:
// ids of the bucket's slots). A record that fails to decode or check is
// quarantined: copied to the quarantine stream with the reason, counted
// once, logged once, and skipped. The rest of the slot loads and fires.
// The record stays in the journal, where the slot's purge removes it with
// the rest: the journal is not rewritten on a suspicion, and the copy is
// only for the operator to look at.

const (
	defaultQuarantineStream = "TOCK_QUARANTINE"
	defaultQuarantinePrefix = "tock.quarantine"
	// The quarantine stream is a bounded record of refusals: old copies
	// make room for new ones, so a flood of bad records costs at most
	// this much storage.
	quarantineMaxBytes = 64 << 20
	quarantineMaxMsgs  = 10_000
	quarantineMaxAge   = 30 * 24 * time.Hour
	// quarantineDuplicates lets the server drop a second copy of one
	// record (Nats-Msg-Id is its subject and sequence), e.g. when two
	// loads of the slot refuse it at once.
	quarantineDuplicates = 2 * time.Minute
)

// Headers of a quarantined copy.
const (
	QuarantineReasonHdr  = "Tock-Quarantine-Reason"
	QuarantineSubjectHdr = "Tock-Quarantine-Subject"
	QuarantineSeqHdr     = "Tock-Quarantine-Seq"
)

func (c Config) quarantineNames() (stream, prefix string) {
	stream, prefix = c.QuarantineStream, c.QuarantinePrefix
	if stream == "" {
		stream = defaultQuarantineStream
		if c.Stream != DefaultStream {
			stream = c.Stream + "_QUARANTINE"
		}
	}
	if prefix == "" {
		prefix = defaultQuarantinePrefix
		if c.Prefix != defaultPrefix {
			prefix = c.Prefix + "_quarantine"
		}
	}
	return stream, prefix
}

// ensureQuarantine creates the quarantine stream if it is missing. An
// existing one is left as it is: an operator may size it differently.
func ensureQuarantine(ctx context.Context, js jetstream.JetStream, stream, prefix string) error {
	_, err := js.Stream(ctx, stream)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{prefix + ".>"},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxBytes:   quarantineMaxBytes,
		MaxMsgs:    quarantineMaxMsgs,
		MaxAge:     quarantineMaxAge,
		Duplicates: quarantineDuplicates,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	return err
}

// Quarantined reports the records reads refused since the journal
// opened (journal.Quarantiner). A record re-read by several loads counts
// once; after a restart it counts again when first read.
func (n *Journal) Quarantined() journal.QuarantineStats { return n.quar.Stats() }

var _ journal.Quarantiner = (*Journal)(nil)

// quarantine handles a refused record of subj: it counts and logs it and
// copies it to the quarantine stream, the first time only. A failed copy
// is logged and otherwise ignored: the record is skipped all the same,
// and a read must not fail because the quarantine stream is away.
func (n *Journal) quarantine(subj string, seq uint64, slot int64, data []byte, reason error) {
	e := journal.QuarantineEntry{Subject: subj, Seq: seq, Slot: slot, Size: len(data), Reason: reason.Error(), At: n.cfg.Now()}
	if !n.quar.Add(e) {
		return
	}
	n.cfg.Logger.Warn("journal: record quarantined and skipped", "subject", subj, "seq", seq, "slot", slot, "bytes", len(data), "reason", e.Reason)
	tail := strings.TrimPrefix(subj, n.cfg.Prefix+".")
	msg := &nats.Msg{
		Subject: n.quarPrefix + "." + tail,
		Data:    data,
		Header: nats.Header{
			QuarantineReasonHdr:   []string{e.Reason},
			QuarantineSubjectHdr:  []string{subj},
			QuarantineSeqHdr:      []string{strconv.FormatUint(seq, 10)},
			jetstream.MsgIDHeader: []string{subj + ":" + strconv.FormatUint(seq, 10)},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.AckTimeout)
	defer cancel()
	if _, err := n.js.PublishMsg(ctx, msg); err != nil {
		n.cfg.Logger.Warn("journal: copying a quarantined record failed", "subject", subj, "seq", seq, "err", err)
	}
}

// decode decodes the record seq of subj, read for slot, and checks it
// with check; a record that fails is quarantined and yields no events
// (and false).
func (n *Journal) decode(dst []journal.Event, subj string, seq uint64, slot int64, data []byte, check func(*journal.Event) error) ([]journal.Event, bool) {
	if n.cfg.SkipRecordCheck {
		check = nil
	}
	out, err := journal.DecodeChecked(dst, data, true, check)
	if err != nil {
		n.quarantine(subj, seq, slot, data, fmt.Errorf("record %d of %s: %w", seq, subj, err))
		return out, false
	}
	return out, true
}

// slotCheck is the check of a record on slot's own subject.
func (n *Journal) slotCheck(slot int64) func(*journal.Event) error {
	return journal.SlotCheck(slot, n.widthMs)
}

// farCheck is the check of a record on bucket's far subject: every event
// names, through its id, a slot of the bucket (farEligible), and is
// checked against that slot. A Closed has no id and never goes far.
func (n *Journal) farCheck(bucket int64) func(*journal.Event) error {
	return func(ev *journal.Event) error {
		if ev.ID.IsZero() {
			return fmt.Errorf("%w: %s event without an id in far bucket %d", journal.ErrForeign, ev.Kind, bucket)
		}
		k := n.slotOfMs(ev.ID.DeliverAt())
		if b := n.bucketOf(k); b != bucket {
			return fmt.Errorf("%w: %s event %s belongs to far bucket %d", journal.ErrForeign, ev.Kind, ev.ID, b)
		}
		return journal.Check(k, n.widthMs, ev)
	}
}
