package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
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

type watchRun struct {
	stdout, stderr syncBuffer
	code           chan int
}

// startWatch runs "tock watch args..." and returns once it is subscribed.
func startWatch(t *testing.T, ctx context.Context, args ...string) *watchRun {
	t.Helper()
	w := &watchRun{code: make(chan int, 1)}
	go func() { w.code <- runWatch(ctx, args, noRead{t}, &w.stdout, &w.stderr) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(w.stderr.String(), "watching") {
		select {
		case c := <-w.code:
			t.Fatalf("watch exited with %d: %s", c, w.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch did not subscribe: %q", w.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return w
}

func (w *watchRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case c := <-w.code:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop")
		return -1
	}
}

func TestWatchPrintsDeliveries(t *testing.T) {
	url := startNATS(t)
	w := startWatch(t, context.Background(), "--nats-url", url, "--count", "2", "--for", "30s", "orders.>")

	nc := connect(t, url)
	deliverAt := time.Now().Add(-1500 * time.Millisecond).UTC()
	m := nats.NewMsg("orders.created")
	m.Header.Set("Tock-Id", "0123456789abcdefghijklmnop")
	m.Header.Set("Tock-Deliver-At", deliverAt.Format("2006-01-02T15:04:05.000Z07:00"))
	m.Header.Set("Nats-Msg-Id", "0123456789abcdefghijklmnop")
	m.Data = []byte(`{"order":42}`)
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("other.subject", []byte("not watched")); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 100) + "\n"
	if err := nc.Publish("orders.plain", []byte(long)); err != nil {
		t.Fatal(err)
	}
	nc.Publish("orders.after-count", []byte("must not be printed"))
	nc.Flush()

	if code := w.wait(t); code != 0 {
		t.Fatalf("code %d, stderr %q", code, w.stderr.String())
	}
	lines := strings.Split(strings.TrimSuffix(w.stdout.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2:\n%s", len(lines), w.stdout.String())
	}

	f := strings.SplitN(lines[0], " ", 5)
	recv, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil || time.Since(recv) > time.Minute || recv.Location() != time.UTC {
		t.Errorf("receive time %q: %v", f[0], err)
	}
	if f[1] != "orders.created" || f[2] != "0123456789abcdefghijklmnop" || f[4] != `"{\"order\":42}"` {
		t.Errorf("line %q", lines[0])
	}
	if !regexp.MustCompile(`^\d+\.\dms$`).MatchString(f[3]) {
		t.Fatalf("lateness %q is not N.Nms", f[3])
	}
	late, _ := strconv.ParseFloat(strings.TrimSuffix(f[3], "ms"), 64)
	// Tock-Deliver-At is truncated to the ms, so lateness is at least 1500ms.
	if late < 1500 || late > 1500+10000 {
		t.Errorf("lateness %vms, want about 1500ms", late)
	}
	// Receive time minus Tock-Deliver-At, to 0.1ms.
	want := recv.Sub(deliverAt.Truncate(time.Millisecond))
	if got := time.Duration(late * float64(time.Millisecond)); (got - want).Abs() > 100*time.Microsecond {
		t.Errorf("lateness %v, receive - deliver-at = %v", got, want)
	}

	wantLine2 := regexp.QuoteMeta(` orders.plain - - "`+strings.Repeat("x", 80)+`"… (101 bytes)`) + "$"
	if !regexp.MustCompile(wantLine2).MatchString(lines[1]) {
		t.Errorf("line %q", lines[1])
	}
}

func TestWatchStops(t *testing.T) {
	url := startNATS(t)

	// --for without --count: a normal end.
	w := startWatch(t, context.Background(), "--nats-url", url, "--for", "300ms", "a")
	if code := w.wait(t); code != 0 || w.stdout.String() != "" {
		t.Errorf("--for: code %d, stdout %q", code, w.stdout.String())
	}

	// --for with --count not reached: a failure.
	w = startWatch(t, context.Background(), "--nats-url", url, "--for", "1s", "--count", "2", "a")
	connect(t, url).Publish("a", []byte("one"))
	if code := w.wait(t); code != 1 || !strings.Contains(w.stderr.String(), "1 of 2 messages within 1s") {
		t.Errorf("--for --count: code %d, stderr %q", code, w.stderr.String())
	}
	if n := strings.Count(w.stdout.String(), "\n"); n != 1 {
		t.Errorf("printed %d lines, want 1", n)
	}

	// Interrupted: a normal end too.
	ctx, cancel := context.WithCancel(context.Background())
	w = startWatch(t, ctx, "--nats-url", url, "--count", "5", "a")
	cancel()
	if code := w.wait(t); code != 0 {
		t.Errorf("interrupted: code %d, stderr %q", code, w.stderr.String())
	}

	// A subject NATS refuses.
	var o, e bytes.Buffer
	if code := runWatch(context.Background(), []string{"--nats-url", url, "a..b"}, nil, &o, &e); code != 2 || !strings.Contains(e.String(), "invalid subject") {
		t.Errorf("bad subject: code %d, stderr %q", code, e.String())
	}

	// No server.
	o.Reset()
	e.Reset()
	if code := runWatch(context.Background(), []string{"--nats-url", "nats://127.0.0.1:1", "a"}, nil, &o, &e); code != 1 {
		t.Errorf("no server: code %d, stderr %q", code, e.String())
	}
}

func TestFormatDelivery(t *testing.T) {
	at := time.Date(2030, 1, 2, 15, 4, 5, 123_000_000, time.UTC)
	msg := func(subject string, hdr map[string]string, body string) *nats.Msg {
		m := nats.NewMsg(subject)
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		m.Data = []byte(body)
		return m
	}
	tockHdr := map[string]string{"Tock-Id": "abc", "Tock-Deliver-At": "2030-01-02T15:04:05.123Z"}
	for _, tc := range []struct {
		recv time.Time
		m    *nats.Msg
		max  int
		want string
	}{
		{at.Add(12345 * time.Microsecond), msg("s", tockHdr, "hi"), 80,
			`2030-01-02T15:04:05.135345Z s abc 12.3ms "hi"`},
		{at.Add(12351 * time.Microsecond), msg("s", tockHdr, ""), 80,
			`2030-01-02T15:04:05.135351Z s abc 12.4ms ""`},
		{at, msg("s", tockHdr, "x"), 80,
			`2030-01-02T15:04:05.123000Z s abc 0.0ms "x"`},
		{at.Add(-450 * time.Microsecond), msg("s", tockHdr, "x"), 80,
			`2030-01-02T15:04:05.122550Z s abc -0.5ms "x"`},
		{at.Add(2 * time.Hour), msg("s", tockHdr, "x"), 80,
			`2030-01-02T17:04:05.123000Z s abc 7200000.0ms "x"`},
		{at.Add(time.Second).In(time.FixedZone("X", 3600)), msg("s", map[string]string{"Tock-Deliver-At": strconv.FormatInt(at.UnixMilli(), 10)}, "x"), 80,
			`2030-01-02T15:04:06.123000Z s - 1000.0ms "x"`},
		{at, msg("s", map[string]string{"Tock-Deliver-At": "garbage"}, "a\tb\x00"), 80,
			`2030-01-02T15:04:05.123000Z s - - "a\tb\x00"`},
		{at, &nats.Msg{Subject: "s", Data: []byte("héllo")}, 2,
			`2030-01-02T15:04:05.123000Z s - - "h"… (6 bytes)`},
		{at, &nats.Msg{Subject: "s", Data: []byte("hello")}, 0,
			`2030-01-02T15:04:05.123000Z s - - ""… (5 bytes)`},
	} {
		if got := formatDelivery(tc.recv, tc.m, tc.max); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}
