package natsjournal

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/journaltest"
	"github.com/tockd/tock/msgid"
)

// fakeNow is a settable clock for the journal's bucket openings.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeNow) set(t time.Time) {
	f.mu.Lock()
	f.t = t
	f.mu.Unlock()
}

// layoutConfig: 1 s slots, 10 s buckets, buckets open 20 s ahead, on clk.
func layoutConfig(clk *fakeNow) Config {
	cfg := testConfig()
	cfg.BucketWidth = 10 * time.Second
	cfg.FineWindow = 20 * time.Second
	cfg.Now = clk.Now
	return cfg
}

// base lies on a bucket boundary.
var base = time.UnixMilli(2_000_000_000_000)

func schedAt(deliver time.Time, stamp uint64, at time.Time) journal.Event {
	return journal.Event{Kind: journal.Scheduled, ID: msgid.New(deliver.UnixMilli(), stamp), At: at.UnixMilli(),
		Target: "t", DeliverAt: deliver.UnixMilli(), Body: []byte{byte(stamp)}}
}

func cancelOf(ev journal.Event, at time.Time) journal.Event {
	return journal.Event{Kind: journal.Cancelled, ID: ev.ID, At: at.UnixMilli()}
}

func slotOf(j *Journal, ev journal.Event) int64 { return j.slotOfMs(ev.ID.DeliverAt()) }

// subjectCounts returns the stream's per-subject record counts.
func subjectCounts(t *testing.T, j *Journal) map[string]uint64 {
	t.Helper()
	info, err := j.stream.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

// waitOpened waits for the flusher to open every bucket the clock asks for.
func waitOpened(t testing.TB, j *Journal) {
	t.Helper()
	deadline := time.Now().Add(journaltest.WaitTimeout)
	for {
		j.signal()
		target := j.openTarget(j.cfg.Now().UnixMilli())
		j.mu.Lock()
		done := j.opened >= target && len(j.stale) == 0
		j.mu.Unlock()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("buckets not opened in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNATSFarBucketLifecycle: events of a slot beyond the fine window go to
// its bucket's far subject, mixed with other slots'; Load sorts them out;
// when the bucket opens they move to the slots' own subjects, the far
// subject is purged, and Load and Slots see the same as before.
func TestNATSFarBucketLifecycle(t *testing.T) {
	clk := &fakeNow{t: base}
	nc := connect(t, startServer(t, t.TempDir()))
	j := openJournal(t, nc, layoutConfig(clk))

	// Buckets of 10 s open 20 s ahead: at base, deliver times from
	// base+30 s on are far.
	farA := schedAt(base.Add(45*time.Second), 1, base)
	farB := schedAt(base.Add(47*time.Second), 2, base)
	near := schedAt(base.Add(5*time.Second), 3, base)
	journaltest.AppendWait(t, j, slotOf(j, farA), []journal.Event{farA})
	journaltest.AppendWait(t, j, slotOf(j, farB), []journal.Event{farB})
	journaltest.AppendWait(t, j, slotOf(j, near), []journal.Event{near})
	cancelA := cancelOf(farA, base.Add(time.Second))
	journaltest.AppendWait(t, j, slotOf(j, farA), []journal.Event{cancelA})

	subj := subjectCounts(t, j)
	if got := subj[j.farSubject(j.bucketOf(slotOf(j, farA)))]; got != 3 {
		t.Errorf("far subject of bucket 4 holds %d records, want 3 (subjects %v)", got, subj)
	}
	if got := subj[j.subject(slotOf(j, farA))]; got != 0 {
		t.Errorf("far slot's own subject holds %d records, want none", got)
	}
	check := func(when string) {
		t.Helper()
		for _, tc := range []struct {
			ev   journal.Event
			want []journal.Event
		}{{farA, []journal.Event{farA, cancelA}}, {farB, []journal.Event{farB}}, {near, []journal.Event{near}}} {
			got, _ := journaltest.Load(t, j, slotOf(j, tc.ev))
			if diff := cmp.Diff(tc.want, got, journaltest.EquateEmpty); diff != "" {
				t.Errorf("%s: load slot %d (-want +got):\n%s", when, slotOf(j, tc.ev), diff)
			}
		}
	}
	check("far")
	// Read finds a far slot's records on the far subject by the sequences
	// Scan gave, and leaves out another slot's record there.
	seqOf := func(ev journal.Event) uint64 {
		t.Helper()
		var seq uint64
		if _, err := j.Scan(context.Background(), slotOf(j, ev), func(s uint64, evs []journal.Event) error {
			if slices.ContainsFunc(evs, func(e journal.Event) bool { return e.ID == ev.ID && e.Kind == journal.Scheduled }) {
				seq = s
			}
			return nil
		}); err != nil || seq == 0 {
			t.Fatalf("scan for %s: seq %d, %v", ev.ID, seq, err)
		}
		return seq
	}
	read := func(slot int64, seqs ...uint64) []journal.Event {
		t.Helper()
		var got []journal.Event
		if err := j.Read(context.Background(), slot, seqs, func(_ uint64, evs []journal.Event) error {
			got = append(got, evs...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	seqA, seqB := seqOf(farA), seqOf(farB)
	if got := read(slotOf(j, farA), seqA, seqB); !cmp.Equal(got, []journal.Event{farA}, journaltest.EquateEmpty) {
		t.Errorf("read of a far slot's record and its neighbour's: %v, want only its own", got)
	}
	slots, err := j.Slots(context.Background())
	if err != nil || !cmp.Equal(slots, []int64{slotOf(j, near)}) {
		t.Errorf("slots while far = %v, %v; want only the near one", slots, err)
	}

	clk.set(base.Add(30 * time.Second)) // bucket 4 opens at base+20 s
	waitOpened(t, j)
	subj = subjectCounts(t, j)
	if got, ok := subj[j.farSubject(j.bucketOf(slotOf(j, farA)))]; ok {
		t.Errorf("far subject still holds %d records after opening", got)
	}
	check("opened")
	// The far records are gone: a Read by their sequences finds nothing,
	// and a Scan the moved copies.
	if got := read(slotOf(j, farA), seqA); len(got) != 0 {
		t.Errorf("read of a moved far record: %v", got)
	}
	if moved := seqOf(farA); moved <= seqA {
		t.Errorf("farA's record moved from %d to %d", seqA, moved)
	}
	slots, err = j.Slots(context.Background())
	if want := []int64{slotOf(j, near), slotOf(j, farA), slotOf(j, farB)}; err != nil || !cmp.Equal(slots, want) {
		t.Errorf("slots after opening = %v, %v; want %v", slots, err, want)
	}
	// Appends to an open bucket go to the slot's own subject.
	fired := journal.Event{Kind: journal.Fired, ID: farB.ID, At: base.Add(47 * time.Second).UnixMilli()}
	journaltest.AppendWait(t, j, slotOf(j, farB), []journal.Event{fired})
	if got, _ := journaltest.Load(t, j, slotOf(j, farB)); !cmp.Equal(got, []journal.Event{farB, fired}, journaltest.EquateEmpty) {
		t.Errorf("after a fire: %v", got)
	}
	if _, ok := subjectCounts(t, j)[j.farSubject(j.bucketOf(slotOf(j, farA)))]; ok {
		t.Error("an append to an open bucket went to its far subject")
	}
}

// TestNATSOpeningInterrupted: a start finds a bucket's far records and part
// of their copies (a crash between copy and purge): it opens the bucket
// again, and every message's events keep their order.
func TestNATSOpeningInterrupted(t *testing.T) {
	clk := &fakeNow{t: base}
	dir := t.TempDir()
	s := startServer(t, dir)
	nc := connect(t, s)
	cfg := layoutConfig(clk)
	j := openJournal(t, nc, cfg)
	a := schedAt(base.Add(45*time.Second), 1, base)
	b := schedAt(base.Add(45*time.Second), 2, base)
	ca := cancelOf(a, base.Add(time.Second))
	journaltest.AppendWait(t, j, slotOf(j, a), []journal.Event{a, b})
	journaltest.AppendWait(t, j, slotOf(j, a), []journal.Event{ca})
	j.Close()

	// The copy of a alone reached the slot's subject before the crash.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	publishRecord(t, js, j.subject(slotOf(j, a)), []journal.Event{a})
	waitPublished(t, js)

	clk.set(base.Add(30 * time.Second))
	j2 := openJournal(t, nc, cfg) // opens bucket 4 at start
	got, _ := journaltest.Load(t, j2, slotOf(j2, a))
	want := []journal.Event{a, a, b, ca} // the partial copy, then the whole copy
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Errorf("load after the interrupted opening (-want +got):\n%s", diff)
	}
	if _, ok := subjectCounts(t, j2)[j2.farSubject(j2.bucketOf(slotOf(j2, a)))]; ok {
		t.Error("far subject not purged by the second opening")
	}
}

// TestNATSClockStepBackKeepsOrder: after a restart with the clock set back,
// a bucket that was open is far again; its slot already has records of its
// own. A cancel then goes far; Load merges both in append order, and when
// the bucket opens again the copy lands after the slot's own records, so the
// message stays cancelled.
func TestNATSClockStepBackKeepsOrder(t *testing.T) {
	clk := &fakeNow{t: base.Add(30 * time.Second)}
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := layoutConfig(clk)
	j := openJournal(t, nc, cfg)
	a := schedAt(base.Add(45*time.Second), 1, base.Add(30*time.Second))
	journaltest.AppendWait(t, j, slotOf(j, a), []journal.Event{a}) // bucket 4 is open: own subject
	j.Close()

	clk.set(base) // stepped back: bucket 4 is far again
	j = openJournal(t, nc, cfg)
	ca := cancelOf(a, base)
	b := schedAt(base.Add(46*time.Second), 2, base)
	journaltest.AppendWait(t, j, slotOf(j, a), []journal.Event{ca})
	journaltest.AppendWait(t, j, slotOf(j, b), []journal.Event{b})
	if got := subjectCounts(t, j)[j.farSubject(j.bucketOf(slotOf(j, a)))]; got != 2 {
		t.Fatalf("far subject holds %d records, want 2", got)
	}
	if got, _ := journaltest.Load(t, j, slotOf(j, a)); !cmp.Equal(got, []journal.Event{a, ca}, journaltest.EquateEmpty) {
		t.Errorf("merged load = %v, want schedule then cancel", got)
	}
	clk.set(base.Add(30 * time.Second))
	waitOpened(t, j)
	if got, _ := journaltest.Load(t, j, slotOf(j, a)); !cmp.Equal(got, []journal.Event{a, ca}, journaltest.EquateEmpty) {
		t.Errorf("load after reopening = %v, want schedule then cancel", got)
	}
	if got, _ := journaltest.Load(t, j, slotOf(j, b)); !cmp.Equal(got, []journal.Event{b}, journaltest.EquateEmpty) {
		t.Errorf("load of b after reopening = %v", got)
	}
}

// TestNATSOldLayoutKeepsWorking: a stream written before far buckets (no
// bucket metadata, far slots on their own subjects) opens without a
// migration; its far slots load, and new far events merge with them.
func TestNATSOldLayoutKeepsWorking(t *testing.T) {
	clk := &fakeNow{t: base}
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := layoutConfig(clk)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	old := cfg.streamConfig()
	delete(old.Metadata, BucketWidthKey)
	old.AllowRollup = false
	if _, err := js.CreateStream(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	a := schedAt(base.Add(100*time.Second), 1, base)
	slotA := a.ID.DeliverAt() / 1000
	publishRecord(t, js, cfg.Prefix+"."+strconv.FormatInt(slotA, 10), []journal.Event{a})
	waitPublished(t, js)

	j := openJournal(t, nc, cfg)
	if got := j.stream.CachedInfo().Config.Metadata[BucketWidthKey]; got != "10000" {
		t.Errorf("bucket width metadata = %q, want 10000", got)
	}
	ca := cancelOf(a, base.Add(time.Second))
	journaltest.AppendWait(t, j, slotA, []journal.Event{ca})
	if got, _ := journaltest.Load(t, j, slotA); !cmp.Equal(got, []journal.Event{a, ca}, journaltest.EquateEmpty) {
		t.Errorf("old far slot with a new far cancel loads as %v", got)
	}
	clk.set(base.Add(90 * time.Second))
	waitOpened(t, j)
	if got, _ := journaltest.Load(t, j, slotA); !cmp.Equal(got, []journal.Event{a, ca}, journaltest.EquateEmpty) {
		t.Errorf("after opening: %v", got)
	}
}

// TestNATSNewestFutureAt: Newest bounds an At ahead of the clock (stamps
// run ahead of it after the clock stepped back), also after a reopen; the
// server's time of the last write alone would not.
func TestNATSNewestFutureAt(t *testing.T) {
	clk := &fakeNow{t: time.Now()}
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := layoutConfig(clk)
	j := openJournal(t, nc, cfg)
	future := time.Now().Add(time.Hour).UnixMilli()
	ev := journal.Event{Kind: journal.Cancelled, ID: msgid.New(future, 1), At: future}
	journaltest.AppendWait(t, j, 7, []journal.Event{ev})
	if n, err := j.Newest(context.Background()); err != nil || n < future {
		t.Fatalf("newest = %d, %v; want ≥ %d", n, err, future)
	}
	j.Close()
	j = openJournal(t, nc, cfg)
	if n, err := j.Newest(context.Background()); err != nil || n < future {
		t.Fatalf("newest after reopen = %d, %v; want ≥ %d", n, err, future)
	}
	// Later rounds keep one meta record.
	for i := range 3 {
		ev.At = future + int64(i+1)
		journaltest.AppendWait(t, j, 7, []journal.Event{ev})
	}
	if got := subjectCounts(t, j)[j.metaSubject()]; got != 1 {
		t.Errorf("meta subject holds %d records, want 1", got)
	}
	if n, _ := j.Newest(context.Background()); n < future+3 {
		t.Errorf("newest = %d, want ≥ %d", n, future+3)
	}
}

// TestNATSYearAheadSubjects: messages spread over a year cost about one
// subject per far bucket (a day), not one per one-minute slot.
func TestNATSYearAheadSubjects(t *testing.T) {
	const n = 5000
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := testConfig()
	cfg.SlotWidth = time.Minute
	j := openJournal(t, nc, cfg)
	now := time.Now()
	year := 365 * 24 * time.Hour
	tr := journaltest.NewTracker(t)
	var slots []int64
	for i := range n {
		deliver := now.Add(time.Duration(i) * (year / n))
		ev := schedAt(deliver, uint64(i+1), now)
		slots = append(slots, slotOf(j, ev))
		j.Append(slotOf(j, ev), []journal.Event{ev}, tr.Done())
	}
	tr.Wait()
	subjects := subjectCounts(t, j)
	if len(subjects) > 367+2*24*60 {
		t.Errorf("%d messages over a year use %d subjects", n, len(subjects))
	}
	t.Logf("%d messages over a year: %d subjects", n, len(subjects))
	// Every message loads from wherever it is.
	for _, i := range []int{0, 1, n / 2, n - 1} {
		got, _ := journaltest.Load(t, j, slots[i])
		if !slices.ContainsFunc(got, func(ev journal.Event) bool { return ev.Kind == journal.Scheduled && ev.Body[0] == byte(i+1) }) {
			t.Errorf("message %d not in its slot's load: %v", i, got)
		}
	}
}
