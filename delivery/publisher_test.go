package delivery

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// env is a real embedded JetStream server, a connection for the
// publisher under test and one for the test's own checks.
type env struct {
	t      *testing.T
	nc, tc *nats.Conn
	js     jetstream.JetStream
	p      *Publisher
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	s := natstest.Start(t, t.TempDir())
	e := &env{t: t, nc: natstest.Connect(t, s), tc: natstest.Connect(t, s)}
	var err error
	if e.js, err = jetstream.New(e.tc); err != nil {
		t.Fatal(err)
	}
	if e.p, err = New(e.nc, clock.Real{}, cfg, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.p.Close)
	return e
}

// stream creates a stream and waits until the publisher has listed it.
func (e *env) stream(cfg jetstream.StreamConfig) jetstream.Stream {
	e.t.Helper()
	s, err := e.js.CreateStream(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	literal := strings.NewReplacer("*", "x", ">", "x").Replace(cfg.Subjects[0])
	e.p.relistSoon()
	deadline := time.Now().Add(10 * time.Second)
	// A real listing that holds it: an unknown set (nil, after an
	// advisory) counts as captured too, and an older listing could land
	// after it without the new stream. Listings run one after another, so
	// once one holds the stream every later one does. (The test ids are
	// stamped in 1970, so a listing without it would send core publishes.)
	for c := e.p.captures.Load(); c == nil || !e.p.captured(literal); c = e.p.captures.Load() {
		if time.Now().After(deadline) {
			e.t.Fatalf("stream %s was never listed", cfg.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// confirmations counts done calls per id, and keeps the last outcome.
type confirmations struct {
	mu       sync.Mutex
	seen     map[msgid.ID]int
	outcomes map[msgid.ID]slot.Outcome
}

func (c *confirmations) done(id msgid.ID) func(slot.Outcome) {
	return func(o slot.Outcome) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.seen == nil {
			c.seen, c.outcomes = map[msgid.ID]int{}, map[msgid.ID]slot.Outcome{}
		}
		c.seen[id]++
		c.outcomes[id] = o
	}
}

func (c *confirmations) outcome(id msgid.ID) slot.Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.outcomes[id]
}

func (c *confirmations) wait(t *testing.T, n int) map[msgid.ID]int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.seen)
		c.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d deliveries confirmed", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let a second confirmation show
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

func delivery(i int, target string) slot.Delivery {
	at := int64(1_800_000_000_000 + i)
	return slot.Delivery{
		ID: msgid.New(at, uint64(i+1)), Target: target, DeliverAt: at,
		Header: journal.Header{"K": {"v", fmt.Sprint(i)}}, Body: []byte(fmt.Sprintf("body %d", i)),
	}
}

// Every delivery to a stream target is stored once, with tock's headers,
// and confirmed exactly once — well past MaxAckPending in flight.
func TestStreamTargetIsPubAcked(t *testing.T) {
	e := newEnv(t, Config{MaxAckPending: 64})
	s := e.stream(jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	const n = 2000
	var c confirmations
	for i := range n {
		d := delivery(i, "t.s")
		e.p.Publish(d, c.done(d.ID))
	}
	for id, k := range c.wait(t, n) {
		if k != 1 {
			t.Errorf("%v confirmed %d times", id, k)
		}
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
	m, err := s.GetMsg(context.Background(), 8)
	if err != nil {
		t.Fatal(err)
	}
	d := delivery(7, "t.s")
	want := map[string]string{
		HeaderID: d.ID.String(), jetstream.MsgIDHeader: d.ID.String(),
		HeaderDeliverAt: time.UnixMilli(d.DeliverAt).UTC().Format(TimeFormat),
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if got := m.Header.Values("K"); len(got) != 2 || got[0] != "v" || got[1] != "7" {
		t.Errorf("header K = %q", got)
	}
	if string(m.Data) != "body 7" {
		t.Errorf("body %q", m.Data)
	}
}

// A JetStream error reply (here: the stream is full) is not a
// confirmation: the publish is retried until the stream takes it.
func TestStreamErrorIsRetried(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	s := e.stream(jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew})
	if _, err := e.js.Publish(context.Background(), "t.s", []byte("filler")); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	d := delivery(1, "t.s")
	e.p.Publish(d, c.done(d.ID))
	time.Sleep(100 * time.Millisecond)
	c.mu.Lock()
	early := len(c.seen)
	c.mu.Unlock()
	if early != 0 {
		t.Fatal("confirmed while the stream refused it")
	}
	if err := s.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.wait(t, 1)
	m, err := s.GetLastMsgForSubject(context.Background(), "t.s")
	if err != nil || m.Header.Get(HeaderID) != d.ID.String() {
		t.Fatalf("stored %v, %v", m, err)
	}
}

// A stream that went away after the capture lookup answers with no
// responders: the publisher looks again and, finding no stream, falls
// back to a core publish — at once, not after the ack timeout.
func TestVanishedStreamFallsBackToCore(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond, AckTimeout: time.Minute})
	e.stream(jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	var c confirmations
	d := delivery(1, "t.s")
	e.p.Publish(d, c.done(d.ID))
	c.wait(t, 1) // the capture is cached now

	if err := e.js.DeleteStream(context.Background(), "T"); err != nil {
		t.Fatal(err)
	}
	d2 := delivery(2, "t.s")
	e.p.Publish(d2, c.done(d2.ID))
	c.wait(t, 2) // within the wait's 20 s, far below AckTimeout
	if e.p.captured("t.s") {
		t.Error("the vanished stream is still listed as capturing t.s")
	}
}

// A target no stream captures gets a core publish, confirmed at once.
func TestCoreTarget(t *testing.T) {
	e := newEnv(t, Config{})
	sub, err := e.tc.SubscribeSync("core.s")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.tc.Flush(); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	d := delivery(3, "core.s")
	e.p.Publish(d, c.done(d.ID))
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(HeaderID) != d.ID.String() || string(m.Data) != "body 3" {
		t.Errorf("got %v %q", m.Header, m.Data)
	}
	c.wait(t, 1)
}

func TestPubAckError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    *nats.Msg
		wantOK bool
	}{
		{"puback", &nats.Msg{Data: []byte(`{"stream":"T","seq":12}`)}, true},
		{"duplicate", &nats.Msg{Data: []byte(`{"stream":"T","seq":12,"duplicate":true}`)}, true},
		{"api error", &nats.Msg{Data: []byte(`{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}`)}, false},
		{"no responders", &nats.Msg{Header: nats.Header{"Status": {"503"}}}, false},
		{"empty", &nats.Msg{}, false},
		{"garbage", &nats.Msg{Data: []byte(`hello`)}, false},
		{"broken error", &nats.Msg{Data: []byte(`{"error":`)}, false},
	} {
		err := pubAckError(tc.msg)
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: err %v, want ok %v", tc.name, err, tc.wantOK)
		}
	}
}

// Deliveries to many distinct targets cost no stream lookup each: the
// streams are listed in the background, so the JetStream API sees a
// handful of listings, not a request per target, and every delivery to
// the stream is PubAck'd and stored.
func TestDistinctTargetsNeedNoLookupEach(t *testing.T) {
	e := newEnv(t, Config{StreamRefresh: time.Hour})
	s := e.stream(jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.*.close"}})
	var api sync.Map // subject -> count
	sub, err := e.tc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		n, _ := api.LoadOrStore(m.Subject, new(int64))
		*n.(*int64)++ // one subscription goroutine: no race
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.tc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var c confirmations
	for i := range n {
		d := delivery(i, fmt.Sprintf("orders.%d.close", i))
		e.p.Publish(d, c.done(d.ID))
	}
	c.wait(t, n)
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	total := 0
	api.Range(func(k, v any) bool {
		total += int(*v.(*int64))
		return true
	})
	if total > 5 {
		t.Errorf("%d JetStream API requests for %d deliveries to distinct targets", total, n)
	}
	info, err := s.Info(context.Background())
	if err != nil || info.State.Msgs != n {
		t.Fatalf("the stream holds %v messages (%v), want %d", info.State.Msgs, err, n)
	}
	if e.p.captured("payments.x") {
		t.Error("a subject no stream captures is taken as captured")
	}
}

// A target whose stream never acks (NoAck) holds at most its own share of
// the PubAck room: deliveries to a healthy target, handed out after a
// flood to the silent one, are confirmed at once rather than after the
// silent ones time out; and each target's deliveries keep their order.
func TestSilentTargetDoesNotHoldUpOthers(t *testing.T) {
	e := newEnv(t, Config{MaxAckPending: 64, MaxAckPendingPerTarget: 16, AckTimeout: time.Minute})
	e.stream(jetstream.StreamConfig{Name: "SILENT", Subjects: []string{"silent.>"}, NoAck: true})
	healthy := e.stream(jetstream.StreamConfig{Name: "HEALTHY", Subjects: []string{"healthy.>"}})
	var silent, ok confirmations
	for i := range 200 {
		d := delivery(i, "silent.x")
		e.p.Publish(d, silent.done(d.ID))
	}
	const n = 300 // more than MaxAckPending: the healthy target cycles its share
	start := time.Now()
	for i := range n {
		d := delivery(1000+i, "healthy.x")
		e.p.Publish(d, ok.done(d.ID))
	}
	ok.wait(t, n)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the healthy target took %s", took)
	}
	silent.mu.Lock()
	confirmed := len(silent.seen)
	silent.mu.Unlock()
	if confirmed != 0 {
		t.Fatalf("%d deliveries to a stream that never acks were confirmed", confirmed)
	}
	e.p.mu.Lock()
	awaiting, silentAwaiting, parked := e.p.awaiting, e.p.perTarget["silent.x"], len(e.p.parked["silent.x"])
	e.p.mu.Unlock()
	if silentAwaiting != 16 || awaiting != 16 || parked != 200-16 {
		t.Fatalf("awaiting %d (silent %d), parked %d: want the silent target at its share, the rest parked", awaiting, silentAwaiting, parked)
	}
	// The healthy stream got them in order.
	c, err := healthy.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if want := delivery(1000+i, "healthy.x").ID.String(); m.Headers().Get(HeaderID) != want {
			t.Fatalf("healthy message %d is %s, want %s", i, m.Headers().Get(HeaderID), want)
		}
		i++
	}
	if i != n {
		t.Fatalf("the healthy stream holds %d, want %d", i, n)
	}
}

func (e *env) deadStream() jetstream.Stream {
	e.t.Helper()
	return e.stream(jetstream.StreamConfig{Name: DeadStream, Subjects: []string{DeadSubjects}})
}

// waitOutcome waits for id's confirmation and returns its outcome.
func (c *confirmations) waitOutcome(t *testing.T, id msgid.ID) slot.Outcome {
	t.Helper()
	eventuallyTrue(t, "the confirmation of "+id.String(), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.seen[id] > 0
	})
	return c.outcome(id)
}

func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A target stream that refuses a message for good (over its maximum
// message size) gets no more attempts: the message goes to the
// dead-letter stream at once, with its body, its headers, the target, the
// reason and the attempts, and is confirmed dead.
func TestPermanentRefusalDeadLetters(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond})
	dlq := e.deadStream()
	e.stream(jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 16})
	var c confirmations
	d := delivery(1, "small.x")
	d.Body = make([]byte, 100)
	d.Header[HeaderMaxAttempts] = []string{"50"}
	e.p.Publish(d, c.done(d.ID))
	o := c.waitOutcome(t, d.ID)
	if !o.Dead || !strings.Contains(o.Reason, "refused it for good after 1 attempts") || !strings.Contains(o.Reason, "message size exceeds maximum") {
		t.Fatalf("outcome %+v, want dead for the size", o)
	}
	m, err := dlq.GetLastMsgForSubject(context.Background(), DeadSubject(d.ID.String()))
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if len(m.Data) != 100 || h.Get(HeaderTarget) != "small.x" || h.Get(HeaderDeadReason) != o.Reason || h.Get(HeaderAttempts) != "1" ||
		h.Get(HeaderID) != d.ID.String() || h.Get("K") != "v" || h.Get(HeaderMaxAttempts) != "50" {
		t.Fatalf("dead letter %d bytes, headers %v", len(m.Data), h)
	}
}

// A transient refusal (a full stream) is retried under the policy: a
// message's own Tock-Max-Attempts dead-letters it after that many, while
// one under the default (no bound here) keeps trying and is delivered
// once the stream has room. A delivered message never carries the policy
// headers.
func TestPolicyExhaustedDeadLetters(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	dlq := e.deadStream()
	full := e.stream(jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew})
	if _, err := e.js.Publish(context.Background(), "full.filler", nil); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	bounded, patient := delivery(1, "full.x"), delivery(2, "full.y")
	bounded.Header[HeaderMaxAttempts] = []string{"3"}
	patient.Header[HeaderMaxAge] = []string{"1h"}
	e.p.Publish(bounded, c.done(bounded.ID))
	e.p.Publish(patient, c.done(patient.ID))
	o := c.waitOutcome(t, bounded.ID)
	if !o.Dead || !strings.Contains(o.Reason, "3 attempts failed") {
		t.Fatalf("outcome %+v, want dead after 3 attempts", o)
	}
	m, err := dlq.GetLastMsgForSubject(context.Background(), DeadSubject(bounded.ID.String()))
	if err != nil || m.Header.Get(HeaderAttempts) != "3" {
		t.Fatalf("dead letter %v, %v", m, err)
	}
	time.Sleep(100 * time.Millisecond)
	if c.outcome(patient.ID) != (slot.Outcome{}) || len(c.seen) != 1 {
		t.Fatalf("the patient message settled early: %v", c.seen)
	}
	if err := full.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if o := c.waitOutcome(t, patient.ID); o.Dead {
		t.Fatalf("patient message: %+v", o)
	}
	sm, err := full.GetLastMsgForSubject(context.Background(), "full.y")
	if err != nil || sm.Header.Get(HeaderMaxAge) != "" || sm.Header.Get(HeaderID) != patient.ID.String() {
		t.Fatalf("delivered %v (%v): want it without the policy header", sm, err)
	}
}

// Without a dead-letter stream the dead letter is retried, never
// dropped: it is stored, and confirmed, once the stream exists.
func TestDeadLetterWaitsForItsStream(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, AckTimeout: time.Second})
	e.stream(jetstream.StreamConfig{Name: "SEALED", Subjects: []string{"sealed.>"}})
	if _, err := e.js.UpdateStream(context.Background(), jetstream.StreamConfig{Name: "SEALED", Subjects: []string{"sealed.>"}, Sealed: true}); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	d := delivery(1, "sealed.x")
	e.p.Publish(d, c.done(d.ID))
	time.Sleep(200 * time.Millisecond)
	c.mu.Lock()
	n := len(c.seen)
	c.mu.Unlock()
	if n != 0 {
		t.Fatal("confirmed without a dead-letter stream to hold it")
	}
	dlq := e.deadStream()
	if o := c.waitOutcome(t, d.ID); !o.Dead || !strings.Contains(o.Reason, "sealed") {
		t.Fatalf("outcome %+v", o)
	}
	if _, err := dlq.GetLastMsgForSubject(context.Background(), DeadSubject(d.ID.String())); err != nil {
		t.Fatal(err)
	}
}

// A stream created just before a delivery to it is waited for, though no
// listing has seen it yet: its creation advisory makes every target count
// as captured until the next listing. Here the stream refuses the
// message (full), so a core publish would have been confirmed wrongly.
func TestNewStreamIsWaitedForAtOnce(t *testing.T) {
	e := newEnv(t, Config{MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, StreamRefresh: time.Hour})
	if _, err := e.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(context.Background(), "full.filler", nil); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	d := delivery(1, "full.x")
	// Accepted now, as the gateway would stamp it: after the stream was
	// created, and after the publisher's last listing.
	d.ID = msgid.Compose(d.DeliverAt, uint64(time.Now().UnixMilli())<<20, 1)
	e.p.Publish(d, c.done(d.ID))
	time.Sleep(100 * time.Millisecond)
	c.mu.Lock()
	n := len(c.seen)
	c.mu.Unlock()
	if n != 0 {
		t.Fatal("a delivery to a full stream created a moment before was confirmed")
	}
}

// A delivery accepted after the last listing, to a target no stream
// captures, waits for a newer listing and then goes out as a core
// publish: at once, not after an ack timeout.
func TestCoreTargetAfterAFreshListing(t *testing.T) {
	e := newEnv(t, Config{StreamRefresh: time.Hour, AckTimeout: time.Minute})
	sub, err := e.tc.SubscribeSync("core.fresh")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.tc.Flush(); err != nil {
		t.Fatal(err)
	}
	var c confirmations
	d := delivery(1, "core.fresh")
	d.ID = msgid.Compose(d.DeliverAt, uint64(time.Now().Add(time.Millisecond).UnixMilli())<<20, 1)
	e.p.Publish(d, c.done(d.ID))
	if o := c.waitOutcome(t, d.ID); o.Dead {
		t.Fatalf("outcome %+v", o)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Header.Get(HeaderID) != d.ID.String() {
		t.Fatalf("core delivery: %v %v", m, err)
	}
}

// Many dead letters through small budgets: each dead letter's PubAck
// frees the room its publish took (the dead-letter stream's, not the
// refusing target's), so dead letters never stall behind leaked room and
// the refusing target's own count stays right for its next deliveries.
func TestManyDeadLettersKeepBudgets(t *testing.T) {
	e := newEnv(t, Config{MaxAckPending: 16, MaxAckPendingPerTarget: 4, MinBackoff: 5 * time.Millisecond})
	dlq := e.deadStream()
	e.stream(jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 16})
	var c confirmations
	const n = 200
	for i := range n {
		d := delivery(i+1, "small.x")
		d.Body = make([]byte, 100)
		e.p.Publish(d, c.done(d.ID))
	}
	for i := range n {
		if o := c.waitOutcome(t, delivery(i+1, "small.x").ID); !o.Dead {
			t.Fatalf("message %d: outcome %+v, want dead", i+1, o)
		}
	}
	if info, err := dlq.Info(context.Background()); err != nil || info.State.Msgs != n {
		t.Fatalf("dead-letter stream: %v, %+v; want %d messages", err, info, n)
	}
	e.p.mu.Lock()
	defer e.p.mu.Unlock()
	if e.p.awaiting != 0 || len(e.p.perTarget) != 0 || len(e.p.parked) != 0 {
		t.Errorf("after every PubAck: awaiting %d, per target %v, parked %d targets", e.p.awaiting, e.p.perTarget, len(e.p.parked))
	}
}
