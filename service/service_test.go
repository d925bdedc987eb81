package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// harness is a real tock with its embedded server, plus a client.
type harness struct {
	t   *testing.T
	cfg Config
	svc *Service
	nc  *nats.Conn
	js  jetstream.JetStream
}

func start(t *testing.T, cfg Config) *harness {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Listen = "127.0.0.1:-1"
	h := &harness{t: t, cfg: cfg}
	h.up()
	t.Cleanup(h.down)
	return h
}

func (h *harness) up() {
	h.t.Helper()
	svc, err := Start(context.Background(), h.cfg)
	if err != nil {
		h.t.Fatalf("start: %v", err)
	}
	h.svc = svc
	h.nc, err = nats.Connect(svc.ClientURL())
	if err != nil {
		h.t.Fatal(err)
	}
	h.js, _ = jetstream.New(h.nc)
}

func (h *harness) down() {
	if h.svc == nil {
		return
	}
	h.nc.Close()
	if err := h.svc.Shutdown(context.Background()); err != nil {
		h.t.Errorf("shutdown: %v", err)
	}
	h.svc = nil
}

// restart stops tock and starts it again on the same data directory, on
// the same port so clients keep their URL.
func (h *harness) restart() {
	h.t.Helper()
	h.cfg.Listen = h.svc.ClientURL()[len("nats://"):]
	h.down()
	h.up()
}

type reply struct {
	ID          string              `json:"id"`
	Target      string              `json:"target"`
	DeliverAt   string              `json:"deliver_at"`
	State       string              `json:"state"`
	DeliveredAt string              `json:"delivered_at"`
	CancelledAt string              `json:"cancelled_at"`
	Error       *struct{ Code int } `json:"error"`
}

func (h *harness) request(subj string, hdr nats.Header, body []byte) reply {
	h.t.Helper()
	msg := &nats.Msg{Subject: subj, Header: hdr, Data: body}
	res, err := h.nc.RequestMsg(msg, 5*time.Second)
	if err != nil {
		h.t.Fatalf("request %s: %v", subj, err)
	}
	var r reply
	if err := json.Unmarshal(res.Data, &r); err != nil {
		h.t.Fatalf("reply to %s: %v: %q", subj, err, res.Data)
	}
	return r
}

func (h *harness) schedule(target string, hdr nats.Header, body string) reply {
	h.t.Helper()
	r := h.request("tock.schedule."+target, hdr, []byte(body))
	if r.Error != nil || r.ID == "" {
		h.t.Fatalf("schedule to %s: error %+v", target, r.Error)
	}
	return r
}

func at(t time.Time) nats.Header {
	return nats.Header{"Tock-Deliver-At": {t.UTC().Format(time.RFC3339Nano)}}
}

func delay(d time.Duration) nats.Header { return nats.Header{"Tock-Delay": {d.String()}} }

// stream creates a JetStream stream capturing subjects and a consumer on it.
func (h *harness) stream(name string, subjects ...string) jetstream.Consumer {
	h.t.Helper()
	ctx := context.Background()
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects}); err != nil {
		h.t.Fatal(err)
	}
	c, err := h.js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: name + "_C", AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

type received struct {
	msg jetstream.Msg
	at  time.Time
}

func next(t *testing.T, c jetstream.Consumer, wait time.Duration) (received, bool) {
	t.Helper()
	b, err := c.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		return received{msg: m, at: time.Now()}, true
	}
	return received{}, false
}

func deliverAt(t *testing.T, m jetstream.Msg) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, m.Headers().Get("Tock-Deliver-At"))
	if err != nil {
		t.Fatalf("Tock-Deliver-At: %v", err)
	}
	return v
}

func TestScheduleDeliversWithHeadersNotEarly(t *testing.T) {
	h := start(t, Config{})
	c := h.stream("ORDERS", "orders.>")
	hdr := delay(300 * time.Millisecond)
	hdr.Set("Order", "42")
	sent := time.Now()
	r := h.schedule("orders.close", hdr, "close 42")
	if r.Target != "orders.close" {
		t.Errorf("target = %q", r.Target)
	}
	got, ok := next(t, c, 5*time.Second)
	if !ok {
		t.Fatal("not delivered")
	}
	m := got.msg
	want := map[string]string{"Tock-Id": r.ID, "Nats-Msg-Id": r.ID, "Order": "42", "Tock-Deliver-At": r.DeliverAt}
	gotHdr := map[string]string{}
	for k := range want {
		gotHdr[k] = m.Headers().Get(k)
	}
	if diff := cmp.Diff(want, gotHdr); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	for _, k := range []string{"Tock-Delay"} {
		if v := m.Headers().Get(k); v != "" {
			t.Errorf("control header %s travelled: %q", k, v)
		}
	}
	if string(m.Data()) != "close 42" || m.Subject() != "orders.close" {
		t.Errorf("got %q on %s", m.Data(), m.Subject())
	}
	if due := deliverAt(t, m); got.at.Before(due) || due.Before(sent.Add(300*time.Millisecond).Truncate(time.Millisecond)) {
		t.Errorf("delivered at %v, due %v, sent %v", got.at, due, sent)
	}
	waitState(t, h, r.ID, "delivered")
}

func waitState(t *testing.T, h *harness, id, state string) reply {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := h.request("tock.get."+id, nil, nil)
		if g.State == state || time.Now().After(deadline) {
			if g.State != state {
				t.Fatalf("state of %s = %q, want %q", id, g.State, state)
			}
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCancelAndGetTellTheTruth(t *testing.T) {
	h := start(t, Config{})
	c := h.stream("ORDERS", "orders.>")
	keep := h.schedule("orders.a", delay(400*time.Millisecond), "keep")
	drop := h.schedule("orders.b", delay(400*time.Millisecond), "drop")
	if g := h.request("tock.get."+drop.ID, nil, nil); g.State != "pending" || g.Target != "orders.b" || g.DeliverAt != drop.DeliverAt {
		t.Errorf("get before cancel = %+v", g)
	}
	if r := h.request("tock.cancel."+drop.ID, nil, nil); r.State != "cancelled" || r.ID != drop.ID || r.Error != nil {
		t.Errorf("cancel = %+v", r)
	}
	if r := h.request("tock.cancel."+drop.ID, nil, nil); r.Error == nil || r.Error.Code != 409 || r.State != "cancelled" {
		t.Errorf("second cancel = %+v, want 409 cancelled", r)
	}
	got, ok := next(t, c, 5*time.Second)
	if !ok || got.msg.Headers().Get("Tock-Id") != keep.ID {
		t.Fatalf("delivered %v, want only %s", ok, keep.ID)
	}
	if extra, ok := next(t, c, time.Second); ok {
		t.Fatalf("cancelled message delivered: %s", extra.msg.Headers().Get("Tock-Id"))
	}
	g := waitState(t, h, keep.ID, "delivered")
	if g.DeliveredAt == "" {
		t.Errorf("delivered record lacks delivered_at: %+v", g)
	}
	if g := h.request("tock.get."+drop.ID, nil, nil); g.State != "cancelled" || g.CancelledAt == "" {
		t.Errorf("get cancelled = %+v", g)
	}
	if r := h.request("tock.cancel."+keep.ID, nil, nil); r.Error == nil || r.Error.Code != 409 || r.State != "delivered" {
		t.Errorf("cancel after delivery = %+v, want 409 delivered", r)
	}
	unknown := "0000000000000000000000000a"
	for _, verb := range []string{"get", "cancel"} {
		if r := h.request("tock."+verb+"."+unknown, nil, nil); r.Error == nil || r.Error.Code != 404 {
			t.Errorf("%s unknown = %+v, want 404", verb, r)
		}
	}
}

func TestPastTimeDeliversAtOnceAndEqualTimesKeepOrder(t *testing.T) {
	h := start(t, Config{})
	c := h.stream("FIFO", "fifo.>")
	past := h.schedule("fifo.x", at(time.Now().Add(-time.Hour)), "past")
	got, ok := next(t, c, 2*time.Second)
	if !ok || got.msg.Headers().Get("Tock-Id") != past.ID {
		t.Fatalf("past message not delivered at once")
	}
	due := time.Now().Add(500 * time.Millisecond)
	var ids []string
	for i := range 50 {
		ids = append(ids, h.schedule("fifo.x", at(due), strconv.Itoa(i)).ID)
	}
	for i, id := range ids {
		got, ok := next(t, c, 5*time.Second)
		if !ok {
			t.Fatalf("message %d not delivered", i)
		}
		if g := got.msg.Headers().Get("Tock-Id"); g != id {
			t.Fatalf("delivery %d is %s, want %s (acceptance order)", i, g, id)
		}
	}
}

func TestFarFutureAcceptedAndBeyondMaxDelayRejected(t *testing.T) {
	h := start(t, Config{})
	before, err := h.svc.Stats(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := h.schedule("reminders.x", delay(300*24*time.Hour), "in 300 days")
	// Far ahead means the cold path: appended to the journal, no slot loaded.
	if after, err := h.svc.Stats(time.Second); err != nil || after.SlotLoads != before.SlotLoads || after.ResidentEntries != 0 {
		t.Errorf("scheduling 300 days ahead loaded a slot: before %+v, after %+v (%v)", before, after, err)
	}
	if g := h.request("tock.get."+r.ID, nil, nil); g.State != "pending" {
		t.Errorf("300 days ahead: %+v", g)
	}
	if r := h.request("tock.schedule.reminders.x", delay(400*24*time.Hour), nil); r.Error == nil || r.Error.Code != 400 {
		t.Errorf("400 days ahead = %+v, want 400", r)
	}
	// The get loaded its slot for a moment; once that slot has left memory
	// (its actor zeroes its count as it stops), nothing may stay resident.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := h.svc.Stats(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if st.ResidentEntries == 0 && st.ActiveSlots == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a far-future message stays resident: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A slot beyond the horizon is written to the journal without an actor,
// then loaded when its time comes near; cancel and get load it briefly.
func TestColdSlotsFireOnTime(t *testing.T) {
	h := start(t, Config{SlotWidth: 200 * time.Millisecond, Horizon: 100 * time.Millisecond})
	c := h.stream("COLD", "cold.>")
	var keep []reply
	for i := range 10 {
		r := h.schedule("cold.x", delay(time.Second+time.Duration(i)*137*time.Millisecond), strconv.Itoa(i))
		keep = append(keep, r)
	}
	drop := h.schedule("cold.x", delay(1500*time.Millisecond), "drop")
	if r := h.request("tock.cancel."+drop.ID, nil, nil); r.State != "cancelled" {
		t.Fatalf("cancel cold = %+v", r)
	}
	seen := map[string]bool{}
	for range keep {
		got, ok := next(t, c, 5*time.Second)
		if !ok {
			t.Fatalf("only %d of %d delivered", len(seen), len(keep))
		}
		if due := deliverAt(t, got.msg); got.at.Before(due) {
			t.Errorf("early by %v", due.Sub(got.at))
		}
		seen[got.msg.Headers().Get("Tock-Id")] = true
	}
	if _, ok := next(t, c, 500*time.Millisecond); ok {
		t.Error("cancelled cold message delivered")
	}
	for _, r := range keep {
		if !seen[r.ID] {
			t.Errorf("%s not delivered", r.ID)
		}
	}
}

func TestRestartKeepsPendingAndHistory(t *testing.T) {
	h := start(t, Config{SlotWidth: time.Second, Horizon: 200 * time.Millisecond})
	c := h.stream("R", "r.>")
	done := h.schedule("r.x", delay(0), "now")
	if _, ok := next(t, c, 2*time.Second); !ok {
		t.Fatal("not delivered")
	}
	waitState(t, h, done.ID, "delivered")
	later := h.schedule("r.x", delay(1500*time.Millisecond), "later")
	far := h.schedule("r.x", delay(time.Hour), "far")
	h.restart()
	c, _ = h.js.Consumer(context.Background(), "R", c.CachedInfo().Name)
	got, ok := next(t, c, 5*time.Second)
	if !ok || got.msg.Headers().Get("Tock-Id") != later.ID {
		t.Fatalf("pending message lost across restart")
	}
	waitState(t, h, done.ID, "delivered")
	waitState(t, h, far.ID, "pending")
}

func TestRetentionPurgesFinishedSlots(t *testing.T) {
	h := start(t, Config{SlotWidth: 100 * time.Millisecond, Horizon: 50 * time.Millisecond, Retention: 300 * time.Millisecond})
	c := h.stream("T", "t.>")
	r := h.schedule("t.x", delay(0), "x")
	if _, ok := next(t, c, 2*time.Second); !ok {
		t.Fatal("not delivered")
	}
	waitState(t, h, r.ID, "delivered")
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := h.request("tock.get."+r.ID, nil, nil)
		if g.Error != nil && g.Error.Code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still queryable long after retention: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The journal is visible only from tock's own account.
	tjs, _ := jetstream.New(h.svc.nc)
	stream, err := tjs.Stream(context.Background(), "TOCK_JOURNAL")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	// One record stays: the meta record, which bounds the ids issued.
	for subj, n := range info.State.Subjects {
		if subj != "tock.journal.meta" {
			t.Errorf("journal still holds %d records on %s after retention", n, subj)
		}
	}
}

func TestCoreTargetWithoutStream(t *testing.T) {
	h := start(t, Config{})
	sub, err := h.nc.SubscribeSync("plain.subject")
	if err != nil {
		t.Fatal(err)
	}
	r := h.schedule("plain.subject", delay(100*time.Millisecond), "hi")
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Tock-Id") != r.ID || string(m.Data) != "hi" {
		t.Errorf("got %q %v", m.Data, m.Header)
	}
	waitState(t, h, r.ID, "delivered")
}

func TestManyConcurrentSchedules(t *testing.T) {
	h := start(t, Config{})
	c := h.stream("BULK", "bulk.>")
	const n = 2000
	due := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	ids := make(chan string, n)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				msg := &nats.Msg{Subject: "tock.schedule.bulk." + strconv.Itoa(i%7), Header: at(due.Add(time.Duration(i%50) * time.Millisecond)), Data: []byte(fmt.Sprint(i))}
				res, err := h.nc.RequestMsg(msg, 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				var r reply
				_ = json.Unmarshal(res.Data, &r)
				ids <- r.ID
			}
		}()
	}
	wg.Wait()
	close(ids)
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
	}
	got := map[string]bool{}
	for len(got) < len(want) {
		m, ok := next(t, c, 5*time.Second)
		if !ok {
			break
		}
		if due := deliverAt(t, m.msg); m.at.Before(due) {
			t.Errorf("early by %v", due.Sub(m.at))
		}
		got[m.msg.Headers().Get("Tock-Id")] = true
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("acknowledged vs delivered (-want +got):\n%s", diff)
	}
}

// A stream target that refuses the publish (full, discard new) gets it
// again with back-off until it takes it; only then is it delivered.
func TestDeliveryRetriesUntilTheStreamAcks(t *testing.T) {
	h := start(t, Config{})
	ctx := context.Background()
	s, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, "full.filler", nil); err != nil {
		t.Fatal(err)
	}
	r := h.schedule("full.x", delay(0), "must arrive")
	time.Sleep(300 * time.Millisecond) // several refused attempts
	if g := h.request("tock.get."+r.ID, nil, nil); g.State != "delivering" {
		t.Fatalf("while the stream is full: %+v, want delivering", g)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	waitState(t, h, r.ID, "delivered")
	m, err := s.GetLastMsgForSubject(ctx, "full.x")
	if err != nil {
		t.Fatalf("not in the stream after the retry: %v", err)
	}
	if m.Header.Get("Tock-Id") != r.ID || string(m.Data) != "must arrive" {
		t.Errorf("stored %q %v", m.Data, m.Header)
	}
}

func TestSecondInstanceOnTheSameDataDirIsRefused(t *testing.T) {
	h := start(t, Config{})
	_, err := Start(context.Background(), Config{DataDir: h.cfg.DataDir, Listen: "127.0.0.1:-1"})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second start on %s: %v, want ErrDataDirInUse", h.cfg.DataDir, err)
	}
}

func TestBusyPortFailsAtOnce(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	began := time.Now()
	_, err = Start(context.Background(), Config{DataDir: t.TempDir(), Listen: l.Addr().String()})
	if err == nil {
		t.Fatal("started on a busy port")
	}
	if waited := time.Since(began); waited > 10*time.Second {
		t.Errorf("took %v to notice the busy port: %v", waited, err)
	}
}

// --sync always must reach the embedded server's JetStream config (it is
// server-wide), and the default must leave JetStream's interval flush.
func TestSyncAlwaysReachesTheServer(t *testing.T) {
	for _, always := range []bool{false, true} {
		h := start(t, Config{SyncAlways: always})
		if got := h.svc.ns.JetStreamConfig().SyncAlways; got != always {
			t.Errorf("SyncAlways %v: server has sync_always %v", always, got)
		}
		h.down()
	}
}

// TestDeadLetterAndRedrive: a target stream that refuses a message for
// good (over its maximum size) gets it dead-lettered at once: get says
// dead with the reason, the dead letter is in TOCK_DLQ with the message,
// and a client cannot forge one. Once the stream is fixed, a redrive
// schedules it again, it is delivered with its headers, and the dead
// letter is gone.
func TestDeadLetterAndRedrive(t *testing.T) {
	h := start(t, Config{})
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 64}
	s, err := h.js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 200)
	hdr := delay(0)
	hdr.Set("Order", "42")
	r := h.schedule("small.close", hdr, body)
	g := waitState(t, h, r.ID, "dead")
	var full struct {
		DeadAt     string `json:"dead_at"`
		DeadReason string `json:"dead_reason"`
	}
	res, err := h.nc.Request("tock.get."+r.ID, nil, 5*time.Second)
	if err != nil || json.Unmarshal(res.Data, &full) != nil {
		t.Fatalf("get: %v %q", err, res.Data)
	}
	if !strings.Contains(full.DeadReason, "message size exceeds maximum") || full.DeadAt == "" {
		t.Fatalf("get of the dead message: %+v %s", g, res.Data)
	}
	// The journal keeps the verdict and its reason across a restart.
	h.restart()
	res, err = h.nc.Request("tock.get."+r.ID, nil, 5*time.Second)
	if err != nil || !strings.Contains(string(res.Data), `"state":"dead"`) || !strings.Contains(string(res.Data), full.DeadReason) {
		t.Fatalf("get after a restart: %v %s", err, res.Data)
	}
	dlq, err := h.js.Stream(ctx, "TOCK_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(ctx, "tock.dead."+r.ID)
	if err != nil || string(m.Data) != body || m.Header.Get("Order") != "42" || m.Header.Get("Tock-Target") != "small.close" {
		t.Fatalf("dead letter %v (%v)", m, err)
	}
	// Clients may read dead letters but not write them.
	var perr permissionErrors
	forger, err := nats.Connect(h.svc.ClientURL(), nats.ErrorHandler(perr.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	if err := forger.Publish("tock.dead.x", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	perr.waitFor(t, `Permissions Violation for Publish to "tock.dead.x"`)

	// Fix the stream, redrive: a new message, delivered, the dead letter gone.
	cfg.MaxMsgSize = 0
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var rr struct {
		ID           string `json:"id"`
		Target       string `json:"target"`
		RedrivenFrom string `json:"redriven_from"`
	}
	res, err = h.nc.Request("tock.redrive."+r.ID, nil, 5*time.Second)
	if err != nil || json.Unmarshal(res.Data, &rr) != nil || rr.ID == "" || rr.ID == r.ID || rr.RedrivenFrom != r.ID || rr.Target != "small.close" {
		t.Fatalf("redrive: %v %q", err, res.Data)
	}
	waitState(t, h, rr.ID, "delivered")
	if s, err = h.js.Stream(ctx, "SMALL"); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLastMsgForSubject(ctx, "small.close")
	if err != nil || string(got.Data) != body || got.Header.Get("Order") != "42" || got.Header.Get("Tock-Id") != rr.ID {
		t.Fatalf("redriven delivery %v (%v)", got, err)
	}
	if _, err := dlq.GetLastMsgForSubject(ctx, "tock.dead."+r.ID); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the dead letter is still there after the redrive: %v", err)
	}
	res, err = h.nc.Request("tock.redrive."+r.ID, nil, 5*time.Second)
	if err != nil || res.Header.Get("Nats-Service-Error-Code") != "404" {
		t.Fatalf("a second redrive: %v %v %q", err, res.Header, res.Data)
	}
}
