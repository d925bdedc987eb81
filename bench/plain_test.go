package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/internal/natstest"
)

func TestPlainSpec(t *testing.T) {
	var s PlainSpec
	if err := s.Set("n=1000"); err != nil {
		t.Fatal(err)
	}
	if s != (PlainSpec{N: 1000, Window: DefaultPlainWindow, Size: 256}) {
		t.Errorf("defaults: %+v", s)
	}
	want := PlainSpec{N: 5, Window: 7, Size: 0, Pipe: true}
	var back PlainSpec
	if err := back.Set(want.String()); err != nil || back != want {
		t.Errorf("round trip of %q: %+v, %v", want.String(), back, err)
	}
	for _, bad := range []string{"", "n=0", "n=5,window=0", "n=5,size=-1", "n=x", "n=5,bogus=1", "n=5,conn=udp", "5"} {
		if err := new(PlainSpec).Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if (*PlainSpec)(nil).String() != "" || (&PlainSpec{}).String() != "" {
		t.Error("an empty spec should print as nothing (the flag's default)")
	}
}

func TestPlainLine(t *testing.T) {
	r := PlainResult{Acked: 10, Failed: 1, Seconds: 0.5, Error: "status 429 Too Many Requests"}
	got, ok, err := parsePlainLine(r.Line())
	if !ok || err != nil || got != r {
		t.Errorf("round trip: %+v, %v, %v", got, ok, err)
	}
	if got.Rate() != 20 {
		t.Errorf("rate %v, want 20", got.Rate())
	}
	if _, ok, _ := parsePlainLine(`{"level":"WARN","msg":"x"}`); ok {
		t.Error("a log line taken for a result")
	}
	if _, ok, err := parsePlainLine(plainLinePrefix + "{"); !ok || err == nil {
		t.Errorf("a broken result line: ok %v, err %v", ok, err)
	}
}

// The watcher passes every byte through and finds the result line even
// when it arrives in pieces.
func TestStdoutWatcher(t *testing.T) {
	var log bytes.Buffer
	ch := make(chan plainOutcome, 1)
	w := &stdoutWatcher{w: &log, plain: ch}
	line := PlainResult{Acked: 3, Seconds: 1}.Line()
	in := "noise\n" + line[:7] + "|" + line[7:] + "\ntail"
	for _, part := range strings.Split(in, "|") {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if log.String() != strings.ReplaceAll(in, "|", "") {
		t.Errorf("log %q", log.String())
	}
	select {
	case o := <-ch:
		if o.err != nil || o.res.Acked != 3 {
			t.Errorf("outcome %+v", o)
		}
	default:
		t.Error("no result seen")
	}
}

func TestPlainStronger(t *testing.T) {
	if name, v := (plainRates{separate: 2, inProcess: 3}).stronger(); v != 3 || !strings.Contains(name, "in-process") {
		t.Errorf("stronger = %s %v", name, v)
	}
	if name, v := (plainRates{separate: 3, inProcess: 2}).stronger(); v != 3 || !strings.Contains(name, "separate") {
		t.Errorf("stronger = %s %v", name, v)
	}
}

// plainPublish against a real server: every message PubAck'd and stored
// without headers; without a stream every reply is a failure, not an ack.
func TestPlainPublish(t *testing.T) {
	s := natstest.Start(t, t.TempDir())
	nc := natstest.Connect(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := RunPlain(ctx, nc, PlainSpec{N: 5000, Window: 64, Size: 100})
	if res.Acked != 5000 || res.Failed != 0 || res.Error != "" || res.Rate() <= 0 {
		t.Fatalf("RunPlain = %+v", res)
	}
	st, err := streamState(ctx, nc, plainStream)
	if err != nil || st.Msgs != 5000 {
		t.Fatalf("stream holds %d, %v", st.Msgs, err)
	}
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, plainStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetMsg(ctx, 1)
	if err != nil || len(m.Data) != 100 || len(m.Header) != 0 {
		t.Errorf("stored message: %d bytes, headers %v, %v", len(m.Data), m.Header, err)
	}
	res = plainPublish(ctx, nc, "bench.nowhere", 10, 4, body(10), nil)
	if res.Acked != 0 || res.Failed != 10 || !strings.Contains(res.Error, "503") {
		t.Errorf("no stream: %+v", res)
	}
}
