package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// proc is one `tock serve` process on a fixed port and data directory.
type proc struct {
	t    *testing.T
	addr string
	data string
	args []string
	bin  string   // the binary; tockBin if empty
	env  []string // added to the environment of the next start
	cmd  *exec.Cmd
	log  *os.File
}

func newProc(t *testing.T, extra ...string) *proc {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	p := &proc{t: t, addr: addr, data: t.TempDir(), args: extra}
	log, err := os.Create(filepath.Join(t.TempDir(), "tock.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.log = log
	t.Cleanup(func() {
		p.kill()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("tock log tail:\n%s", b)
		}
	})
	return p
}

func (p *proc) url() string { return "nats://" + p.addr }

func (p *proc) start() {
	p.t.Helper()
	args := append([]string{"serve", "--data", p.data, "--nats-listen", p.addr, "--log-level", "warn"}, p.args...)
	bin := p.bin
	if bin == "" {
		bin = tockBin
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	// Ready means the API answers: a get of an unknown id gets its 404.
	nc, err := nats.Connect(p.url(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		p.t.Fatal(err)
	}
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := nc.Request("tock.get.00000000000000000000000000", nil, 200*time.Millisecond); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.t.Fatal("tock did not become ready")
}

// kill sends SIGKILL: no shutdown code runs.
func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		p.cmd = nil
	}
}

// stop sends SIGTERM and waits for a graceful exit, which must be clean.
func (p *proc) stop() {
	p.t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.t.Errorf("graceful shutdown exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		p.t.Fatal("no exit 30 s after SIGTERM")
	}
	p.cmd = nil
}

// startLoad connects to p, creates the target stream CHAOS and starts four
// producers scheduling into it, due within 3 s of each request.
// stopLoad stops them and waits.
func startLoad(t *testing.T, p *proc) (nc *nats.Conn, js jetstream.JetStream, l *load, stopLoad func()) {
	t.Helper()
	nc, err := nats.Connect(p.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ = jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CHAOS", Subjects: []string{"chaos.>"}}); err != nil {
		t.Fatal(err)
	}
	l = newLoad()
	loadCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); l.run(loadCtx, nc, i, 3*time.Second) }()
	}
	return nc, js, l, func() { cancel(); wg.Wait() }
}

type acked struct {
	id        string
	deliverAt time.Time
}

// load schedules messages from several producers until stop, recording
// only what tock acknowledged; it cancels some of them.
type load struct {
	mu        sync.Mutex
	scheduled map[string]acked
	cancelled map[string]bool
	// unsure holds cancels whose reply was lost (tock died meanwhile) or
	// was an error: they may or may not have happened, so either outcome
	// is right.
	unsure   map[string]bool
	failures int
	// unavailable counts 503 replies, to schedules and cancels.
	unavailable int
}

func newLoad() *load {
	return &load{scheduled: map[string]acked{}, cancelled: map[string]bool{}, unsure: map[string]bool{}}
}

// errorReply is the error part of any tock reply.
type errorReply struct {
	Error *struct {
		Code int `json:"code"`
	} `json:"error"`
}

func (l *load) run(ctx context.Context, nc *nats.Conn, producer int, spread time.Duration) {
	rng := rand.New(rand.NewPCG(uint64(producer), 7))
	for i := 0; ctx.Err() == nil; i++ {
		due := time.Now().Add(time.Duration(rng.Int64N(int64(spread))))
		msg := &nats.Msg{Subject: "tock.schedule.chaos.t" + strconv.Itoa(producer),
			Header: nats.Header{"Tock-Deliver-At": {due.UTC().Format(time.RFC3339Nano)}},
			Data:   []byte(fmt.Sprintf("p%d-%d", producer, i))}
		res, err := nc.RequestMsg(msg, time.Second)
		var r struct {
			ID        string `json:"id"`
			DeliverAt string `json:"deliver_at"`
		}
		if err != nil || json.Unmarshal(res.Data, &r) != nil || r.ID == "" {
			l.fail(res)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		at, _ := time.Parse(time.RFC3339Nano, r.DeliverAt)
		l.mu.Lock()
		l.scheduled[r.ID] = acked{id: r.ID, deliverAt: at}
		l.mu.Unlock()
		if rng.IntN(10) == 0 && time.Until(at) > 300*time.Millisecond {
			res, err := nc.Request("tock.cancel."+r.ID, nil, time.Second)
			var c struct {
				State string          `json:"state"`
				Error json.RawMessage `json:"error"`
			}
			l.mu.Lock()
			switch {
			case err != nil:
				l.unsure[r.ID] = true
			case json.Unmarshal(res.Data, &c) == nil && c.Error == nil && c.State == "cancelled":
				l.cancelled[r.ID] = true
			case c.Error != nil:
				// 503: the cancel may be stored even so (its ack was lost).
				l.unsure[r.ID] = true
				if is503(res) {
					l.unavailable++
				}
			}
			l.mu.Unlock()
		}
	}
}

func is503(res *nats.Msg) bool {
	var e errorReply
	return res != nil && json.Unmarshal(res.Data, &e) == nil && e.Error != nil && e.Error.Code == 503
}

// fail counts a schedule that was not acknowledged; res is its reply, if any.
func (l *load) fail(res *nats.Msg) {
	l.mu.Lock()
	l.failures++
	if is503(res) {
		l.unavailable++
	}
	l.mu.Unlock()
}

// stats is what check read from the target stream.
type stats struct {
	want    int // acknowledged, not cancelled, so must arrive
	dups    int // messages stored more than once
	unacked int // stored ids that no producer was acknowledged (a 503 whose append was stored after all)
}

// check reads the stream "CHAOS" until every acknowledged, uncancelled
// message has arrived or a deadline passes, and fails t if one is
// missing, if an acknowledged cancel was delivered, or if a message was
// stored before its deliver time. after says what happened, for the loss
// message. Call with l.mu held and the load stopped.
func check(t *testing.T, nc *nats.Conn, js jetstream.JetStream, l *load, after string) stats {
	t.Helper()
	ctx := context.Background()
	var last time.Time
	for _, a := range l.scheduled {
		if a.deliverAt.After(last) {
			last = a.deliverAt
		}
	}
	var st stats
	for id := range l.scheduled {
		if l.mustArrive(id) {
			st.want++
		}
	}
	t.Logf("acknowledged %d schedules, %d cancels (%d more with unknown outcome); %d schedules not acknowledged; %d replies were 503",
		len(l.scheduled), len(l.cancelled), len(l.unsure), l.failures, l.unavailable)
	if st.want < 100 {
		t.Fatalf("only %d messages acknowledged: the load did not run", st.want)
	}

	// Read the target stream by sequence with direct gets: no consumer
	// state that a timeout could reset and skip over.
	got := map[string]int{}
	stream, err := js.Stream(ctx, "CHAOS")
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64 = 1
	// Reading takes a while too: a round trip per message.
	deadline := time.Now().Add(time.Until(last) + 20*time.Second + time.Duration(len(l.scheduled))*time.Millisecond/2)
	for missing(l, got) > 0 && time.Now().Before(deadline) {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if seq > info.State.LastSeq {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for ; seq <= info.State.LastSeq; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("read stream sequence %d: %v", seq, err)
			}
			id := m.Header.Get("Tock-Id")
			a, ok := l.scheduled[id]
			switch {
			case l.cancelled[id]:
				t.Errorf("%s delivered although its cancel was acknowledged", id)
			case ok && m.Time.Before(a.deliverAt):
				t.Errorf("%s stored %v before its deliver time %v", id, m.Time, a.deliverAt)
			}
			got[id]++
		}
	}
	if n := missing(l, got); n > 0 {
		shown := 0
		for id := range l.scheduled {
			if l.mustArrive(id) && got[id] == 0 && shown < 5 {
				shown++
				state := "no answer"
				if res, err := nc.Request("tock.get."+id, nil, 2*time.Second); err == nil {
					state = string(res.Data)
				}
				t.Errorf("acknowledged %s (due %v) never delivered; tock says %s", id, l.scheduled[id].deliverAt, state)
			}
		}
		t.Fatalf("%d of %d acknowledged messages lost %s", n, st.want, after)
	}
	for id, n := range got {
		st.dups += n - 1
		if _, ok := l.scheduled[id]; !ok {
			st.unacked++
		}
	}
	return st
}

func (l *load) mustArrive(id string) bool { return !l.cancelled[id] && !l.unsure[id] }

func missing(l *load, got map[string]int) int {
	n := 0
	for id := range l.scheduled {
		if l.mustArrive(id) && got[id] == 0 {
			n++
		}
	}
	return n
}
