package bench

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/msgid"
)

var (
	buildOnce sync.Once
	tockBin   string
	buildErr  error
)

// binary builds ./cmd/tock once per test run: the end-to-end tests run it
// as a child process, exactly as `tock bench` does.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs tock: skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tock-bench-test-")
		if err != nil {
			buildErr = err
			return
		}
		tockBin = filepath.Join(dir, "tock")
		cmd := exec.Command("go", "build", "-o", tockBin, "./cmd/tock")
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			tockBin = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/tock: %v\n%s", buildErr, tockBin)
	}
	return tockBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tockBin != "" && buildErr == nil {
		os.RemoveAll(filepath.Dir(tockBin))
	}
	os.Exit(code)
}

// testChild runs a tock child for the test and connects to it; both end
// with the test. ctx bounds the test's own waits.
func testChild(t *testing.T) (context.Context, *nats.Conn) {
	t.Helper()
	dir := t.TempDir()
	c, err := startChild(binary(t), filepath.Join(dir, "data"), filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	if err := c.waitReady(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	nc, err := c.connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return ctx, nc
}

// TestNativeScheduleFires checks what the native references rely on: a
// stream with AllowMsgSchedules accepts "@at" with a fractional RFC 3339
// time, fires into a subject of the same stream, never early, and keeps
// the schedule's own headers on the fired copy.
func TestNativeScheduleFires(t *testing.T) {
	ctx, nc := testChild(t)
	if err := createStream(ctx, nc, nativeStream("NATIVE_PROBE")); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	at := time.Now().Add(700 * time.Millisecond).Truncate(time.Millisecond).Add(123 * time.Microsecond)
	if _, err := js.PublishMsg(ctx, nativeMsg(1, at, []byte("x"))); err != nil {
		t.Fatalf("a native @at schedule with a fraction was refused: %v", err)
	}
	s, _ := js.Stream(ctx, "NATIVE_PROBE")
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"native.target"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("the native schedule did not fire: %v", err)
	}
	md, _ := m.Metadata()
	if md.Timestamp.Before(at) {
		t.Errorf("fired early: stored %v, due %v", md.Timestamp, at)
	}
	if got := m.Headers().Get("Bench-Deliver-At"); got != at.UTC().Format(time.RFC3339Nano) {
		t.Errorf("fired copy lost the schedule's header: %q", got)
	}
	t.Logf("fired %v after its time", md.Timestamp.Sub(at))
}

// TestQuickRun runs the quick mode of every scenario but burst (whose
// journal-shrink wait follows the one-minute slot) at tiny sizes against
// the real binary and checks the rows are there and sane.
func TestQuickRun(t *testing.T) {
	rep, _ := runQuick(t, "--scenario", "ingest,precision,capacity,recovery,durability",
		"--n", "ingest=3000,precision=1000,capacity=5000,recovery=2000,durability=1000")
	find := func(scenario, metric, ref string) *Row {
		for i, r := range rep.Rows {
			if r.Scenario == scenario && r.Metric == metric && strings.HasPrefix(r.RefName, ref) {
				return &rep.Rows[i]
			}
		}
		t.Errorf("no row %s / %s / %s", scenario, metric, ref)
		return nil
	}
	positive := func(scenario, metric, ref string) {
		if r := find(scenario, metric, ref); r != nil && (r.Value == nil || *r.Value <= 0) {
			t.Errorf("%s / %s = %v, want > 0", scenario, metric, r.Value)
		}
	}
	zero := func(scenario, metric string) {
		if r := find(scenario, metric, ""); r != nil && (r.Value == nil || *r.Value != 0) {
			t.Errorf("%s / %s = %v, want 0", scenario, metric, r.Value)
		}
	}
	positive("ingest", "accepted/s", "plain JetStream")
	positive("ingest", "accepted/s", "native schedules")
	positive("ingest", "plain JetStream PubAck/s, separate process", "")
	positive("ingest", "plain JetStream PubAck/s, in-process", "")
	if r := find("ingest", "accepted/s", "plain JetStream"); r != nil {
		sep, in := find("ingest", "plain JetStream PubAck/s, separate process", ""), find("ingest", "plain JetStream PubAck/s, in-process", "")
		if r.RefValue == nil || *r.RefValue <= 0 || r.Ratio == nil {
			t.Errorf("ingest reference missing: %+v", r)
		} else if sep != nil && in != nil && sep.Value != nil && in.Value != nil && *r.RefValue != max(*sep.Value, *in.Value) {
			t.Errorf("ingest quoted against %v, not the stronger of %v and %v", *r.RefValue, *sep.Value, *in.Value)
		}
	}
	positive("storage", "journal bytes/pending msg", "")
	positive("precision", "lateness p99", "")
	if r := find("precision", "lateness p99", ""); r != nil && (r.RefValue == nil || *r.RefValue <= 0) {
		t.Errorf("native precision reference missing: %+v", r)
	}
	zero("precision", "early")
	zero("precision", "lost")
	positive("capacity", "heap bytes/pending msg", "")
	positive("capacity", "RSS after ingest", "")
	positive("capacity", "RSS at 1k pending", "heap")
	if r := find("capacity", "RSS at 1k pending", "heap"); r != nil && (r.RefValue == nil || *r.RefValue <= 0) {
		t.Errorf("no heap next to the checkpoint's RSS: %+v", r)
	}
	find("capacity", "RSS growth/pending msg at 1k", "heap")
	find("ingest", "RSS growth/pending msg, settled", "")
	find("ingest", "heap/pending msg, settled", "")
	positive("recovery", "restart → first schedule reply", "")
	positive("recovery", "restart → all delivered", "")
	zero("recovery", "missing")
	positive("durability", "accepted/s, sync always", "plain JetStream")
	positive("durability", "plain JetStream PubAck/s, sync always, in-process", "")
	for _, r := range rep.Rows {
		if r.Met != "-" {
			t.Errorf("quick mode asserted a target: %+v", r)
		}
		if r.Metric == "error" {
			t.Errorf("scenario error: %s", r.Note)
		}
	}
	if t.Failed() {
		rep.WriteTable(os.Stderr)
	}
}

// TestProducerErrors checks that refusals are counted by code, not as
// accepts: a deliver time beyond --max-delay gets a 400.
func TestProducerErrors(t *testing.T) {
	ctx, nc := testChild(t)
	var accepted int
	var mu sync.Mutex
	p, err := newProducer(nc, 8, func(int, msgid.ID, time.Time) { mu.Lock(); accepted++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	now := time.Now()
	err = p.run(ctx, 20, func(i int, m *nats.Msg) {
		due := now.Add(time.Hour)
		if i%2 == 1 {
			due = now.Add(2 * year)
		}
		scheduleFill("bench.errors", []byte("x"), func(int) time.Time { return due })(i, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.accepted.Load() != 10 || accepted != 10 || p.errCount.Load() != 10 {
		t.Errorf("accepted %d (callback %d), errors %d: %s", p.accepted.Load(), accepted, p.errCount.Load(), p.errorSummary())
	}
	if s := p.errorSummary(); s != "400×10" {
		t.Errorf("error summary %q, want 400×10", s)
	}
}

// TestBigloadQuick runs the bigload scenario in quick mode with a small
// big slot and checks its rows: every neighbour message due during B's
// load window is counted, nothing is lost or early, and B's deliveries
// add up to what was accepted.
func TestBigloadQuick(t *testing.T) {
	rep, o := runQuick(t, "--scenario", "bigload", "--n", "bigload=3000")
	value := func(metric string) float64 {
		for _, r := range rep.Rows {
			if r.Scenario == "bigload" && r.Metric == metric {
				if r.Value == nil {
					t.Errorf("bigload / %s has no value", metric)
					return -1
				}
				if r.Met != "-" {
					t.Errorf("quick mode asserted a target: %+v", r)
				}
				return *r.Value
			}
		}
		t.Errorf("no row bigload / %s", metric)
		return -1
	}
	width, horizon := o.bigloadShape()
	for _, m := range []string{"neighbour lateness p50", "neighbour lateness p99", "neighbour lateness max", "B load: horizon → get answered", "B accepted/s"} {
		if v := value(m); v <= 0 {
			t.Errorf("bigload / %s = %v, want > 0", m, v)
		}
	}
	if p50, max := value("neighbour lateness p50"), value("neighbour lateness max"); p50 > max {
		t.Errorf("p50 %v above max %v", p50, max)
	}
	if v := value("neighbour largest gap beyond schedule"); v > value("neighbour lateness max") {
		t.Errorf("gap %v above the max lateness", v)
	}
	// One message per ms: the window [B's load, B's start) holds one per
	// ms of the horizon.
	if got, want := value("neighbour msgs due during B's load window"), float64(horizon.Milliseconds()); got != want {
		t.Errorf("neighbour msgs in the load window = %v, want %v", got, want)
	}
	for _, m := range []string{"neighbour early", "neighbour lost", "B lost", "B early"} {
		if v := value(m); v != 0 {
			t.Errorf("bigload / %s = %v, want 0", m, v)
		}
	}
	if v := value("B delivered (unique Tock-Id)"); v != 3000 {
		t.Errorf("B delivered %v of 3,000", v)
	}
	for _, r := range rep.Rows {
		if r.Metric == "neighbour lost" && r.Note != "of "+groupThousands(width.Milliseconds())+" accepted" {
			t.Errorf("neighbour accepted: %q, want one per ms of the %v slot", r.Note, width)
		}
		if r.Metric == "error" {
			t.Errorf("scenario error: %s", r.Note)
		}
	}
	if t.Failed() {
		rep.WriteTable(os.Stderr)
	}
}

// TestBigslotQuick runs the bigslot scenario in quick mode: 40 bodies of
// 511 KiB in one slot that keeps 4 MiB of them, so firing reads bodies
// back from the journal several times, from the records that hold them.
func TestBigslotQuick(t *testing.T) {
	rep, _ := runQuick(t, "--scenario", "bigslot", "--n", "bigslot=40")
	rows := map[string]Row{}
	for _, r := range rep.Rows {
		if r.Metric == "error" {
			t.Errorf("scenario error: %s", r.Note)
		}
		if r.Scenario == "bigslot" && r.Value != nil {
			rows[r.Metric] = r
		}
	}
	value := func(m string) float64 {
		r, ok := rows[m]
		if !ok {
			t.Fatalf("no row bigslot / %s in %v", m, rows)
		}
		return *r.Value
	}
	if v := value("delivered"); v != 40 {
		t.Errorf("delivered %v of 40", v)
	}
	// 20 MiB with 4 MiB kept: at least four reads of bodies, none of the
	// whole slot.
	if v := value("refills"); v < 4 {
		t.Errorf("%v refills", v)
	}
	if note := rows["refills"].Note; !strings.Contains(note, "; 0 of them read the whole slot") {
		t.Errorf("refills: %q", note)
	}
	if v := value("peak RSS while firing"); v <= 0 {
		t.Errorf("peak RSS while firing %v", v)
	}
	if t.Failed() {
		rep.WriteTable(os.Stderr)
	}
}

// runQuick runs the suite in quick mode against the real binary with
// args, 256 requests in flight, and fails t on an error or a failure row;
// it returns the report and the options it ran with.
func runQuick(t *testing.T, args ...string) (*Report, *Options) {
	t.Helper()
	o, err := Parse(append([]string{"--quick", "--inflight", "256", "--bin", binary(t)}, args...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var progress io.Writer = io.Discard
	if testing.Verbose() {
		progress = os.Stderr
	}
	rep, err := Run(ctx, o, progress)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failures) > 0 {
		t.Errorf("failures: %q", rep.Failures)
	}
	return rep, o
}
