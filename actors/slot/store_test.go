package slot

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

func storeEvent(r *rand.Rand, i int) journal.Event {
	at := int64(1_800_000_000_000 + r.IntN(60_000))
	size := r.IntN(600)
	switch i % 97 {
	case 0:
		size = 0
	case 1:
		size = ownChunk + 1 + r.IntN(1000) // a chunk of its own
	}
	body := bytes.Repeat([]byte{byte(i)}, size)
	ev := journal.Event{Kind: journal.Scheduled, ID: msgid.Compose(at, uint64(1+r.IntN(4))<<20|uint64(i), r.Uint64()|1), At: at,
		Target: fmt.Sprintf("t.%d", i%3), DeliverAt: at, Body: body}
	if i%5 == 0 {
		ev.Header = journal.Header{"K": {fmt.Sprint(i)}}
	}
	return ev
}

// The store keeps every body and header intact across chunk boundaries
// and compactions, and its heap pops in id order (deliver time, stamp,
// random part: a total order).
func TestStoreKeepsBodiesAndOrder(t *testing.T) {
	for _, reserve := range []bool{false, true} {
		t.Run(fmt.Sprintf("reserve=%v", reserve), func(t *testing.T) { testStore(t, reserve) })
	}
}

func testStore(t *testing.T, reserve bool) {
	r := rand.New(rand.NewPCG(1, 2))
	var st store
	st.init()
	st.compactMin = 1 << 10
	const n = 5000
	events := make([]journal.Event, n)
	bodies := 0
	for i := range events {
		events[i] = storeEvent(r, i)
		if i%10 == 1 {
			// Same deliver time and stamp as the one before (a forged or
			// foreign record): the random part still orders them.
			prev := events[i-1].ID
			events[i].ID = msgid.Compose(prev.DeliverAt(), prev.Stamp(), r.Uint64()|1)
			events[i].At, events[i].DeliverAt = prev.DeliverAt(), prev.DeliverAt()
		}
		bodies += len(events[i].Body)
	}
	if reserve {
		st.reserve(n, bodies)
	}
	for i := range events {
		if i%2 == 0 {
			st.due.append(st.add(events[i], true, 0)) // the recovery path
		} else {
			st.due.push(st.add(events[i], true, 0))
		}
	}
	// Settle five sixths, compacting as Recover does.
	settled := map[msgid.ID]bool{}
	compactions := 0
	for i, ev := range events {
		if i%6 == 0 {
			continue
		}
		p, _ := st.lookup(ev.ID)
		e := &st.entries[p]
		e.state = Delivered
		st.drop(e)
		settled[ev.ID] = true
		before := st.dead
		st.compact()
		if before > 0 && st.dead == 0 {
			compactions++
		}
	}
	if compactions == 0 {
		t.Fatal("no compaction happened; the test does not cover it")
	}
	for _, ev := range events {
		p, ok := st.lookup(ev.ID)
		if !ok {
			t.Fatalf("%v lost", ev.ID)
		}
		e := &st.entries[p]
		if got := st.record(e); got.ID != ev.ID || got.Target != ev.Target || got.DeliverAt != ev.DeliverAt {
			t.Fatalf("record %+v for %+v", got, ev)
		}
		body, hdr := st.body(e), st.header(e)
		if settled[ev.ID] {
			if body != nil || hdr != nil {
				t.Fatalf("settled %v keeps body %d bytes, header %v", ev.ID, len(body), hdr)
			}
			continue
		}
		if !bytes.Equal(body, ev.Body) || (len(ev.Body) == 0) != (body == nil) {
			t.Fatalf("body of %v: %d bytes, want %d", ev.ID, len(body), len(ev.Body))
		}
		if fmt.Sprint(hdr) != fmt.Sprint(ev.Header) {
			t.Fatalf("header of %v: %v, want %v", ev.ID, hdr, ev.Header)
		}
		if cap(body) != len(body) {
			t.Fatalf("body of %v can be appended to in place", ev.ID)
		}
	}
	want := make([]msgid.ID, n)
	for i, ev := range events {
		want[i] = ev.ID
	}
	slices.SortFunc(want, msgid.ID.Compare)
	for i, id := range want {
		p := st.due.peek()
		if p < 0 || st.entries[p].id != id {
			t.Fatalf("pop %d: got position %d, want %v", i, p, id)
		}
		st.due.pop()
	}
	if st.due.peek() != -1 {
		t.Fatal("heap not empty")
	}
}

// A slot with a few small bodies holds a few small chunks, and a big one
// reaches full-size chunks: the chunks grow with what they hold. With a
// full chunk from the first body on, every load of a small slot cleared
// 1 MiB, which made the simulator four times slower.
func TestStoreChunksGrowWithBodies(t *testing.T) {
	chunkBytes := func(st *store) (n int) {
		for _, c := range st.chunks {
			n += cap(c)
		}
		return n
	}
	body := make([]byte, 40)
	for _, reserve := range []bool{false, true} {
		var small store
		small.init()
		if reserve {
			small.reserve(10, 10*len(body))
		}
		for i := range 10 {
			small.add(journal.Event{Kind: journal.Scheduled, ID: msgid.New(1, uint64(i+1)), Target: "t", Body: body}, true, 0)
		}
		if got := chunkBytes(&small); got > 4*firstChunk {
			t.Errorf("reserve %v: 10 bodies of %d bytes take %d bytes of chunks", reserve, len(body), got)
		}
	}
	var big store
	big.init()
	const n = 100_000
	for i := range n {
		big.add(journal.Event{Kind: journal.Scheduled, ID: msgid.New(1, uint64(i+1)), Target: "t", Body: body}, true, 0)
	}
	if got, want := chunkBytes(&big), n*len(body); got > 2*want || len(big.chunks) > want/chunkSize+12 {
		t.Errorf("%d bytes of bodies: %d chunks of %d bytes in all", want, len(big.chunks), got)
	}
}

// BenchmarkGCWithResidentSlot reports the cost of one full GC cycle while
// a slot holds a million pending 256-byte messages. The store holds them
// without per-message pointers, so the cycle has little to trace.
func BenchmarkGCWithResidentSlot(b *testing.B) {
	s := New(Config{Index: 30_000_000, Width: 60_000})
	body := make([]byte, 256)
	for i := range 1_000_000 {
		at := s.Start() + int64(i%60_000)
		s.Recover(1, journal.Event{Kind: journal.Scheduled, ID: msgid.New(at, uint64(i+1)), At: at,
			Target: "bench.target", DeliverAt: at, Body: body})
	}
	s.Step(s.Start()-1, Tick{})
	runtime.GC()
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		runtime.GC()
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "µs/gc")
	runtime.KeepAlive(s)
}

// BenchmarkRecoverAndFire measures the pure core's share of a message's
// life: replay its Scheduled event, fire it, record its confirmation. One
// op is a slot of 100,000 messages; ns/msg is per message.
func BenchmarkRecoverAndFire(b *testing.B) {
	const perSlot = 100_000
	body := make([]byte, 256)
	events := make([]journal.Event, perSlot)
	for i := range events {
		at := int64(1_800_000_000_000 + i%60_000)
		events[i] = journal.Event{Kind: journal.Scheduled, ID: msgid.New(at, uint64(i+1)), At: at,
			Target: "bench.target", DeliverAt: at, Body: body}
	}
	b.ReportAllocs()
	start := time.Now()
	ops := 0
	for b.Loop() {
		ops++
		s := New(Config{Index: 1_800_000_000_000 / 60_000, Width: 60_000})
		s.Reserve(events)
		for _, ev := range events {
			s.Recover(1, ev)
		}
		now := s.End()
		s.Step(now, Tick{})
		queue := s.Ready().Deliveries
		fired := 0
		for len(queue) > 0 {
			d := queue[0]
			queue = queue[1:]
			s.Step(now, Published{ID: d.ID}) // may hand out more
			queue = append(queue, s.Ready().Deliveries...)
			fired++
		}
		if fired != perSlot {
			b.Fatalf("fired %d of %d", fired, perSlot)
		}
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(ops*perSlot), "ns/msg")
}
