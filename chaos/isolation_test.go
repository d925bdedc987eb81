package chaos

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBadTargetsIsolated: in one slot, at one instant, 9,000 messages are
// due to a stream that is full (a transient refusal, retried for as long
// as the policy allows), 300 to one that refuses them for good (too big),
// and then 1,000 to a healthy stream. The healthy ones arrive on time
// although the full stream's messages came first and outnumber the
// slot's in-flight bound; the refused ones are dead-lettered; tock is
// killed with SIGKILL while the full stream still refuses; once the stream
// has room, every message reaches it, once.
func TestBadTargetsIsolated(t *testing.T) {
	const nFull, nBig, nGood = 9000, 300, 1000
	// The healthy target's deliveries must start within this of their time.
	// It bounds the isolation, not speed: without it they wait for the
	// full stream's retry policy (24 h by default).
	const bound = 2 * time.Second
	p := newProc(t)
	p.start()
	nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fullCfg := jetstream.StreamConfig{Name: "FULL", Subjects: []string{"full.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew}
	for _, c := range []jetstream.StreamConfig{
		fullCfg,
		{Name: "BIG", Subjects: []string{"big.>"}, MaxMsgSize: 16},
		{Name: "GOOD", Subjects: []string{"good.>"}},
	} {
		if _, err := js.CreateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, "full.filler", nil); err != nil {
		t.Fatal(err)
	}

	// All due at one instant, which lies in one slot, the full stream's
	// messages accepted first so they come first in deliver order.
	at := time.Now().Add(6 * time.Second).Truncate(time.Second)
	if at.Minute() != at.Add(time.Second).Minute() {
		at = at.Add(2 * time.Second)
	}
	ids := map[string][]string{}
	for _, batch := range []struct {
		subject string
		n       int
		body    string
	}{{"full.x", nFull, "full"}, {"big.x", nBig, strings.Repeat("b", 100)}, {"good.x", nGood, "good"}} {
		ids[batch.subject] = scheduleMany(t, nc, batch.subject, at, batch.n, batch.body)
	}
	if time.Now().After(at) {
		t.Fatalf("scheduling took past the deliver time %v; the test needs a faster machine or fewer messages", at)
	}

	// The healthy stream: every message, each within the bound.
	good := waitCount(t, ctx, js, "GOOD", nGood)
	lateness := readLateness(t, ctx, js, "GOOD", nGood)
	if worst := lateness[len(lateness)-1]; worst > bound || lateness[0] < 0 {
		t.Errorf("healthy target's lateness from %v to %v, want within [0, %v]", lateness[0], worst, bound)
	}
	t.Logf("healthy target: %d delivered, lateness p50 %v, p99 %v, max %v", good,
		lateness[len(lateness)/2], lateness[len(lateness)*99/100], lateness[len(lateness)-1])

	// The refused ones: dead letters, and get says so.
	waitCount(t, ctx, js, "TOCK_DLQ", nBig)
	var g struct {
		State      string `json:"state"`
		DeadReason string `json:"dead_reason"`
	}
	res, err := nc.Request("tock.get."+ids["big.x"][0], nil, 5*time.Second)
	if err != nil || json.Unmarshal(res.Data, &g) != nil || g.State != "dead" || !strings.Contains(g.DeadReason, "exceeds maximum") {
		t.Errorf("get of a refused message: %v %s", err, res.Data)
	}

	// Kill while the full stream still refuses, restart, then give it room.
	p.kill()
	p.start()
	if info, err := js.Stream(ctx, "FULL"); err != nil || info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("the full stream took messages while full: %v %+v", err, info)
	}
	fullCfg.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, fullCfg); err != nil {
		t.Fatal(err)
	}
	if n := waitCount(t, ctx, js, "FULL", nFull+1); n != nFull+1 {
		t.Errorf("FULL holds %d messages, want %d", n, nFull+1)
	}
	if n := waitCount(t, ctx, js, "TOCK_DLQ", nBig); n != nBig {
		t.Errorf("TOCK_DLQ holds %d, want %d", n, nBig)
	}
	// A message stored twice would be counted above; a late duplicate must
	// not come either.
	time.Sleep(time.Second)
	for name, want := range map[string]uint64{"FULL": nFull + 1, "GOOD": nGood, "TOCK_DLQ": nBig} {
		s, err := js.Stream(ctx, name)
		if err != nil || s.CachedInfo().State.Msgs != want {
			t.Errorf("%s: %v, want %d messages", name, err, want)
		}
	}
}

// scheduleMany schedules n messages to subject, all due at at, from 8
// concurrent producers, and returns their ids; any failure fails t.
func scheduleMany(t *testing.T, nc *nats.Conn, subject string, at time.Time, n int, body string) []string {
	t.Helper()
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	for range 8 {
		wg.Go(func() {
			for range next {
				msg := &nats.Msg{Subject: "tock.schedule." + subject, Data: []byte(body),
					Header: nats.Header{"Tock-Deliver-At": {at.UTC().Format(time.RFC3339Nano)}}}
				res, err := nc.RequestMsg(msg, 10*time.Second)
				var r struct {
					ID string `json:"id"`
				}
				if err != nil || json.Unmarshal(res.Data, &r) != nil || r.ID == "" {
					t.Errorf("schedule to %s: %v %s", subject, err, res.Data)
					return
				}
				mu.Lock()
				ids = append(ids, r.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(ids) != n {
		t.Fatalf("scheduled %d of %d to %s", len(ids), n, subject)
	}
	return ids
}

// waitCount waits until stream holds at least n messages, or a deadline
// of a minute, and returns what it holds.
func waitCount(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, n uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := js.Stream(ctx, stream)
		if err == nil && s.CachedInfo().State.Msgs >= n {
			return s.CachedInfo().State.Msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v; want %d messages", stream, err, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readLateness reads n messages of stream and returns, sorted, how long
// after its Tock-Deliver-At each was stored.
func readLateness(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, n int) []time.Duration {
	t.Helper()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Fetch(n, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Duration
	for m := range b.Messages() {
		md, err := m.Metadata()
		due, perr := time.Parse(time.RFC3339Nano, m.Headers().Get("Tock-Deliver-At"))
		if err != nil || perr != nil {
			t.Fatalf("message %s: %v %v", m.Headers().Get("Tock-Id"), err, perr)
		}
		out = append(out, md.Timestamp.Sub(due))
	}
	if len(out) != n {
		t.Fatalf("read %d of %d messages of %s", len(out), n, stream)
	}
	slices.Sort(out)
	return out
}
