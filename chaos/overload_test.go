package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestOverload: producers that never wait for an answer offer tock more
// than twice what it accepts, for TOCK_CHAOS_OVERLOAD (5 s by default).
// tock answers 503 for what it cannot take, stays up, its RSS stays under
// its memory limit's neighbourhood, and every schedule it acknowledged is
// delivered, once the load is over.
func TestOverload(t *testing.T) {
	dur := 5 * time.Second
	if s := os.Getenv("TOCK_CHAOS_OVERLOAD"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		dur = d
	}
	const (
		producers = 4
		bodySize  = 4 << 10
		// window bounds each producer's unanswered requests: far above
		// what tock holds (--max-inflight), so tock, not the producer,
		// decides what is refused, and below what a core subscription
		// buffers before the server calls tock a slow consumer.
		window = 50_000
		// rssBound: tock runs with the default soft limit, 90% of 1 GiB
		// here; far above it means the intake is not bounded.
		rssBound = 1536 << 20
	)
	p := newProc(t, strings.Fields(os.Getenv("TOCK_CHAOS_OVERLOAD_ARGS"))...)
	p.start()
	nc, err := nats.Connect(p.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CHAOS", Subjects: []string{"chaos.>"}}); err != nil {
		t.Fatal(err)
	}

	var peak atomic.Int64
	stopRSS := make(chan struct{})
	var rssDone sync.WaitGroup
	rssDone.Add(1)
	go func() {
		defer rssDone.Done()
		for {
			if v := procRSS(p.cmd.Process.Pid); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stopRSS:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	l := newLoad()
	var sent, unanswered atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for i := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, lost := overloadProducer(t, p.url(), i, dur, bodySize, window, l)
			sent.Add(n)
			unanswered.Add(lost)
		}()
	}
	wg.Wait()
	close(stopRSS)
	rssDone.Wait()
	took := time.Since(start)

	if p.cmd.ProcessState != nil || p.cmd.Process.Signal(syscall.Signal(0)) != nil {
		t.Fatal("tock is not running after the overload")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	accepted := len(l.scheduled)
	t.Logf("%d requests offered in %v (%.0f/s), %d accepted (%.0f/s), %d answered 503, %d other errors, %d unanswered; peak RSS %d MiB",
		sent.Load(), took.Round(time.Millisecond), float64(sent.Load())/took.Seconds(), accepted, float64(accepted)/took.Seconds(),
		l.unavailable, l.failures-l.unavailable, unanswered.Load(), peak.Load()>>20)
	if sent.Load() < 2*int64(accepted) {
		t.Errorf("offered %d requests for %d accepted: not twice what tock took", sent.Load(), accepted)
	}
	if l.unavailable == 0 {
		t.Error("no 503 under overload")
	}
	if peak.Load() > rssBound {
		t.Errorf("peak RSS %d MiB, want under %d MiB", peak.Load()>>20, rssBound>>20)
	}
	st := check(t, nc, js, l, "after the overload")
	t.Logf("%d acknowledged delivered, %d duplicates, %d stored without an acknowledgement", st.want, st.dups, st.unacked)
}

// overloadProducer sends schedules as fast as it can for dur, up to
// window unanswered, each due within 3 s of its request, and records the
// answers in l; it returns how many it sent and how many got no answer.
func overloadProducer(t *testing.T, url string, producer int, dur time.Duration, bodySize, window int, l *load) (sent, unanswered int64) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Error(err)
		return 0, 0
	}
	defer nc.Close()
	slots := make(chan struct{}, window)
	var answered sync.WaitGroup
	inbox := nc.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		defer func() { <-slots; answered.Done() }()
		var r struct {
			ID        string `json:"id"`
			DeliverAt string `json:"deliver_at"`
		}
		if json.Unmarshal(m.Data, &r) != nil || r.ID == "" {
			l.fail(m)
			return
		}
		at, _ := time.Parse(time.RFC3339Nano, r.DeliverAt)
		l.mu.Lock()
		l.scheduled[r.ID] = acked{id: r.ID, deliverAt: at}
		l.mu.Unlock()
	})
	if err != nil {
		t.Error(err)
		return 0, 0
	}
	_ = sub.SetPendingLimits(-1, -1)
	body := []byte(strings.Repeat("o", bodySize))
	subject := "tock.schedule.chaos.o" + strconv.Itoa(producer)
	for end := time.Now().Add(dur); time.Now().Before(end); sent++ {
		slots <- struct{}{}
		answered.Add(1)
		due := time.Now().Add(time.Duration(sent%3000) * time.Millisecond)
		m := &nats.Msg{Subject: subject, Reply: inbox + "." + strconv.FormatInt(sent, 10), Data: body,
			Header: nats.Header{"Tock-Deliver-At": {due.UTC().Format(time.RFC3339Nano)}}}
		if err := nc.PublishMsg(m); err != nil {
			<-slots
			answered.Done()
			t.Errorf("producer %d: publish: %v", producer, err)
			break
		}
	}
	// Answers still on their way: wait a while, then count the rest.
	done := make(chan struct{})
	go func() { answered.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
	}
	_ = sub.Unsubscribe()
	return sent, int64(len(slots))
}

// procRSS is a process's VmRSS in bytes, 0 if unreadable.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return 0
}
