package natsjournal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/journaltest"
	"github.com/tockd/tock/msgid"
)

// startServer runs an embedded JetStream server storing in dir.
func startServer(t testing.TB, dir string) *server.Server { return natstest.Start(t, dir) }

func connect(t testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	return natstest.Connect(t, s, opts...)
}

var streamCounter atomic.Int64

// testConfig names a fresh stream, so tests sharing a server do not meet.
func testConfig() Config {
	n := streamCounter.Add(1)
	return Config{
		Stream:     fmt.Sprintf("J%d", n),
		Prefix:     fmt.Sprintf("j%d", n),
		SlotWidth:  time.Second,
		AckTimeout: 2 * time.Second,
		// journaltest's events fit no slot width; the record checks have
		// tests of their own (quarantine_test.go).
		SkipRecordCheck: true,
	}
}

func openJournal(t testing.TB, nc *nats.Conn, cfg Config) *Journal {
	t.Helper()
	j, err := New(context.Background(), nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func TestNATSContract(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	journaltest.Run(t, func(t *testing.T) journal.Journal { return openJournal(t, nc, testConfig()) })
}

// subjectMsgs counts the records stored for slot.
func subjectMsgs(t *testing.T, j *Journal, slot int64) uint64 {
	t.Helper()
	info, err := j.stream.Info(context.Background(), jetstream.WithSubjectFilter(j.subject(slot)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[j.subject(slot)]
}

func TestNATSSplitsBigAppends(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := testConfig()
	cfg.MaxRecordBytes = 2048
	j := openJournal(t, nc, cfg)

	big := journaltest.BodyEvents(60, 100)
	seq := journaltest.AppendWait(t, j, 1, big)
	got, loadSeq := journaltest.Load(t, j, 1)
	if diff := cmp.Diff(big, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if seq != loadSeq {
		t.Errorf("done seq %d, load seq %d: done must get the last part's seq", seq, loadSeq)
	}
	if n := subjectMsgs(t, j, 1); n < 4 {
		t.Errorf("%d records for ~7 KB in 2 KB records", n)
	}

	tr := journaltest.NewTracker(t)
	j.Append(2, journaltest.BodyEvents(1, 3000), tr.Done())
	j.Append(2, journaltest.BodyEvents(1, 10), tr.Done())
	rs := tr.Wait()
	if !errors.Is(rs[0].Err, journal.ErrTooLarge) || rs[1].Err != nil {
		t.Errorf("append of a 3 KB event: %v; next append: %v", rs[0].Err, rs[1].Err)
	}
}

// TestNATSMergesAppends: appends queued during a round share records.
func TestNATSMergesAppends(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	j := openJournal(t, nc, testConfig())
	tr := journaltest.NewTracker(t)
	var want []journal.Event
	for i := range 500 {
		events := journaltest.GenEvents(i, 1)
		want = append(want, events...)
		j.Append(1, events, tr.Done())
	}
	tr.Wait()
	got, _ := journaltest.Load(t, j, 1)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	n := subjectMsgs(t, j, 1)
	t.Logf("500 appends stored as %d records", n)
	if n >= 500 {
		t.Errorf("500 appends stored as %d records, want fewer", n)
	}
}

// TestNATSLoadManyRecords: a slot bigger than one direct-get batch, in
// count and in bytes, interleaved with another slot.
func TestNATSLoadManyRecords(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	j := openJournal(t, nc, testConfig())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var want []journal.Event
	for i := range 3000 {
		events := journaltest.GenEvents(i, 1)
		if i%500 == 0 {
			events = journaltest.BodyEvents(1, 900_000) // 3 MB total, over scanMaxBytes with the rest
		}
		want = append(want, events...)
		publishRecord(t, js, j.subject(1), events)
		publishRecord(t, js, j.subject(2), journaltest.GenEvents(i, 1))
	}
	waitPublished(t, js)
	got, seq := journaltest.Load(t, j, 1)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if _, tailSeq, _ := j.Tail(context.Background(), 1); seq != tailSeq {
		t.Errorf("load seq %d, tail seq %d", seq, tailSeq)
	}
}

func publishRecord(t testing.TB, js jetstream.JetStream, subj string, events []journal.Event) {
	t.Helper()
	if _, err := js.PublishAsync(subj, journal.EncodeRecord(nil, events), jetstream.WithStallWait(10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func waitPublished(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
}

func TestNATSRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	cfg := testConfig()
	j := openJournal(t, connect(t, s), cfg)
	want := journaltest.GenEvents(1, 5)
	seq := journaltest.AppendWait(t, j, 3, want)
	j.Close()
	s.Shutdown()
	s.WaitForShutdown()

	s = startServer(t, dir)
	j = openJournal(t, connect(t, s), cfg)
	got, gotSeq := journaltest.Load(t, j, 3)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" || gotSeq != seq {
		t.Fatalf("after restart: seq %d (want %d), events (-want +got):\n%s", gotSeq, seq, diff)
	}
	if next := journaltest.AppendWait(t, j, 3, journaltest.GenEvents(2, 1)); next <= seq {
		t.Errorf("seq after restart %d, before %d", next, seq)
	}
}

// TestNATSReadsVersion1Records: a slot written before ids had a random
// part (record version 1) loads, before and after a restart, with the
// records appended since (version 2) after it.
func TestNATSReadsVersion1Records(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	cfg := testConfig()
	cfg.SlotWidth = time.Minute // the old record's ids share one slot
	nc := connect(t, s)
	j := openJournal(t, nc, cfg)
	rec, want := journaltest.V1Record()
	slot := want[0].ID.DeliverAt() / cfg.SlotWidth.Milliseconds()
	if _, err := nc.Request(j.subject(slot), rec, 5*time.Second); err != nil { // a JetStream publish: wait for its ack
		t.Fatal(err)
	}
	id := msgid.Compose(want[0].ID.DeliverAt()+1000, want[0].ID.Stamp()+1, 0x5eed)
	later := []journal.Event{
		{Kind: journal.Scheduled, ID: id, At: want[0].At + 1, Target: "orders.close", DeliverAt: id.DeliverAt(), Body: []byte("new")},
		{Kind: journal.Fired, ID: id, At: id.DeliverAt()},
	}
	journaltest.AppendWait(t, j, slot, later)
	want = append(want, later...)
	got, seq := journaltest.Load(t, j, slot)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if got[0].ID.String() != "000038fud2dk46gvsq4je40000" {
		t.Errorf("the old id prints as %s", got[0].ID)
	}
	j.Close()
	s.Shutdown()
	s.WaitForShutdown()

	j = openJournal(t, connect(t, startServer(t, dir)), cfg)
	got, gotSeq := journaltest.Load(t, j, slot)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" || gotSeq != seq {
		t.Fatalf("after restart: seq %d (want %d), events (-want +got):\n%s", gotSeq, seq, diff)
	}
}

// TestNATSServerGone: with the server down, every call fails with
// ErrUnavailable within about the ack timeout instead of hanging.
func TestNATSServerGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(s *server.Server, nc *nats.Conn)
	}{
		{"ServerDown", func(s *server.Server, _ *nats.Conn) { s.Shutdown(); s.WaitForShutdown() }},
		{"ConnClosed", func(_ *server.Server, nc *nats.Conn) { nc.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, t.TempDir())
			nc := connect(t, s)
			cfg := testConfig()
			cfg.AckTimeout = 500 * time.Millisecond
			j := openJournal(t, nc, cfg)
			journaltest.AppendWait(t, j, 1, journaltest.GenEvents(1, 1))
			tc.stop(s, nc)
			testUnavailable(t, j, cfg.AckTimeout)
		})
	}
}

func testUnavailable(t *testing.T, j *Journal, timeout time.Duration) {
	// An append may wait for the round in flight, then for its own.
	limit := 2*timeout + 300*time.Millisecond
	start := time.Now()
	tr := journaltest.NewTracker(t)
	for i := range 20 {
		j.Append(int64(i%4), journaltest.GenEvents(i, 1), tr.Done())
	}
	results := tr.Wait()
	for i, r := range results {
		if !errors.Is(r.Err, journal.ErrUnavailable) {
			t.Errorf("append %d: %v, want ErrUnavailable", i, r.Err)
		}
	}
	d := time.Since(start)
	t.Logf("appends failed after %v: %v", d, results[len(results)-1].Err)
	if d > limit {
		t.Errorf("appends failed after %v, want within %v", d, limit)
	}
	limit = timeout + 300*time.Millisecond

	// One round of several records ends at its deadline, whoever waits.
	var recs []*record
	for slot := range int64(5) {
		recs = append(recs, &record{slot: slot, subj: j.subject(slot), data: journal.EncodeRecord(nil, journaltest.GenEvents(1, 1))})
	}
	start = time.Now()
	j.publishRound(recs, j.cfg.AckTimeout)
	if d := time.Since(start); d > limit {
		t.Errorf("a round of %d records failed after %v, want within %v", len(recs), d, limit)
	}
	for _, r := range recs {
		if !errors.Is(r.err, journal.ErrUnavailable) {
			t.Errorf("record of slot %d: %v, want ErrUnavailable", r.slot, r.err)
		}
	}

	ctx := context.Background()
	calls := map[string]func() error{
		"load":  func() error { _, _, err := j.Load(ctx, 1); return err },
		"tail":  func() error { _, _, err := j.Tail(ctx, 1); return err },
		"slots": func() error { _, err := j.Slots(ctx); return err },
		"purge": func() error { return j.PurgeUpTo(ctx, 1, 1) },
	}
	for name, call := range calls {
		start := time.Now()
		if err := call(); !errors.Is(err, journal.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
		if d := time.Since(start); d > limit {
			t.Errorf("%s failed after %v, want within %v", name, d, limit)
		}
	}
	start = time.Now()
	j.Close()
	if d := time.Since(start); d > limit {
		t.Errorf("close took %v", d)
	}
}

func TestNATSSlotWidthMismatch(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	cfg := testConfig()
	openJournal(t, nc, cfg).Close()
	cfg.SlotWidth = 2 * time.Second
	_, err := New(context.Background(), nc, cfg)
	if !errors.Is(err, ErrSlotWidthMismatch) || !strings.Contains(err.Error(), "1000") || !strings.Contains(err.Error(), "2000") {
		t.Errorf("open with another width: %v, want ErrSlotWidthMismatch naming 1000 and 2000", err)
	}
	cfg.SlotWidth = time.Second
	openJournal(t, nc, cfg) // the original width still opens
}

// TestNATSAdoptsStream: an existing stream gets what the journal relies
// on; settings it does not care about stay.
func TestNATSAdoptsStream(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cfg := testConfig()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{"other.>"}, MaxAge: time.Hour, MaxMsgsPerSubject: 10,
		MaxBytes: 1 << 30, Metadata: map[string]string{"owner": "ops"},
	})
	if err != nil {
		t.Fatal(err)
	}
	j := openJournal(t, nc, cfg)
	info, err := j.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := info.Config
	if sc.MaxAge != 0 || sc.MaxMsgsPerSubject != -1 || sc.Discard != jetstream.DiscardNew || !sc.AllowDirect ||
		sc.MaxBytes != 1<<30 || sc.Metadata["owner"] != "ops" || sc.Metadata[SlotWidthKey] != "1000" ||
		!cmp.Equal(sc.Subjects, []string{"other.>", cfg.Prefix + ".>"}) {
		t.Errorf("adopted stream config: %+v", sc)
	}

	deny := testConfig()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: deny.Stream, Subjects: []string{deny.Prefix + ".>"}, DenyPurge: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, nc, deny); err == nil || !strings.Contains(err.Error(), "purge") {
		t.Errorf("open on a stream denying purges: %v", err)
	}
}

// TestNATSSlotsPaging: the server lists at most 100,000 subjects per stream
// info reply; Slots must page past that.
func TestNATSSlotsPaging(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 100k records")
	}
	nc := connect(t, startServer(t, t.TempDir()))
	j := openJournal(t, nc, testConfig())
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(20000))
	if err != nil {
		t.Fatal(err)
	}
	const n = server.JSMaxSubjectDetails + 1234
	rec := journal.EncodeRecord(nil, []journal.Event{{Kind: journal.Closed, At: 1}})
	for i := range n {
		if _, err := js.PublishAsync(j.subject(int64(i)), rec, jetstream.WithStallWait(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	waitPublished(t, js)
	slots, err := j.Slots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != n {
		t.Fatalf("%d slots, want %d", len(slots), n)
	}
	for i, s := range slots {
		if s != int64(i) {
			t.Fatalf("slots[%d] = %d", i, s)
		}
	}
}

// TestNATSStorageOverhead measures stored bytes per Scheduled event against
// the same message stored as a plain JetStream message, for one event per
// record (an idle journal) and merged records (a busy one).
func TestNATSStorageOverhead(t *testing.T) {
	const n = 200
	nc := connect(t, startServer(t, t.TempDir()))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	plain, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PLAIN", Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	// Real slot subjects: tock.journal.<ms / width>, 8 digits for 1 min.
	idle := openJournal(t, nc, Config{Stream: "IDLE", Prefix: "tock.journal", SlotWidth: time.Minute})
	busy := openJournal(t, nc, Config{Stream: "BUSY", Prefix: "tock.busy", SlotWidth: time.Minute})
	for _, size := range []int{16, 128, 1024} {
		msg := newBenchMsg()
		msg.body = make([]byte, size)
		before := []uint64{streamBytes(t, plain), streamBytes(t, idle.stream), streamBytes(t, busy.stream)}
		tr := journaltest.NewTracker(t)
		for i := range n {
			ev := msg.event(i)
			slot := ev.DeliverAt / time.Minute.Milliseconds()
			journaltest.AppendWait(t, idle, slot, []journal.Event{ev})
			busy.Append(slot, []journal.Event{ev}, tr.Done())
			if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: msg.target, Header: nats.Header(msg.header), Data: msg.body}); err != nil {
				t.Fatal(err)
			}
		}
		tr.Wait()
		per := func(s jetstream.Stream, i int) float64 { return float64(streamBytes(t, s)-before[i]) / n }
		p, i, b := per(plain, 0), per(idle.stream, 1), per(busy.stream, 2)
		t.Logf("body %4d B: plain %.0f B/msg, journal one event per record %.0f B (%.2fx), merged %.0f B (%.2fx)",
			size, p, i, i/p, b, b/p)
		if size >= 128 && i/p > 1.3 {
			t.Errorf("body %d: one-event records take %.2fx the plain message", size, i/p)
		}
	}
}

func streamBytes(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Bytes
}

// TestNATSStorageFull: a server refusal (here the stream's byte limit)
// fails the append with ErrUnavailable; records are never dropped to make
// room.
func TestNATSStorageFull(t *testing.T) {
	nc := connect(t, startServer(t, t.TempDir()))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{cfg.Prefix + ".>"}, MaxBytes: 4096,
	})
	if err != nil {
		t.Fatal(err)
	}
	j := openJournal(t, nc, cfg)
	first := journaltest.BodyEvents(1, 1000)
	journaltest.AppendWait(t, j, 1, first)
	var err2 error
	for i := 0; i < 10 && err2 == nil; i++ {
		tr := journaltest.NewTracker(t)
		j.Append(1, journaltest.BodyEvents(1, 1000), tr.Done())
		err2 = tr.Wait()[0].Err
	}
	if !errors.Is(err2, journal.ErrUnavailable) {
		t.Fatalf("append to a full stream: %v, want ErrUnavailable", err2)
	}
	t.Logf("full stream: %v", err2)
	if got, _ := journaltest.Load(t, j, 1); len(got) == 0 || !cmp.Equal(first, got[:1], journaltest.EquateEmpty) {
		t.Errorf("the first record was dropped to make room")
	}
}

// TestNATSQueueBound: while the server is away, queued appends are capped
// by MaxQueueBytes and the excess fails at once.
func TestNATSQueueBound(t *testing.T) {
	s := startServer(t, t.TempDir())
	cfg := testConfig()
	cfg.AckTimeout = 300 * time.Millisecond
	cfg.MaxQueueBytes = 1000
	j := openJournal(t, connect(t, s), cfg)
	s.Shutdown()
	s.WaitForShutdown()
	tr := journaltest.NewTracker(t)
	for range 20 {
		j.Append(1, journaltest.BodyEvents(1, 300), tr.Done())
	}
	var full int
	for _, r := range tr.Wait() {
		if !errors.Is(r.Err, journal.ErrUnavailable) {
			t.Fatalf("append with the server away: %v", r.Err)
		}
		if strings.Contains(r.Err.Error(), "queued") {
			full++
		}
	}
	if full < 10 {
		t.Errorf("%d of 20 appends of 300 B refused by a 1000 B queue, want most", full)
	}
}

// TestNATSReadConn: with a ReadConn, slot reads arrive on it, not on the
// connection appends (and deliveries) use.
func TestNATSReadConn(t *testing.T) {
	s := startServer(t, t.TempDir())
	nc, rc := connect(t, s), connect(t, s)
	cfg := testConfig()
	cfg.ReadConn = rc
	j := openJournal(t, nc, cfg)
	want := journaltest.GenEvents(1, 50)
	journaltest.AppendWait(t, j, 3, want)
	before, rcBefore := nc.Stats().InMsgs, rc.Stats().InMsgs
	got, _ := journaltest.Load(t, j, 3)
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("load (-want +got):\n%s", diff)
	}
	if n := nc.Stats().InMsgs - before; n != 0 {
		t.Errorf("the load brought %d messages on the append connection", n)
	}
	if n := rc.Stats().InMsgs - rcBefore; n == 0 {
		t.Error("the load brought nothing on the read connection")
	}
}
