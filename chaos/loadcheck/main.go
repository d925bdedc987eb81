// Command loadcheck drives a running tock from outside with a plain
// nats.go client and checks its promises: it schedules messages spread
// over a window into a JetStream target stream, cancels some, then reads
// the stream and reports what was lost, early, duplicated or late.
//
//	go run ./chaos/loadcheck --url nats://127.0.0.1:4222 --n 10000 --spread 5s
//
// It exits 1 if an acknowledged, uncancelled message never arrives, if an
// acknowledged cancel is delivered, or if anything arrives early.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type options struct {
	url, stream, subject string
	n, cancelEvery       int
	workers              int
	spread, lead, grace  time.Duration
	scheduleOnly         bool
	size                 int
	compare              bool
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", nats.DefaultURL, "tock's NATS URL")
	flag.IntVar(&o.n, "n", 10000, "messages to schedule")
	flag.DurationVar(&o.spread, "spread", 5*time.Second, "deliver times are spread evenly over this window, starting after --lead")
	flag.DurationVar(&o.lead, "lead", time.Second, "time from start to the first deliver time")
	flag.IntVar(&o.cancelEvery, "cancel-every", 0, "cancel every Nth message (0: none)")
	flag.StringVar(&o.stream, "stream", "LOADCHECK", "target stream (created if missing, purged first)")
	flag.StringVar(&o.subject, "subject", "loadcheck.target", "target subject")
	flag.IntVar(&o.workers, "workers", 64, "requests in flight")
	flag.DurationVar(&o.grace, "grace", 30*time.Second, "how long to wait for stragglers after the last deliver time")
	flag.IntVar(&o.size, "size", 0, "body size in bytes (0: a short text)")
	flag.BoolVar(&o.compare, "compare", false, "first publish the same messages to a plain JetStream stream, same requests in flight, and report tock's accept rate as a ratio of it")
	flag.BoolVar(&o.scheduleOnly, "schedule-only", false, "schedule and exit without waiting for deliveries (e.g. to fill tock with far-future messages)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "loadcheck:", err)
		os.Exit(1)
	}
}

type sent struct {
	id        string
	deliverAt time.Time
	cancelled bool
}

func run(o options) error {
	n, spread, subject := o.n, o.spread, o.subject
	nc, err := nats.Connect(o.url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: o.stream, Subjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("target stream: %w", err)
	}
	if err := s.Purge(ctx); err != nil {
		return err
	}

	// Receive while scheduling: lateness is measured at the consumer.
	var mu sync.Mutex
	recv := map[string][]time.Duration{} // id → lateness of each copy
	early := 0
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		now := time.Now()
		due, err := time.Parse(time.RFC3339Nano, m.Headers().Get("Tock-Deliver-At"))
		if err != nil {
			return
		}
		mu.Lock()
		id := m.Headers().Get("Tock-Id")
		late := now.Sub(due)
		if meta, err := m.Metadata(); err == nil && meta.Timestamp.Before(due) {
			early++
		}
		recv[id] = append(recv[id], late)
		mu.Unlock()
	})
	if err != nil {
		return err
	}
	defer cc.Stop()

	var refRate float64
	if o.compare {
		if refRate, err = reference(ctx, js, o); err != nil {
			return fmt.Errorf("plain JetStream reference: %w", err)
		}
		fmt.Printf("plain JetStream: %d messages PubAck'd at %.0f/s (%d in flight)\n", n, refRate, o.workers)
	}

	start := time.Now()
	first := start.Add(o.lead)
	out := make([]sent, n)
	var failed atomic.Int64
	parallel(n, o.workers, func(i int) {
		due := first.Add(time.Duration(float64(spread) * float64(i) / float64(n)))
		r, err := schedule(nc, subject, due, i, o.size)
		if err != nil {
			failed.Add(1)
			return
		}
		out[i] = r
		if o.cancelEvery > 0 && i%o.cancelEvery == 0 && cancel(nc, r.id) {
			out[i].cancelled = true
		}
	})
	accepted := time.Since(start)
	acked := 0
	for _, s := range out {
		if s.id != "" {
			acked++
		}
	}
	rate := float64(acked) / accepted.Seconds()
	fmt.Printf("scheduled %d (failed %d) in %v: %.0f/s\n", acked, failed.Load(), accepted.Round(time.Millisecond), rate)
	if refRate > 0 {
		fmt.Printf("tock accepts at %.2fx plain JetStream's rate\n", rate/refRate)
	}
	if o.scheduleOnly {
		return nil
	}

	deadline := first.Add(spread + o.grace)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := complete(out, recv)
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let late duplicates show
	mu.Lock()
	defer mu.Unlock()
	return report(out, recv, early)
}

func complete(out []sent, recv map[string][]time.Duration) bool {
	for _, s := range out {
		if s.id != "" && !s.cancelled && len(recv[s.id]) == 0 {
			return false
		}
	}
	return true
}

func report(out []sent, recv map[string][]time.Duration, early int) error {
	var lost, cancelledDelivered, dups int
	var lat []time.Duration
	for _, s := range out {
		if s.id == "" {
			continue
		}
		got := recv[s.id]
		switch {
		case s.cancelled && len(got) > 0:
			cancelledDelivered++
		case !s.cancelled && len(got) == 0:
			lost++
		}
		if len(got) > 0 {
			dups += len(got) - 1
			lat = append(lat, got[0])
		}
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }
	fmt.Printf("delivered %d, lost %d, cancelled-but-delivered %d, early %d, duplicates %d\n", len(lat), lost, cancelledDelivered, early, dups)
	if len(lat) > 0 {
		fmt.Printf("lateness at the consumer: min %s p50 %s p90 %s p99 %s p99.9 %s max %s\n",
			ms(lat[0]), ms(pct(.5)), ms(pct(.9)), ms(pct(.99)), ms(pct(.999)), ms(lat[len(lat)-1]))
	}
	if lost > 0 || cancelledDelivered > 0 || early > 0 {
		return errors.New("a promise was broken")
	}
	return nil
}

// reference publishes n messages of the same size straight to a stream
// of their own, o.workers at a time, each waiting for its PubAck: what
// tock's accept path is measured against.
func reference(ctx context.Context, js jetstream.JetStream, o options) (float64, error) {
	name, subj := o.stream+"_REF", o.subject+"_ref"
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}})
	if err != nil {
		return 0, err
	}
	if err := s.Purge(ctx); err != nil {
		return 0, err
	}
	defer js.DeleteStream(ctx, name)
	var failed atomic.Int64
	start := time.Now()
	parallel(o.n, o.workers, func(i int) {
		msg := &nats.Msg{Subject: subj, Header: nats.Header{"Tock-Deliver-At": {time.Now().UTC().Format(time.RFC3339Nano)}}, Data: body(i, o.size)}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			failed.Add(1)
		}
	})
	if f := failed.Load(); f > 0 {
		return 0, fmt.Errorf("%d publishes failed", f)
	}
	return float64(o.n) / time.Since(start).Seconds(), nil
}

// parallel runs do(0..n-1) on workers goroutines and waits for them.
func parallel(n, workers int, do func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				do(i)
			}
		}()
	}
	wg.Wait()
}

func body(i, size int) []byte {
	b := []byte("message " + strconv.Itoa(i))
	if size > 0 {
		b = append(b, make([]byte, max(0, size-len(b)))...)[:size]
	}
	return b
}

func schedule(nc *nats.Conn, subject string, due time.Time, i, size int) (sent, error) {
	msg := &nats.Msg{Subject: "tock.schedule." + subject,
		Header: nats.Header{"Tock-Deliver-At": {due.UTC().Format(time.RFC3339Nano)}},
		Data:   body(i, size)}
	res, err := nc.RequestMsg(msg, 5*time.Second)
	if err != nil {
		return sent{}, err
	}
	var r struct {
		ID        string `json:"id"`
		DeliverAt string `json:"deliver_at"`
	}
	if err := json.Unmarshal(res.Data, &r); err != nil || r.ID == "" {
		return sent{}, fmt.Errorf("schedule: %q", res.Data)
	}
	at, err := time.Parse(time.RFC3339Nano, r.DeliverAt)
	return sent{id: r.ID, deliverAt: at}, err
}

func cancel(nc *nats.Conn, id string) bool {
	res, err := nc.Request("tock.cancel."+id, nil, 5*time.Second)
	if err != nil {
		return false
	}
	var r struct {
		State string          `json:"state"`
		Error json.RawMessage `json:"error"`
	}
	return json.Unmarshal(res.Data, &r) == nil && r.Error == nil && r.State == "cancelled"
}
