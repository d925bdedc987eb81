package journal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/journaltest"
	"github.com/tockd/tock/msgid"
)

func codecCases() map[string][]journal.Event {
	id := msgid.Compose(1_700_000_060_000, 42, 0x0123_4567_89ab_cdef)
	return map[string][]journal.Event{
		"empty":     nil,
		"closed":    {{Kind: journal.Closed, At: 1_700_000_000_000}},
		"fired":     {{Kind: journal.Fired, ID: id, At: 1_700_000_060_003}},
		"cancelled": {{Kind: journal.Cancelled, ID: id, At: 1_700_000_000_500}},
		"scheduled": {{Kind: journal.Scheduled, ID: id, At: 1_700_000_000_000, Target: "orders.new",
			DeliverAt: id.DeliverAt(), Header: journal.Header{"A": {"1"}, "B": {"x", "y"}}, Body: []byte("hello")}},
		"mixed":    journaltest.GenEvents(5, 12),
		"payloads": journaltest.PayloadEvents(),
		"extremes": {
			{Kind: journal.Fired, ID: msgid.Compose(math.MinInt64, math.MaxUint64, math.MaxUint64), At: math.MaxInt64},
			{Kind: journal.Fired, ID: msgid.New(math.MaxInt64, 0), At: math.MinInt64},
			{Kind: journal.Fired, ID: msgid.Compose(0, 0, 1), At: 0},
			{Kind: journal.Scheduled, At: math.MinInt64, DeliverAt: math.MaxInt64},
		},
		"stray fields": {{Kind: journal.Closed, ID: id, At: 5, Target: "t", Header: journal.Header{"": {""}}, Body: []byte{1}}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for name, events := range codecCases() {
		t.Run(name, func(t *testing.T) {
			b := journal.EncodeRecord([]byte("prefix"), events)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("EncodeRecord did not append to dst")
			}
			b = b[len("prefix"):]
			got, err := journal.DecodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(events, got, journaltest.EquateEmpty); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
			if again := journal.EncodeRecord(nil, got); !bytes.Equal(b, again) {
				t.Errorf("re-encoding differs: %x vs %x", b, again)
			}
		})
	}
}

// TestCodecNoAlias: decoded events must survive reuse of the input.
func TestCodecNoAlias(t *testing.T) {
	want := codecCases()["scheduled"]
	b := journal.EncodeRecord(nil, want)
	got, err := journal.DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xff
	}
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Errorf("decoded events changed with their input (-want +got):\n%s", diff)
	}
	got[0].Body = append(got[0].Body, '!')
	if string(want[0].Body) != "hello" {
		t.Error("appending to a decoded body changed something else")
	}
}

// TestCodecMergedBatches: a record may hold several batches, as the NATS
// journal stores merged appends.
func TestCodecMergedBatches(t *testing.T) {
	a, b := journaltest.GenEvents(1, 3), journaltest.GenEvents(2, 4)
	rec := journal.EncodeRecord(nil, a)
	rec = append(rec, journal.EncodeRecord(nil, b)[1:]...)
	got, err := journal.DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(append(a, b...), got, journaltest.EquateEmpty); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestCodecTruncated(t *testing.T) {
	for name, events := range codecCases() {
		b := journal.EncodeRecord(nil, events)
		// Every prefix of the first 4 KiB, then a sample: the big body of
		// "payloads" would otherwise make this slow.
		for n := 0; n < len(b); n += max(1, (n-4096)/64) {
			if _, err := journal.DecodeRecord(b[:n]); !errors.Is(err, journal.ErrCorrupt) {
				t.Errorf("%s: prefix of %d/%d bytes: %v, want ErrCorrupt", name, n, len(b), err)
			}
		}
	}
}

func TestCodecHostile(t *testing.T) {
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	head := []byte{byte(journal.Scheduled) | 0x40 /* flagDelivery */, 0, 0} // kind, at, deliver at
	for name, b := range map[string][]byte{
		"bad version":     {3, 0},
		"version zero":    {0, 0},
		"huge count":      cat([]byte{1}, uv(math.MaxUint64)),
		"count too big":   cat([]byte{1}, uv(3), []byte{byte(journal.Fired), 0}),
		"kind zero":       {1, 1, 0, 0},
		"kind unknown":    {1, 1, 9, 0},
		"long varint":     cat([]byte{1, 1, byte(journal.Fired)}, bytes.Repeat([]byte{0xff}, 11)),
		"huge target":     cat([]byte{1, 1}, head, uv(math.MaxInt64)),
		"huge header":     cat([]byte{1, 1}, head, uv(0), uv(1<<40)),
		"huge values":     cat([]byte{1, 1}, head, uv(0), uv(1), uv(1), []byte("k"), uv(1<<40)),
		"huge body":       cat([]byte{1, 1}, head, uv(0), uv(0), uv(1<<62)),
		"duplicate key":   cat([]byte{1, 1}, head, uv(0), uv(2), uv(1), []byte("k"), uv(0), uv(1), []byte("k"), uv(0), uv(0)),
		"short stamp":     {1, 1, byte(journal.Fired) | 0x80 /* flagID */, 0, 0, 1, 2, 3},
		"short random":    {2, 1, byte(journal.Fired) | 0x80, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3},
		"v1 id in v2":     {2, 1, byte(journal.Fired) | 0x80, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
		"trailing junk":   cat(journal.EncodeRecord(nil, journaltest.GenEvents(1, 1)), []byte{0x80}),
		"just a version":  {1},
		"empty":           {},
		"overlong length": cat([]byte{1, 1}, head, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01}),
	} {
		if events, err := journal.DecodeRecord(b); !errors.Is(err, journal.ErrCorrupt) {
			t.Errorf("%s: %v, %v; want ErrCorrupt", name, events, err)
		}
	}
}

// TestCodecSize pins the cost of common events, the journal's storage
// per message.
func TestCodecSize(t *testing.T) {
	id := msgid.Compose(1_700_000_060_000, 1_700_000_000_000<<20, 0xfedc_ba98_7654_3210)
	at := int64(1_700_000_000_000)
	for _, tc := range []struct {
		name string
		ev   journal.Event
		max  int
	}{
		// An id takes its deliver time's delta and 16 bytes: stamp and random part.
		{"fired", journal.Event{Kind: journal.Fired, ID: id, At: id.DeliverAt() + 3}, 24},
		{"cancelled", journal.Event{Kind: journal.Cancelled, ID: id, At: at + 10}, 27},
		{"closed", journal.Event{Kind: journal.Closed, At: at}, 8},
		{"scheduled 1 KB", journal.Event{Kind: journal.Scheduled, ID: id, At: at, Target: "orders.created", DeliverAt: id.DeliverAt(),
			Header: journal.Header{"Trace-Id": {"abc123"}}, Body: make([]byte, 1024)}, 1024 + 14 + 6 + 16 + 30},
	} {
		n := len(journal.EncodeRecord(nil, []journal.Event{tc.ev})) - 2 // version and count
		t.Logf("%s: %d bytes", tc.name, n)
		if n > tc.max {
			t.Errorf("%s encodes to %d bytes, want at most %d", tc.name, n, tc.max)
		}
	}
}

func fuzzSeeds(f *testing.F) {
	for _, events := range codecCases() {
		f.Add(journal.EncodeRecord(nil, events))
	}
	merged := journal.EncodeRecord(nil, journaltest.GenEvents(1, 2))
	f.Add(append(merged, journal.EncodeRecord(nil, journaltest.GenEvents(2, 2))[1:]...))
	rec, _ := journaltest.V1Record()
	f.Add(rec)
}

// FuzzDecodeRecord: decoding arbitrary bytes never panics, fails only with
// ErrCorrupt, and what it decodes survives a re-encoding.
func FuzzDecodeRecord(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := journal.DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := journal.DecodeRecord(journal.EncodeRecord(nil, events))
		if err != nil {
			t.Fatalf("re-encoded record: %v", err)
		}
		if diff := cmp.Diff(events, again, journaltest.EquateEmpty); diff != "" {
			t.Fatalf("(-first +second):\n%s", diff)
		}
	})
}

// FuzzRoundTrip: any events encode and decode to themselves.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(1), []byte("0123456789abcdefghijklmn"), int64(1), int64(2), "t", "k", "v1\x00v2", []byte("body"), uint8(3))
	f.Add(uint8(4), []byte{}, int64(math.MinInt64), int64(math.MaxInt64), "", "", "", []byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, kind uint8, id []byte, at, deliverAt int64, target, key, values string, body []byte, n uint8) {
		ev := journal.Event{Kind: journal.Kind(kind%4 + 1), At: at, DeliverAt: deliverAt, Target: target, Body: body}
		copy(ev.ID[:], id)
		if key != "" || values != "" {
			ev.Header = journal.Header{key: strings.Split(values, "\x00")}
		}
		events := []journal.Event{ev}
		for i := range int(n % 8) {
			next := ev
			next.At = at + int64(i)*deliverAt // arbitrary, wrapping deltas
			events = append(events, next)
		}
		got, err := journal.DecodeRecord(journal.EncodeRecord(nil, events))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(events, got, journaltest.EquateEmpty); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}

// An aliasing decode gives the same events as a copying one, with bodies
// that cannot be appended to in place; a copying decode does not share b.
func TestDecodeAliasing(t *testing.T) {
	events := journaltest.BodyEvents(20, 100)
	rec := journal.EncodeRecord(nil, events)
	copied, err := journal.DecodeAppend(nil, rec, false)
	if err != nil {
		t.Fatal(err)
	}
	aliased, err := journal.DecodeAppend(nil, rec, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(copied, aliased, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("aliased decode differs (-copied +aliased):\n%s", diff)
	}
	for _, ev := range aliased {
		if len(ev.Body) > 0 && cap(ev.Body) != len(ev.Body) {
			t.Fatalf("aliased body has room to grow into the record: len %d cap %d", len(ev.Body), cap(ev.Body))
		}
	}
	clear(rec)
	if diff := cmp.Diff(events, copied, journaltest.EquateEmpty); diff != "" {
		t.Errorf("copied events changed with the record (-want +got):\n%s", diff)
	}
}

func TestEncodeChunks(t *testing.T) {
	events := append(journaltest.BodyEvents(50, 37), journaltest.GenEvents(3, 40)...)
	for _, max := range []int{200, 333, 1000, 4096, 1 << 20} {
		chunks, err := journal.EncodeChunks(events, max)
		if err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		var got []journal.Event
		for i, c := range chunks {
			if len(c) > max {
				t.Errorf("max %d: chunk %d has %d bytes", max, i, len(c))
			}
			// Both decodings give the same events; odd chunks alias theirs.
			if got, err = journal.DecodeAppend(got, c, i%2 == 1); err != nil {
				t.Fatalf("max %d: chunk %d: %v", max, i, err)
			}
		}
		if diff := cmp.Diff(events, got, journaltest.EquateEmpty); diff != "" {
			t.Errorf("max %d (-want +got):\n%s", max, diff)
		}
	}
}

func TestCodecDecodesVersion1(t *testing.T) {
	rec, want := journaltest.V1Record()
	// What the old code printed for the two ids.
	for i, s := range map[int]string{0: "000038fud2dk46gvsq4je40000", 1: "000038fud2vk0000000000000s"} {
		id, err := msgid.Parse(s)
		if err != nil || id != want[i].ID || !id.Legacy() {
			t.Fatalf("Parse(%q) = %d/%d/%d, %v; want event %d's id", s, id.DeliverAt(), id.Stamp(), id.Random(), err, i)
		}
	}
	got, err := journal.DecodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, journaltest.EquateEmpty); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if s := got[0].ID.String(); s != "000038fud2dk46gvsq4je40000" {
		t.Errorf("decoded id prints as %q, want its old form", s)
	}
	// Written again (a compaction does), it is a version 2 record of the
	// same events.
	again := journal.EncodeRecord(nil, got)
	if again[0] != 2 {
		t.Errorf("re-encoded as version %d, want 2", again[0])
	}
	if got2, err := journal.DecodeRecord(again); err != nil || !cmp.Equal(want, got2, journaltest.EquateEmpty) {
		t.Errorf("re-encoded: %v, %v", got2, err)
	}
	// Read as version 2, the same bytes are corrupt, not misread.
	rec[0] = 2
	if events, err := journal.DecodeRecord(rec); !errors.Is(err, journal.ErrCorrupt) {
		t.Errorf("version 1 batches read as version 2: %v, %v; want ErrCorrupt", events, err)
	}
}

// Batches of records of different versions cannot be merged: the result
// would be misread.
func TestAppendBatchesVersions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("AppendBatches merged a version 2 record into a version 1 one")
		}
	}()
	rec, _ := journaltest.V1Record()
	journal.AppendBatches(rec, journal.EncodeRecord(nil, journaltest.GenEvents(1, 2)))
}
