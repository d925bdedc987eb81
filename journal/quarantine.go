package journal

import (
	"slices"
	"sync"
	"time"
)

// QuarantineEntry describes one record a replay refused: it failed to
// decode or one of its events failed Check. The record itself is kept
// where the journal keeps quarantined copies (on NATS, the quarantine
// stream); this is what a status report shows.
type QuarantineEntry struct {
	Subject string    `json:"subject"` // where the record is stored, e.g. tock.journal.123
	Seq     uint64    `json:"seq"`     // its sequence there
	Slot    int64     `json:"slot"`    // the slot (or far bucket) it was read for
	Size    int       `json:"size"`    // its length in bytes
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"` // when it was first refused
}

// QuarantineStats is what a journal refused since it opened.
type QuarantineStats struct {
	// Count is the number of distinct records refused.
	Count int64 `json:"count"`
	// Recent holds the last QuarantineRecent entries, oldest first.
	Recent []QuarantineEntry `json:"recent,omitempty"`
}

// Quarantiner is implemented by journals that refuse bad records instead
// of failing on them; the service reports Quarantined in its status.
type Quarantiner interface {
	Quarantined() QuarantineStats
}

const (
	// QuarantineRecent is how many entries QuarantineStats keeps.
	QuarantineRecent = 16
	// quarantineSeen bounds the records remembered so that a record
	// re-read by every load is counted, logged and copied once. Past it
	// the memory is cleared: a record then counts again, rather than
	// letting an attacker's flood grow memory without bound.
	quarantineSeen = 1 << 16
)

// QuarantineLog counts refused records, once each, and keeps the recent
// ones. Safe for concurrent use; the zero value is ready.
type QuarantineLog struct {
	mu     sync.Mutex
	count  int64
	recent []QuarantineEntry
	seen   map[quarantineKey]struct{}
}

type quarantineKey struct {
	subject string
	seq     uint64
}

// Add records e and reports whether it is new (not seen since the last
// clearing): only then should the caller log it and copy the record.
func (q *QuarantineLog) Add(e QuarantineEntry) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := quarantineKey{e.Subject, e.Seq}
	if _, dup := q.seen[k]; dup {
		return false
	}
	if q.seen == nil || len(q.seen) >= quarantineSeen {
		q.seen = make(map[quarantineKey]struct{})
	}
	q.seen[k] = struct{}{}
	q.count++
	if len(q.recent) == QuarantineRecent {
		q.recent = slices.Delete(q.recent, 0, 1)
	}
	q.recent = append(q.recent, e)
	return true
}

// Stats returns a snapshot.
func (q *QuarantineLog) Stats() QuarantineStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QuarantineStats{Count: q.count, Recent: slices.Clone(q.recent)}
}
