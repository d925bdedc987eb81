package queues_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/service"
)

// Every example below is the text of docs/QUEUES.md between its
// `// doc:begin NAME` and `// doc:end NAME` lines;
// TestQueuesDocMatchesExamples keeps the two the same. The tests run each
// example against a real tock (service.Start, with its embedded NATS
// server), one per test, with shorter waits than the doc recommends.

// startTock starts tock for one test and connects to it; dead are the
// consumers tock dead-letters (tock serve --dead-letter STREAM:CONSUMER).
func startTock(t *testing.T, dead ...deadletter.Source) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	svc, err := service.Start(t.Context(), service.Config{
		DataDir:     t.TempDir(),
		Listen:      "127.0.0.1:-1",
		DeadLetters: dead,
	})
	if err != nil {
		t.Fatalf("start tock: %v", err)
	}
	nc, err := nats.Connect(svc.ClientURL())
	if err != nil {
		svc.Shutdown(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown tock: %v", err)
		}
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testContext bounds one test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// consumerInfo reads a consumer's counters from the server.
func consumerInfo(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, consumer string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitStreamEmpty waits until stream holds no message.
func waitStreamEmpty(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, within time.Duration) {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(within)
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s still holds %d messages after %v", stream, info.State.Msgs, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 1. Consumer groups.

// doc:begin consumer-group
// competingWorkers runs two workers on the one durable consumer "workers"
// of stream JOBS and publishes n jobs; it returns the jobs each worker
// handled. Each job goes to one worker only.
func competingWorkers(ctx context.Context, js jetstream.JetStream, n int) (map[string][]string, error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "JOBS",
		Subjects: []string{"jobs.>"},
	})
	if err != nil {
		return nil, err
	}
	// The consumer group is one durable consumer: its name is the group's.
	group, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "workers",
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return nil, err
	}
	type handled struct{ worker, job string }
	done := make(chan handled, 2*n)
	for _, worker := range []string{"worker-a", "worker-b"} {
		// In production every worker is a process of its own that does
		// js.Consumer(ctx, "JOBS", "workers") and then Consume.
		cc, err := group.Consume(func(m jetstream.Msg) {
			time.Sleep(10 * time.Millisecond) // the work
			if m.Ack() == nil {
				done <- handled{worker, string(m.Data())}
			}
		}, jetstream.PullMaxMessages(1)) // take one job at a time
		if err != nil {
			return nil, err
		}
		defer cc.Stop()
	}
	for i := range n {
		if _, err := js.Publish(ctx, "jobs.resize", []byte("job "+strconv.Itoa(i))); err != nil {
			return nil, err
		}
	}
	jobs := map[string][]string{}
	for range n {
		select {
		case h := <-done:
			jobs[h.worker] = append(jobs[h.worker], h.job)
		case <-ctx.Done():
			return jobs, ctx.Err()
		}
	}
	return jobs, nil
}

// doc:end consumer-group

func TestConsumerGroup(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	const n = 10
	jobs, err := competingWorkers(ctx, js, n)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, w := range []string{"worker-a", "worker-b"} {
		if len(jobs[w]) == 0 {
			t.Errorf("%s handled no job: %v", w, jobs)
		}
		all = append(all, jobs[w]...)
	}
	slices.Sort(all)
	var want []string
	for i := range n {
		want = append(want, "job "+strconv.Itoa(i))
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("the workers handled %v, want each of %v once", jobs, want)
	}
	// The server's count: n deliveries in all, none of them a redelivery.
	info := consumerInfo(t, ctx, js, "JOBS", "workers")
	if info.Delivered.Consumer != n || info.NumRedelivered != 0 || info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("consumer after the jobs: delivered %d, redelivered %d, ack pending %d, pending %d",
			info.Delivered.Consumer, info.NumRedelivered, info.NumAckPending, info.NumPending)
	}
	t.Logf("worker-a: %v; worker-b: %v", jobs["worker-a"], jobs["worker-b"])
}

// A work-queue stream takes one consumer group per subject (section 1).
func TestWorkQueueOneGroup(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "WQ", Subjects: []string{"wq.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "first", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "second", AckPolicy: jetstream.AckExplicitPolicy})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10099 {
		t.Fatalf("a second group on a work queue: %v, want error 10099", err)
	}
}

// 2. Invisibility until ack.

// doc:begin invisibility
// crashedWorker takes a task from consumer "workers" of stream TASKS and
// never acks it, as a worker that crashed. For invisibility (the
// consumer's AckWait) no other worker sees the task; then it is delivered
// again. It returns what a second worker got meanwhile, the redelivery,
// and how long the task was invisible.
func crashedWorker(ctx context.Context, js jetstream.JetStream, invisibility time.Duration) (meanwhile int, again jetstream.Msg, invisible time.Duration, err error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "TASKS",
		Subjects: []string{"tasks.>"},
	})
	if err != nil {
		return 0, nil, 0, err
	}
	workers, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "workers",
		AckPolicy: jetstream.AckExplicitPolicy, // every message must be acked
		AckWait:   invisibility,                // unacked for this long: delivered again
	})
	if err != nil {
		return 0, nil, 0, err
	}
	if _, err := js.Publish(ctx, "tasks.report", []byte("monthly report")); err != nil {
		return 0, nil, 0, err
	}
	if _, err := workers.Next(jetstream.FetchContext(ctx)); err != nil {
		return 0, nil, 0, err
	}
	taken := time.Now()
	// The first worker crashes here, without an ack. A second worker asks
	// for work during the first half of the invisibility and gets none.
	batch, err := workers.Fetch(1, jetstream.FetchMaxWait(invisibility/2))
	if err != nil {
		return 0, nil, 0, err
	}
	for range batch.Messages() {
		meanwhile++
	}
	// Once the invisibility is over, the task is delivered again.
	again, err = workers.Next(jetstream.FetchMaxWait(2 * invisibility))
	if err != nil {
		return meanwhile, nil, 0, err
	}
	invisible = time.Since(taken)
	return meanwhile, again, invisible, again.Ack()
}

// doc:end invisibility

func TestInvisibility(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	const invisibility = time.Second // the doc says 30 s
	meanwhile, again, invisible, err := crashedWorker(ctx, js, invisibility)
	if err != nil {
		t.Fatal(err)
	}
	if meanwhile != 0 {
		t.Errorf("a second worker got %d messages while the task was invisible", meanwhile)
	}
	md, err := again.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Data()) != "monthly report" || md.NumDelivered != 2 || md.Sequence.Stream != 1 {
		t.Errorf("redelivery: %q, delivery %d, stream seq %d; want the report's second delivery of seq 1", again.Data(), md.NumDelivered, md.Sequence.Stream)
	}
	// The server counts AckWait from when it sent the message; the client
	// got it a moment later, hence the small tolerance.
	if invisible < invisibility-50*time.Millisecond || invisible > invisibility+500*time.Millisecond {
		t.Errorf("the task was invisible for %v, want about %v", invisible, invisibility)
	}
	info := consumerInfo(t, ctx, js, "TASKS", "workers")
	if info.NumAckPending != 0 || info.Delivered.Consumer != 2 {
		t.Errorf("consumer after the ack: ack pending %d, deliveries %d", info.NumAckPending, info.Delivered.Consumer)
	}
	t.Logf("invisible for %v", invisible)
}

// 3. Ack, extending the invisibility, Nak.

// doc:begin ack
// ackExtendNak shows a worker's three answers on consumer "workers"
// (AckWait invisibility) of stream JOBS. Job "long" takes twice the
// invisibility: its worker calls InProgress every half of it, so a second
// worker, waiting meanwhile, never gets it; then the worker acks it. Job
// "flaky" fails once: Nak hands it back at once, and the retry acks it.
// It returns every delivery as job#count.
func ackExtendNak(ctx context.Context, js jetstream.JetStream, invisibility time.Duration) ([]string, error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "JOBS",
		Subjects: []string{"jobs.>"},
	})
	if err != nil {
		return nil, err
	}
	workers, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "workers",
		AckPolicy: jetstream.AckExplicitPolicy,
		AckWait:   invisibility,
	})
	if err != nil {
		return nil, err
	}
	var log []string
	take := func(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
		m, err := workers.Next(opts...)
		if err != nil {
			return nil, err
		}
		md, err := m.Metadata()
		if err != nil {
			return nil, err
		}
		log = append(log, fmt.Sprintf("%s#%d", m.Data(), md.NumDelivered))
		return m, nil
	}

	if _, err := js.Publish(ctx, "jobs.long", []byte("long")); err != nil {
		return nil, err
	}
	m, err := take(jetstream.FetchContext(ctx))
	if err != nil {
		return log, err
	}
	second := make(chan jetstream.Msg, 1)
	go func() {
		got, _ := workers.Next(jetstream.FetchMaxWait(2 * invisibility))
		second <- got // nil: no job for the second worker
	}()
	for range 4 {
		time.Sleep(invisibility / 2) // working…
		// …still working: keep the job invisible for another AckWait.
		if err := m.InProgress(); err != nil {
			return log, err
		}
	}
	if err := m.DoubleAck(ctx); err != nil { // done: the server confirms the ack
		return log, err
	}
	if m := <-second; m != nil {
		log = append(log, "second worker got "+string(m.Data()))
	}

	if _, err := js.Publish(ctx, "jobs.flaky", []byte("flaky")); err != nil {
		return log, err
	}
	m, err = take(jetstream.FetchContext(ctx))
	if err != nil {
		return log, err
	}
	if err := m.Nak(); err != nil { // failed: deliver it again now
		return log, err
	}
	m, err = take(jetstream.FetchContext(ctx))
	if err != nil {
		return log, err
	}
	return log, m.DoubleAck(ctx)
}

// doc:end ack

func TestAckExtendNak(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	log, err := ackExtendNak(ctx, js, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("%v (deliveries %v)", err, log)
	}
	if want := []string{"long#1", "flaky#1", "flaky#2"}; !slices.Equal(log, want) {
		t.Fatalf("deliveries %v, want %v", log, want)
	}
	info := consumerInfo(t, ctx, js, "JOBS", "workers")
	if info.Delivered.Consumer != 3 || info.NumAckPending != 0 || info.NumRedelivered != 0 || info.AckFloor.Stream != 2 {
		t.Fatalf("consumer: deliveries %d, ack pending %d, redelivered %d, ack floor %d",
			info.Delivered.Consumer, info.NumAckPending, info.NumRedelivered, info.AckFloor.Stream)
	}
}

// 4. Tags.

// doc:begin tags
// byTag publishes orders with their tag as the second subject token,
// orders.<tag>.<id>, to stream ORDERS, and reads them with two consumer
// groups that select tags: billing wants paid and refunded orders,
// shipping paid ones. It returns the subjects each group got.
func byTag(ctx context.Context, js jetstream.JetStream) (map[string][]string, error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "ORDERS",
		Subjects: []string{"orders.>"},
	})
	if err != nil {
		return nil, err
	}
	for _, subject := range []string{"orders.paid.1", "orders.cancelled.2", "orders.refunded.3", "orders.paid.4"} {
		if _, err := js.Publish(ctx, subject, nil); err != nil {
			return nil, err
		}
	}
	groups := map[string]jetstream.ConsumerConfig{
		"billing": {
			Durable:        "billing",
			AckPolicy:      jetstream.AckExplicitPolicy,
			FilterSubjects: []string{"orders.paid.>", "orders.refunded.>"}, // paid || refunded
		},
		"shipping": {
			Durable:       "shipping",
			AckPolicy:     jetstream.AckExplicitPolicy,
			FilterSubject: "orders.paid.>",
		},
	}
	got := map[string][]string{}
	for name, cfg := range groups {
		cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
		if err != nil {
			return nil, err
		}
		batch, err := cons.FetchNoWait(100) // what is there now
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			got[name] = append(got[name], m.Subject())
			if err := m.Ack(); err != nil {
				return nil, err
			}
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// doc:end tags

func TestTags(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	got, err := byTag(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"orders.paid.1", "orders.refunded.3", "orders.paid.4"}; !slices.Equal(got["billing"], want) {
		t.Errorf("billing got %v, want %v", got["billing"], want)
	}
	if want := []string{"orders.paid.1", "orders.paid.4"}; !slices.Equal(got["shipping"], want) {
		t.Errorf("shipping got %v, want %v", got["shipping"], want)
	}
	if len(got) != 2 {
		t.Errorf("groups %v", got)
	}
}

// 5. Replay from a time.

// doc:begin replay
// replaySince creates the consumer group "replay" on stream EVENTS, which
// starts at the first message stored at or after since, and reads until
// it has caught up. It returns the messages' bodies.
func replaySince(ctx context.Context, js jetstream.JetStream, since time.Time) ([]string, error) {
	replay, err := js.CreateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{
		Durable:       "replay",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  &since,
	})
	if err != nil {
		return nil, err
	}
	var events []string
	for pending := replay.CachedInfo().NumPending; pending > 0; {
		m, err := replay.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return events, err
		}
		md, err := m.Metadata()
		if err != nil {
			return events, err
		}
		events = append(events, string(m.Data()))
		if err := m.Ack(); err != nil {
			return events, err
		}
		pending = md.NumPending // what is left after this message
	}
	return events, nil
}

// doc:end replay

func TestReplay(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(bodies ...string) {
		for _, b := range bodies {
			if _, err := js.Publish(ctx, "events.user", []byte(b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish("signed up", "logged in", "logged out")
	time.Sleep(10 * time.Millisecond)
	since := time.Now()
	time.Sleep(10 * time.Millisecond)
	publish("logged in again", "paid")

	events, err := replaySince(ctx, js, since)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"logged in again", "paid"}; !slices.Equal(events, want) {
		t.Fatalf("replay since %v got %v, want %v", since, events, want)
	}
	// A consumer's start cannot be moved: replaying again from elsewhere
	// needs another consumer (or this one deleted first).
	earlier := since.Add(-time.Hour)
	if _, err := js.CreateOrUpdateConsumer(ctx, "EVENTS", jetstream.ConsumerConfig{
		Durable: "replay", AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &earlier,
	}); err == nil {
		t.Error("the replay consumer's start time was updated")
	}
	// Nothing stored since now: the replay returns at once, empty.
	if err := js.DeleteConsumer(ctx, "EVENTS", "replay"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if events, err := replaySince(ctx, js, time.Now()); err != nil || len(events) != 0 || time.Since(start) > time.Second {
		t.Fatalf("replay from now: %v %v after %v", events, err, time.Since(start))
	}
}

// 6. Broadcast.

// doc:begin broadcast
// broadcast gives each of groups every price update: one durable consumer
// per group on stream PRICES. The stream keeps a message until every
// group has acked it (InterestPolicy); a limits stream would keep it for
// its MaxAge, acked or not. It returns what each group got.
func broadcast(ctx context.Context, js jetstream.JetStream, groups []string, n int) (map[string][]string, error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      "PRICES",
		Subjects:  []string{"prices.>"},
		Retention: jetstream.InterestPolicy,
	})
	if err != nil {
		return nil, err
	}
	consumers := map[string]jetstream.Consumer{}
	for _, g := range groups {
		// Before the first publish: an interest stream stores a message
		// only for the consumers that exist when it arrives.
		c, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:   g,
			AckPolicy: jetstream.AckExplicitPolicy,
		})
		if err != nil {
			return nil, err
		}
		consumers[g] = c
	}
	for i := range n {
		if _, err := js.Publish(ctx, "prices.eurusd", []byte("tick "+strconv.Itoa(i))); err != nil {
			return nil, err
		}
	}
	got := map[string][]string{}
	for g, c := range consumers {
		// Not FetchNoWait: right after a publish, it may not yet see the
		// message (the server counts new messages for its consumers
		// asynchronously) and answer "no messages".
		batch, err := c.Fetch(n, jetstream.FetchContext(ctx))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			got[g] = append(got[g], string(m.Data()))
			if err := m.DoubleAck(ctx); err != nil {
				return nil, err
			}
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// doc:end broadcast

func TestBroadcast(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	const n = 5
	groups := []string{"billing", "analytics", "audit"}
	got, err := broadcast(ctx, js, groups, n)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range n {
		want = append(want, "tick "+strconv.Itoa(i))
	}
	for _, g := range groups {
		if !slices.Equal(got[g], want) {
			t.Errorf("group %s got %v, want %v", g, got[g], want)
		}
	}
	// Every group acked every message: the interest stream let them go.
	waitStreamEmpty(t, ctx, js, "PRICES", 5*time.Second)
	// A group created now gets nothing of what came before it.
	late, err := js.CreateConsumer(ctx, "PRICES", jetstream.ConsumerConfig{Durable: "late", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if late.CachedInfo().NumPending != 0 {
		t.Fatalf("a late group has %d messages pending", late.CachedInfo().NumPending)
	}
	// With no group at all, an interest stream keeps nothing it is sent.
	for _, g := range append(groups, "late") {
		if err := js.DeleteConsumer(ctx, "PRICES", g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "prices.eurusd", []byte("unheard")); err != nil {
		t.Fatal(err)
	}
	waitStreamEmpty(t, ctx, js, "PRICES", time.Second)
}

// 7a. Redelivery after a delay: NakWithDelay.

// doc:begin nak-with-delay
// nakWithDelay takes a job from consumer "workers" of stream JOBS, fails
// it, and hands it back for delay; JetStream delivers it again after that
// delay, not before. It returns both deliveries' metadata and the time
// between them.
func nakWithDelay(ctx context.Context, js jetstream.JetStream, delay time.Duration) (first, again *jetstream.MsgMetadata, gap time.Duration, err error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "JOBS",
		Subjects: []string{"jobs.>"},
	})
	if err != nil {
		return nil, nil, 0, err
	}
	workers, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:   "workers",
		AckPolicy: jetstream.AckExplicitPolicy,
		// No BackOff: with one, the server times the delay wrongly.
	})
	if err != nil {
		return nil, nil, 0, err
	}
	if _, err := js.Publish(ctx, "jobs.charge", []byte("charge order 42")); err != nil {
		return nil, nil, 0, err
	}
	m, err := workers.Next(jetstream.FetchContext(ctx))
	if err != nil {
		return nil, nil, 0, err
	}
	if first, err = m.Metadata(); err != nil {
		return nil, nil, 0, err
	}
	if err := m.NakWithDelay(delay); err != nil { // the payment service is down: later
		return first, nil, 0, err
	}
	handedBack := time.Now()
	m, err = workers.Next(jetstream.FetchContext(ctx))
	if err != nil {
		return first, nil, 0, err
	}
	gap = time.Since(handedBack)
	if again, err = m.Metadata(); err != nil {
		return first, nil, gap, err
	}
	return first, again, gap, m.Ack()
}

// doc:end nak-with-delay

func TestNakWithDelay(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	const delay = 300 * time.Millisecond // the doc says 30 s or more
	first, again, gap, err := nakWithDelay(ctx, js, delay)
	if err != nil {
		t.Fatal(err)
	}
	if first.NumDelivered != 1 || again.NumDelivered != 2 || first.Sequence.Stream != again.Sequence.Stream {
		t.Fatalf("deliveries %+v then %+v: want the same message, delivered twice", first, again)
	}
	if gap < delay || gap > delay+time.Second {
		t.Fatalf("redelivered after %v, want %v", gap, delay)
	}
	t.Logf("redelivered after %v", gap)
}

// The two caveats the doc gives for NakWithDelay, pinned: if a NATS
// server changes either, this fails and section 7a needs rewriting.
func TestNakWithDelayCaveats(t *testing.T) {
	_, js := startTock(t)
	ctx := testContext(t)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("MaxAckPending", func(t *testing.T) {
		// A message waiting out its delay holds its MaxAckPending slot.
		c, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "one", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, FilterSubject: "jobs.one"})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range []string{"first", "second"} {
			if _, err := js.Publish(ctx, "jobs.one", []byte(b)); err != nil {
				t.Fatal(err)
			}
		}
		m, err := c.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.NakWithDelay(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if m, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
			t.Fatalf("got %q while the first message waited out its delay", m.Data())
		}
		if info, err := c.Info(ctx); err != nil || info.NumAckPending != 1 || info.NumPending != 1 {
			t.Fatalf("consumer: %+v %v", info, err)
		}
	})
	t.Run("BackOff", func(t *testing.T) {
		// With a BackOff, a delayed Nak after the second delivery waits
		// about delay - BackOff[0] + BackOff[1], not delay.
		backoff := []time.Duration{100 * time.Millisecond, time.Second}
		c, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "backoff", AckPolicy: jetstream.AckExplicitPolicy, BackOff: backoff, MaxDeliver: 5, FilterSubject: "jobs.backoff"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "jobs.backoff", nil); err != nil {
			t.Fatal(err)
		}
		const delay = 150 * time.Millisecond
		var gaps []time.Duration
		var naked time.Time
		for i := range 3 {
			m, err := c.Next(jetstream.FetchContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			if i > 0 {
				gaps = append(gaps, time.Since(naked))
			}
			if err := m.NakWithDelay(delay); err != nil {
				t.Fatal(err)
			}
			naked = time.Now()
		}
		t.Logf("NakWithDelay(%v) with BackOff %v: redelivered after %v", delay, backoff, gaps)
		if gaps[0] < delay || gaps[0] > delay+500*time.Millisecond {
			t.Errorf("after the first delivery: redelivered after %v, want %v", gaps[0], delay)
		}
		if want := delay - backoff[0] + backoff[1]; gaps[1] < want-100*time.Millisecond {
			t.Errorf("after the second delivery: redelivered after %v; the doc says about %v", gaps[1], want)
		}
	})
}

// 7b. Redelivery after a delay through tock.

// doc:begin tock-request
// tockReply is tock's JSON reply to a schedule or a redrive: the message
// it accepted, or an error.
type tockReply struct {
	ID           string `json:"id"`
	Target       string `json:"target"`
	DeliverAt    string `json:"deliver_at"`
	RedrivenFrom string `json:"redriven_from,omitempty"`
	Error        *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
}

// tockRequest sends msg to tock and reads its reply.
func tockRequest(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (tockReply, error) {
	res, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return tockReply{}, err
	}
	var r tockReply
	if err := json.Unmarshal(res.Data, &r); err != nil {
		return tockReply{}, fmt.Errorf("tock's reply %q: %w", res.Data, err)
	}
	if r.Error != nil {
		return r, fmt.Errorf("tock: %d %s", r.Error.Code, r.Error.Description)
	}
	return r, nil
}

// doc:end tock-request

// doc:begin retry-via-tock
// retryLater has tock publish a copy of m to m's subject after delay, with
// m's body and headers and its Retry header counted up, and acks m once
// tock has stored the copy. The copy is a new message of the stream: its
// NumDelivered starts at 1 again, so MaxDeliver does not bound the
// retries; Retry does.
func retryLater(ctx context.Context, nc *nats.Conn, m jetstream.Msg, delay time.Duration) (tockReply, error) {
	retry := nats.NewMsg("tock.schedule." + m.Subject())
	for k, vs := range m.Headers() {
		// tock refuses Tock-* and Nats-* headers (400), and sets Tock-Id,
		// Tock-Deliver-At and Nats-Msg-Id on each copy it delivers.
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "tock-") || strings.HasPrefix(lk, "nats-") {
			continue
		}
		retry.Header[k] = vs
	}
	n, _ := strconv.Atoi(m.Headers().Get("Retry"))
	retry.Header.Set("Retry", strconv.Itoa(n+1))
	retry.Header.Set("Tock-Delay", delay.String())
	retry.Data = m.Data()
	r, err := tockRequest(ctx, nc, retry)
	if err != nil {
		// Not scheduled: JetStream redelivers the original instead.
		_ = m.NakWithDelay(delay)
		return r, err
	}
	return r, m.DoubleAck(ctx)
}

// doc:end retry-via-tock

func TestRetryViaTock(t *testing.T) {
	nc, js := startTock(t)
	ctx := testContext(t)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EMAILS", Subjects: []string{"emails.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	senders, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "senders", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// The producer's own Nats-Msg-Id must not travel (tock would refuse it).
	email := nats.NewMsg("emails.welcome")
	email.Header.Set("To", "ada@example.com")
	email.Data = []byte("welcome, Ada")
	if _, err := js.PublishMsg(ctx, email, jetstream.WithMsgID("welcome-ada")); err != nil {
		t.Fatal(err)
	}

	const delay = 200 * time.Millisecond // the doc says 30 s or more
	type delivery struct {
		retry, tockID string
		numDelivered  uint64
		streamSeq     uint64
		at            time.Time
	}
	var seen []delivery
	var replies []tockReply
	for len(seen) < 3 {
		m, err := senders.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("after %d deliveries: %v", len(seen), err)
		}
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data()) != "welcome, Ada" || m.Headers().Get("To") != "ada@example.com" || m.Subject() != "emails.welcome" {
			t.Fatalf("delivery %d: %s %q %v", len(seen)+1, m.Subject(), m.Data(), m.Headers())
		}
		seen = append(seen, delivery{m.Headers().Get("Retry"), m.Headers().Get("Tock-Id"), md.NumDelivered, md.Sequence.Stream, time.Now()})
		if len(seen) == 3 {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			break
		}
		r, err := retryLater(ctx, nc, m, delay) // the mail server is down
		if err != nil {
			t.Fatalf("retry %d: %v", len(seen), err)
		}
		if r.Target != "emails.welcome" || r.ID == "" || r.DeliverAt == "" {
			t.Fatalf("tock's reply %+v", r)
		}
		replies = append(replies, r)
	}
	for i, d := range seen {
		if want := []string{"", "1", "2"}[i]; d.retry != want {
			t.Errorf("delivery %d: Retry %q, want %q", i+1, d.retry, want)
		}
		// Every copy is a new stream message, delivered once.
		if d.numDelivered != 1 || d.streamSeq != uint64(i+1) {
			t.Errorf("delivery %d: NumDelivered %d, stream seq %d", i+1, d.numDelivered, d.streamSeq)
		}
		if i > 0 {
			if d.tockID != replies[i-1].ID {
				t.Errorf("delivery %d: Tock-Id %q, want the schedule's %q", i+1, d.tockID, replies[i-1].ID)
			}
			if gap := d.at.Sub(seen[i-1].at); gap < delay {
				t.Errorf("delivery %d came %v after the one before, want at least %v", i+1, gap, delay)
			}
		}
	}
	// Acked copies leave the work queue: nothing is left behind.
	waitStreamEmpty(t, ctx, js, "EMAILS", 5*time.Second)

	// Without the header filter, tock refuses a delivered copy.
	naive := nats.NewMsg("tock.schedule.emails.welcome")
	naive.Header.Set("Tock-Id", seen[2].tockID)
	naive.Header.Set("Nats-Msg-Id", seen[2].tockID)
	naive.Header.Set("Tock-Delay", "1s")
	if _, err := tockRequest(ctx, nc, naive); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("scheduling a copy with its Tock-Id and Nats-Msg-Id: %v, want a 400", err)
	}
	// Nor does a delivered Tock-Deliver-At go with a Tock-Delay.
	twice := nats.NewMsg("tock.schedule.emails.welcome")
	twice.Header.Set("Tock-Deliver-At", time.Now().UTC().Format(time.RFC3339Nano))
	twice.Header.Set("Tock-Delay", "1s")
	if _, err := tockRequest(ctx, nc, twice); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("scheduling with Tock-Deliver-At and Tock-Delay: %v, want a 400", err)
	}
}

// 8. Dead letters.

// doc:begin dead-letters
// poisonJob publishes a job to stream JOBS that its worker fails on every
// delivery. Consumer "workers" gives up on it after MaxDeliver deliveries,
// and tock, running with --dead-letter JOBS:workers, moves it into
// TOCK_DLQ. It returns the deliveries the worker saw and the dead letter.
func poisonJob(ctx context.Context, js jetstream.JetStream) ([]uint64, jetstream.Msg, error) {
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:      "JOBS",
		Subjects:  []string{"jobs.>"},
		Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		return nil, nil, err
	}
	workers, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:    "workers",
		AckPolicy:  jetstream.AckExplicitPolicy,
		AckWait:    30 * time.Second,
		MaxDeliver: 3,
	})
	if err != nil {
		return nil, nil, err
	}
	job := nats.NewMsg("jobs.resize")
	job.Header.Set("Image", "cat.png")
	job.Data = []byte("resize to 64x64")
	if _, err := js.PublishMsg(ctx, job); err != nil {
		return nil, nil, err
	}
	// JetStream announces that a message ran out of deliveries when it
	// next tries to deliver it, so the worker must go on pulling after the
	// last failure; Consume does (a Fetch loop must fetch once more).
	deliveries := make(chan uint64, 10)
	cc, err := workers.Consume(func(m jetstream.Msg) {
		if md, err := m.Metadata(); err == nil {
			deliveries <- md.NumDelivered
		}
		_ = m.Nak() // the image is corrupt: fails every time
	})
	if err != nil {
		return nil, nil, err
	}
	defer cc.Stop()
	// Dead letters are a stream; read it like any other.
	dlq, err := js.OrderedConsumer(ctx, "TOCK_DLQ", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"tock.dead.>"},
	})
	if err != nil {
		return nil, nil, err
	}
	dead, err := dlq.Next(jetstream.FetchContext(ctx))
	if err != nil {
		return nil, nil, err
	}
	var seen []uint64
	for len(deliveries) > 0 {
		seen = append(seen, <-deliveries)
	}
	return seen, dead, nil
}

// doc:end dead-letters

// doc:begin redrive
// redrive has tock publish the dead letter id again at once to the subject
// it came from, and deletes it from TOCK_DLQ; its consumer gets it as a
// new message. (`tock redrive ID` does the same; a Tock-Delay or
// Tock-Deliver-At header on the request sets when.)
func redrive(ctx context.Context, nc *nats.Conn, id string) (tockReply, error) {
	return tockRequest(ctx, nc, nats.NewMsg("tock.redrive."+id))
}

// doc:end redrive

func TestDeadLetters(t *testing.T) {
	nc, js := startTock(t, deadletter.Source{Stream: "JOBS", Consumer: "workers"})
	ctx := testContext(t)
	deliveries, dead, err := poisonJob(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deliveries, []uint64{1, 2, 3}) {
		t.Errorf("the worker saw deliveries %v, want 1, 2, 3", deliveries)
	}
	h := dead.Headers()
	id := h.Get("Tock-Id")
	if dead.Subject() != "tock.dead."+id || id == "" || string(dead.Data()) != "resize to 64x64" || h.Get("Image") != "cat.png" ||
		h.Get("Tock-Target") != "jobs.resize" || h.Get("Tock-Stream") != "JOBS" || h.Get("Tock-Consumer") != "workers" ||
		h.Get("Tock-Attempts") != "3" || h.Get("Tock-Stream-Seq") != "1" ||
		h.Get("Tock-Dead-Reason") != "consumer workers of stream JOBS delivered it 3 times without an ack (its max_deliver)" {
		t.Fatalf("dead letter %s %q %v", dead.Subject(), dead.Data(), h)
	}
	// From a work-queue stream, tock also removes the job.
	waitStreamEmpty(t, ctx, js, "JOBS", 5*time.Second)

	r, err := redrive(ctx, nc, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.RedrivenFrom != id || r.Target != "jobs.resize" || r.ID == "" || r.ID == id || r.DeliverAt == "" {
		t.Fatalf("redrive reply %+v", r)
	}
	// The dead letter is gone, and the job is back for the workers.
	dlq, err := js.Stream(ctx, "TOCK_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("TOCK_DLQ after the redrive: %+v %v", info.State, err)
	}
	workers, err := js.Consumer(ctx, "JOBS", "workers")
	if err != nil {
		t.Fatal(err)
	}
	m, err := workers.Next(jetstream.FetchContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject() != "jobs.resize" || string(m.Data()) != "resize to 64x64" || m.Headers().Get("Image") != "cat.png" ||
		m.Headers().Get("Tock-Id") != r.ID || md.NumDelivered != 1 || md.Sequence.Stream != 2 {
		t.Fatalf("redriven job: %s %q %v, delivery %d, stream seq %d", m.Subject(), m.Data(), m.Headers(), md.NumDelivered, md.Sequence.Stream)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitStreamEmpty(t, ctx, js, "JOBS", 5*time.Second)
}

// 9. Retention.

// doc:begin retention
// ordersStream creates stream ORDERS, which keeps each message for
// retention (72*time.Hour for a managed queue's 72 hours) from when it was
// stored, acked or not, and then drops it.
func ordersStream(ctx context.Context, js jetstream.JetStream, retention time.Duration) (jetstream.Stream, error) {
	return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     "ORDERS",
		Subjects: []string{"orders.>"},
		MaxAge:   retention,
		Storage:  jetstream.FileStorage,
	})
}

// doc:end retention

func TestRetention(t *testing.T) {
	t.Run("72h", func(t *testing.T) {
		_, js := startTock(t)
		ctx := testContext(t)
		stream, err := ordersStream(ctx, js, 72*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if got := stream.CachedInfo().Config.MaxAge; got != 72*time.Hour {
			t.Errorf("ORDERS keeps messages for %v", got)
		}
		// tock's dead letters are kept 72 h by default (--dlq-retention).
		dlq, err := js.Stream(ctx, "TOCK_DLQ")
		if err != nil {
			t.Fatal(err)
		}
		if got := dlq.CachedInfo().Config.MaxAge; got != 72*time.Hour {
			t.Errorf("TOCK_DLQ keeps dead letters for %v, want 72h", got)
		}
	})
	t.Run("expiry", func(t *testing.T) {
		_, js := startTock(t)
		ctx := testContext(t)
		const retention = time.Second // stands for 72 h
		stream, err := ordersStream(ctx, js, retention)
		if err != nil {
			t.Fatal(err)
		}
		cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"orders.paid.1", "orders.paid.2"} {
			if _, err := js.Publish(ctx, s, nil); err != nil {
				t.Fatal(err)
			}
		}
		stored := time.Now()
		// One is acked, one never read: both stay until the retention is over…
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
		if info, err := stream.Info(ctx); err != nil || info.State.Msgs != 2 {
			t.Fatalf("ORDERS right after: %+v %v", info.State, err)
		}
		// …and then both go.
		waitStreamEmpty(t, ctx, js, "ORDERS", 5*time.Second)
		if kept := time.Since(stored); kept < retention-50*time.Millisecond {
			t.Errorf("messages dropped after %v, before the retention of %v", kept, retention)
		}
		if info := consumerInfo(t, ctx, js, "ORDERS", "billing"); info.NumPending != 0 || info.NumAckPending != 0 {
			t.Errorf("consumer after the expiry: pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		}
	})
}

// The doc and the code.

const (
	docPath       = "../QUEUES.md"
	codePath      = "queues_test.go"
	beginMarker   = "// doc:begin "
	endMarker     = "// doc:end "
	exampleMarker = "<!-- example: "
)

// codeExamples reads the examples of the test file: name → text.
func codeExamples(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	var name string
	var lines []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(trimmed, beginMarker):
			if name != "" {
				return nil, fmt.Errorf("%s:%d: doc:begin inside example %q", path, n, name)
			}
			name = strings.TrimSpace(strings.TrimPrefix(trimmed, beginMarker))
			if _, dup := out[name]; dup || name == "" {
				return nil, fmt.Errorf("%s:%d: example %q begins twice, or has no name", path, n, name)
			}
			lines = nil
		case strings.HasPrefix(trimmed, endMarker):
			if end := strings.TrimSpace(strings.TrimPrefix(trimmed, endMarker)); end != name {
				return nil, fmt.Errorf("%s:%d: doc:end %q, but the open example is %q", path, n, end, name)
			}
			out[name] = normalize(lines)
			name = ""
		case name != "":
			lines = append(lines, line)
		}
	}
	if name != "" {
		return nil, fmt.Errorf("%s: example %q has no doc:end", path, name)
	}
	return out, sc.Err()
}

// docExamples reads the examples of the doc: the ```go block after each
// <!-- example: NAME --> line.
func docExamples(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(trimmed, exampleMarker) {
			continue
		}
		name, ok := strings.CutSuffix(strings.TrimPrefix(trimmed, exampleMarker), "-->")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: malformed example marker %q", path, i+1, trimmed)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s:%d: example %q shown twice", path, i+1, name)
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || strings.TrimSpace(lines[j]) != "```go" {
			return nil, fmt.Errorf("%s:%d: example %q is not followed by a ```go block", path, i+1, name)
		}
		k := j + 1
		for k < len(lines) && strings.TrimSpace(lines[k]) != "```" {
			k++
		}
		if k == len(lines) {
			return nil, fmt.Errorf("%s:%d: example %q's block is not closed", path, j+1, name)
		}
		out[name] = normalize(lines[j+1 : k])
		i = k
	}
	return out, nil
}

// normalize drops surrounding blank lines, trailing white space and the
// leading white space all lines share.
func normalize(lines []string) string {
	var ls []string
	for _, l := range lines {
		ls = append(ls, strings.TrimRight(l, " \t"))
	}
	for len(ls) > 0 && ls[0] == "" {
		ls = ls[1:]
	}
	for len(ls) > 0 && ls[len(ls)-1] == "" {
		ls = ls[:len(ls)-1]
	}
	prefix, first := "", true
	for _, l := range ls {
		if l == "" {
			continue
		}
		lead := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		if first {
			prefix, first = lead, false
		}
		for !strings.HasPrefix(lead, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	for i, l := range ls {
		ls[i] = strings.TrimPrefix(l, prefix)
	}
	return strings.Join(ls, "\n")
}

// firstDiff says where a and b part.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y || i >= len(al) || i >= len(bl) {
			return fmt.Sprintf("line %d of the example:\n\tdoc:  %q\n\tcode: %q", i+1, x, y)
		}
	}
	return "no difference"
}

// TestQueuesDocMatchesExamples: every example in docs/QUEUES.md is the
// code these tests run, and every example of the code is in the doc.
func TestQueuesDocMatchesExamples(t *testing.T) {
	code, err := codeExamples(codePath)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := docExamples(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(code) == 0 {
		t.Fatalf("no examples in %s", codePath)
	}
	for name, c := range code {
		d, ok := doc[name]
		switch {
		case !ok:
			t.Errorf("example %q of %s is not in %s", name, codePath, docPath)
		case d != c:
			t.Errorf("example %q in %s differs from %s: %s", name, docPath, codePath, firstDiff(d, c))
		}
	}
	for name := range doc {
		if _, ok := code[name]; !ok {
			t.Errorf("example %q of %s is not in %s", name, docPath, codePath)
		}
	}
}

// The checker itself: a planted difference, a missing example and an
// extra one are each caught.
func TestDocCheckerCatchesDifferences(t *testing.T) {
	dir := t.TempDir()
	code := "package x\n\n// doc:begin a\nfunc a() {\n\treturn\n}\n// doc:end a\n"
	if err := os.WriteFile(dir+"/x_test.go", []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := codeExamples(dir + "/x_test.go")
	if err != nil || c["a"] != "func a() {\n\treturn\n}" {
		t.Fatalf("code examples %q %v", c, err)
	}
	for _, tc := range []struct {
		doc  string
		same bool
	}{
		{"# x\n\n<!-- example: a -->\n\n```go\nfunc a() {\n\treturn\n}\n```\n", true},
		{"<!-- example: a -->\n```go\n\n  func a() {\n  \treturn\n  }\n\n```\n", true},
		{"<!-- example: a -->\n```go\nfunc a() {\n\treturn 1\n}\n```\n", false},
		{"<!-- example: a -->\n```go\nfunc a() {\n}\n```\n", false},
	} {
		if err := os.WriteFile(dir+"/X.md", []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := docExamples(dir + "/X.md")
		if err != nil {
			t.Fatal(err)
		}
		if (d["a"] == c["a"]) != tc.same {
			t.Errorf("doc %q: example %q, code %q, same %v", tc.doc, d["a"], c["a"], !tc.same)
		}
	}
	for _, bad := range []string{
		"<!-- example: a -->\nno block\n",
		"<!-- example: a -->\n```go\nfunc a() {}\n",
		"<!-- example: a -->\n```go\n```\n<!-- example: a -->\n```go\n```\n",
	} {
		if err := os.WriteFile(dir+"/X.md", []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := docExamples(dir + "/X.md"); err == nil {
			t.Errorf("doc %q accepted", bad)
		}
	}
}
