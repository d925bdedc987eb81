package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/gateway"
	"github.com/tockd/tock/msgid"
)

// tIsolated: the healthy target's lateness p99 beside a target that
// refuses everything (the fault-isolation issue's bound).
var tIsolated = &Target{Op: LE, Limit: 10}

// isolationRedrives is how many dead letters the scenario redrives once
// the refusing stream is fixed.
const isolationRedrives = 100

// isolation: n messages to a stream that refuses every one (over its
// maximum message size) and n to a healthy stream, due over the same
// span. The healthy target's lateness is compared with the same load
// alone, on the same server, just before; every refused message must be
// dead-lettered, get must say dead, and a redrive after the stream is
// fixed must deliver.
func (r *runner) isolation(ctx context.Context) error {
	n := r.o.SizeOf("isolation")
	span := 10 * time.Second
	if r.o.Quick {
		span = 3 * time.Second
	}
	lead := r.o.leadFor(2*n, 5*time.Second, 3*time.Second)
	c, nc, err := r.newChildWithStream(ctx, "isolation", targetStream("BENCH_GOOD", "bench.good.>"))
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	bad := jetstream.StreamConfig{Name: "BENCH_BAD", Subjects: []string{"bench.bad"}, MaxMsgSize: 64}
	if _, err := js.CreateStream(ctx, bad); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	rc, err := c.connect("bench-receiver")
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	defer rc.Close()
	alone, beside := newLatencyRecorder(n), newLatencyRecorder(n)
	for subject, rec := range map[string]*latencyRecorder{"bench.good.alone": alone, "bench.good.beside": beside} {
		sub, err := rec.subscribe(rc, subject)
		if err != nil {
			return fmt.Errorf("isolation: %w", err)
		}
		defer sub.Unsubscribe()
	}
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}

	// The healthy load alone.
	T0 := time.Now().Add(lead)
	accAlone := newAcceptedSet(n)
	if _, _, err := r.tockIngest(ctx, c, "isolation alone", "bench.good.alone", n, spread(T0, span, n), accAlone.add, nil); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if err := r.waitArrivals(ctx, "isolation alone", n, alone.unique, T0.Add(span+30*time.Second)); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}

	// The same beside the refused load, due over the same span: the
	// refused messages are accepted first, so each one is due just before
	// a healthy one.
	T1 := time.Now().Add(lead)
	accBad, accGood := newAcceptedSet(n), newAcceptedSet(n)
	if _, _, err := r.tockIngest(ctx, c, "isolation refused", "bench.bad", n, spread(T1, span, n), accBad.add, nil); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if _, _, err := r.tockIngest(ctx, c, "isolation healthy", "bench.good.beside", n, spread(T1, span, n), accGood.add, nil); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if late := time.Since(T1); late > 0 {
		r.rep.note("isolation: accepting ended %v after the first deliver time", late.Round(time.Millisecond))
	}
	if err := r.waitArrivals(ctx, "isolation healthy", n, beside.unique, T1.Add(span+30*time.Second)); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	last := T1.Add(span)
	dead := waitStreamMsgs(ctx, js, delivery.DeadStream, uint64(n), 30*time.Second)
	deadBy := time.Since(last)

	aloneSt, besideSt := r.isolationStats(alone, accAlone), r.isolationStats(beside, accGood)
	ref := "the healthy load alone"
	r.rep.add("isolation", "healthy lateness p50", UnitMs, besideSt.p50, ref, aloneSt.p50, nil, "")
	r.rep.add("isolation", "healthy lateness p99", UnitMs, besideSt.p99, ref, aloneSt.p99, tIsolated, "")
	r.rep.add("isolation", "healthy lateness max", UnitMs, besideSt.max, ref, aloneSt.max, nil, "")
	r.rep.value("isolation", "dead letters", UnitCount, float64(dead), &Target{Op: EQ, Limit: float64(n)}, "refused messages in "+delivery.DeadStream)
	r.rep.value("isolation", "last dead letter after the last deliver time", UnitSec, deadBy.Seconds(), nil, "an upper bound: polled every 50 ms")

	// get says dead; a redrive after the fix delivers.
	id, _ := accBad.first()
	var g gateway.GetResponse
	if res, err := nc.Request(gateway.PrefixGet+id.String(), nil, 5*time.Second); err != nil || json.Unmarshal(res.Data, &g) != nil || g.State != "dead" || g.DeadReason == "" {
		r.rep.fail("isolation: get of a refused message: %v %+v", err, g)
	}
	bad.MaxMsgSize = -1
	if _, err := js.UpdateStream(ctx, bad); err != nil {
		return fmt.Errorf("isolation: fix the stream: %w", err)
	}
	redriven := 0
	accBad.mu.Lock()
	ids := append([]msgid.ID(nil), accBad.ids[:min(isolationRedrives, n)]...)
	accBad.mu.Unlock()
	for _, id := range ids {
		if res, err := nc.Request(gateway.PrefixRedrive+id.String(), nil, 5*time.Second); err == nil && json.Valid(res.Data) && !isErrorReply(res.Data) {
			redriven++
		}
	}
	stored := waitStreamMsgs(ctx, js, "BENCH_BAD", uint64(len(ids)), 30*time.Second)
	r.rep.value("isolation", "redriven and delivered", UnitCount, float64(stored), &Target{Op: EQ, Limit: float64(len(ids))},
		fmt.Sprintf("of %d redriven after the stream was fixed", redriven))

	// The same beside a stream that is full: a transient refusal, retried
	// under the default policy (24 h) until the stream has room.
	full := jetstream.StreamConfig{Name: "BENCH_FULL", Subjects: []string{"bench.full"}, MaxMsgs: 1, Discard: jetstream.DiscardNew}
	if _, err := js.CreateStream(ctx, full); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if _, err := js.Publish(ctx, "bench.full", nil); err != nil {
		return fmt.Errorf("isolation: fill the stream: %w", err)
	}
	besideFull := newLatencyRecorder(n)
	sub, err := besideFull.subscribe(rc, "bench.good.full")
	if err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	defer sub.Unsubscribe()
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	T2 := time.Now().Add(lead)
	accGoodFull := newAcceptedSet(n)
	if _, _, err := r.tockIngest(ctx, c, "isolation full", "bench.full", n, spread(T2, span, n), nil, nil); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if _, _, err := r.tockIngest(ctx, c, "isolation healthy (full)", "bench.good.full", n, spread(T2, span, n), accGoodFull.add, nil); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	if err := r.waitArrivals(ctx, "isolation healthy (full)", n, besideFull.unique, T2.Add(span+30*time.Second)); err != nil {
		return fmt.Errorf("isolation: %w", err)
	}
	fullSt := r.isolationStats(besideFull, accGoodFull)
	r.rep.add("isolation", "healthy lateness p99 beside a full stream", UnitMs, fullSt.p99, ref, aloneSt.p99, tIsolated, "")
	r.rep.add("isolation", "healthy lateness max beside a full stream", UnitMs, fullSt.max, ref, aloneSt.max, nil, "")
	full.MaxMsgs = -1
	if _, err := js.UpdateStream(ctx, full); err != nil {
		return fmt.Errorf("isolation: give the full stream room: %w", err)
	}
	fixedAt := time.Now()
	got := waitStreamMsgs(ctx, js, "BENCH_FULL", uint64(n)+1, 60*time.Second)
	got -= min(got, 1) // the filler
	r.rep.value("isolation", "full stream's messages delivered once it had room", UnitCount, float64(got), &Target{Op: EQ, Limit: float64(n)},
		fmt.Sprintf("within %.1f s of the fix (retries back off up to 5 s)", time.Since(fixedAt).Seconds()))
	r.rep.note("isolation: %s messages to a stream that refuses each (max_msg_size 64, %d-byte bodies) and %s to a healthy one, due over the same %v; then the same beside a full stream (max_msgs 1, discard new: refused, retried); lateness = core-subscription receive time − Tock-Deliver-At; the reference is the healthy load alone just before, on the same server",
		groupThousands(int64(n)), r.o.Size, groupThousands(int64(n)), span)
	return nil
}

// isolationStats summarises rec and fails the run on early, lost or
// malformed deliveries.
func (r *runner) isolationStats(rec *latencyRecorder, acc *acceptedSet) latencyStats {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.early > 0 {
		r.rep.fail("isolation: %d messages delivered before their deliver time", rec.early)
	}
	if missing := acc.missing(rec.seen); missing > 0 {
		r.rep.fail("isolation: %d acknowledged messages never arrived", missing)
	}
	if rec.bad > 0 {
		r.rep.fail("isolation: %d deliveries without a valid Tock-Id or Tock-Deliver-At", rec.bad)
	}
	return summarize(rec.late)
}

// waitStreamMsgs polls stream every 50 ms until it holds want messages or
// wait passes, and returns what it last held.
func waitStreamMsgs(ctx context.Context, js jetstream.JetStream, stream string, want uint64, wait time.Duration) uint64 {
	var got uint64
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if s, err := js.Stream(ctx, stream); err == nil {
			got = s.CachedInfo().State.Msgs
		}
		if got >= want {
			break
		}
	}
	return got
}

// isErrorReply reports whether a tock reply is an error.
func isErrorReply(data []byte) bool {
	var e gateway.ErrorResponse
	return json.Unmarshal(data, &e) == nil && e.Error != nil
}
