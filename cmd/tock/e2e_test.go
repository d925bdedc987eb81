package main

// End-to-end tests: a real tock (service.Start: embedded NATS server,
// JetStream journal, slot actors, gateway) driven only through the command
// line, as a user types it, checking standard output, standard error and
// the exit status. TestE2EServeSubprocess runs the built binary itself.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/msgid"
	"github.com/tockd/tock/service"
)

// e2eWait bounds every single wait of these tests.
const e2eWait = 10 * time.Second

// tockTime is how tock writes times in replies and headers.
const tockTime = "2006-01-02T15:04:05.000Z"

// e2eTock is a real tock on a loopback port with its own data directory.
type e2eTock struct {
	t   *testing.T
	cfg service.Config
	svc *service.Service
	url string
}

func startTock(t *testing.T, cfg service.Config) *e2eTock {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:-1"
	}
	k := &e2eTock{t: t, cfg: cfg}
	k.up()
	t.Cleanup(k.down)
	return k
}

func (k *e2eTock) up() {
	k.t.Helper()
	svc, err := service.Start(context.Background(), k.cfg)
	if err != nil {
		k.t.Fatalf("start tock: %v", err)
	}
	k.svc, k.url = svc, svc.ClientURL()
}

func (k *e2eTock) down() {
	if k.svc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	if err := k.svc.Shutdown(ctx); err != nil {
		k.t.Errorf("shutdown: %v", err)
	}
	k.svc = nil
}

// restart stops tock and starts it again on the same data directory and
// port, so the URL stays.
func (k *e2eTock) restart() {
	k.t.Helper()
	k.cfg.Listen = strings.TrimPrefix(k.url, "nats://")
	k.down()
	k.up()
	if got := strings.TrimPrefix(k.url, "nats://"); got != k.cfg.Listen {
		k.t.Fatalf("restarted on %s, want %s", got, k.cfg.Listen)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// cli runs "tock ARGS..." through run, as main does, with a bounded context.
func cli(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, strings.NewReader(stdin), &out, &errb)
	return cliResult{code, out.String(), errb.String()}
}

// tock runs "tock VERB --nats-url URL ARGS..." against k.
func (k *e2eTock) tock(stdin, verb string, args ...string) cliResult {
	k.t.Helper()
	return cli(k.t, stdin, append([]string{verb, "--nats-url", k.url}, args...)...)
}

// tockReply is any successful reply of the API.
type tockReply struct {
	ID          string `json:"id"`
	Target      string `json:"target"`
	DeliverAt   string `json:"deliver_at"`
	State       string `json:"state"`
	DeliveredAt string `json:"delivered_at"`
	CancelledAt string `json:"cancelled_at"`
}

// decodeReply checks that r succeeded and printed one line of JSON with
// exactly the given keys, and decodes it.
func decodeReply(t *testing.T, r cliResult, keys ...string) tockReply {
	t.Helper()
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("want success: %v", r)
	}
	if !strings.HasSuffix(r.stdout, "\n") || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("stdout is not one line: %q", r.stdout)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("stdout is not JSON: %v: %q", err, r.stdout)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("reply keys %v, want %v: %s", got, keys, r.stdout)
	}
	var rep tockReply
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout: %v: %q", err, r.stdout)
	}
	if rep.ID != "" {
		if _, err := msgid.Parse(rep.ID); err != nil {
			t.Errorf("reply id: %v", err)
		}
	}
	return rep
}

// tockTimeOf parses a time as tock writes it: UTC, three fraction digits.
func tockTimeOf(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(tockTime, s)
	if err != nil {
		t.Fatalf("time %q is not in tock's format: %v", s, err)
	}
	return v
}

// schedule runs "tock schedule ARGS..." and checks the reply.
func (k *e2eTock) schedule(stdin string, args ...string) tockReply {
	k.t.Helper()
	r := decodeReply(k.t, k.tock(stdin, "schedule", args...), "id", "target", "deliver_at")
	tockTimeOf(k.t, r.DeliverAt)
	return r
}

// decodeGet checks a get reply: the keys its state calls for.
func decodeGet(t *testing.T, res cliResult) tockReply {
	t.Helper()
	var m struct{ State string }
	json.Unmarshal([]byte(res.stdout), &m)
	keys := []string{"id", "target", "deliver_at", "state"}
	switch m.State {
	case "delivered":
		keys = append(keys, "delivered_at")
	case "cancelled":
		keys = append(keys, "cancelled_at")
	}
	return decodeReply(t, res, keys...)
}

// get runs "tock get ID" and checks the reply.
func (k *e2eTock) get(id string) tockReply {
	k.t.Helper()
	g := decodeGet(k.t, k.tock("", "get", id))
	if g.ID != id {
		k.t.Errorf("get %s answered for %s", id, g.ID)
	}
	return g
}

// waitState polls "tock get ID" until the message is in state.
func (k *e2eTock) waitState(id, state string) tockReply {
	k.t.Helper()
	deadline := time.Now().Add(e2eWait)
	for {
		g := k.get(id)
		if g.State == state {
			return g
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("state of %s is %q after %s, want %q", id, g.State, e2eWait, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cliWatch is a "tock watch" running in the background.
type cliWatch struct {
	stdout, stderr syncBuffer
	code           chan int
	stop           context.CancelFunc
	// subscribed is a time after the subscription was live at the server.
	subscribed time.Time
}

// watch starts "tock watch --nats-url URL ARGS..." and returns once it is
// subscribed.
func (k *e2eTock) watch(args ...string) *cliWatch {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait+5*time.Second)
	w := &cliWatch{code: make(chan int, 1), stop: cancel}
	k.t.Cleanup(cancel)
	args = append([]string{"watch", "--nats-url", k.url}, args...)
	go func() { w.code <- run(ctx, args, strings.NewReader(""), &w.stdout, &w.stderr) }()
	w.waitSubscribed(k.t, func() (int, bool) {
		select {
		case c := <-w.code:
			return c, true
		default:
			return 0, false
		}
	})
	return w
}

func (w *cliWatch) waitSubscribed(t *testing.T, exited func() (int, bool)) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for !strings.Contains(w.stderr.String(), "tock watch: watching ") {
		if c, ok := exited(); ok {
			t.Fatalf("watch exited with %d before subscribing: %q", c, w.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch did not subscribe: %q", w.stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.subscribed = time.Now()
}

// wait returns the watch's exit status.
func (w *cliWatch) wait(t *testing.T) int {
	t.Helper()
	select {
	case c := <-w.code:
		return c
	case <-time.After(e2eWait + 5*time.Second):
		t.Fatalf("watch did not stop; stderr %q", w.stderr.String())
		return -1
	}
}

// watchLine is one line of "tock watch".
type watchLine struct {
	recv     time.Time
	subject  string
	id       string
	lateness time.Duration
	body     string
}

var watchLineRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) (-?)(\d+)\.(\d)ms (".*")$`)

// watchLines parses the output of a watch that printed tock deliveries.
func watchLines(t *testing.T, out string) []watchLine {
	t.Helper()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("watch output does not end in a newline: %q", out)
	}
	var lines []watchLine
	for _, s := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m := watchLineRE.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("watch line %q is not RECEIVED-AT SUBJECT TOCK-ID LATENESS \"BODY\"", s)
		}
		recv, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("watch line %q: receive time: %v", s, err)
		}
		whole, _ := strconv.ParseInt(m[5], 10, 64)
		tenth, _ := strconv.ParseInt(m[6], 10, 64)
		late := time.Duration(whole)*time.Millisecond + time.Duration(tenth)*100*time.Microsecond
		if m[4] == "-" {
			late = -late
		}
		body, err := strconv.Unquote(m[7])
		if err != nil {
			t.Fatalf("watch line %q: body: %v", s, err)
		}
		lines = append(lines, watchLine{recv: recv, subject: m[2], id: m[3], lateness: late, body: body})
	}
	return lines
}

// subscribe is a plain nats.go subscription, live when it returns.
func subscribe(t *testing.T, url, subject string) *nats.Subscription {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// nextMsg returns the next message of sub and when it arrived.
func nextMsg(t *testing.T, sub *nats.Subscription) (*nats.Msg, time.Time) {
	t.Helper()
	m, err := sub.NextMsg(e2eWait)
	if err != nil {
		t.Fatalf("no message on %s: %v", sub.Subject, err)
	}
	return m, time.Now()
}

// checkDelivered checks a message tock delivered for the reply r.
func checkDelivered(t *testing.T, m *nats.Msg, recv time.Time, r tockReply, body string) {
	t.Helper()
	if m.Subject != r.Target || string(m.Data) != body {
		t.Errorf("got %q on %s, want %q on %s", m.Data, m.Subject, body, r.Target)
	}
	for k, want := range map[string]string{"Tock-Id": r.ID, "Nats-Msg-Id": r.ID, "Tock-Deliver-At": r.DeliverAt} {
		if got := m.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if v := m.Header.Get("Tock-Delay"); v != "" {
		t.Errorf("control header Tock-Delay travelled: %q", v)
	}
	if due := tockTimeOf(t, r.DeliverAt); recv.Before(due) {
		t.Errorf("received at %s, before it was due at %s", recv.UTC().Format(time.RFC3339Nano), r.DeliverAt)
	}
}

func TestE2EScheduleWatchAndHeaders(t *testing.T) {
	k := startTock(t, service.Config{})
	w := k.watch("orders.close", "--count", "1", "--for", "10s")
	sub := subscribe(t, k.url, "orders.close")

	before := time.Now()
	r := k.schedule("", "--to", "orders.close", "--in", "200ms", "-H", "Order:42", "hello")
	after := time.Now()
	if r.Target != "orders.close" {
		t.Errorf("target %q", r.Target)
	}
	// deliver_at is now + 200ms, rounded up to the millisecond.
	due := tockTimeOf(t, r.DeliverAt)
	if lo, hi := before.Add(200*time.Millisecond).Truncate(time.Millisecond), after.Add(201*time.Millisecond); due.Before(lo) || due.After(hi) {
		t.Errorf("deliver_at %s, want within [%s, %s]", r.DeliverAt, lo.UTC().Format(tockTime), hi.UTC().Format(tockTime))
	}

	m, recv := nextMsg(t, sub)
	checkDelivered(t, m, recv, r, "hello")
	if got := m.Header.Values("Order"); len(got) != 1 || got[0] != "42" {
		t.Errorf("header Order = %q, want [42]", got)
	}

	if code := w.wait(t); code != 0 {
		t.Fatalf("watch: exit %d, stderr %q", code, w.stderr.String())
	}
	lines := watchLines(t, w.stdout.String())
	if len(lines) != 1 {
		t.Fatalf("watch printed %d lines, want 1: %q", len(lines), w.stdout.String())
	}
	l := lines[0]
	if l.subject != "orders.close" || l.id != r.ID || l.body != "hello" {
		t.Errorf("watch line %+v, want orders.close %s \"hello\"", l, r.ID)
	}
	if l.lateness < 0 {
		t.Errorf("watch saw the message %v early", -l.lateness)
	}
	if l.recv.Before(due) {
		t.Errorf("watch received it at %s, before %s", l.recv.Format(time.RFC3339Nano), r.DeliverAt)
	}
	if !strings.Contains(w.stderr.String(), "watching orders.close on "+k.url) {
		t.Errorf("watch stderr %q", w.stderr.String())
	}
}

func TestE2EScheduleAt(t *testing.T) {
	k := startTock(t, service.Config{})
	sub := subscribe(t, k.url, "at.>")

	t.Run("past delivers at once", func(t *testing.T) {
		past := time.Now().Add(-time.Hour)
		before := time.Now()
		r := k.schedule("", "--to", "at.past", "--at", past.Format(time.RFC3339), "late")
		after := time.Now()
		// A time in the past means now: deliver_at is the acceptance time.
		if at := tockTimeOf(t, r.DeliverAt); at.Before(before.Truncate(time.Millisecond)) || at.After(after.Add(time.Millisecond)) {
			t.Errorf("deliver_at %s of a message due an hour ago, want the time it was accepted", r.DeliverAt)
		}
		m, recv := nextMsg(t, sub) // "at once": well within NextMsg's bound
		checkDelivered(t, m, recv, r, "late")
		k.waitState(r.ID, "delivered")
	})

	t.Run("unix milliseconds", func(t *testing.T) {
		at := time.Now().Add(500 * time.Millisecond).UnixMilli()
		r := k.schedule("", "--to", "at.ms", "--at", strconv.FormatInt(at, 10), "ms")
		if want := time.UnixMilli(at).UTC().Format(tockTime); r.DeliverAt != want {
			t.Errorf("deliver_at %s, want %s", r.DeliverAt, want)
		}
		m, recv := nextMsg(t, sub)
		checkDelivered(t, m, recv, r, "ms")
	})

	t.Run("zone offset and sub-millisecond fraction", func(t *testing.T) {
		// A time in +02:00 with a fraction beyond the millisecond is
		// answered in UTC, rounded up so the message is never early.
		at := time.Now().Add(500 * time.Millisecond).Truncate(time.Millisecond).Add(250 * time.Microsecond)
		text := at.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano)
		r := k.schedule("", "--to", "at.zone", "--at", text, "zone")
		if want := at.Add(750 * time.Microsecond).UTC().Format(tockTime); r.DeliverAt != want {
			t.Errorf("--at %s: deliver_at %s, want %s", text, r.DeliverAt, want)
		}
		m, recv := nextMsg(t, sub)
		checkDelivered(t, m, recv, r, "zone")
	})

	t.Run("same time keeps scheduling order", func(t *testing.T) {
		const n = 6
		w := k.watch("at.same", "--count", strconv.Itoa(n), "--for", "10s")
		at := time.Now().Add(1500 * time.Millisecond).Truncate(time.Millisecond)
		var ids []string
		for i := range n {
			r := k.schedule("", "--to", "at.same", "--at", at.Format(time.RFC3339Nano), strconv.Itoa(i))
			if r.DeliverAt != at.UTC().Format(tockTime) {
				t.Errorf("deliver_at %s, want %s", r.DeliverAt, at.UTC().Format(tockTime))
			}
			ids = append(ids, r.ID)
		}
		// Ids sort by (deliver time, acceptance order): the firing order.
		if !slices.IsSorted(ids) {
			t.Errorf("ids of equal deliver times are not in scheduling order: %v", ids)
		}
		for i, id := range ids {
			m, _ := nextMsg(t, sub)
			if got := m.Header.Get("Tock-Id"); got != id || string(m.Data) != strconv.Itoa(i) {
				t.Errorf("delivery %d is %s %q, want %s %q", i, got, m.Data, id, strconv.Itoa(i))
			}
		}
		if code := w.wait(t); code != 0 {
			t.Fatalf("watch: exit %d, stderr %q", code, w.stderr.String())
		}
		lines := watchLines(t, w.stdout.String())
		if len(lines) != n {
			t.Fatalf("watch printed %d lines, want %d", len(lines), n)
		}
		for i, l := range lines {
			if l.id != ids[i] || l.body != strconv.Itoa(i) || l.lateness < 0 {
				t.Errorf("watch line %d: %+v, want %s %q, not early", i, l, ids[i], strconv.Itoa(i))
			}
		}
	})
}

func TestE2EGetFollowsDelivery(t *testing.T) {
	k := startTock(t, service.Config{})
	r := k.schedule("", "--to", "get.x", "--in", "500ms")
	g := k.get(r.ID)
	if g.State != "pending" || g.Target != "get.x" || g.DeliverAt != r.DeliverAt {
		t.Errorf("get before delivery: %+v, want pending get.x %s", g, r.DeliverAt)
	}
	g = k.waitState(r.ID, "delivered")
	if g.Target != "get.x" || g.DeliverAt != r.DeliverAt {
		t.Errorf("get after delivery: %+v", g)
	}
	if done := tockTimeOf(t, g.DeliveredAt); done.Before(tockTimeOf(t, r.DeliverAt)) {
		t.Errorf("delivered_at %s is before deliver_at %s", g.DeliveredAt, r.DeliverAt)
	}
}

// errorLine matches what a client verb prints for an error reply.
func errorLine(code int, rest string) *regexp.Regexp {
	return regexp.MustCompile(`^error ` + strconv.Itoa(code) + `: ` + rest + `\n$`)
}

func checkFails(t *testing.T, what string, r cliResult, code int, stderr *regexp.Regexp) {
	t.Helper()
	if r.code != code || r.stdout != "" || !stderr.MatchString(r.stderr) {
		t.Errorf("%s: %v; want exit %d, no stdout, stderr matching %s", what, r, code, stderr)
	}
}

func TestE2ECancel(t *testing.T) {
	k := startTock(t, service.Config{})
	sub := subscribe(t, k.url, "cancel.>")

	before := time.Now()
	drop := k.schedule("", "--to", "cancel.x", "--in", "800ms", "drop")
	keep := k.schedule("", "--to", "cancel.x", "--in", "1s", "keep")
	res := k.tock("", "cancel", drop.ID)
	if want := `{"id":"` + drop.ID + `","state":"cancelled"}` + "\n"; res.code != 0 || res.stderr != "" || res.stdout != want {
		t.Fatalf("cancel: %v; want stdout %q", res, want)
	}
	g := k.get(drop.ID)
	if g.State != "cancelled" || g.Target != "cancel.x" || g.DeliverAt != drop.DeliverAt {
		t.Errorf("get cancelled: %+v", g)
	}
	if c := tockTimeOf(t, g.CancelledAt); c.Before(before.Truncate(time.Millisecond)) || c.After(time.Now().Add(time.Millisecond)) {
		t.Errorf("cancelled_at %s is not between the schedule and now", g.CancelledAt)
	}
	checkFails(t, "second cancel", k.tock("", "cancel", drop.ID),
		1, errorLine(409, `message "`+drop.ID+`" is cancelled; .* \(state: cancelled\)`))

	// The cancelled message was due first: the first delivery is the kept one.
	m, recv := nextMsg(t, sub)
	checkDelivered(t, m, recv, keep, "keep")
	k.waitState(keep.ID, "delivered")
	checkFails(t, "cancel after delivery", k.tock("", "cancel", keep.ID),
		1, errorLine(409, `message "`+keep.ID+`" is delivered; .* \(state: delivered\)`))
	if g := k.get(drop.ID); g.State != "cancelled" {
		t.Errorf("cancelled message is now %q", g.State)
	}
}

func TestE2EUnknownAndMalformedIDs(t *testing.T) {
	k := startTock(t, service.Config{})
	for _, id := range []string{
		msgid.New(time.Now().Add(time.Hour).UnixMilli(), 1).String(), // a slot with nothing in it
		msgid.New(time.Now().UnixMilli(), 1).String(),                // the live slot
		"0000000000000000000000000g",                                 // long ago
		msgid.Compose(time.Now().UnixMilli(), 1, 42).String(),        // a guess with a random part
	} {
		for _, verb := range []string{"get", "cancel"} {
			checkFails(t, verb+" "+id, k.tock("", verb, id), 1, errorLine(404, `no message with id "`+id+`"`))
		}
	}
	for _, args := range [][]string{
		{"get", "not-an-id"},
		{"get", "0000000000000000000000000A"},    // upper case
		{"cancel", "0000000000000000000000000a"}, // not canonical: spare bits set
		{"get", "tock.get.0000000000000000000000000g"},
		{"get", "000000000000000000000000000000000000001"},    // spare bits set
		{"get", "00000000000000000000000000000000000000"},     // 38 characters
		{"cancel", "000000000000000000000000000000000000000"}, // zero random part: only the short form
		{"get"},
		{"cancel", "0000000000000000000000000g", "0000000000000000000000000g"},
	} {
		r := k.tock("", args[0], args[1:]...)
		usage := regexp.MustCompile(`(?s)^tock ` + args[0] + `: .*\nusage: tock ` + args[0] + ` \[flags\] ID\n`)
		if r.code != 2 || r.stdout != "" || !usage.MatchString(r.stderr) {
			t.Errorf("%q: %v; want exit 2 and usage", args, r)
		}
	}
}

func TestE2ELimits(t *testing.T) {
	k := startTock(t, service.Config{MaxDelay: time.Hour, MaxPayload: 1024})
	tooLate := errorLine(400, `.*beyond the maximum delay of 1h0m0s.*`)
	checkFails(t, "--in 2h", k.tock("", "schedule", "--to", "lim.x", "--in", "2h"), 1, tooLate)
	checkFails(t, "--in 2d", k.tock("", "schedule", "--to", "lim.x", "--in", "2d"), 1, tooLate)
	checkFails(t, "--at in 2h", k.tock("", "schedule", "--to", "lim.x", "--at", time.Now().Add(2*time.Hour).Format(time.RFC3339)), 1, tooLate)
	if r := k.schedule("", "--to", "lim.x", "--in", "1h"); k.get(r.ID).State != "pending" {
		t.Errorf("--in 1h, the maximum, not pending")
	}

	big := strings.Repeat("x", 2048)
	checkFails(t, "2KiB body", k.tock(big, "schedule", "--to", "lim.x", "--in", "1s", "-"),
		1, errorLine(413, `message is 2048 bytes \(2048 body \+ 0 header\), over the limit of 1024 bytes`))
	// The limit counts the body and the headers that travel, not the control header.
	k.schedule(big[:1024], "--to", "lim.x", "--in", "1s", "-")
	checkFails(t, "1KiB body and a header", k.tock(big[:1024], "schedule", "--to", "lim.x", "--in", "1s", "-H", "K:v", "-"),
		1, errorLine(413, `message is \d+ bytes \(1024 body \+ \d+ header\), over the limit of 1024 bytes`))
}

func TestE2EStreamTarget(t *testing.T) {
	k := startTock(t, service.Config{})
	nc, err := nats.Connect(k.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SHOP", Subjects: []string{"shop.>"}})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "E2E", AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}

	w := k.watch("shop.>", "--count", "1", "--for", "10s")
	r := k.schedule("", "--to", "shop.paid", "--in", "100ms", "-H", "Order: 7", "paid 7")

	b, err := cons.Fetch(1, jetstream.FetchMaxWait(e2eWait))
	if err != nil {
		t.Fatal(err)
	}
	var stored jetstream.Msg
	for m := range b.Messages() {
		stored = m
	}
	if stored == nil {
		t.Fatalf("nothing stored in the stream: %v", b.Error())
	}
	checkDelivered(t, &nats.Msg{Subject: stored.Subject(), Header: stored.Headers(), Data: stored.Data()}, time.Now(), r, "paid 7")
	if got := stored.Headers().Get("Order"); got != "7" {
		t.Errorf("stored header Order = %q", got)
	}

	if code := w.wait(t); code != 0 {
		t.Fatalf("watch: exit %d, stderr %q", code, w.stderr.String())
	}
	if lines := watchLines(t, w.stdout.String()); len(lines) != 1 || lines[0].id != r.ID || lines[0].subject != "shop.paid" || lines[0].lateness < 0 {
		t.Errorf("watch printed %q, want %s on shop.paid", w.stdout.String(), r.ID)
	}
	k.waitState(r.ID, "delivered")
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Msgs; n != 1 {
		t.Errorf("stream holds %d messages, want 1", n)
	}
}

func TestE2ERestart(t *testing.T) {
	k := startTock(t, service.Config{Listen: "127.0.0.1:" + strconv.Itoa(freePort(t))})
	url := k.url

	done := k.schedule("", "--to", "restart.done", "--in", "0s", "now")
	delivered := k.waitState(done.ID, "delivered")
	later := k.schedule("", "--to", "restart.later", "--in", "1500ms", "later")
	if g := k.get(later.ID); g.State != "pending" {
		t.Fatalf("before the restart: %+v", g)
	}

	k.restart()
	if k.url != url {
		t.Fatalf("URL changed from %s to %s", url, k.url)
	}
	w := k.watch("restart.later", "--count", "1", "--for", "10s")
	if g := k.get(done.ID); g != delivered {
		t.Errorf("delivered message after the restart: %+v, want %+v", g, delivered)
	}
	g := k.waitState(later.ID, "delivered")
	if g.DeliverAt != later.DeliverAt {
		t.Errorf("deliver_at changed across the restart: %+v", g)
	}
	if due := tockTimeOf(t, later.DeliverAt); !w.subscribed.Before(due) {
		// The restart outlasted the delay: the message may have gone out
		// before the watch subscribed. get above still saw it delivered.
		t.Logf("watch subscribed %v after the message was due; not checking its output", w.subscribed.Sub(due))
		w.stop()
		w.wait(t)
		return
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("watch: exit %d, stderr %q", code, w.stderr.String())
	}
	if lines := watchLines(t, w.stdout.String()); len(lines) != 1 || lines[0].id != later.ID || lines[0].body != "later" || lines[0].lateness < 0 {
		t.Errorf("watch printed %q, want %s", w.stdout.String(), later.ID)
	}
}

// TestE2ENATSURLFromEnv checks that client verbs connect to $TOCK_NATS_URL
// and that --nats-url overrides it.
func TestE2ENATSURLFromEnv(t *testing.T) {
	k := startTock(t, service.Config{})
	t.Setenv(envNATSURL, k.url)
	res := cli(t, "", "schedule", "--to", "env.x", "--in", "1h")
	r := decodeReply(t, res, "id", "target", "deliver_at")
	if g := decodeGet(t, cli(t, "", "get", r.ID)); g.State != "pending" {
		t.Errorf("get via $%s: %+v", envNATSURL, g)
	}
	if res := cli(t, "", "cancel", r.ID); res.code != 0 || !strings.Contains(res.stdout, `"cancelled"`) {
		t.Errorf("cancel via $%s: %v", envNATSURL, res)
	}
	res = cli(t, "", "watch", "env.x", "--for", "50ms")
	if res.code != 0 || !strings.Contains(res.stderr, "watching env.x on "+k.url) {
		t.Errorf("watch via $%s: %v", envNATSURL, res)
	}

	t.Setenv(envNATSURL, "nats://127.0.0.1:1")
	res = cli(t, "", "get", r.ID)
	if res.code != 1 || !strings.Contains(res.stderr, "connect to nats://127.0.0.1:1") {
		t.Errorf("get via a dead $%s: %v", envNATSURL, res)
	}
	if g := decodeGet(t, cli(t, "", "get", "--nats-url", k.url, r.ID)); g.State != "cancelled" {
		t.Errorf("--nats-url over $%s: %+v", envNATSURL, g)
	}
}

// TestE2EServeSubprocess runs the built binary: serve, a client verb to
// see it is up, schedule, SIGTERM, serve again on the same data directory,
// and the message is delivered.
func TestE2EServeSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the tock binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build tock with")
	}
	bin := filepath.Join(t.TempDir(), "tock")
	bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer bcancel()
	if out, err := exec.CommandContext(bctx, goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	data := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	url := "nats://" + addr
	env := append(os.Environ(), envNATSURL+"="+url)
	// tockBin runs a client verb of the binary with $TOCK_NATS_URL set.
	tockBin := func(args ...string) cliResult {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatalf("tock %q: %v", args, err)
		}
		return cliResult{code, out.String(), errb.String()}
	}
	probe := msgid.New(time.Now().Add(time.Hour).UnixMilli(), 1).String()

	type server struct {
		cmd            *exec.Cmd
		stdout, stderr syncBuffer
		exited         chan struct{}
	}
	serve := func() *server {
		t.Helper()
		s := &server{exited: make(chan struct{})}
		s.cmd = exec.Command(bin, "serve", "--data", data, "--nats-listen", addr, "--shutdown-timeout", "5s", "--memory-limit", "1536MiB")
		s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.cmd.Wait(); close(s.exited) }()
		t.Cleanup(func() {
			select {
			case <-s.exited:
			default:
				s.cmd.Process.Kill()
				<-s.exited
			}
		})
		// Up once get answers: 404 for an id nobody scheduled.
		deadline := time.Now().Add(e2eWait)
		for {
			r := tockBin("get", "--timeout", "1s", probe)
			if r.code == 1 && strings.HasPrefix(r.stderr, "error 404: ") {
				break
			}
			select {
			case <-s.exited:
				t.Fatalf("serve exited with %d: %s", s.cmd.ProcessState.ExitCode(), s.stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("serve not answering: last get: %v; serve stderr:\n%s", r, s.stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return s
	}
	stop := func(s *server) {
		t.Helper()
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.exited:
		case <-time.After(5*time.Second + 3*time.Second): // --shutdown-timeout and some
			t.Fatalf("serve did not stop after SIGTERM:\n%s", s.stderr.String())
		}
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("serve exited with %d after SIGTERM:\n%s", code, s.stderr.String())
		}
		for _, want := range []string{"tock starting", "tock ready", "tock shutting down", "tock stopped"} {
			if !strings.Contains(s.stderr.String(), "msg=\""+want+"\"") {
				t.Errorf("serve stderr lacks %q:\n%s", want, s.stderr.String())
			}
		}
		if s.stdout.String() != "" {
			t.Errorf("serve wrote to stdout: %q", s.stdout.String())
		}
	}

	s := serve()
	if !strings.Contains(s.stderr.String(), "url="+url) {
		t.Errorf("serve stderr does not name %s:\n%s", url, s.stderr.String())
	}
	// The limit logged is the one the runtime has.
	if !strings.Contains(s.stderr.String(), "memory_limit=1536MiB memory_limit_from=--memory-limit") {
		t.Errorf("serve stderr does not log the memory limit:\n%s", s.stderr.String())
	}
	res := tockBin("schedule", "--to", "e2e.serve", "--in", "2s", "survives")
	r := decodeReply(t, res, "id", "target", "deliver_at")
	if g := decodeGet(t, tockBin("get", r.ID)); g.State != "pending" {
		t.Fatalf("before SIGTERM: %+v", g)
	}
	stop(s)

	s = serve()
	wctx, wcancel := context.WithTimeout(context.Background(), e2eWait+5*time.Second)
	defer wcancel()
	watch := exec.CommandContext(wctx, bin, "watch", "e2e.serve", "--count", "1", "--for", "10s")
	watch.Env = env
	w := &cliWatch{code: make(chan int, 1)}
	watch.Stdout, watch.Stderr = &w.stdout, &w.stderr
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { watch.Wait(); w.code <- watch.ProcessState.ExitCode() }()
	w.waitSubscribed(t, func() (int, bool) {
		select {
		case c := <-w.code:
			return c, true
		default:
			return 0, false
		}
	})
	deadline := time.Now().Add(e2eWait)
	for {
		g := decodeGet(t, tockBin("get", r.ID))
		if g.State == "delivered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered after the restart: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if due := tockTimeOf(t, r.DeliverAt); w.subscribed.Before(due) {
		if code := w.wait(t); code != 0 {
			t.Errorf("watch: exit %d, stderr %q", code, w.stderr.String())
		}
		if lines := watchLines(t, w.stdout.String()); len(lines) != 1 || lines[0].id != r.ID || lines[0].body != "survives" || lines[0].lateness < 0 {
			t.Errorf("watch printed %q, want %s", w.stdout.String(), r.ID)
		}
	} else {
		t.Logf("watch subscribed %v after the message was due; not checking its output", w.subscribed.Sub(due))
		watch.Process.Signal(syscall.SIGTERM)
		w.wait(t)
	}
	stop(s)
}

// TestE2EDeadLetters: as a user would, with the CLI only: a message its
// target stream can never take shows as dead, `tock dead` lists it with
// its reason, and after the stream is fixed `tock redrive` delivers it.
func TestE2EDeadLetters(t *testing.T) {
	k := startTock(t, service.Config{})
	nc, err := nats.Connect(k.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, MaxMsgSize: 32}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	r := k.schedule("", "--to", "orders.close", "--in", "0s", "-H", "Order:42", strings.Repeat("x", 100))
	deadline := time.Now().Add(e2eWait)
	for {
		res := k.tock("", "get", r.ID)
		if strings.Contains(res.stdout, `"state":"dead"`) {
			if !strings.Contains(res.stdout, `"dead_reason":"the target refused it for good`) {
				t.Fatalf("get: %s", res.stdout)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not dead: %v", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := k.tock("", "dead")
	var line deadLine
	if res.code != 0 || strings.Count(res.stdout, "\n") != 1 || json.Unmarshal([]byte(res.stdout), &line) != nil {
		t.Fatalf("tock dead: %v", res)
	}
	if line.ID != r.ID || line.Target != "orders.close" || line.Attempts != 1 || line.Bytes != 100 || !strings.Contains(line.Reason, "message size exceeds maximum") {
		t.Fatalf("tock dead listed %+v", line)
	}
	cfg.MaxMsgSize = 0
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	red := decodeReply(t, k.tock("", "redrive", r.ID), "id", "target", "deliver_at", "redriven_from")
	k.waitState(red.ID, "delivered")
	if res := k.tock("", "dead"); res.code != 0 || res.stdout != "" {
		t.Fatalf("tock dead after the redrive: %v", res)
	}
}

// TestE2EConsumerDeadLetters: a JetStream consumer that never acks a
// message gives up after max_deliver; with --dead-letter tock moves it
// into TOCK_DLQ, `tock dead` lists it with its stream and consumer, and
// `tock redrive` puts it back on its subject for the consumer to see again.
func TestE2EConsumerDeadLetters(t *testing.T) {
	k := startTock(t, service.Config{DeadLetters: []deadletter.Source{{Stream: "JOBS", Consumer: "workers"}}})
	nc, err := nats.Connect(k.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2, AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "jobs.resize", []byte("poison")); err != nil {
		t.Fatal(err)
	}
	// JetStream announces max_deliver when it next tries to deliver the
	// message, so the third fetch (which gets nothing) is what reports it.
	for i := range 3 {
		b, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			m.Nak()
		}
		if want := min(1, 2-i); n != want {
			t.Fatalf("fetch %d got %d messages, want %d", i+1, n, want)
		}
	}
	var line deadLine
	deadline := time.Now().Add(e2eWait)
	for {
		res := k.tock("", "dead")
		if res.code == 0 && res.stdout != "" {
			if json.Unmarshal([]byte(res.stdout), &line) != nil {
				t.Fatalf("tock dead: %v", res)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter: %v", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if line.Target != "jobs.resize" || line.Stream != "JOBS" || line.Consumer != "workers" || line.StreamSeq != 1 || line.Attempts != 2 || line.Bytes != 6 ||
		!strings.Contains(line.Reason, "max_deliver") {
		t.Fatalf("tock dead listed %+v", line)
	}
	red := decodeReply(t, k.tock("", "redrive", line.ID), "id", "target", "deliver_at", "redriven_from")
	k.waitState(red.ID, "delivered")
	b, err := cons.Fetch(1, jetstream.FetchMaxWait(e2eWait))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range b.Messages() {
		n++
		if string(m.Data()) != "poison" || m.Subject() != "jobs.resize" {
			t.Errorf("redriven message: %s %q", m.Subject(), m.Data())
		}
		m.Ack()
	}
	if n != 1 {
		t.Errorf("the consumer got %d messages after the redrive, want 1", n)
	}
}
