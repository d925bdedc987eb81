// Package journal is tock's event log: the durable record of every
// schedule, cancel, fire and slot close, grouped by time slot.
//
// Each time slot's events live under a key of their own (on NATS: the
// subject tock.journal.<slot>), so a slot replays alone and is purged alone.
// Appends of one slot are stored in the order they were called; appends of
// a slot queued together may share one record (group commit), and an
// append larger than a record is split over several, in order.
package journal

import (
	"context"
	"errors"
	"fmt"

	"github.com/tockd/tock/msgid"
)

// Kind says what an event records.
type Kind uint8

const (
	// Scheduled: a message was accepted; it carries everything needed to deliver it.
	Scheduled Kind = 1
	// Cancelled: a pending message was cancelled at At.
	Cancelled Kind = 2
	// Fired: a message was delivered (PubAck'd for stream targets) at At.
	Fired Kind = 3
	// Closed: at At every message of the slot was delivered or cancelled and
	// the slot's time had passed; the slot may be purged after retention.
	// ID is zero.
	Closed Kind = 4
	// Dead: a message was dead-lettered at At (stored in the dead-letter
	// stream instead of its target); Body holds the reason, in UTF-8.
	Dead Kind = 5
)

func (k Kind) String() string {
	switch k {
	case Scheduled:
		return "scheduled"
	case Cancelled:
		return "cancelled"
	case Fired:
		return "fired"
	case Closed:
		return "closed"
	case Dead:
		return "dead"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header is a message's headers, as in nats.Header.
type Header map[string][]string

// Event is one entry of the log. Fields a kind does not use are zero.
type Event struct {
	Kind Kind
	ID   msgid.ID
	// At is when the event happened, Unix ms: acceptance, cancel, fire or close time.
	At int64
	// Scheduled only.
	Target    string
	DeliverAt int64 // Unix ms
	Header    Header
	Body      []byte
}

// Journal stores and replays slot events. Implementations are safe for
// concurrent use.
type Journal interface {
	// Append stores events for slot. done is called exactly once, never
	// from within Append, with the stream sequence of the record holding
	// the last of them, or with an error if they may not have been stored (a
	// lost acknowledgement is also an error: the caller must reload the
	// slot to learn what was stored). Appends are group-committed: many
	// records from many callers share one round trip. Records of one slot
	// are stored in call order.
	Append(slot int64, events []Event, done func(seq uint64, err error))
	// Load returns all stored events of slot in order, and the sequence of
	// its last record (0 if the slot has none). Bodies may share memory
	// with each other: callers must not modify them.
	Load(ctx context.Context, slot int64) ([]Event, uint64, error)
	// Scan passes slot's stored events to fn in order, a record's worth
	// at a time with the record's sequence, as Load would return them, and
	// returns the sequence of its last record. The slice is fn's only
	// during the call (its memory is reused); bodies and headers stay
	// valid but must not be modified. A big slot so loads with one record
	// in memory beside what fn keeps, instead of all of them. An error
	// from fn ends the scan and is returned as is.
	Scan(ctx context.Context, slot int64, fn func(seq uint64, events []Event) error) (uint64, error)
	// Read passes the records of slot with the given sequences (as Scan
	// reported them, ascending) to fn, in that order and as Scan would.
	// A sequence that holds no record of slot any more (purged, or moved
	// by the journal's layout) is skipped: the caller learns of it from
	// what fn did not get, and can Scan instead. A slot that keeps only
	// some bodies in memory so brings back the ones it needs without
	// reading the rest of the slot again.
	Read(ctx context.Context, slot int64, seqs []uint64, fn func(seq uint64, events []Event) error) error
	// Tail returns the events of slot's last record and its sequence; no
	// events and 0 if the slot has none.
	Tail(ctx context.Context, slot int64) ([]Event, uint64, error)
	// Slots lists the slots that have records, ascending.
	Slots(ctx context.Context) ([]int64, error)
	// Newest returns a time (Unix ms) no earlier than the At of any event
	// ever stored, or 0 for an empty journal. Ids issued after a restart
	// start above it, so they cannot repeat earlier ones even if the wall
	// clock stepped back meanwhile.
	Newest(ctx context.Context) (int64, error)
	// PurgeUpTo removes slot's records with sequence ≤ seq; later records stay.
	PurgeUpTo(ctx context.Context, slot int64, seq uint64) error
	// Close waits for appends already called to finish (their done runs),
	// then releases resources. Appends after Close fail with ErrClosed.
	Close() error
}

var (
	// ErrClosed: the journal was closed.
	ErrClosed = errors.New("journal closed")
	// ErrUnavailable: the store cannot take writes now (server down, storage full, timeout).
	ErrUnavailable = errors.New("journal unavailable")
	// ErrCorrupt: a stored record cannot be decoded.
	ErrCorrupt = errors.New("journal record corrupt")
)
