// Package journaltest holds the contract every journal.Journal must keep,
// as a test suite each implementation runs, and the helpers its tests share.
package journaltest

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// EquateEmpty compares events as stored: the codec decodes empty headers
// and bodies as nil. Bodies compare with bytes.Equal, as cmp's reflection
// is slow on big ones.
var EquateEmpty = cmp.Options{
	cmp.Comparer(bytes.Equal),
	bothEmpty[journal.Header](),
	bothEmpty[[]string](),
	bothEmpty[[]journal.Event](),
}

// bothEmpty treats nil and empty values of slice or map type T as equal.
func bothEmpty[T any]() cmp.Option {
	return cmp.FilterValues(func(a, b T) bool {
		return reflect.ValueOf(a).Len() == 0 && reflect.ValueOf(b).Len() == 0
	}, cmp.Ignore())
}

// WaitTimeout bounds every wait of the suite.
const WaitTimeout = 10 * time.Second

// Run checks the Journal contract; every implementation runs it.
// newJournal returns an empty journal, closed by the test's cleanup.
func Run(t *testing.T, newJournal func(t *testing.T) journal.Journal) {
	t.Run("AppendLoadOrder", func(t *testing.T) { testAppendLoadOrder(t, newJournal(t)) })
	t.Run("DoneNotWithinAppend", func(t *testing.T) { testDoneNotWithinAppend(t, newJournal(t)) })
	t.Run("Tail", func(t *testing.T) { testTail(t, newJournal(t)) })
	t.Run("Slots", func(t *testing.T) { testSlots(t, newJournal(t)) })
	t.Run("PurgeUpTo", func(t *testing.T) { testPurgeUpTo(t, newJournal(t)) })
	t.Run("ConcurrentAppends", func(t *testing.T) { testConcurrentAppends(t, newJournal(t)) })
	t.Run("CloseFlushes", func(t *testing.T) { testCloseFlushes(t, newJournal(t)) })
	t.Run("PayloadRoundTrip", func(t *testing.T) { testPayloadRoundTrip(t, newJournal(t)) })
	t.Run("InvalidEvent", func(t *testing.T) { testInvalidEvent(t, newJournal(t)) })
	t.Run("Newest", func(t *testing.T) { testNewest(t, newJournal(t)) })
	t.Run("Scan", func(t *testing.T) { testScan(t, newJournal(t)) })
	t.Run("Read", func(t *testing.T) { testRead(t, newJournal(t)) })
}

// testRead: Read passes the records asked for, as Scan passed them, and
// skips sequences that are purged, another slot's or never written.
func testRead(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	type rec struct {
		Seq    uint64
		Events []journal.Event
	}
	for i := range 5 {
		AppendWait(t, j, 6, GenEvents(10*i, 2))
		AppendWait(t, j, 7, GenEvents(100+i, 1))
	}
	scan := func(slot int64) []rec {
		var recs []rec
		if _, err := j.Scan(ctx, slot, func(seq uint64, evs []journal.Event) error {
			recs = append(recs, rec{seq, slices.Clone(evs)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	read := func(seqs ...uint64) []rec {
		var recs []rec
		if err := j.Read(ctx, 6, seqs, func(seq uint64, evs []journal.Event) error {
			recs = append(recs, rec{seq, slices.Clone(evs)})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return recs
	}
	six, seven := scan(6), scan(7)
	if len(six) < 2 || len(seven) < 1 {
		t.Fatalf("scan found %d and %d records", len(six), len(seven))
	}
	first, last := six[0], six[len(six)-1]
	got := read(first.Seq, seven[0].Seq, last.Seq, last.Seq+1_000_000)
	if diff := cmp.Diff([]rec{first, last}, got, EquateEmpty); diff != "" {
		t.Errorf("read of the first and last records, one of another slot and one never written (-want +got):\n%s", diff)
	}
	if got := read(); len(got) != 0 {
		t.Errorf("read of no sequences passed %d records", len(got))
	}
	stop := errors.New("stop here")
	if err := j.Read(ctx, 6, []uint64{first.Seq}, func(uint64, []journal.Event) error { return stop }); err != stop {
		t.Errorf("read with a failing fn: %v, want the fn's error itself", err)
	}
	if err := j.PurgeUpTo(ctx, 6, first.Seq); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]rec{last}, read(first.Seq, last.Seq), EquateEmpty); diff != "" {
		t.Errorf("read after the first record's purge (-want +got):\n%s", diff)
	}
}

// testScan: Scan passes what Load returns, record by record, and hands an
// error of its callback back unchanged.
func testScan(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	var want []journal.Event
	for i := range 5 {
		evs := GenEvents(i, i+1)
		AppendWait(t, j, 6, evs)
		want = append(want, evs...)
	}
	var got []journal.Event
	calls := 0
	var seqs []uint64
	seq, err := j.Scan(ctx, 6, func(seq uint64, evs []journal.Event) error {
		calls++
		seqs = append(seqs, seq)
		got = append(got, evs...) // the slice is reused: keep copies
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	loaded, loadSeq := Load(t, j, 6)
	if diff := cmp.Diff(want, got, EquateEmpty); diff != "" {
		t.Errorf("scan (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(loaded, got, EquateEmpty); diff != "" || seq != loadSeq {
		t.Errorf("scan seq %d, load seq %d; scan vs load (-load +scan):\n%s", seq, loadSeq, diff)
	}
	if calls < 1 || calls > 5 {
		t.Errorf("scan called fn %d times for 5 appends", calls)
	}
	stop := errors.New("stop here")
	if !slices.IsSorted(seqs) || len(seqs) == 0 || seqs[len(seqs)-1] != seq {
		t.Errorf("scan passed records %v and returned %d: want ascending, ending at the returned one", seqs, seq)
	}
	if _, err := j.Scan(ctx, 6, func(uint64, []journal.Event) error { return stop }); err != stop {
		t.Errorf("scan with a failing fn: %v, want the fn's error itself", err)
	}
	if seq, err := j.Scan(ctx, 99, func(uint64, []journal.Event) error { t.Error("fn called for an empty slot"); return nil }); err != nil || seq != 0 {
		t.Errorf("scan of an empty slot: %d, %v", seq, err)
	}
}

// testNewest: Newest bounds the At of every stored event, and a purge does
// not lower it (ids issued after a restart are floored there).
func testNewest(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	if n, err := j.Newest(ctx); err != nil || n != 0 {
		t.Fatalf("newest of an empty journal: %d, %v; want 0", n, err)
	}
	at := time.Now().UnixMilli() - 50
	ev := journal.Event{Kind: journal.Cancelled, ID: msgid.New(at, 1), At: at}
	seq := AppendWait(t, j, 3, []journal.Event{ev})
	n, err := j.Newest(ctx)
	if err != nil || n < at {
		t.Fatalf("newest = %d, %v; want ≥ %d", n, err, at)
	}
	if err := j.PurgeUpTo(ctx, 3, seq); err != nil {
		t.Fatal(err)
	}
	if after, err := j.Newest(ctx); err != nil || after < at {
		t.Errorf("newest after purge = %d, %v; want ≥ %d", after, err, at)
	}
}

// Tracker collects done calls and checks each runs exactly once.
type Tracker struct {
	t       *testing.T
	mu      sync.Mutex
	calls   []int
	results []Result
	wg      sync.WaitGroup
}

// Result is what one append's done was called with.
type Result struct {
	Seq uint64
	Err error
}

// NewTracker returns a Tracker reporting to t.
func NewTracker(t *testing.T) *Tracker { return &Tracker{t: t} }

// Done returns the callback of the next append.
func (tr *Tracker) Done() func(uint64, error) {
	tr.mu.Lock()
	i := len(tr.calls)
	tr.calls = append(tr.calls, 0)
	tr.results = append(tr.results, Result{})
	tr.mu.Unlock()
	tr.wg.Add(1)
	return func(seq uint64, err error) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.calls[i]++
		if tr.calls[i] > 1 {
			tr.t.Errorf("done of append %d called %d times", i, tr.calls[i])
			return
		}
		tr.results[i] = Result{seq, err}
		tr.wg.Done()
	}
}

// Wait waits for every done and returns the results in call order.
func (tr *Tracker) Wait() []Result {
	tr.t.Helper()
	ch := make(chan struct{})
	go func() { tr.wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(WaitTimeout):
		tr.t.Fatalf("done callbacks not called within %v", WaitTimeout)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]Result(nil), tr.results...)
}

// CheckOnce checks no done ran twice; call after Close.
func (tr *Tracker) CheckOnce() {
	tr.t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for i, n := range tr.calls {
		if n != 1 {
			tr.t.Errorf("done of append %d called %d times", i, n)
		}
	}
}

// AppendWait appends events to slot and returns the stored sequence,
// failing t if the append fails.
func AppendWait(t *testing.T, j journal.Journal, slot int64, events []journal.Event) uint64 {
	t.Helper()
	tr := NewTracker(t)
	j.Append(slot, events, tr.Done())
	r := tr.Wait()[0]
	if r.Err != nil {
		t.Fatalf("append slot %d: %v", slot, r.Err)
	}
	return r.Seq
}

// Load loads slot, failing t on an error.
func Load(t testing.TB, j journal.Journal, slot int64) ([]journal.Event, uint64) {
	t.Helper()
	events, seq, err := j.Load(context.Background(), slot)
	if err != nil {
		t.Fatalf("load slot %d: %v", slot, err)
	}
	return events, seq
}

// GenEvents returns n varied events, deterministic in i.
func GenEvents(i, n int) []journal.Event {
	events := make([]journal.Event, n)
	for k := range events {
		at := int64(1_700_000_000_000 + i*10 + k)
		// Any nonzero random part: the same for the same (i, k).
		id := msgid.Compose(at+60_000, uint64(i*100+k), uint64(i*100+k+1)*0x9e3779b97f4a7c15)
		switch (i + k) % 4 {
		case 0:
			events[k] = journal.Event{Kind: journal.Scheduled, ID: id, At: at, Target: fmt.Sprintf("orders.%d", i%7),
				DeliverAt: id.DeliverAt(), Header: journal.Header{"Trace": {fmt.Sprint(i)}}, Body: []byte(fmt.Sprintf("body %d/%d", i, k))}
		case 1:
			events[k] = journal.Event{Kind: journal.Fired, ID: id, At: at + 60_000}
		case 2:
			events[k] = journal.Event{Kind: journal.Cancelled, ID: id, At: at + 5}
		default:
			events[k] = journal.Event{Kind: journal.Closed, At: at + 120_000}
		}
	}
	return events
}

func testAppendLoadOrder(t *testing.T, j journal.Journal) {
	slots := []int64{7, 3, 11, 0, 5}
	want := make(map[int64][]journal.Event)
	tr := NewTracker(t)
	var callSlots []int64
	// Bursts with waits in between, so appends land in several rounds.
	for burst := 0; burst < 6; burst++ {
		for i := burst * 50; i < (burst+1)*50; i++ {
			slot := slots[i%len(slots)]
			events := GenEvents(i, 1+i%4)
			want[slot] = append(want[slot], events...)
			callSlots = append(callSlots, slot)
			j.Append(slot, events, tr.Done())
		}
		tr.Wait()
	}
	results := tr.Wait()
	lastSeq := make(map[int64]uint64)
	for i, r := range results {
		if r.Err != nil {
			t.Fatalf("append %d: %v", i, r.Err)
		}
		slot := callSlots[i]
		if r.Seq == 0 || r.Seq < lastSeq[slot] {
			t.Errorf("append %d to slot %d: seq %d after %d", i, slot, r.Seq, lastSeq[slot])
		}
		lastSeq[slot] = r.Seq
	}
	for _, slot := range slots {
		got, seq := Load(t, j, slot)
		if diff := cmp.Diff(want[slot], got, EquateEmpty); diff != "" {
			t.Errorf("slot %d events (-want +got):\n%s", slot, diff)
		}
		if seq != lastSeq[slot] {
			t.Errorf("slot %d: load seq %d, last done seq %d", slot, seq, lastSeq[slot])
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	tr.CheckOnce()
}

// testDoneNotWithinAppend makes done block until Append has returned: a
// done called from within Append would block it, and say so.
func testDoneNotWithinAppend(t *testing.T, j journal.Journal) {
	for i := 0; i < 20; i++ {
		returned := make(chan struct{})
		called := make(chan error, 1)
		j.Append(1, GenEvents(i, 1), func(_ uint64, err error) {
			select {
			case <-returned:
				called <- err
			case <-time.After(time.Second):
				called <- errors.New("done called from within Append")
			}
		})
		close(returned)
		select {
		case err := <-called:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(WaitTimeout):
			t.Fatal("done not called")
		}
	}
}

func testTail(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	events, seq, err := j.Tail(ctx, 9)
	if err != nil || len(events) != 0 || seq != 0 {
		t.Fatalf("tail of empty slot: %v, %d, %v; want none, 0, nil", events, seq, err)
	}
	AppendWait(t, j, 9, GenEvents(1, 2))
	AppendWait(t, j, 9, GenEvents(2, 3))
	tr := NewTracker(t)
	var last []journal.Event
	for i := 3; i < 10; i++ {
		last = GenEvents(i, 2)
		j.Append(9, last, tr.Done())
	}
	tr.Wait()
	all, loadSeq := Load(t, j, 9)
	tail, tailSeq, err := j.Tail(ctx, 9)
	if err != nil {
		t.Fatal(err)
	}
	if tailSeq != loadSeq {
		t.Errorf("tail seq %d, load seq %d", tailSeq, loadSeq)
	}
	// Appends may share a record, so the tail holds at least the last one.
	if len(tail) < len(last) || len(tail) > len(all) {
		t.Fatalf("tail has %d events, want %d to %d", len(tail), len(last), len(all))
	}
	if diff := cmp.Diff(all[len(all)-len(tail):], tail, EquateEmpty); diff != "" {
		t.Errorf("tail is not the end of the slot (-load +tail):\n%s", diff)
	}
	if diff := cmp.Diff(last, tail[len(tail)-len(last):], EquateEmpty); diff != "" {
		t.Errorf("tail does not end with the last append (-want +got):\n%s", diff)
	}
}

func testSlots(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	slots, err := j.Slots(ctx)
	if err != nil || len(slots) != 0 {
		t.Fatalf("slots of empty journal: %v, %v", slots, err)
	}
	tr := NewTracker(t)
	// Text order differs from numeric order: 100 < 20 < 3 as strings.
	for _, s := range []int64{100, 20, 5, 0, -3, 3, 1, 20, 100} {
		j.Append(s, GenEvents(int(s+10), 1), tr.Done())
	}
	tr.Wait()
	slots, err = j.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{-3, 0, 1, 3, 5, 20, 100}, slots); diff != "" {
		t.Errorf("slots (-want +got):\n%s", diff)
	}
}

func testPurgeUpTo(t *testing.T, j journal.Journal) {
	ctx := context.Background()
	a, b, c := GenEvents(1, 2), GenEvents(2, 3), GenEvents(3, 1)
	other := GenEvents(4, 2)
	AppendWait(t, j, 2, a)
	seqB := AppendWait(t, j, 2, b)
	AppendWait(t, j, 4, other)
	seqC := AppendWait(t, j, 2, c)

	if err := j.PurgeUpTo(ctx, 2, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := Load(t, j, 2); len(got) != len(a)+len(b)+len(c) {
		t.Fatalf("PurgeUpTo(0) removed events: %d left", len(got))
	}
	if err := j.PurgeUpTo(ctx, 2, seqB); err != nil {
		t.Fatal(err)
	}
	got, seq := Load(t, j, 2)
	if diff := cmp.Diff(c, got, EquateEmpty); diff != "" || seq != seqC {
		t.Errorf("after purge up to %d: seq %d (want %d), events (-want +got):\n%s", seqB, seq, seqC, diff)
	}
	if got, _ := Load(t, j, 4); !cmp.Equal(other, got, EquateEmpty) {
		t.Errorf("purging slot 2 changed slot 4: %v", got)
	}
	if err := j.PurgeUpTo(ctx, 2, seqC); err != nil {
		t.Fatal(err)
	}
	if got, seq := Load(t, j, 2); len(got) != 0 || seq != 0 {
		t.Errorf("after purging all: %d events, seq %d", len(got), seq)
	}
	if slots, err := j.Slots(ctx); err != nil || !cmp.Equal(slots, []int64{4}) {
		t.Errorf("slots after purging slot 2: %v, %v; want [4]", slots, err)
	}
	if err := j.PurgeUpTo(ctx, 77, math.MaxUint64); err != nil {
		t.Errorf("purge of an empty slot: %v", err)
	}
}

// testConcurrentAppends: callers share one slot; each caller's events
// must come back in its call order.
func testConcurrentAppends(t *testing.T, j journal.Journal) {
	const callers, perCaller = 8, 50
	const slot = 42
	var wg sync.WaitGroup
	trs := make([]*Tracker, callers)
	for c := range callers {
		trs[c] = NewTracker(t)
		wg.Go(func() {
			for i := range perCaller {
				ev := journal.Event{Kind: journal.Fired, ID: msgid.New(int64(c), uint64(i)), At: int64(i)}
				j.Append(slot, []journal.Event{ev}, trs[c].Done())
			}
		})
	}
	wg.Wait()
	for c, tr := range trs {
		var prev uint64
		for i, r := range tr.Wait() {
			if r.Err != nil || r.Seq < prev {
				t.Fatalf("caller %d append %d: seq %d after %d, err %v", c, i, r.Seq, prev, r.Err)
			}
			prev = r.Seq
		}
	}
	got, _ := Load(t, j, slot)
	if len(got) != callers*perCaller {
		t.Fatalf("loaded %d events, want %d", len(got), callers*perCaller)
	}
	next := make([]uint64, callers)
	for _, ev := range got {
		c := ev.ID.DeliverAt()
		if ev.ID.Stamp() != next[c] {
			t.Fatalf("caller %d: event %d where %d was due", c, ev.ID.Stamp(), next[c])
		}
		next[c]++
	}
}

func testCloseFlushes(t *testing.T, j journal.Journal) {
	tr := NewTracker(t)
	for i := range 200 {
		j.Append(int64(i%3), GenEvents(i, 2), tr.Done())
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	for i, r := range tr.results {
		if tr.calls[i] != 1 || r.Err != nil || r.Seq == 0 {
			t.Errorf("append %d after Close returned: %d calls, seq %d, err %v", i, tr.calls[i], r.Seq, r.Err)
		}
	}
	tr.mu.Unlock()

	returned := make(chan struct{})
	errc := make(chan error, 1)
	j.Append(0, GenEvents(1, 1), func(_ uint64, err error) {
		select {
		case <-returned:
			errc <- err
		case <-time.After(time.Second):
			errc <- errors.New("done called from within Append")
		}
	})
	close(returned)
	select {
	case err := <-errc:
		if !errors.Is(err, journal.ErrClosed) {
			t.Errorf("append after close: %v, want ErrClosed", err)
		}
	case <-time.After(WaitTimeout):
		t.Fatal("done of append after close not called")
	}
	if err := j.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// PayloadEvents covers the edges of every field.
func PayloadEvents() []journal.Event {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	id := msgid.Compose(1_700_000_060_000, 1<<40|3, 0x8000_0000_0000_0001)
	legacy := msgid.New(1_700_000_060_000, 1<<40|4) // no random part, as ids were once
	return []journal.Event{
		{Kind: journal.Scheduled, ID: id, At: 1_700_000_000_000, Target: "a.b.c", DeliverAt: id.DeliverAt(),
			Header: journal.Header{"K": {"v1", "v2", ""}, "Ünï": {"ç\x00de"}, "Empty": nil}, Body: all},
		{Kind: journal.Scheduled, ID: id, At: 1_700_000_000_001, Target: "big", DeliverAt: id.DeliverAt() + 5, Body: big},
		{Kind: journal.Scheduled, ID: msgid.Compose(-1, math.MaxUint64, math.MaxUint64), At: math.MinInt64, DeliverAt: math.MaxInt64, Target: "x"},
		{Kind: journal.Scheduled, ID: legacy, At: 1_700_000_000_002, Target: "old", DeliverAt: legacy.DeliverAt(), Body: []byte("old")},
		{Kind: journal.Fired, ID: legacy, At: 1_700_000_060_001},
		{Kind: journal.Scheduled, ID: id, At: math.MaxInt64},
		{Kind: journal.Cancelled, ID: id, At: -5},
		{Kind: journal.Fired, ID: id, At: 0},
		{Kind: journal.Closed, At: 1_700_000_120_000},
		{Kind: journal.Closed, ID: id, At: 1, Body: []byte{0}},
	}
}

func testPayloadRoundTrip(t *testing.T, j journal.Journal) {
	events := PayloadEvents()
	want := journal.CloneEvents(events)
	tr := NewTracker(t)
	j.Append(1, events, tr.Done())
	// The journal must have copied what it needs by now.
	for i := range events {
		for k := range events[i].Body {
			events[i].Body[k] ^= 0xff
		}
		for _, k := range slices.Collect(maps.Keys(events[i].Header)) {
			for v := range events[i].Header[k] {
				events[i].Header[k][v] = "changed"
			}
			events[i].Header[k+"!"] = nil
		}
		events[i].Target = "changed"
	}
	if r := tr.Wait()[0]; r.Err != nil {
		t.Fatal(r.Err)
	}
	got, _ := Load(t, j, 1)
	if diff := cmp.Diff(want, got, EquateEmpty); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	got[0].Body[0] = 0xee
	got[0].Header["K"][0] = "changed"
	again, _ := Load(t, j, 1)
	if diff := cmp.Diff(want, again, EquateEmpty); diff != "" {
		t.Errorf("changing loaded events changed the journal (-want +got):\n%s", diff)
	}
}

func testInvalidEvent(t *testing.T, j journal.Journal) {
	tr := NewTracker(t)
	j.Append(1, []journal.Event{{Kind: journal.Fired, At: 1}, {Kind: 0}}, tr.Done())
	j.Append(1, GenEvents(1, 1), tr.Done())
	rs := tr.Wait()
	if !errors.Is(rs[0].Err, journal.ErrInvalidEvent) {
		t.Errorf("append of kind 0: %v, want ErrInvalidEvent", rs[0].Err)
	}
	if rs[1].Err != nil {
		t.Errorf("append after an invalid one: %v", rs[1].Err)
	}
	if got, _ := Load(t, j, 1); !cmp.Equal(GenEvents(1, 1), got, EquateEmpty) {
		t.Errorf("slot holds %v, want only the valid append", got)
	}
}

// BodyEvents returns n Scheduled events with bodies of size bytes.
func BodyEvents(n, size int) []journal.Event {
	events := GenEvents(0, n)
	for i := range events {
		events[i] = journal.Event{Kind: journal.Scheduled, ID: events[i].ID, At: events[i].At, Target: "t",
			Body: []byte(strings.Repeat(string(rune('a'+i%26)), size))}
	}
	return events
}

// V1Record is a record written by tock before ids had a random part
// (record version 1, 16-byte ids), encoded by that code, and the events it
// holds: two batches, as the NATS journal merges appends. Journals written
// then hold such records; they must keep loading, to the same events and
// ids (which print as "000038fud2dk46gvsq4je40000" and
// "000038fud2vk0000000000000s").
func V1Record() ([]byte, []journal.Event) {
	b, err := hex.DecodeString("0102c1f49ec4e6bf68904e1a1fe68937100000000c6f72646572732e636c6f736501054f72646572" +
		"010234320e636c6f7365206f7264657220343282ac03e0da010000000000000007028386edc4e6bf68011a1fe6893710000004bab908")
	if err != nil {
		panic(err)
	}
	id, other := msgid.New(1_795_269_630_786, 1_882_476_646_272_860_160), msgid.New(1_795_269_640_000, 7)
	return b, []journal.Event{
		{Kind: journal.Scheduled, ID: id, At: 1_795_269_625_786, Target: "orders.close", DeliverAt: id.DeliverAt(),
			Header: journal.Header{"Order": {"42"}}, Body: []byte("close order 42")},
		{Kind: journal.Cancelled, ID: other, At: 1_795_269_626_000},
		{Kind: journal.Fired, ID: id, At: 1_795_269_630_787},
		{Kind: journal.Closed, At: 1_795_269_700_000},
	}
}
