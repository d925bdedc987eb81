package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/msgid"
)

// startNATS runs a real NATS server on a free loopback port for the test.
func startNATS(t *testing.T) string { return natstest.Start(t, "").ClientURL() }

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// fakeTock stands in for tock's gateway: it answers the API subjects with
// canned replies and records what it was sent.
type fakeTock struct {
	got chan *nats.Msg
	// reply maps a request to the reply body; nil means no reply.
	reply func(m *nats.Msg) []byte
}

func startFake(t *testing.T, url string, reply func(m *nats.Msg) []byte) *fakeTock {
	t.Helper()
	f := &fakeTock{got: make(chan *nats.Msg, 16), reply: reply}
	nc := connect(t, url)
	for _, subj := range []string{"tock.schedule.>", "tock.cancel.*", "tock.get.*"} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			f.got <- m
			if b := f.reply(m); b != nil {
				m.Respond(b)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeTock) next(t *testing.T) *nats.Msg {
	t.Helper()
	select {
	case m := <-f.got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the fake tock got no request")
		return nil
	}
}

func canned(body string) func(*nats.Msg) []byte {
	return func(*nats.Msg) []byte { return []byte(body) }
}

// noRead fails the test if the command reads standard input.
type noRead struct{ t *testing.T }

func (r noRead) Read([]byte) (int, error) {
	r.t.Error("standard input was read")
	return 0, io.EOF
}

func runVerb(t *testing.T, fn runFunc, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = noRead{t}
	}
	code = fn(context.Background(), args, stdin, &out, &errb)
	return code, out.String(), errb.String()
}

const scheduleReply = `{"id":"0000000000000000000000000g","target":"orders.created","deliver_at":"2030-01-02T15:04:05.123Z"}`

func TestScheduleSends(t *testing.T) {
	url := startNATS(t)
	f := startFake(t, url, canned(scheduleReply))
	for _, tc := range []struct {
		name    string
		args    []string
		stdin   io.Reader
		subject string
		header  nats.Header
		body    string
	}{
		{
			name:    "in with headers and body",
			args:    []string{"--to", "orders.created", "--in", "90s", "-H", "X-Trace: abc", "-H", "X-Multi:1", "-H", "X-Multi:2", "hello world"},
			subject: "tock.schedule.orders.created",
			header:  nats.Header{"Tock-Delay": {"1m30s"}, "X-Trace": {"abc"}, "X-Multi": {"1", "2"}},
			body:    "hello world",
		},
		{
			name:    "at rfc3339, body before flags",
			args:    []string{"hello", "--to", "a.b.c", "--at", "2030-01-02T15:04:05.123Z"},
			subject: "tock.schedule.a.b.c",
			header:  nats.Header{"Tock-Deliver-At": {"2030-01-02T15:04:05.123Z"}},
			body:    "hello",
		},
		{
			name:    "at unix ms, no body",
			args:    []string{"--to", "x", "--at", "1893596645123"},
			subject: "tock.schedule.x",
			header:  nats.Header{"Tock-Deliver-At": {"1893596645123"}},
		},
		{
			name:    "in days",
			args:    []string{"--to", "x", "--in", "1d12h", ""},
			subject: "tock.schedule.x",
			header:  nats.Header{"Tock-Delay": {"36h0m0s"}},
		},
		{
			name:    "body from stdin",
			args:    []string{"--to", "x", "--in", "1s", "-"},
			stdin:   strings.NewReader("line one\nline two\n\x00binary"),
			subject: "tock.schedule.x",
			header:  nats.Header{"Tock-Delay": {"1s"}},
			body:    "line one\nline two\n\x00binary",
		},
		{
			name:    "literal body after --",
			args:    []string{"--to", "x", "--in", "1s", "--", "-H"},
			subject: "tock.schedule.x",
			header:  nats.Header{"Tock-Delay": {"1s"}},
			body:    "-H",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--nats-url", url}, tc.args...)
			code, out, errs := runVerb(t, runSchedule, tc.stdin, args...)
			if code != 0 || errs != "" {
				t.Fatalf("code %d, stderr %q", code, errs)
			}
			if out != scheduleReply+"\n" {
				t.Errorf("stdout %q, want the reply", out)
			}
			m := f.next(t)
			if m.Subject != tc.subject {
				t.Errorf("subject %q, want %q", m.Subject, tc.subject)
			}
			if diff := cmp.Diff(tc.header, m.Header); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			if string(m.Data) != tc.body {
				t.Errorf("body %q, want %q", m.Data, tc.body)
			}
		})
	}
}

func TestScheduleURLFromEnv(t *testing.T) {
	url := startNATS(t)
	f := startFake(t, url, canned(scheduleReply))
	t.Setenv(envNATSURL, url)
	code, out, errs := runVerb(t, runSchedule, nil, "--to", "x", "--in", "1s")
	if code != 0 || out != scheduleReply+"\n" || errs != "" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errs)
	}
	f.next(t)
}

func TestErrorReplies(t *testing.T) {
	url := startNATS(t)
	id := msgid.Compose(1893596645123, 7, 0xabcdef).String()
	for _, tc := range []struct {
		name  string
		fn    runFunc
		args  []string
		reply string
		want  string
	}{
		{"schedule 400", runSchedule, []string{"--to", "x", "--in", "400d"},
			`{"error":{"code":400,"description":"Tock-Delay \"9600h0m0s\" is beyond the maximum delay of 365d"}}`,
			"error 400: Tock-Delay \"9600h0m0s\" is beyond the maximum delay of 365d\n"},
		{"schedule 413", runSchedule, []string{"--to", "x", "--in", "1s", "big"},
			`{"error":{"code":413,"description":"payload too large"}}`,
			"error 413: payload too large\n"},
		{"cancel 404", runCancel, []string{id},
			`{"error":{"code":404,"description":"no such message"}}`,
			"error 404: no such message\n"},
		{"cancel 409 state inside", runCancel, []string{id},
			`{"error":{"code":409,"description":"already delivered","state":"delivered"}}`,
			"error 409: already delivered (state: delivered)\n"},
		{"cancel 409 state beside", runCancel, []string{id},
			`{"error":{"code":409,"description":"already cancelled"},"state":"cancelled"}`,
			"error 409: already cancelled (state: cancelled)\n"},
		{"get 503", runGet, []string{id},
			`{"error":{"code":503,"description":"journal unavailable"}}`,
			"error 503: journal unavailable\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := connect(t, url)
			sub, err := nc.Subscribe("tock.>", func(m *nats.Msg) { m.Respond([]byte(tc.reply)) })
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			nc.Flush()
			code, out, errs := runVerb(t, tc.fn, nil, append([]string{"--nats-url", url}, tc.args...)...)
			if code != 1 || out != "" || errs != tc.want {
				t.Errorf("code %d, stdout %q, stderr %q; want 1, \"\", %q", code, out, errs, tc.want)
			}
		})
	}
}

func TestCancelAndGet(t *testing.T) {
	url := startNATS(t)
	id := msgid.Compose(1893596645123, 7, 0xabcdef).String()
	getReply := `{
  "id": "` + id + `",
  "target": "orders.created",
  "deliver_at": "2030-01-02T15:04:05.123Z",
  "state": "delivered",
  "delivered_at": "2030-01-02T15:04:05.125Z"
}`
	f := startFake(t, url, func(m *nats.Msg) []byte {
		if strings.HasPrefix(m.Subject, "tock.cancel.") {
			return []byte(`{"id":"` + id + `","state":"cancelled"}`)
		}
		return []byte(getReply)
	})

	code, out, errs := runVerb(t, runCancel, nil, "--nats-url", url, id)
	if code != 0 || errs != "" || out != `{"id":"`+id+`","state":"cancelled"}`+"\n" {
		t.Errorf("cancel: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if m := f.next(t); m.Subject != "tock.cancel."+id || len(m.Data) != 0 {
		t.Errorf("cancel sent %q %q", m.Subject, m.Data)
	}

	// Flags may follow the id; the reply is printed on one line.
	code, out, errs = runVerb(t, runGet, nil, id, "--nats-url", url, "--timeout", "2s")
	want := `{"id":"` + id + `","target":"orders.created","deliver_at":"2030-01-02T15:04:05.123Z","state":"delivered","delivered_at":"2030-01-02T15:04:05.125Z"}` + "\n"
	if code != 0 || errs != "" || out != want {
		t.Errorf("get: code %d, stdout %q, stderr %q", code, out, errs)
	}
	if m := f.next(t); m.Subject != "tock.get."+id || len(m.Data) != 0 {
		t.Errorf("get sent %q %q", m.Subject, m.Data)
	}
}

func TestRequestFailures(t *testing.T) {
	url := startNATS(t)
	id := msgid.Compose(1893596645123, 7, 0xabcdef).String()

	// Nobody serves the API.
	code, out, errs := runVerb(t, runGet, nil, "--nats-url", url, id)
	if code != 1 || out != "" || !strings.Contains(errs, "nothing answers on tock.get."+id) {
		t.Errorf("no responders: code %d, stdout %q, stderr %q", code, out, errs)
	}

	// No NATS server at all.
	code, _, errs = runVerb(t, runCancel, nil, "--nats-url", "nats://127.0.0.1:1", "--timeout", "1s", id)
	if code != 1 || !strings.Contains(errs, "connect to nats://127.0.0.1:1") {
		t.Errorf("no server: code %d, stderr %q", code, errs)
	}

	// A responder that never answers.
	f := startFake(t, url, func(*nats.Msg) []byte { return nil })
	start := time.Now()
	code, _, errs = runVerb(t, runSchedule, nil, "--nats-url", url, "--timeout", "300ms", "--to", "x", "--in", "1s")
	if code != 1 || !strings.Contains(errs, "no reply on tock.schedule.x within 300ms") {
		t.Errorf("timeout: code %d, stderr %q", code, errs)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("timeout took %v", d)
	}
	f.next(t)

	// Interrupted while waiting.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	var o, e bytes.Buffer
	code = runSchedule(ctx, []string{"--nats-url", url, "--to", "z", "--in", "1s", "--timeout", "1m"}, noRead{t}, &o, &e)
	if code != 1 || !strings.Contains(e.String(), "interrupted") {
		t.Errorf("interrupted: code %d, stderr %q", code, e.String())
	}

	// A reply that is not JSON.
	startFake(t, url, canned("PONG")) // both fakes get the next request; the fast answer wins
	code, out, errs = runVerb(t, runSchedule, nil, "--nats-url", url, "--to", "y", "--in", "1s")
	if code != 1 || out != "" || !strings.Contains(errs, `reply is not JSON: "PONG"`) {
		t.Errorf("not JSON: code %d, stdout %q, stderr %q", code, out, errs)
	}
}
