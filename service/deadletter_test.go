package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/deadletter"
)

// nakAll fetches from c until it has nothing more to deliver, NAKing
// every message, and returns how many deliveries it saw.
func nakAll(t *testing.T, c jetstream.Consumer) int {
	t.Helper()
	n := 0
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, err := c.Fetch(10, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
		}
		if b.Error() != nil && !errors.Is(b.Error(), nats.ErrTimeout) {
			t.Fatal(b.Error())
		}
		n += got
		if got == 0 {
			return n
		}
	}
	t.Fatal("the consumer kept delivering")
	return n
}

// deadLetters waits until TOCK_DLQ holds n messages and returns them.
func deadLetters(t *testing.T, h *harness, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	dlq, err := h.js.Stream(ctx, "TOCK_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) == n {
			break
		}
		if int(info.State.Msgs) > n || time.Now().After(deadline) {
			t.Fatalf("TOCK_DLQ holds %d dead letters, want %d", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var out []*jetstream.RawStreamMsg
	info, _ := dlq.Info(ctx)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// A consumer with max_deliver 3 that NAKs everything: its messages land in
// TOCK_DLQ with where they came from, a work queue gives them up, and a
// redrive puts one back on its subject, where the consumer gets it again.
func TestConsumerDeadLetters(t *testing.T) {
	h := start(t, Config{DeadLetters: []deadletter.Source{{Stream: "ORDERS", Consumer: "workers"}, {Stream: "AUDIT", Consumer: "readers"}}})
	ctx := context.Background()
	orders, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	audit, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "AUDIT", Subjects: []string{"audit.>"}})
	if err != nil {
		t.Fatal(err)
	}
	workers, err := orders.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 3, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	readers, err := audit.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "readers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A consumer tock does not watch: its exhausted messages stay put.
	others, err := audit.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "others", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 1, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		msg := nats.NewMsg(fmt.Sprintf("orders.close.%d", i))
		msg.Data = []byte(fmt.Sprintf("order %d", i))
		msg.Header.Set("Order", strconv.Itoa(i))
		msg.Header.Set("Nats-Msg-Id", fmt.Sprintf("order-%d", i)) // must not travel to the dead letter
		if _, err := h.js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.js.Publish(ctx, "audit.login", []byte("alice")); err != nil {
		t.Fatal(err)
	}
	if got := nakAll(t, others); got != 1 {
		t.Fatalf("the unwatched consumer saw %d deliveries, want 1", got)
	}
	if got := nakAll(t, workers); got != 3*n {
		t.Fatalf("workers saw %d deliveries, want %d", got, 3*n)
	}
	if got := nakAll(t, readers); got != 2 {
		t.Fatalf("readers saw %d deliveries, want 2", got)
	}

	letters := deadLetters(t, h, n+1)
	byTarget := map[string]*jetstream.RawStreamMsg{}
	for _, m := range letters {
		byTarget[m.Header.Get("Tock-Target")] = m
		id := m.Header.Get("Tock-Id")
		if m.Subject != "tock.dead."+id || m.Header.Get("Nats-Msg-Id") == "order-"+m.Header.Get("Order") {
			t.Errorf("dead letter %s: subject %s, headers %v", id, m.Subject, m.Header)
		}
	}
	for i := range n {
		m := byTarget[fmt.Sprintf("orders.close.%d", i)]
		if m == nil {
			t.Fatalf("no dead letter of orders.close.%d in %d", i, len(letters))
		}
		if string(m.Data) != fmt.Sprintf("order %d", i) || m.Header.Get("Order") != strconv.Itoa(i) ||
			m.Header.Get("Tock-Stream") != "ORDERS" || m.Header.Get("Tock-Consumer") != "workers" ||
			m.Header.Get("Tock-Attempts") != "3" || m.Header.Get("Tock-Stream-Seq") != strconv.Itoa(i+1) ||
			m.Header.Get("Tock-Dead-Reason") != "consumer workers of stream ORDERS delivered it 3 times without an ack (its max_deliver)" {
			t.Errorf("dead letter of order %d: %q %v", i, m.Data, m.Header)
		}
	}
	if m := byTarget["audit.login"]; m == nil || string(m.Data) != "alice" || m.Header.Get("Tock-Attempts") != "2" {
		t.Fatalf("dead letter of audit.login: %v", m)
	}
	// The work queue gave its messages up; the limits stream keeps its own.
	if info, err := orders.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("ORDERS after the dead letters: %+v %v", info.State, err)
	}
	if info, err := audit.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("AUDIT after the dead letters: %+v %v", info.State, err)
	}

	// `tock dead`'s listing sees them like any dead letter; a redrive puts
	// one back, and the consumer gets it again from the start.
	dead := byTarget["orders.close.2"]
	res, err := h.nc.Request("tock.redrive."+dead.Header.Get("Tock-Id"), nil, 5*time.Second)
	var rr struct {
		ID, Target, RedrivenFrom string
		Error                    any
	}
	if err != nil || json.Unmarshal(res.Data, &rr) != nil || rr.Target != "orders.close.2" || rr.ID == "" {
		t.Fatalf("redrive: %v %q", err, res.Data)
	}
	b, err := workers.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		md, _ := m.Metadata()
		if string(m.Data()) != "order 2" || m.Headers().Get("Order") != "2" || md.NumDelivered != 1 {
			t.Fatalf("redriven: %q %v %+v", m.Data(), m.Headers(), md)
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		rr.Error = "seen"
	}
	if rr.Error != "seen" {
		t.Fatalf("the redriven message did not come back to the consumer: %v", b.Error())
	}
	deadLetters(t, h, n)

	// Only the server says a consumer gave up: a client's forged advisory
	// is refused, so tock never moves a message on a client's word.
	var perr permissionErrors
	forger, err := nats.Connect(h.svc.ClientURL(), nats.ErrorHandler(perr.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	subj := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.AUDIT.readers"
	if err := forger.Publish(subj, []byte(`{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"AUDIT","consumer":"readers","stream_seq":1,"deliveries":9}`)); err != nil {
		t.Fatal(err)
	}
	perr.waitFor(t, `Permissions Violation for Publish to "`+subj+`"`)
	deadLetters(t, h, n)
}

func TestParseDeadLetterSource(t *testing.T) {
	if s, err := deadletter.ParseSource("ORDERS:workers"); err != nil || s != (deadletter.Source{Stream: "ORDERS", Consumer: "workers"}) {
		t.Fatalf("ORDERS:workers: %v %v", s, err)
	}
	for _, bad := range []string{"ORDERS", ":workers", "ORDERS:", "OR.DERS:w", "ORDERS:w*", "ORDERS:a b", "ORDERS:>"} {
		if _, err := deadletter.ParseSource(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
