package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// The bigslot scenario: one slot holding far more body bytes than a slot
// keeps in memory (--slot-memory), on the real `tock serve` with its
// default memory flags. Every message must be delivered, never early,
// while the child's RSS stays under the target: the slot loads its
// entries and the bodies that fit, and reads the rest back from the
// journal, a budget's worth at a time, as they come due.
//
// Issue's target: a single minute holding 2 GiB of 512 KiB messages
// fires completely while RSS stays under 1 GiB.
const (
	bigslotTarget = "bench.bigslot"
	// bigslotBody is each message's body: 512 KiB less room for headers,
	// so a request stays within NATS's default 1 MiB max payload.
	bigslotBody = 511 << 10
	// bigslotInflight bounds the requests in flight: 16 × 511 KiB.
	bigslotInflight = 16
)

var tBigslotRSS = &Target{Op: LE, Limit: 1 << 30}

// bigslot: n messages of 511 KiB due over one slot of one minute,
// accepted while that slot is beyond the horizon (so they go to the
// journal only), then delivered when it comes due.
func (r *runner) bigslot(ctx context.Context) error {
	n := r.o.SizeOf("bigslot")
	width, horizon := time.Minute, 10*time.Second // tock's defaults
	flags := []string{"--slot-width", width.String(), "--horizon", horizon.String()}
	if r.o.Quick {
		// A few MiB fit the default budget: a smaller one makes the quick
		// run read bodies back too, and narrow slots keep it short.
		width, horizon = 5*time.Second, 2*time.Second
		flags = []string{"--slot-width", width.String(), "--horizon", horizon.String(), "--slot-memory", "4MiB"}
	}
	c, err := r.newChild(ctx, "bigslot-tock", flags...)
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	nc, err := c.connect("bench-bigslot")
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	defer nc.Close()
	rc, err := c.connect("bench-receiver")
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	defer rc.Close()
	rec := newLatencyRecorder(n)
	sub, err := rec.subscribe(rc, bigslotTarget)
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	defer sub.Unsubscribe()
	if err := rc.Flush(); err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	rss := newRSSWatch(c)
	defer rss.stop()

	// The slot starts at a slot boundary beyond the ingest (at about
	// 100 MiB/s) and the horizon.
	lead := time.Duration(float64(n)*bigslotBody/(100<<20)*float64(time.Second)) + horizon + 5*time.Second
	w := width.Milliseconds()
	start := time.UnixMilli((time.Now().Add(lead).UnixMilli() + w - 1) / w * w)
	fmt.Fprintf(r.log, "bigslot: %s messages of %s due over the %v from %s\n",
		groupThousands(int64(n)), formatValue(bigslotBody, UnitBytes), width, start.Format("15:04:05"))

	acc := newAcceptedSet(n)
	p, err := newProducer(nc, bigslotInflight, acc.add)
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	defer p.close()
	stop := r.progress(countProgress("bigslot", "accepted", n, p.accepted.Load))
	err = p.run(ctx, n, scheduleFill(bigslotTarget, body(bigslotBody), spread(start, width, n)))
	stop()
	if err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	accepted := int(p.accepted.Load())
	if s := p.errorSummary(); s != "" {
		r.rep.note("bigslot: %s of %s accepted; errors: %s", groupThousands(int64(accepted)), groupThousands(int64(n)), s)
	}
	if ended := time.Now(); ended.After(start.Add(-horizon)) {
		r.rep.note("bigslot: accepting ended at %s, within the horizon of the slot's start %s: some messages may have gone to the loaded slot", ended.Format("15:04:05.000"), start.Format("15:04:05"))
	}
	ingestPeak := rss.reset()

	if err := r.waitArrivals(ctx, "bigslot", accepted, rec.unique, start.Add(width+3*time.Minute)); err != nil {
		return fmt.Errorf("bigslot: %w", err)
	}
	firingPeak := rss.reset()
	hwm, _ := c.hwm()
	st, stErr := c.status(nc)

	rec.mu.Lock()
	lat := summarize(rec.late)
	missing, early, bad := acc.missing(rec.seen), rec.early, rec.bad
	rec.mu.Unlock()
	r.rep.value("bigslot", "delivered", UnitCount, float64(accepted-missing), &Target{Op: EQ, Limit: float64(accepted)},
		fmt.Sprintf("of %s accepted (%s of bodies)", groupThousands(int64(accepted)), formatValue(float64(accepted)*bigslotBody, UnitBytes)))
	r.rep.value("bigslot", "peak RSS while firing", UnitBytes, float64(firingPeak), tBigslotRSS, "VmRSS sampled every 100 ms from the slot's load to the last delivery")
	r.rep.value("bigslot", "peak RSS while accepting", UnitBytes, float64(ingestPeak), nil, "")
	r.rep.value("bigslot", "peak RSS of the run", UnitBytes, float64(hwm), nil, "VmHWM")
	r.rep.value("bigslot", "lateness p50", UnitMs, lat.p50, nil, "")
	r.rep.value("bigslot", "lateness p99", UnitMs, lat.p99, nil, "")
	r.rep.value("bigslot", "lateness max", UnitMs, lat.max, nil, "the last body's wait behind the reads of those before it")
	if stErr == nil {
		r.rep.value("bigslot", "refills", UnitCount, float64(st.Scheduler.Refills), nil,
			fmt.Sprintf("reads of bodies beyond the slot's budget; %d of them read the whole slot", st.Scheduler.RefillScans))
	} else {
		r.rep.note("bigslot: tock.status: %v", stErr)
	}
	r.rep.note("bigslot: one slot of %v; the child runs with %s, else default flags; bodies of %s over a core subscription; lateness = receive time − Tock-Deliver-At",
		width, strings.Join(append(slices.Clone(r.o.ServeArgs), flags...), " "), formatValue(bigslotBody, UnitBytes))
	if early > 0 {
		r.rep.fail("bigslot: %d messages delivered before their deliver time", early)
	}
	if missing > 0 {
		r.rep.fail("bigslot: %d acknowledged messages never arrived", missing)
	}
	if bad > 0 {
		r.rep.fail("bigslot: %d deliveries without a valid Tock-Id or Tock-Deliver-At", bad)
	}
	return nil
}

// rssWatch samples a child's VmRSS every 100 ms and keeps the largest.
type rssWatch struct {
	mu   sync.Mutex
	peak int64
	done chan struct{}
	wg   sync.WaitGroup
}

func newRSSWatch(c *child) *rssWatch {
	w := &rssWatch{done: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := c.rss(); err == nil {
				w.mu.Lock()
				w.peak = max(w.peak, v)
				w.mu.Unlock()
			}
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// reset returns the peak since the last reset and starts a new one.
func (w *rssWatch) reset() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.peak
	w.peak = 0
	return p
}

func (w *rssWatch) stop() {
	close(w.done)
	w.wg.Wait()
}
