package journal_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/journaltest"
)

func TestMemoryContract(t *testing.T) {
	journaltest.Run(t, func(t *testing.T) journal.Journal {
		m := journal.NewMemory()
		t.Cleanup(func() { m.Close() })
		return m
	})
}

// TestMemoryCompleteRunner: a simulator queues completions and runs them
// when it likes; nothing runs before that.
func TestMemoryCompleteRunner(t *testing.T) {
	m := journal.NewMemory()
	var queue []func()
	m.Complete = func(f func()) { queue = append(queue, f) }
	var seqs []uint64
	for i := range 3 {
		m.Append(int64(i), journaltest.GenEvents(i, 1), func(seq uint64, err error) {
			if err != nil {
				t.Errorf("append: %v", err)
			}
			seqs = append(seqs, seq)
		})
	}
	if len(seqs) != 0 || len(queue) != 3 {
		t.Fatalf("before running the queue: %d dones ran, %d queued", len(seqs), len(queue))
	}
	for i := len(queue) - 1; i >= 0; i-- {
		queue[i]()
	}
	if diff := cmp.Diff([]uint64{3, 2, 1}, seqs); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	// Close must not wait for a runner it does not own.
	m.Append(1, nil, func(uint64, error) {})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryFail: Fail models an unavailable store and a lost ack.
func TestMemoryFail(t *testing.T) {
	m := journal.NewMemory()
	m.Complete = func(f func()) { f() }
	errDown := errors.New("down")
	var store bool
	m.Fail = func(int64, []journal.Event) (bool, error) { return store, errDown }

	var got []error
	done := func(_ uint64, err error) { got = append(got, err) }
	m.Append(1, journaltest.GenEvents(1, 1), done) // not stored
	store = true
	m.Append(1, journaltest.GenEvents(2, 1), done) // stored, ack lost
	m.Fail = nil
	m.Append(1, journaltest.GenEvents(3, 1), done)

	if !errors.Is(got[0], errDown) || !errors.Is(got[1], errDown) || got[2] != nil {
		t.Errorf("done errors: %v", got)
	}
	events, seq, err := m.Load(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	want := append(journaltest.GenEvents(2, 1), journaltest.GenEvents(3, 1)...)
	if diff := cmp.Diff(want, events, journaltest.EquateEmpty); diff != "" || seq != 2 {
		t.Errorf("seq %d, events (-want +got):\n%s", seq, diff)
	}
}

// TestMemoryInject: injected records are decoded and checked when read;
// one that fails, an empty one too, is skipped and counted once.
func TestMemoryInject(t *testing.T) {
	m := journal.NewMemory()
	m.SlotWidth = time.Second
	ev := journal.Event{Kind: journal.Closed, At: 2000} // after slot 1's end
	for _, data := range [][]byte{nil, {}, []byte("garbage"), journal.EncodeRecord(nil, []journal.Event{ev})} {
		m.Inject(1, data)
	}
	for range 2 {
		events, seq, err := m.Load(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]journal.Event{ev}, events, journaltest.EquateEmpty); diff != "" || seq != 4 {
			t.Errorf("seq %d, events (-want +got):\n%s", seq, diff)
		}
	}
	if q := m.Quarantined(); q.Count != 3 {
		t.Errorf("quarantined %d records, want 3: %+v", q.Count, q.Recent)
	}
}
