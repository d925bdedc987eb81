package natsjournal

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/journaltest"
	"github.com/tockd/tock/msgid"
)

// BenchmarkLayoutYearAhead stores messages of 256 B spread evenly over the
// next year, in one-minute slots, with the old layout (every slot its own
// subject: a fine window beyond the year) and the bucketed one (a day per
// far subject, the next 24 h per slot), each on a fresh embedded server in
// this process, and reports what the layout costs:
//
//	subjects        journal subjects holding records
//	server-B/msg    heap growth per message after a GC: the server's subject
//	                index and block state (the journal keeps nothing per message)
//	stored-B/msg    stream bytes per message
//	far-load-ms     Load of one slot a month ahead (the far layout reads its
//	                day's bucket, the old one its own subject)
//	open-ms         opening the next far bucket into its slots (a day's copy;
//	                the old layout has none)
//
// TOCK_LAYOUT_N sets the message count (default 200,000); run it with
// -benchtime 1x.
func BenchmarkLayoutYearAhead(b *testing.B) {
	n := 200_000
	if v, err := strconv.Atoi(os.Getenv("TOCK_LAYOUT_N")); err == nil && v > 0 {
		n = v
	}
	for _, tc := range []struct {
		name   string
		window time.Duration
	}{{"per-slot", 400 * 24 * time.Hour}, {"day-buckets", defaultFineWindow}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				benchLayout(b, n, tc.window)
			}
		})
	}
}

func benchLayout(b *testing.B, n int, window time.Duration) {
	b.StopTimer()
	clk := &fakeNow{t: time.Now().Truncate(24 * time.Hour)}
	start := clk.Now()
	heapBefore := heapInUse()
	nc := connect(b, startServer(b, b.TempDir()))
	cfg := testConfig()
	cfg.SlotWidth = time.Minute
	cfg.FineWindow = window
	cfg.Now = clk.Now
	cfg.AckTimeout = 30 * time.Second
	j := openJournal(b, nc, cfg)
	body := make([]byte, 256)
	year := 365 * 24 * time.Hour
	sem := make(chan struct{}, inflight)
	b.StartTimer()
	for i := range n {
		deliver := start.Add(time.Duration(i) * (year / time.Duration(n))).UnixMilli()
		ev := journal.Event{Kind: journal.Scheduled, ID: msgid.New(deliver, uint64(i+1)), At: start.UnixMilli(),
			Target: "orders.close", DeliverAt: deliver, Body: body}
		sem <- struct{}{}
		j.Append(j.slotOfMs(deliver), []journal.Event{ev}, func(_ uint64, err error) {
			if err != nil {
				b.Error(err)
			}
			<-sem
		})
	}
	for range inflight {
		sem <- struct{}{}
	}
	b.StopTimer()
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "appends/s")
	heap := heapInUse() - heapBefore
	info, err := j.stream.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(info.State.Subjects)), "subjects")
	b.ReportMetric(float64(heap)/float64(n), "server-B/msg")
	b.ReportMetric(float64(info.State.Bytes)/float64(n), "stored-B/msg")

	month := j.slotOfMs(start.Add(30 * 24 * time.Hour).UnixMilli())
	t0 := time.Now()
	evs, _ := journaltest.Load(b, j, month)
	b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "far-load-ms")
	if len(evs) == 0 && n >= 525_600 {
		b.Errorf("slot %d a month ahead loaded empty", month)
	}

	clk.set(start.Add(24 * time.Hour)) // the day after tomorrow's bucket opens
	t0 = time.Now()
	waitOpened(b, j)
	b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "open-ms")
	fmt.Fprintf(os.Stderr, "layout window %v: %d messages, %d subjects, heap %.1f MiB\n",
		window, n, len(info.State.Subjects), float64(heap)/(1<<20))
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
