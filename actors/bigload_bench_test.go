package actors

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/natsjournal"
	"github.com/tockd/tock/msgid"
)

// BenchmarkNeighbourFiringDuringBigLoad measures what loading a big slot
// does to the slot firing next to it, in real time on the real NATS
// journal (embedded server in this process): slot B holds
// TOCK_BIGLOAD_N messages of 256 B (default 1,000,000); the slot before it
// fires one message per millisecond, and B is loaded (the horizon reaches
// it) in the middle of that. Reported: the lateness of the neighbour's
// deliveries (p50, p99, p99.9, max, in ms of wall time from deliver time to
// the publisher call) and how long B's load took. "streamed" is how slots
// load; "whole" loads B as they did before, every event decoded first and
// then recovered. Run with -benchtime 1x.
func BenchmarkNeighbourFiringDuringBigLoad(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("TOCK_BIGLOAD_N")); err == nil && v > 0 {
		n = v
	}
	for _, whole := range []bool{false, true} {
		name := "streamed"
		if whole {
			name = "whole"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				benchBigLoad(b, n, whole)
			}
		})
	}
}

const (
	bigWidth   = 10 * time.Second
	bigHorizon = 4 * time.Second
)

func benchBigLoad(b *testing.B, n int, whole bool) {
	b.StopTimer()
	nc := natstest.Connect(b, natstest.Start(b, b.TempDir()))
	j, err := natsjournal.New(context.Background(), nc, natsjournal.Config{
		Stream: "BIG", Prefix: "big", SlotWidth: bigWidth, AckTimeout: 30 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	widthMs := bigWidth.Milliseconds()
	big := (time.Now().Add(40*time.Second).UnixMilli())/widthMs + 1
	fillSlot(b, j, big, n)
	neighbour := big - 1
	start := time.UnixMilli(neighbour * widthMs)
	if time.Until(start) < 2*time.Second {
		b.Fatalf("filling slot %d took too long: its neighbour starts in %v", big, time.Until(start))
	}

	timed := &timedJournal{Journal: j, slot: big, whole: whole}
	pub := &latencyPublisher{target: "neighbour"}
	s, err := Start(context.Background(), Config{SlotWidth: bigWidth, Horizon: bigHorizon, Retention: time.Hour, MaxDelay: time.Hour},
		Deps{Journal: timed, Publisher: pub, Clock: clock.Real{}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop(waitFor)
	time.Sleep(time.Until(start.Add(-time.Second)))
	for at := start; at.Before(start.Add(bigWidth)); at = at.Add(time.Millisecond) {
		s.Schedule(ScheduleRequest{Target: "neighbour", DeliverAt: at.UnixMilli(), Body: make([]byte, 256)}, nil)
	}
	b.StartTimer()
	time.Sleep(time.Until(start.Add(bigWidth + 200*time.Millisecond)))
	b.StopTimer()

	late := pub.lateness()
	if len(late) < int(widthMs)*9/10 {
		b.Fatalf("only %d of %d neighbour messages delivered", len(late), widthMs)
	}
	loadTook, loaded := timed.took()
	if !loaded {
		b.Fatal("the big slot was not loaded while its neighbour fired")
	}
	q := func(p float64) float64 { return late[min(len(late)-1, int(p*float64(len(late))))] }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(0.999), "p99.9-ms")
	b.ReportMetric(late[len(late)-1], "max-ms")
	b.ReportMetric(loadTook.Seconds(), "big-load-s")
	b.ReportMetric(float64(n), "big-msgs")
}

// fillSlot appends n Scheduled events of 256 B spread over slot idx,
// batched as a slot's appends would be.
func fillSlot(b *testing.B, j journal.Journal, idx int64, n int) {
	widthMs := bigWidth.Milliseconds()
	body := make([]byte, 256)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	now := time.Now().UnixMilli()
	const batch = 1000
	for i := 0; i < n; i += batch {
		evs := make([]journal.Event, 0, batch)
		for k := i; k < min(n, i+batch); k++ {
			at := idx*widthMs + int64(k)*widthMs/int64(n)
			evs = append(evs, journal.Event{Kind: journal.Scheduled, ID: msgid.New(at, uint64(now)<<20+uint64(k)), At: now,
				Target: "big", DeliverAt: at, Body: body})
		}
		sem <- struct{}{}
		wg.Add(1)
		j.Append(idx, evs, func(_ uint64, err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
}

// timedJournal times the Scans of one slot.
type timedJournal struct {
	journal.Journal
	slot  int64
	whole bool // Load the slot, then pass all its events at once
	mu    sync.Mutex
	dur   time.Duration
	count int
}

func (j *timedJournal) Scan(ctx context.Context, idx int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	if idx != j.slot {
		return j.Journal.Scan(ctx, idx, fn)
	}
	t0 := time.Now()
	var seq uint64
	var err error
	if j.whole {
		var evs []journal.Event
		if evs, seq, err = j.Journal.Load(ctx, idx); err == nil {
			err = fn(seq, evs)
		}
	} else {
		seq, err = j.Journal.Scan(ctx, idx, fn)
	}
	j.mu.Lock()
	j.dur += time.Since(t0)
	j.count++
	j.mu.Unlock()
	return seq, err
}

func (j *timedJournal) took() (time.Duration, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.dur, j.count > 0
}

// latencyPublisher confirms at once and records the wall-time lateness of
// deliveries to target.
type latencyPublisher struct {
	target string
	mu     sync.Mutex
	late   []float64 // ms
}

func (p *latencyPublisher) Publish(d slot.Delivery, done func(slot.Outcome)) {
	if d.Target == p.target {
		l := float64(time.Since(time.UnixMilli(d.DeliverAt)).Microseconds()) / 1000
		p.mu.Lock()
		p.late = append(p.late, l)
		p.mu.Unlock()
	}
	done(slot.Outcome{})
}

func (p *latencyPublisher) lateness() []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.late)
	slices.Sort(out)
	return out
}
