package journal

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Memory is an in-memory Journal for tests and the deterministic
// simulator. Append stores at once, under one global sequence counter
// starting at 1, one record per Append; only the done call is deferred.
//
// Set the exported fields before the first Append; they are not guarded.
type Memory struct {
	// Complete runs each done callback. nil means go f(). A simulator sets
	// it to queue callbacks and run them in an order of its choosing.
	Complete func(func())
	// Fail, if set, is asked about every Append before it is stored (under
	// the journal's lock: it must not call the journal). A nil
	// error stores the record as usual. Otherwise done gets the error and
	// the record is stored only if store is true: that models a lost
	// acknowledgement, where the caller must reload to learn the truth.
	Fail func(slot int64, events []Event) (store bool, err error)
	// SlotWidth, if positive, makes reads check every record against its
	// slot (Check) as the NATS journal does: a record that fails is
	// skipped and counted in Quarantined. Zero trusts every record (the
	// contract suite stores events of any shape in any slot).
	SlotWidth time.Duration

	mu     sync.Mutex
	newest int64 // largest At ever stored
	seq    uint64
	slots  map[int64][]memRecord
	closed bool
	quar   QuarantineLog
	// running counts done calls started with the default runner, so Close
	// can wait for them.
	running sync.WaitGroup
}

type memRecord struct {
	seq    uint64
	events []Event
	// raw is an injected record (Inject), decoded when read. Marked apart
	// from it, since an empty one (nil raw) is as corrupt as any.
	raw      []byte
	injected bool
}

var (
	_ Journal     = (*Memory)(nil)
	_ Quarantiner = (*Memory)(nil)
)

// NewMemory returns an empty in-memory journal.
func NewMemory() *Memory {
	return &Memory{slots: make(map[int64][]memRecord)}
}

// Append stores a copy of events as one record of slot.
func (m *Memory) Append(slot int64, events []Event, done func(seq uint64, err error)) {
	if done == nil {
		done = func(uint64, error) {}
	}
	m.mu.Lock()
	seq, err := m.store(slot, events)
	// Track under mu, so every Add happens before Close's Wait starts.
	track := m.Complete == nil && !m.closed
	if track {
		m.running.Add(1)
	}
	m.mu.Unlock()
	f := func() { done(seq, err) }
	switch {
	case m.Complete != nil:
		m.Complete(f)
	case track:
		go func() {
			defer m.running.Done()
			f()
		}()
	default:
		go f()
	}
}

// store records events; m.mu is held.
func (m *Memory) store(slot int64, events []Event) (uint64, error) {
	if m.closed {
		return 0, fmt.Errorf("append slot %d: %w", slot, ErrClosed)
	}
	if err := Validate(events); err != nil {
		return 0, fmt.Errorf("append slot %d: %w", slot, err)
	}
	store, err := true, error(nil)
	if m.Fail != nil {
		store, err = m.Fail(slot, events)
		store = store || err == nil
	}
	var seq uint64
	if store {
		m.seq++
		seq = m.seq
		m.slots[slot] = append(m.slots[slot], memRecord{seq: seq, events: CloneEvents(events)})
		for _, ev := range events {
			m.newest = max(m.newest, ev.At)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("append slot %d: %w", slot, err)
	}
	return seq, nil
}

// Load returns copies of slot's events.
func (m *Memory) Load(ctx context.Context, slot int64) ([]Event, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("load slot %d: %w", slot, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := m.slots[slot]
	if len(recs) == 0 {
		return nil, 0, nil
	}
	checked := make([][]Event, len(recs))
	// One allocation for the events and one for their bodies (each body
	// capped, so an append to one cannot overwrite the next).
	n, size := 0, 0
	for i, r := range recs {
		checked[i] = m.read(slot, r)
		n += len(checked[i])
		for _, ev := range checked[i] {
			size += len(ev.Body)
		}
	}
	if n == 0 {
		return nil, recs[len(recs)-1].seq, nil
	}
	events := make([]Event, 0, n)
	bodies := make([]byte, 0, size)
	for _, evs := range checked {
		for _, ev := range evs {
			if ev.Body != nil {
				at := len(bodies)
				bodies = append(bodies, ev.Body...)
				ev.Body = bodies[at:len(bodies):len(bodies)]
			}
			ev.Header = cloneHeader(ev.Header)
			events = append(events, ev)
		}
	}
	return events, recs[len(recs)-1].seq, nil
}

// read returns r's events if the record is one slot may hold, and
// otherwise quarantines it and returns none. The events are the stored
// ones: callers copy what they hand out.
func (m *Memory) read(slot int64, r memRecord) []Event {
	var check func(*Event) error
	if m.SlotWidth > 0 {
		check = SlotCheck(slot, m.SlotWidth.Milliseconds())
	}
	events, err := r.events, error(nil)
	if r.injected {
		events, err = DecodeChecked(nil, r.raw, false, check)
	} else if check != nil {
		err = CheckRecord(events, check)
	}
	if err != nil {
		m.quar.Add(QuarantineEntry{Subject: MemorySubject(slot), Seq: r.seq, Slot: slot, Size: len(r.raw), Reason: err.Error()})
		return nil
	}
	return events
}

// MemorySubject names a Memory journal's slot in quarantine entries.
func MemorySubject(slot int64) string { return "memory." + strconv.FormatInt(slot, 10) }

// Inject stores data as a record of slot as if someone other than an
// Append had written it: the simulator's and tests' corrupt or forged
// records. It bypasses Fail, Newest and every check; reads decode it.
func (m *Memory) Inject(slot int64, data []byte) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	m.slots[slot] = append(m.slots[slot], memRecord{seq: m.seq, raw: slices.Clone(data), injected: true})
	return m.seq
}

// Quarantined counts the records reads refused (journal.Quarantiner).
// Memory keeps no copies: the records stay where they are.
func (m *Memory) Quarantined() QuarantineStats { return m.quar.Stats() }

// Scan passes slot's records to fn one at a time; headers are copies,
// bodies are the stored ones (fn must not modify them).
func (m *Memory) Scan(ctx context.Context, slot int64, fn func(seq uint64, events []Event) error) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("load slot %d: %w", slot, err)
	}
	m.mu.Lock()
	// Records are never changed once stored (a purge replaces the list),
	// so a copy of the list can be read outside the lock.
	recs := slices.Clone(m.slots[slot])
	m.mu.Unlock()
	var buf []Event
	for _, r := range recs {
		evs := m.read(slot, r)
		if len(evs) == 0 {
			continue // quarantined (or empty): nothing to pass
		}
		buf = buf[:0]
		for _, ev := range evs {
			ev.Header = cloneHeader(ev.Header)
			buf = append(buf, ev)
		}
		if err := fn(r.seq, buf); err != nil {
			return 0, err
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	return recs[len(recs)-1].seq, nil
}

// Read passes the records of slot with the given sequences, like Scan.
func (m *Memory) Read(ctx context.Context, slot int64, seqs []uint64, fn func(seq uint64, events []Event) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("read slot %d: %w", slot, err)
	}
	m.mu.Lock()
	all := m.slots[slot]
	var recs []memRecord
	for _, seq := range seqs {
		if i, ok := slices.BinarySearchFunc(all, seq, func(r memRecord, seq uint64) int { return cmp.Compare(r.seq, seq) }); ok {
			recs = append(recs, all[i])
		}
	}
	m.mu.Unlock()
	var buf []Event
	for _, r := range recs {
		buf = buf[:0]
		for _, ev := range m.read(slot, r) {
			ev.Header = cloneHeader(ev.Header)
			buf = append(buf, ev)
		}
		if len(buf) == 0 {
			continue
		}
		if err := fn(r.seq, buf); err != nil {
			return err
		}
	}
	return nil
}

// Tail returns a copy of slot's last record.
func (m *Memory) Tail(ctx context.Context, slot int64) ([]Event, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("tail slot %d: %w", slot, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := m.slots[slot]
	if len(recs) == 0 {
		return nil, 0, nil
	}
	// A refused last record has no events: it closes nothing.
	last := recs[len(recs)-1]
	return CloneEvents(m.read(slot, last)), last.seq, nil
}

// Slots lists slots with records, ascending.
func (m *Memory) Slots(ctx context.Context) ([]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("slots: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.slots)), nil
}

// Newest is the largest At ever stored; purges do not lower it.
func (m *Memory) Newest(ctx context.Context) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("newest: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.newest, nil
}

// PurgeUpTo drops slot's records with sequence ≤ seq.
func (m *Memory) PurgeUpTo(ctx context.Context, slot int64, seq uint64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("purge slot %d: %w", slot, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	recs := m.slots[slot]
	i, _ := slices.BinarySearchFunc(recs, seq, func(r memRecord, seq uint64) int {
		if r.seq <= seq {
			return -1
		}
		return 1
	})
	if i == len(recs) {
		// A slot without records is not listed, as on NATS.
		delete(m.slots, slot)
		return nil
	}
	m.slots[slot] = slices.Clone(recs[i:])
	return nil
}

// Close makes later Appends fail with ErrClosed. Appends are stored
// synchronously, so only their done calls can be pending: Close waits for
// those run by the default runner. A custom Complete runner owns its queue,
// and Close cannot wait for it without deadlocking a single-threaded
// simulator that calls Close itself.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.running.Wait()
	return nil
}

// CloneEvents deep-copies events, so neither the caller's later changes
// nor a reader's reach the stored record.
func CloneEvents(events []Event) []Event {
	if len(events) == 0 {
		return nil
	}
	out := make([]Event, len(events))
	for i, ev := range events {
		out[i] = ev
		out[i].Body = slices.Clone(ev.Body)
		out[i].Header = cloneHeader(ev.Header)
	}
	return out
}

func cloneHeader(h Header) Header {
	if h == nil {
		return nil
	}
	out := make(Header, len(h))
	for k, vs := range h {
		out[k] = slices.Clone(vs)
	}
	return out
}
