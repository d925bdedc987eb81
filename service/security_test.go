package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/journal/natsjournal"
	"github.com/tockd/tock/msgid"
	"github.com/tockd/tock/subject"
)

// The attacker is a plain client of the application account: what it
// does must neither reach the journal nor stop tock delivering.

func journalMsgs(t *testing.T, h *harness) uint64 {
	t.Helper()
	js, _ := jetstream.New(h.svc.nc)
	s, err := js.Stream(context.Background(), natsjournal.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestClientsCannotWriteTheJournal(t *testing.T) {
	h := start(t, Config{})
	c := h.stream("VICTIM", "victim.>")
	r := h.schedule("victim.x", delay(1500*time.Millisecond), "survives")
	slot := time.Now().Add(1500*time.Millisecond).UnixMilli() / time.Minute.Milliseconds()
	before := journalMsgs(t, h)

	attacker, err := nats.Connect(h.svc.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	for _, subj := range []string{"tock.journal.1", "tock.journal." + strconv.FormatInt(slot, 10), "tock.journal.meta", "tock.journal.far.1"} {
		if err := attacker.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}
	if after := journalMsgs(t, h); after != before {
		t.Fatalf("journal went from %d to %d records after a client published into its subjects", before, after)
	}
	h.restart() // used to fail: "read tail of slot 1: journal record corrupt"
	c, err = h.js.Consumer(context.Background(), "VICTIM", "VICTIM_C")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := next(t, c, 5*time.Second); !ok {
		t.Fatalf("message %s not delivered after the attack and a restart", r.ID)
	}
}

func TestClientsCannotSeeOrChangeTheJournalStream(t *testing.T) {
	h := start(t, Config{})
	h.schedule("x.y", delay(time.Hour), "secret")
	ctx := context.Background()
	if _, err := h.js.Stream(ctx, natsjournal.DefaultStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream info of the journal from a client: %v, want stream not found", err)
	}
	if err := h.js.DeleteStream(ctx, natsjournal.DefaultStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("delete of the journal from a client: %v, want stream not found", err)
	}
	if _, err := h.js.UpdateStream(ctx, jetstream.StreamConfig{Name: natsjournal.DefaultStream, Subjects: []string{"tock.journal.>"}, MaxAge: time.Minute}); err == nil {
		t.Fatal("a client edited the journal stream")
	}
	if _, err := h.js.CreateOrUpdateConsumer(ctx, natsjournal.DefaultStream, jetstream.ConsumerConfig{Durable: "spy"}); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a consumer on the journal from a client: %v, want stream not found", err)
	}
	// The raw APIs too: purge, message get and direct get answer as for
	// a stream that does not exist.
	for api, body := range map[string]string{
		"$JS.API.STREAM.PURGE.":    `{}`,
		"$JS.API.STREAM.MSG.GET.":  `{"seq":1}`,
		"$JS.API.CONSUMER.CREATE.": `{"stream_name":"TOCK_JOURNAL","config":{"ack_policy":"none"}}`,
	} {
		res, err := h.nc.Request(api+natsjournal.DefaultStream, []byte(body), 5*time.Second)
		if err != nil || !strings.Contains(string(res.Data), "stream not found") {
			t.Fatalf("%s%s from a client: %v %s", api, natsjournal.DefaultStream, err, res.Data)
		}
	}
	if res, err := h.nc.Request("$JS.API.DIRECT.GET."+natsjournal.DefaultStream, []byte(`{"seq":1}`), time.Second); err == nil && res.Header.Get("Status") != "404" && res.Header.Get("Status") != "503" {
		t.Fatalf("direct get of the journal from a client answered %v %q", res.Header, res.Data)
	}
	for name := range h.js.StreamNames(ctx).Name() {
		if name == natsjournal.DefaultStream {
			t.Fatal("a client lists the journal stream")
		}
	}
	// A client creating a stream of that name gets its own, in its own
	// account, and a restart does not take it for an old journal.
	if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: natsjournal.DefaultStream, Subjects: []string{"tock.journal.>"}}); err != nil {
		t.Fatalf("a client's own stream: %v", err)
	}
	if n := journalMsgs(t, h); n == 0 {
		t.Fatal("tock's journal lost its records")
	}
	h.restart()
	if got := h.request("tock.get."+h.schedule("x.z", delay(time.Hour), "").ID, nil, nil); got.State != "pending" {
		t.Fatalf("get after restart: %+v", got)
	}
}

// permissionErrors collects the asynchronous permission violations of a connection.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err.Error())
	p.mu.Unlock()
}

func (p *permissionErrors) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, e := range p.errs {
			if strings.Contains(e, substr) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no permission violation mentioning %q; got %q", substr, p.errs)
}

func TestClientsCannotAnswerOrReadTocksTraffic(t *testing.T) {
	h := start(t, Config{})
	var perr permissionErrors
	attacker, err := nats.Connect(h.svc.ClientURL(), nats.ErrorHandler(perr.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()

	// Joining micro's queue group, or any subscription to tock's subjects,
	// is refused by the server.
	if _, err := attacker.QueueSubscribe("tock.schedule.>", "q", func(m *nats.Msg) { _ = m.Respond([]byte(`{"id":"forged"}`)) }); err != nil {
		t.Fatal(err)
	}
	perr.waitFor(t, `Subscription to "tock.schedule.>"`)
	if _, err := attacker.Subscribe("_TOCK.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	perr.waitFor(t, `Subscription to "_TOCK.>"`)
	// Forging tock's PubAcks is refused too.
	if err := attacker.Publish("_TOCK.x.1", []byte(`{"stream":"x","seq":1}`)); err != nil {
		t.Fatal(err)
	}
	perr.waitFor(t, `Publish to "_TOCK.x.1"`)

	// A subscription to everything sees deliveries (the account's own
	// traffic) but none of tock's requests nor its PubAcks.
	// (Reply subjects below _TOCK are visible but cannot be published to.)
	var mu sync.Mutex
	var seen []string
	if _, err := attacker.Subscribe(">", func(m *nats.Msg) { mu.Lock(); seen = append(seen, m.Subject); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := attacker.Flush(); err != nil {
		t.Fatal(err)
	}
	c := h.stream("SEEN", "seen.>")
	r := h.schedule("seen.x", delay(200*time.Millisecond), "payload")
	if got := h.request("tock.get."+r.ID, nil, nil); got.ID != r.ID {
		t.Fatalf("get answered %+v, want the real reply (a client may not answer tock's requests)", got)
	}
	if _, ok := next(t, c, 5*time.Second); !ok {
		t.Fatal("not delivered")
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var delivered bool
	for _, s := range seen {
		if strings.HasPrefix(s, "tock.") || strings.HasPrefix(s, "_TOCK.") {
			t.Errorf("a client saw tock's traffic: %s", s)
		}
		delivered = delivered || strings.HasPrefix(s, "seen.x")
	}
	if !delivered {
		t.Error("the subscription to > did not see the delivery (the check above would then prove nothing)")
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigUsersAndPermissions(t *testing.T) {
	conf := writeConfig(t, `
authorization {
  users: [
    {user: admin, password: adminpw}
    {user: orders, password: orderspw, permissions: {
      publish: {allow: ["tock.schedule.orders.>", "tock.get.*"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
  ]
}
`)
	h := &harness{t: t, cfg: Config{DataDir: t.TempDir(), NATSConfig: conf, Listen: "127.0.0.1:-1"}}
	svc, err := Start(context.Background(), h.cfg)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	h.svc = svc
	defer svc.Shutdown(context.Background())
	url := svc.ClientURL()

	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected to a server whose configuration requires users")
	}
	admin, err := nats.Connect(url, nats.UserInfo("admin", "adminpw"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	h.nc = admin
	h.js, _ = jetstream.New(admin)

	var perr permissionErrors
	orders, err := nats.Connect(url, nats.UserInfo("orders", "orderspw"), nats.ErrorHandler(perr.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	m := &nats.Msg{Subject: "tock.schedule.orders.close", Header: delay(300 * time.Millisecond), Data: []byte("42")}
	c := h.stream("ORDERS", "orders.>")
	if res, err := orders.RequestMsg(m, 5*time.Second); err != nil || res.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("orders user scheduling to orders.close: %v %v", err, res)
	}
	if _, ok := next(t, c, 5*time.Second); !ok {
		t.Fatal("the orders user's message was not delivered")
	}
	m = &nats.Msg{Subject: "tock.schedule.payments.x", Header: delay(time.Second)}
	if _, err := orders.RequestMsg(m, time.Second); err == nil {
		t.Fatal("orders user scheduled to payments.x")
	}
	perr.waitFor(t, `Permissions Violation for Publish to "tock.schedule.payments.x"`)

	// The admin user is still kept away from tock's subjects.
	var aerr permissionErrors
	admin2, err := nats.Connect(url, nats.UserInfo("admin", "adminpw"), nats.ErrorHandler(aerr.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer admin2.Close()
	if _, err := admin2.Subscribe("tock.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	aerr.waitFor(t, `Subscription to "tock.>"`)
}

func TestEmbeddedOptionsRefuseUnauthenticatedNonLoopback(t *testing.T) {
	withUsers := writeConfig(t, `authorization { users: [{user: a, password: b}] }`)
	noAuthUser := writeConfig(t, "authorization { users: [{user: a, password: b}] }\nno_auth_user: a\n")
	listenAll := writeConfig(t, "listen: 0.0.0.0:4333\n")
	token := writeConfig(t, "authorization { token: s3cret }\n")
	reserved := writeConfig(t, "accounts { TOCK: {} }\n")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; empty: accepted
	}{
		{"loopback, no config", Config{Listen: "127.0.0.1:4222"}, ""},
		{"localhost", Config{Listen: "localhost:4222"}, ""},
		{"ipv6 loopback", Config{Listen: "[::1]:4222"}, ""},
		{"all interfaces, no auth", Config{Listen: "0.0.0.0:4222"}, "refusing to accept unauthenticated clients"},
		{"empty host", Config{Listen: ":4222"}, "refusing"},
		{"all interfaces, --insecure", Config{Listen: "0.0.0.0:4222", Insecure: true}, ""},
		{"all interfaces, users", Config{Listen: "0.0.0.0:4222", NATSConfig: withUsers}, ""},
		{"all interfaces, no_auth_user", Config{Listen: "0.0.0.0:4222", NATSConfig: noAuthUser}, "refusing"},
		{"the file's listen", Config{NATSConfig: listenAll}, "0.0.0.0:4333"},
		{"token", Config{Listen: "127.0.0.1:4222", NATSConfig: token}, "token authorization"},
		{"account TOCK", Config{Listen: "127.0.0.1:4222", NATSConfig: reserved}, "reserved"},
		{"missing file", Config{NATSConfig: filepath.Join(t.TempDir(), "nope.conf")}, "nope.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			e, err := embeddedOptions(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted %s; want an error with %q", e.listen, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q; want %q in it", err, tc.want)
			}
		})
	}
	if _, err := embeddedOptions(Config{Listen: "0.0.0.0:4222", DataDir: t.TempDir()}); !errors.Is(err, ErrInsecureListen) {
		t.Fatalf("error %v is not ErrInsecureListen", err)
	}
}

// A data directory from before the account split holds the journal in
// the global account: it moves into tock's account and its messages fire.
func TestJournalMovesIntoTheTockAccount(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir)
	nc := natstest.Connect(t, ns)
	j, err := natsjournal.New(context.Background(), nc, natsjournal.Config{SlotWidth: DefaultSlotWidth})
	if err != nil {
		t.Fatal(err)
	}
	due := time.Now().Add(1500 * time.Millisecond).UnixMilli()
	id := msgid.New(due, uint64(time.Now().UnixMilli())<<20)
	done := make(chan error, 1)
	j.Append(due/time.Minute.Milliseconds(), []journal.Event{{
		Kind: journal.Scheduled, ID: id, At: time.Now().UnixMilli(), DeliverAt: due, Target: "old.x", Body: []byte("from before"),
	}}, func(_ uint64, err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()
	// natstest keeps the store under dir/jetstream, as the embedded server does.
	h := start(t, Config{DataDir: dir})
	if got := h.request("tock.get."+id.String(), nil, nil); got.State != "pending" && got.State != "delivered" {
		t.Fatalf("get of the old message: %+v", got)
	}
	c := h.stream("OLD", "old.>")
	if _, ok := next(t, c, 5*time.Second); !ok {
		if got := h.request("tock.get."+id.String(), nil, nil); got.State != "delivered" {
			t.Fatalf("old message not delivered: %+v", got)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G", "streams", natsjournal.DefaultStream)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old journal is still in the global account: %v", err)
	}
}

// micro's discovery and tock.status answer in the application account.
func TestDiscoveryAndStatus(t *testing.T) {
	h := start(t, Config{})
	res, err := h.nc.Request("$SRV.INFO.tock", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(res.Data), `"name":"tock"`) || !strings.Contains(string(res.Data), "tock.status") {
		t.Fatalf("$SRV.INFO.tock: %s", res.Data)
	}
	st, err := h.nc.Request("tock.status", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(st.Data), `"stream":"TOCK_JOURNAL"`) {
		t.Fatalf("tock.status: %s", st.Data)
	}
}

// A corrupt record written with tock's own credentials, into a slot that
// is past at the next start and into one that loads later, is quarantined:
// the service starts, the slots' other messages fire, status lists them.
func TestCorruptRecordsAreQuarantined(t *testing.T) {
	h := start(t, Config{SlotWidth: time.Second, Horizon: time.Second})
	inject := func(deliver time.Time) {
		t.Helper()
		tjs, _ := jetstream.New(h.svc.nc) // tock's own credentials
		subj := "tock.journal." + strconv.FormatInt(deliver.UnixMilli()/1000, 10)
		if _, err := tjs.Publish(context.Background(), subj, []byte("\x07garbage")); err != nil {
			t.Fatal(err)
		}
	}
	// A slot that will be past at the restart: its corrupt record is the tail.
	pastAt := time.Now().Add(1500 * time.Millisecond)
	a := h.schedule("q.past", at(pastAt), "a")
	inject(pastAt)
	h.down()
	time.Sleep(time.Until(pastAt) + 500*time.Millisecond)
	h.up()
	c := h.stream("Q", "q.>")
	// A slot that loads later, with a corrupt record between its messages.
	laterAt := time.Now().Add(3 * time.Second)
	b := h.schedule("q.later", at(laterAt), "b")
	inject(laterAt)
	d := h.schedule("q.later", at(laterAt), "d")
	got := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for !(got[b.ID] && got[d.ID]) && time.Now().Before(deadline) {
		if r, ok := next(t, c, time.Second); ok {
			got[r.msg.Headers().Get("Tock-Id")] = true
		}
	}
	for _, id := range []string{b.ID, d.ID} {
		if !got[id] {
			t.Errorf("message %s beside a corrupt record was not delivered (got %v)", id, got)
		}
	}
	if g := h.request("tock.get."+a.ID, nil, nil); g.State != "delivered" {
		t.Errorf("message of the past slot with a corrupt tail: %+v", g)
	}
	res, err := h.nc.Request("tock.status", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Quarantine journal.QuarantineStats `json:"quarantine"`
	}
	if err := json.Unmarshal(res.Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Quarantine.Count < 2 || len(st.Quarantine.Recent) == 0 {
		t.Fatalf("status lists %+v, want both corrupt records", st.Quarantine)
	}
}

// TestProducerPolicy runs docs/SECURITY.md's "What a producer may
// schedule" against the real service: a producer with exactly the
// documented minimal permissions schedules, looks up and cancels; a
// consumer with only its targets receives; --allow-targets answers 403,
// and reserved targets and headers 400, whoever asks; no password shows
// in the debug logs.
func TestProducerPolicy(t *testing.T) {
	conf := writeConfig(t, `
authorization {
  users: [
    {user: admin, password: adminpw}
    {user: producer, password: producerpw, permissions: {
      publish: {allow: ["tock.schedule.orders.>", "tock.get.*", "tock.cancel.*"]}
      subscribe: {allow: ["_INBOX.>"]}
    }}
    {user: consumer, password: consumerpw, permissions: {
      publish: {deny: [">"]}
      subscribe: {allow: ["orders.>"]}
    }}
  ]
}
`)
	allow, err := subject.ParseAllow("orders.>,audit")
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := Start(context.Background(), Config{DataDir: t.TempDir(), NATSConfig: conf, Listen: "127.0.0.1:-1", AllowTargets: allow, Logger: log})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer func() {
		svc.Shutdown(context.Background())
		// Debug logs of tock and the server, through a wrong password too.
		out := logs.String()
		for _, pw := range []string{"adminpw", "producerpw", "consumerpw", "wrongpw"} {
			if strings.Contains(out, pw) {
				t.Errorf("the logs show the password %q", pw)
			}
		}
		if !strings.Contains(out, "level=DEBUG") {
			t.Errorf("no debug logs captured, so the check above proves nothing:\n%s", out)
		}
	}()
	if nc, err := nats.Connect(svc.ClientURL(), nats.UserInfo("producer", "wrongpw")); err == nil {
		nc.Close()
		t.Fatal("a wrong password connected")
	}
	connect := func(user, pw string) *nats.Conn {
		nc, err := nats.Connect(svc.ClientURL(), nats.UserInfo(user, pw))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	admin, producer, consumer := connect("admin", "adminpw"), connect("producer", "producerpw"), connect("consumer", "consumerpw")

	got := make(chan *nats.Msg, 4)
	if _, err := consumer.ChanSubscribe("orders.>", got); err != nil {
		t.Fatal(err)
	}
	if err := consumer.Flush(); err != nil {
		t.Fatal(err)
	}
	ask := func(nc *nats.Conn, subj string, hdr nats.Header) (reply, int) {
		t.Helper()
		res, err := nc.RequestMsg(&nats.Msg{Subject: subj, Header: hdr, Data: []byte("x")}, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		var r reply
		if err := json.Unmarshal(res.Data, &r); err != nil {
			t.Fatalf("%s: %v: %q", subj, err, res.Data)
		}
		code, _ := strconv.Atoi(res.Header.Get("Nats-Service-Error-Code"))
		return r, code
	}

	soon, _ := ask(producer, "tock.schedule.orders.close", delay(200*time.Millisecond))
	later, code := ask(producer, "tock.schedule.orders.remind", delay(time.Hour))
	if soon.ID == "" || later.ID == "" || code != 0 {
		t.Fatalf("the minimal producer could not schedule: %+v %+v %d", soon, later, code)
	}
	if r, code := ask(producer, "tock.get."+later.ID, nil); code != 0 || r.State != "pending" {
		t.Fatalf("get: %+v %d", r, code)
	}
	if r, code := ask(producer, "tock.cancel."+later.ID, nil); code != 0 || r.State != "cancelled" {
		t.Fatalf("cancel: %+v %d", r, code)
	}
	select {
	case m := <-got:
		if m.Subject != "orders.close" || m.Header.Get("Tock-Id") != soon.ID {
			t.Fatalf("consumer got %s %v", m.Subject, m.Header)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the consumer with only orders.> received nothing")
	}

	for _, c := range []struct {
		nc      *nats.Conn
		subject string
		hdr     nats.Header
		code    int
	}{
		{admin, "tock.schedule.payments.x", delay(time.Second), 403},
		{admin, "tock.schedule.audit.x", delay(time.Second), 403},
		{admin, "tock.schedule._INBOX.x", delay(time.Second), 400},
		{admin, "tock.schedule.orders.\u202eesolc", delay(time.Second), 400},
		{producer, "tock.schedule.orders.x", nats.Header{"Tock-Delay": {"1s"}, "Nats-Expected-Stream": {"nope"}}, 400},
		{producer, "tock.schedule.orders.x", nats.Header{"Tock-Delay": {"1s"}, "Nats-Rollup": {"all"}}, 400},
		{producer, "tock.schedule.orders.x", nats.Header{"Tock-Delay": {"1s"}, "Tock-Id": {soon.ID}}, 400},
	} {
		if r, code := ask(c.nc, c.subject, c.hdr); code != c.code || r.ID != "" {
			t.Errorf("%s %v: code %d %+v, want %d", c.subject, c.hdr, code, r, c.code)
		}
	}
	if r, code := ask(admin, "tock.schedule.audit", delay(time.Hour)); code != 0 || r.ID == "" {
		t.Errorf("audit (allowed) refused: %d", code)
	}
}

// TestQuietStart: the default embedded server, used as the README says,
// logs no warning (a plaintext-password warning once came from the
// anonymous user tock adds), and clients still connect without
// credentials.
func TestQuietStart(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := start(t, Config{Logger: log})
	h.schedule("orders.quiet", delay(time.Hour), "x")
	h.down()
	if out := buf.String(); out != "" {
		t.Fatalf("warnings at start, schedule and shutdown:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
