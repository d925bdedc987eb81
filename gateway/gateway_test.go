package gateway

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/msgid"
)

// fixedClock always tells testNow.
type fixedClock struct{}

func (fixedClock) Now() time.Time { return testNow }
func (fixedClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return time.AfterFunc(d, f)
}

// fakeScheduler is an in-memory Scheduler. By default it answers within
// the call; answer changes how (late, from another goroutine, held...).
type fakeScheduler struct {
	mu     sync.Mutex
	stamp  uint64
	recs   map[msgid.ID]slot.Record
	reqs   []actors.ScheduleRequest
	answer func(reply func()) // runs reply; nil: at once
	force  *slot.Result       // answer every call with this
	panics bool               // panic in every call, before answering
	twice  bool               // answer every call twice
}

func newFake() *fakeScheduler { return &fakeScheduler{recs: map[msgid.ID]slot.Record{}} }

// fakeID is the id the fake mints: a full one, with a random part.
func fakeID(at int64, stamp uint64) msgid.ID {
	return msgid.Compose(at, stamp, stamp*0x9e3779b97f4a7c15+1)
}

func (f *fakeScheduler) respond(reply func(slot.Result), res slot.Result) {
	f.mu.Lock()
	answer, force, panics, twice := f.answer, f.force, f.panics, f.twice
	f.mu.Unlock()
	if panics {
		panic("fake scheduler panics")
	}
	if force != nil {
		res = *force
	}
	do := func() {
		reply(res)
		if twice {
			reply(res)
		}
	}
	if answer == nil {
		do()
		return
	}
	answer(do)
}

func (f *fakeScheduler) set(fn func(f *fakeScheduler)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeScheduler) Schedule(req actors.ScheduleRequest, reply func(slot.Result)) {
	f.mu.Lock()
	f.stamp++
	rec := slot.Record{ID: fakeID(req.DeliverAt, f.stamp), Target: req.Target, DeliverAt: req.DeliverAt, State: slot.Pending}
	f.recs[rec.ID] = rec
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	f.respond(reply, slot.Result{Status: slot.OK, Record: rec})
}

func (f *fakeScheduler) Cancel(id msgid.ID, reply func(slot.Result)) {
	f.mu.Lock()
	rec, ok := f.recs[id]
	res := slot.Result{Status: slot.NotFound}
	switch {
	case !ok:
	case rec.State != slot.Pending:
		res = slot.Result{Status: slot.Conflict, Record: rec}
	default:
		rec.State, rec.DoneAt = slot.Cancelled, testNow.UnixMilli()
		f.recs[id] = rec
		res = slot.Result{Status: slot.OK, Record: rec}
	}
	f.mu.Unlock()
	f.respond(reply, res)
}

func (f *fakeScheduler) Get(id msgid.ID, reply func(slot.Result)) {
	f.mu.Lock()
	rec, ok := f.recs[id]
	f.mu.Unlock()
	res := slot.Result{Status: slot.NotFound}
	if ok {
		res = slot.Result{Status: slot.OK, Record: rec}
	}
	f.respond(reply, res)
}

// deliver marks id delivered at doneAt, as the delivery path would.
func (f *fakeScheduler) deliver(id msgid.ID, doneAt int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.recs[id]
	rec.State, rec.DoneAt = slot.Delivered, doneAt
	f.recs[id] = rec
}

func (f *fakeScheduler) requests() []actors.ScheduleRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]actors.ScheduleRequest(nil), f.reqs...)
}

// late answers from a new goroutine after d, long after the handler returned.
func late(d time.Duration) func(func()) {
	return func(reply func()) { time.AfterFunc(d, reply) }
}

type env struct {
	srv   *server.Server
	nc    *nats.Conn // the client's connection
	fake  *fakeScheduler
	gw    *Gateway
	gwCon *nats.Conn
}

func runServer(t *testing.T) *server.Server { return natstest.Start(t, "") }

func connect(t *testing.T, srv *server.Server) *nats.Conn {
	return natstest.Connect(t, srv)
}

// start runs a server, a gateway over the fake, and a client connection.
func start(t *testing.T) *env {
	t.Helper()
	srv := runServer(t)
	e := &env{srv: srv, fake: newFake(), gwCon: connect(t, srv), nc: connect(t, srv)}
	gw, err := Start(e.gwCon, e.fake, fixedClock{}, testCfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Stop() })
	e.gw = gw
	return e
}

// wire is a reply as seen by a client: the micro error headers and the
// decoded JSON body.
type wire struct {
	ErrCode string
	ErrDesc string
	Body    any
}

func decodeWire(t *testing.T, m *nats.Msg) wire {
	t.Helper()
	w := wire{ErrCode: m.Header.Get(micro.ErrorCodeHeader), ErrDesc: m.Header.Get(micro.ErrorHeader)}
	if err := json.Unmarshal(m.Data, &w.Body); err != nil {
		t.Fatalf("reply body %q is not JSON: %v", m.Data, err)
	}
	return w
}

func mustJSON(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(fmt.Sprintf("bad test JSON %s: %v", s, err))
	}
	return v
}

// wantOK is a successful reply with body.
func wantOK(body string) wire { return wire{Body: mustJSON(body)} }

// wantErr is an error reply: the JSON body, and the headers micro sets
// from its code and description.
func wantErr(code int, desc string, state ...string) wire {
	b := map[string]any{"error": map[string]any{"code": float64(code), "description": desc}}
	if len(state) > 0 {
		b["state"] = state[0]
	}
	return wire{ErrCode: fmt.Sprint(code), ErrDesc: desc, Body: b}
}

func (e *env) request(t *testing.T, subject string, h nats.Header, body []byte) wire {
	t.Helper()
	m, err := e.nc.RequestMsg(&nats.Msg{Subject: subject, Header: h, Data: body}, 5*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return decodeWire(t, m)
}

func (e *env) schedule(t *testing.T, target string, h nats.Header, body string) msgid.ID {
	t.Helper()
	w := e.request(t, PrefixSchedule+target, h, []byte(body))
	if w.ErrCode != "" {
		t.Fatalf("schedule: %+v", w)
	}
	id, err := msgid.Parse(w.Body.(map[string]any)["id"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var answerModes = []struct {
	name   string
	answer func(func())
}{
	{"at once", nil},
	{"later from another goroutine", late(20 * time.Millisecond)},
}

func TestHappyPaths(t *testing.T) {
	for _, mode := range answerModes {
		t.Run(mode.name, func(t *testing.T) {
			e := start(t)
			e.fake.set(func(f *fakeScheduler) { f.answer = mode.answer })

			// Schedule with an absolute time; the target may have many tokens.
			w := e.request(t, "tock.schedule.orders.eu.remind",
				nats.Header{HeaderDeliverAt: {"2026-11-21T11:05:00.2501+01:00"}, "X-Trace": {"abc"}, "Multi": {"1", "2"}},
				[]byte(`{"order":7}`))
			id1 := fakeID(ms("2026-11-21T10:05:00.251Z"), 1)
			if diff := cmp.Diff(wantOK(`{"id":"`+id1.String()+`","target":"orders.eu.remind","deliver_at":"2026-11-21T10:05:00.251Z"}`), w); diff != "" {
				t.Fatalf("schedule reply (-want +got):\n%s", diff)
			}
			// With a delay.
			w = e.request(t, "tock.schedule.a", nats.Header{HeaderDelay: {"1500ms"}}, nil)
			id2 := fakeID(ms("2026-11-21T10:00:01.501Z"), 2)
			if diff := cmp.Diff(wantOK(`{"id":"`+id2.String()+`","target":"a","deliver_at":"2026-11-21T10:00:01.501Z"}`), w); diff != "" {
				t.Fatalf("schedule reply (-want +got):\n%s", diff)
			}
			// The scheduler got typed commands; headers travel but the control one.
			want := []actors.ScheduleRequest{
				{Target: "orders.eu.remind", DeliverAt: ms("2026-11-21T10:05:00.251Z"), Header: map[string][]string{"X-Trace": {"abc"}, "Multi": {"1", "2"}}, Body: []byte(`{"order":7}`)},
				{Target: "a", DeliverAt: ms("2026-11-21T10:00:01.501Z")},
			}
			if diff := cmp.Diff(want, e.fake.requests(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("scheduler requests (-want +got):\n%s", diff)
			}

			// Get pending.
			w = e.request(t, PrefixGet+id1.String(), nil, nil)
			if diff := cmp.Diff(wantOK(`{"id":"`+id1.String()+`","target":"orders.eu.remind","deliver_at":"2026-11-21T10:05:00.251Z","state":"pending"}`), w); diff != "" {
				t.Errorf("get pending (-want +got):\n%s", diff)
			}
			// Cancel, then get cancelled.
			w = e.request(t, PrefixCancel+id1.String(), nil, nil)
			if diff := cmp.Diff(wantOK(`{"id":"`+id1.String()+`","state":"cancelled"}`), w); diff != "" {
				t.Errorf("cancel (-want +got):\n%s", diff)
			}
			w = e.request(t, PrefixGet+id1.String(), nil, nil)
			if diff := cmp.Diff(wantOK(`{"id":"`+id1.String()+`","target":"orders.eu.remind","deliver_at":"2026-11-21T10:05:00.251Z","state":"cancelled","cancelled_at":"2026-11-21T10:00:00.000Z"}`), w); diff != "" {
				t.Errorf("get cancelled (-want +got):\n%s", diff)
			}
			// Delivered.
			e.fake.deliver(id2, ms("2026-11-21T10:00:01.513Z"))
			w = e.request(t, PrefixGet+id2.String(), nil, nil)
			if diff := cmp.Diff(wantOK(`{"id":"`+id2.String()+`","target":"a","deliver_at":"2026-11-21T10:00:01.501Z","state":"delivered","delivered_at":"2026-11-21T10:00:01.513Z"}`), w); diff != "" {
				t.Errorf("get delivered (-want +got):\n%s", diff)
			}
		})
	}
}

func TestErrorContract(t *testing.T) {
	for _, mode := range answerModes {
		t.Run(mode.name, func(t *testing.T) {
			e := start(t)
			e.fake.set(func(f *fakeScheduler) { f.answer = mode.answer })
			delivered := e.schedule(t, "a", nats.Header{HeaderDelay: {"1s"}}, "")
			e.fake.deliver(delivered, ms("2026-11-21T10:00:01.010Z"))
			cancelled := e.schedule(t, "a", nats.Header{HeaderDelay: {"1s"}}, "")
			e.request(t, PrefixCancel+cancelled.String(), nil, nil)
			unknown := msgid.New(ms("2026-11-21T10:00:00Z"), 999)
			delay := nats.Header{HeaderDelay: {"1s"}}

			tests := []struct {
				name    string
				subject string
				header  nats.Header
				body    []byte
				want    wire
			}{
				{"missing time header", "tock.schedule.a", nats.Header{"X": {"1"}}, nil, wantErr(400, missingHeader)},
				{"no headers", "tock.schedule.a", nil, []byte("x"), wantErr(400, missingHeader)},
				{"both time headers", "tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, HeaderDeliverAt: {"1795255500250"}}, nil,
					wantErr(400, "both Tock-Deliver-At and Tock-Delay are set; set exactly one")},
				{"time header twice", "tock.schedule.a", nats.Header{HeaderDelay: {"1s", "2s"}}, nil,
					wantErr(400, "Tock-Delay is set 2 times; set it once")},
				{"unparsable Tock-Deliver-At", "tock.schedule.a", nats.Header{HeaderDeliverAt: {"2026-11-21T10:05:61Z"}}, nil,
					wantErr(400, `Tock-Deliver-At "2026-11-21T10:05:61Z" `+notAtForm+` (second out of range)`)},
				{"Tock-Deliver-At before the epoch", "tock.schedule.a", nats.Header{HeaderDeliverAt: {"-5"}}, nil,
					wantErr(400, `Tock-Deliver-At "-5" is before the Unix epoch`)},
				{"unparsable Tock-Delay", "tock.schedule.a", nats.Header{HeaderDelay: {"1d"}}, nil,
					wantErr(400, `Tock-Delay "1d" has an unknown unit: want ns, us, ms, s, m or h`)},
				{"negative Tock-Delay", "tock.schedule.a", nats.Header{HeaderDelay: {"-1s"}}, nil,
					wantErr(400, `Tock-Delay "-1s" is negative`)},
				{"Tock-Deliver-At beyond MaxDelay", "tock.schedule.a", nats.Header{HeaderDeliverAt: {"2026-11-23T00:00:00Z"}}, nil,
					wantErr(400, `Tock-Deliver-At "2026-11-23T00:00:00Z" is beyond the maximum delay of 1d from now (latest 2026-11-22T10:00:00.001Z)`)},
				{"Tock-Delay beyond MaxDelay", "tock.schedule.a", nats.Header{HeaderDelay: {"25h"}}, nil,
					wantErr(400, `Tock-Delay "25h" is beyond the maximum delay of 1d`)},
				{"target under tock", "tock.schedule.tock.cancel.x", delay, nil,
					wantErr(400, `invalid target "tock.cancel.x": tock's own subjects (tock.>) are not allowed`)},
				{"target tock", "tock.schedule.tock", delay, nil,
					wantErr(400, `invalid target "tock": tock's own subjects (tock.>) are not allowed`)},
				{"system target", "tock.schedule.$JS.API.STREAM.LIST", delay, nil,
					wantErr(400, `invalid target "$JS.API.STREAM.LIST": $-prefixed system subjects are not allowed`)},
				{"wildcard * target", "tock.schedule.a.*", delay, nil,
					wantErr(400, `invalid target "a.*": wildcards (* and >) are not allowed`)},
				{"wildcard > target", "tock.schedule.a.>", delay, nil,
					wantErr(400, `invalid target "a.>": wildcards (* and >) are not allowed`)},
				{"wildcard in a token", "tock.schedule.a.b*c", delay, nil,
					wantErr(400, `invalid target "a.b*c": wildcards (* and >) are not allowed`)},
				{"body over MaxPayload", "tock.schedule.a", delay, make([]byte, 1025),
					wantErr(413, "message is 1025 bytes (1025 body + 0 header), over the limit of 1024 bytes")},
				{"body and header over MaxPayload", "tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, "K": {"v"}}, make([]byte, 1007),
					wantErr(413, "message is 1025 bytes (1007 body + 18 header), over the limit of 1024 bytes")},
				{"cancel malformed id", "tock.cancel.nope", nil, nil, wantErr(404, `no message with id "nope"`)},
				{"cancel wildcard id", "tock.cancel.*", nil, nil, wantErr(404, `no message with id "*"`)},
				{"get malformed id", "tock.get.nope", nil, nil, wantErr(404, `no message with id "nope"`)},
				{"cancel unknown id", PrefixCancel + unknown.String(), nil, nil, wantErr(404, `no message with id "`+unknown.String()+`"`)},
				{"get unknown id", PrefixGet + unknown.String(), nil, nil, wantErr(404, `no message with id "`+unknown.String()+`"`)},
				{"cancel delivered", PrefixCancel + delivered.String(), nil, nil,
					wantErr(409, `message "`+delivered.String()+`" is delivered; only a pending message can be cancelled`, "delivered")},
				{"cancel cancelled", PrefixCancel + cancelled.String(), nil, nil,
					wantErr(409, `message "`+cancelled.String()+`" is cancelled; only a pending message can be cancelled`, "cancelled")},
			}
			for _, tt := range tests {
				got := e.request(t, tt.subject, tt.header, tt.body)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s: reply (-want +got):\n%s", tt.name, diff)
				}
			}
			if n := len(e.fake.requests()); n != 2 {
				t.Errorf("scheduler saw %d schedule requests, want only the 2 good ones", n)
			}
		})
	}
}

func TestSchedulerStatuses(t *testing.T) {
	id := msgid.New(ms("2026-11-21T10:00:00Z"), 1)
	unavailable := wantErr(503, "journal cannot take writes; retry")
	tests := []struct {
		name    string
		subject string
		force   slot.Result
		want    wire
	}{
		{"schedule unavailable", "tock.schedule.a", slot.Result{Status: slot.Unavailable}, unavailable},
		{"cancel unavailable", PrefixCancel + id.String(), slot.Result{Status: slot.Unavailable}, unavailable},
		{"get unavailable", PrefixGet + id.String(), slot.Result{Status: slot.Unavailable}, unavailable},
		{"schedule not found", "tock.schedule.a", slot.Result{Status: slot.NotFound},
			wantErr(500, "internal error: scheduler answered schedule with unexpected status 2")},
		{"schedule zero result", "tock.schedule.a", slot.Result{},
			wantErr(500, "internal error: scheduler answered schedule with unexpected status 0")},
		{"cancel odd status", PrefixCancel + id.String(), slot.Result{Status: 77},
			wantErr(500, "internal error: scheduler answered cancel with unexpected status 77")},
		{"get conflict", PrefixGet + id.String(), slot.Result{Status: slot.Conflict},
			wantErr(500, "internal error: scheduler answered get with unexpected status 3")},
		{"get unknown state", PrefixGet + id.String(), slot.Result{Status: slot.OK, Record: slot.Record{ID: id, State: 9}},
			wantErr(500, "internal error: scheduler reported state 9")},
	}
	for _, mode := range answerModes {
		t.Run(mode.name, func(t *testing.T) {
			e := start(t)
			for _, tt := range tests {
				e.fake.set(func(f *fakeScheduler) { f.answer, f.force = mode.answer, &tt.force })
				got := e.request(t, tt.subject, nats.Header{HeaderDelay: {"1s"}}, nil)
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s: reply (-want +got):\n%s", tt.name, diff)
				}
			}
		})
	}
}

// A Scheduler that panics or answers twice still yields exactly one reply.
func TestMisbehavingScheduler(t *testing.T) {
	e := start(t)
	count := func(t *testing.T, subject string) []wire {
		t.Helper()
		inbox := nats.NewInbox()
		sub, err := e.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := e.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Header: nats.Header{HeaderDelay: {"1s"}}}); err != nil {
			t.Fatal(err)
		}
		var got []wire
		for {
			m, err := sub.NextMsg(300 * time.Millisecond)
			if err != nil {
				return got
			}
			got = append(got, decodeWire(t, m))
		}
	}

	e.fake.set(func(f *fakeScheduler) { f.panics = true })
	want := []wire{wantErr(500, "internal error: panic while handling the request")}
	if diff := cmp.Diff(want, count(t, "tock.schedule.a")); diff != "" {
		t.Errorf("panicking scheduler (-want +got):\n%s", diff)
	}

	for _, mode := range answerModes {
		e.fake.set(func(f *fakeScheduler) { f.panics, f.twice, f.answer = false, true, mode.answer })
		got := count(t, "tock.schedule.a")
		if len(got) != 1 || got[0].ErrCode != "" {
			t.Errorf("%s: scheduler answering twice: got %d replies %+v, want one success", mode.name, len(got), got)
		}
	}
}

// Many requests in flight at once: the handlers return without waiting,
// every request is answered, each with its own reply.
func TestManyInFlight(t *testing.T) {
	const n = 500
	e := start(t)
	var (
		mu   sync.Mutex
		held []func()
		all  = make(chan struct{})
	)
	// Hold every answer until all n requests are in the scheduler: only
	// possible if no handler waits for its answer.
	e.fake.set(func(f *fakeScheduler) {
		f.answer = func(reply func()) {
			mu.Lock()
			defer mu.Unlock()
			held = append(held, reply)
			if len(held) == n {
				close(all)
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			target := fmt.Sprintf("t.%d", i)
			m, err := e.nc.RequestMsg(&nats.Msg{Subject: PrefixSchedule + target, Header: nats.Header{HeaderDelay: {fmt.Sprintf("%ds", i)}}}, 20*time.Second)
			if err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			var r ScheduleResponse
			if err := json.Unmarshal(m.Data, &r); err != nil || r.Target != target {
				errs <- fmt.Errorf("request %d: reply %s (%v)", i, m.Data, err)
				return
			}
			if want := FormatMillis(CeilMillis(testNow.Add(time.Duration(i) * time.Second))); r.DeliverAt != want {
				errs <- fmt.Errorf("request %d: deliver_at %s, want %s", i, r.DeliverAt, want)
			}
		})
	}
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatal("the scheduler never had all requests in flight at once")
	}
	if got := e.inFlight(t); got != n {
		t.Errorf("stats in_flight = %d, want %d", got, n)
	}
	// Answer from many goroutines at once, in reverse order.
	mu.Lock()
	for i := len(held) - 1; i >= 0; i-- {
		go held[i]()
	}
	mu.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.inFlight(t); got != 0 {
		t.Errorf("stats in_flight = %d after all replies, want 0", got)
	}
}

func (e *env) inFlight(t *testing.T) int64 {
	t.Helper()
	m, err := e.nc.Request("$SRV.STATS.tock", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(m.Data, &stats); err != nil {
		t.Fatal(err)
	}
	for _, ep := range stats.Endpoints {
		if ep.Name == EndpointSchedule {
			var d EndpointData
			if err := json.Unmarshal(ep.Data, &d); err != nil {
				t.Fatal(err)
			}
			return d.InFlight
		}
	}
	t.Fatal("no schedule endpoint in stats")
	return 0
}

func TestDiscovery(t *testing.T) {
	e := start(t)
	m, err := e.nc.Request("$SRV.INFO.tock", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info micro.Info
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	type ep struct{ Name, Subject, QueueGroup string }
	var got []ep
	for _, x := range info.Endpoints {
		got = append(got, ep{x.Name, x.Subject, x.QueueGroup})
	}
	want := []ep{
		{"schedule", "tock.schedule.>", "q"},
		{"cancel", "tock.cancel.*", "q"},
		{"get", "tock.get.*", "q"},
		{"redrive", "tock.redrive.*", "q"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if info.Name != "tock" || info.Version != "1.2.3" || info.Type != micro.InfoResponseType {
		t.Errorf("info = %+v", info)
	}
	if diff := cmp.Diff(map[string]string{"max_delay": "24h0m0s", "max_payload": "1024"}, info.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}

	// PING of all services finds it too.
	m, err = e.nc.Request("$SRV.PING", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(m.Data, &ping); err != nil || ping.Name != "tock" {
		t.Errorf("ping = %s (%v)", m.Data, err)
	}

	// STATS count requests, and errors by code including late ones.
	e.fake.set(func(f *fakeScheduler) { f.answer = late(10 * time.Millisecond) })
	e.request(t, "tock.schedule.a", nil, nil)                              // 400 in the handler
	e.request(t, PrefixGet+msgid.New(1, 1).String(), nil, nil)             // 404 later
	e.request(t, "tock.schedule.a", nats.Header{HeaderDelay: {"1s"}}, nil) // ok later
	e.request(t, PrefixCancel+msgid.New(1, 1).String(), nil, nil)          // 404 later
	e.request(t, PrefixCancel+"x", nil, nil)                               // 404 in the handler
	e.request(t, PrefixRedrive+"x", nil, nil)                              // 404 in the handler
	m, err = e.nc.Request("$SRV.STATS.tock", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(m.Data, &stats); err != nil {
		t.Fatal(err)
	}
	type epStats struct {
		Name        string
		NumRequests int
		Data        EndpointData
	}
	var gotStats []epStats
	for _, s := range stats.Endpoints {
		x := epStats{Name: s.Name, NumRequests: s.NumRequests}
		if err := json.Unmarshal(s.Data, &x.Data); err != nil {
			t.Fatal(err)
		}
		gotStats = append(gotStats, x)
	}
	wantStats := []epStats{
		{"schedule", 2, EndpointData{Errors: map[string]int{"400": 1}}},
		{"cancel", 2, EndpointData{Errors: map[string]int{"404": 2}}},
		{"get", 1, EndpointData{Errors: map[string]int{"404": 1}}},
		{"redrive", 1, EndpointData{Errors: map[string]int{"404": 1}}},
	}
	if diff := cmp.Diff(wantStats, gotStats); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// Stop leaves discovery and stops serving; answers to calls already made
// still reach their clients; requests drained after Stop get 503 and never
// reach the scheduler.
func TestStop(t *testing.T) {
	e := start(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	var (
		mu   sync.Mutex
		held []func()
	)
	e.fake.set(func(f *fakeScheduler) {
		f.answer = func(reply func()) {
			mu.Lock()
			held = append(held, reply)
			first := len(held) == 1
			mu.Unlock()
			if first {
				// Block the first request's handler (tests only: a real
				// Scheduler never blocks) so that the next one queues.
				close(entered)
				<-release
			}
		}
	})
	send := func(target string) *nats.Subscription {
		inbox := nats.NewInbox()
		sub, err := e.nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.nc.PublishMsg(&nats.Msg{Subject: PrefixSchedule + target, Reply: inbox, Header: nats.Header{HeaderDelay: {"1s"}}}); err != nil {
			t.Fatal(err)
		}
		if err := e.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		return sub
	}
	next := func(sub *nats.Subscription) wire {
		t.Helper()
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return decodeWire(t, m)
	}

	a := send("a") // in the scheduler, answered after Stop
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request never reached the scheduler")
	}
	b := send("b") // queued behind a; drained after Stop
	stopped := make(chan error)
	go func() { stopped <- e.gw.Stop() }()
	for e.gw.mu.TryRLock() { // until Stop waits for a's handler
		e.gw.mu.RUnlock()
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantErr(503, "tock is shutting down; retry"), next(b)); diff != "" {
		t.Errorf("request drained after Stop (-want +got):\n%s", diff)
	}

	// Gone from discovery and from the API.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := e.nc.Request("tock.get."+msgid.New(1, 1).String(), nil, time.Second)
		if err == nats.ErrNoResponders {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still served after Stop: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := e.nc.Request("$SRV.INFO.tock", nil, time.Second); err != nats.ErrNoResponders {
		t.Errorf("$SRV.INFO.tock after Stop: %v, want no responders", err)
	}

	// The call made before Stop is still answered.
	mu.Lock()
	answerA := held[0]
	mu.Unlock()
	answerA()
	if w := next(a); w.ErrCode != "" || w.Body.(map[string]any)["target"] != "a" {
		t.Errorf("answer to the call made before Stop: %+v", w)
	}
	if got := e.fake.requests(); len(got) != 1 || got[0].Target != "a" {
		t.Errorf("scheduler saw %+v, want only a", got)
	}
	if err := e.gw.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	srv := runServer(t)
	nc := connect(t, srv)
	for _, tt := range []struct {
		name string
		nc   *nats.Conn
		s    Scheduler
		clk  clock.Clock
		cfg  Config
	}{
		{"nil conn", nil, newFake(), fixedClock{}, testCfg},
		{"nil scheduler", nc, nil, fixedClock{}, testCfg},
		{"nil clock", nc, newFake(), nil, testCfg},
		{"no MaxDelay", nc, newFake(), fixedClock{}, Config{MaxPayload: 1}},
		{"no MaxPayload", nc, newFake(), fixedClock{}, Config{MaxDelay: time.Hour}},
		{"bad version", nc, newFake(), fixedClock{}, Config{MaxDelay: time.Hour, MaxPayload: 1, Version: "v1"}},
	} {
		if g, err := Start(tt.nc, tt.s, tt.clk, tt.cfg, nil); err == nil {
			g.Stop()
			t.Errorf("%s: Start succeeded", tt.name)
		}
	}
	// A default version is fine.
	g, err := Start(nc, newFake(), clock.Real{}, Config{MaxDelay: time.Hour, MaxPayload: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMaxInFlight: with the scheduler holding every answer, the requests
// beyond MaxInFlight (or beyond MaxInFlightBytes of bodies) get a 503 at
// once, the held ones are answered when the scheduler answers, and room
// comes back after.
func TestMaxInFlight(t *testing.T) {
	for _, c := range []struct {
		name      string
		cfg       Config
		body      int
		admitted  int
		wantDesc  string
		oversized bool
	}{
		{name: "count", cfg: Config{MaxInFlight: 3}, body: 10, admitted: 3,
			wantDesc: "tock is overloaded: 3 requests in flight (--max-inflight); retry with back-off"},
		{name: "bytes", cfg: Config{MaxInFlightBytes: 250}, body: 100, admitted: 2,
			wantDesc: "tock is overloaded: 250 bytes of requests in flight (--max-inflight-bytes); retry with back-off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := runServer(t)
			fake := newFake()
			var mu sync.Mutex
			var held []func()
			fake.set(func(f *fakeScheduler) {
				f.answer = func(reply func()) {
					mu.Lock()
					held = append(held, reply)
					mu.Unlock()
				}
			})
			cfg := testCfg
			cfg.MaxInFlight, cfg.MaxInFlightBytes = c.cfg.MaxInFlight, c.cfg.MaxInFlightBytes
			gw, err := Start(connect(t, srv), fake, fixedClock{}, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer gw.Stop()
			nc := connect(t, srv)
			body := make([]byte, c.body)
			var replies []chan *nats.Msg
			for range c.admitted + 2 {
				ch := make(chan *nats.Msg, 1)
				inbox := nc.NewInbox()
				if _, err := nc.ChanSubscribe(inbox, ch); err != nil {
					t.Fatal(err)
				}
				m := &nats.Msg{Subject: PrefixSchedule + "a", Reply: inbox, Header: nats.Header{HeaderDelay: {"1s"}}, Data: body}
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
				replies = append(replies, ch)
			}
			// The requests past the bound are refused while the rest are held.
			for i := c.admitted; i < len(replies); i++ {
				select {
				case m := <-replies[i]:
					if w := decodeWire(t, m); w.ErrCode != "503" || w.ErrDesc != c.wantDesc {
						t.Fatalf("request %d: %+v, want 503 %q", i, w, c.wantDesc)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("request %d beyond the bound got no answer", i)
				}
			}
			mu.Lock()
			n := len(held)
			for _, reply := range held {
				reply()
			}
			held = nil
			mu.Unlock()
			fake.set(func(f *fakeScheduler) { f.answer = nil })
			if n != c.admitted {
				t.Fatalf("the scheduler got %d requests, want %d", n, c.admitted)
			}
			for i := range c.admitted {
				select {
				case m := <-replies[i]:
					if w := decodeWire(t, m); w.ErrCode != "" {
						t.Fatalf("held request %d: %+v", i, w)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("held request %d got no answer", i)
				}
			}
			// Room again: a request goes through.
			m, err := nc.RequestMsg(&nats.Msg{Subject: PrefixSchedule + "a", Header: nats.Header{HeaderDelay: {"1s"}}, Data: body}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if w := decodeWire(t, m); w.ErrCode != "" {
				t.Fatalf("after the held ones were answered: %+v", w)
			}
			if gw.inFlight.Load() != 0 || gw.inFlightBytes.Load() != 0 {
				t.Fatalf("in flight after all answers: %d requests, %d bytes", gw.inFlight.Load(), gw.inFlightBytes.Load())
			}
		})
	}
}

// A request bigger than MaxInFlightBytes alone is still served: the byte
// bound limits how much is held, not how big one message may be.
func TestMaxInFlightBytesLetsOneBigRequestThrough(t *testing.T) {
	srv := runServer(t)
	cfg := testCfg
	cfg.MaxInFlightBytes = 10
	gw, err := Start(connect(t, srv), newFake(), fixedClock{}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Stop()
	m, err := connect(t, srv).RequestMsg(&nats.Msg{Subject: PrefixSchedule + "a", Header: nats.Header{HeaderDelay: {"1s"}}, Data: make([]byte, 500)}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if w := decodeWire(t, m); w.ErrCode != "" {
		t.Fatalf("one 500-byte request with a 10-byte bound: %+v", w)
	}
}
