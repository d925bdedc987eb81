package natsjournal

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// benchMsg is the message both sides store: a plain JetStream message with
// one header and a 128-byte body, or the Scheduled event carrying it.
type benchMsg struct {
	target string
	header journal.Header
	body   []byte
}

func newBenchMsg() benchMsg {
	return benchMsg{target: "orders.created", header: journal.Header{"Trace-Id": {"4bf92f3577b34da6"}}, body: make([]byte, 128)}
}

func (m benchMsg) event(i int) journal.Event {
	at := int64(1_700_000_000_000 + i)
	id := msgid.New(at+60_000, uint64(at)<<20)
	return journal.Event{Kind: journal.Scheduled, ID: id, At: at, Target: m.target, DeliverAt: id.DeliverAt(), Header: m.header, Body: m.body}
}

// BenchmarkAppend compares journal appends (one event each) with plain
// JetStream async publishes of the same message, on one server in one run.
func BenchmarkAppend(b *testing.B) {
	nc := connect(b, startServer(b, b.TempDir()))
	for _, keys := range []int{1000, 1} {
		b.Run(fmt.Sprintf("journal/slots=%d", keys), func(b *testing.B) { benchJournal(b, nc, keys) })
		b.Run(fmt.Sprintf("jetstream/subjects=%d", keys), func(b *testing.B) { benchPlain(b, nc, keys) })
	}
}

// inflight bounds outstanding appends on both sides, as a real caller
// would: the journal's queue is otherwise only bounded by MaxQueueBytes.
const inflight = 8192

func benchJournal(b *testing.B, nc *nats.Conn, slots int) {
	cfg := testConfig()
	cfg.AckTimeout = 30 * time.Second
	j := openJournal(b, nc, cfg)
	msg := newBenchMsg()
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(_ uint64, err error) {
		if err != nil {
			failed.Add(1)
		}
		<-sem
		wg.Done()
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		j.Append(int64(i%slots), []journal.Event{msg.event(i)}, done)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d appends failed", n)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	reportStored(b, j.stream)
}

func benchPlain(b *testing.B, nc *nats.Conn, subjects int) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(inflight))
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	stream, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: cfg.Stream, Subjects: []string{cfg.Prefix + ".>"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Fatal(err)
	}
	msg := newBenchMsg()
	subjs := make([]string, subjects)
	for i := range subjs {
		subjs[i] = fmt.Sprintf("%s.%s.%d", cfg.Prefix, msg.target, i)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		m := &nats.Msg{Subject: subjs[i%subjects], Header: nats.Header(msg.header), Data: msg.body}
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	waitPublished(b, js)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	reportStored(b, stream)
}

// reportStored reports the stream's bytes per message stored.
func reportStored(b *testing.B, s jetstream.Stream) {
	info, err := s.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(info.State.Bytes)/float64(b.N), "stored-B/msg")
	b.ReportMetric(float64(info.State.Msgs), "records")
}
