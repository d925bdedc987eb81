package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The plain JetStream reference: the strongest plain publisher we could
// write, so that tock's ingest is compared with what JetStream itself can
// take on this machine, not with a handicapped client. It publishes one
// pre-built message (the same body size as tock's requests, no headers)
// over and over with core NATS publishes that carry a reply subject, and
// counts the PubAcks that come back on one inbox subscription; up to
// window publishes are unacknowledged at a time. Measured against
// jetstream's PublishMsgAsync (a future, a map entry and a fresh reply
// token per message) on the 2-core machine of BENCHMARKS.md, the raw loop
// was the faster one (see plainPublish).
//
// It runs twice per measurement: from the bench process, and inside the
// `tock serve` child itself (the hidden --bench-plain flag, which calls
// RunPlain on the child's own embedded server), where no socket between
// processes and no second Go runtime share the two cores.
const (
	plainStream  = "BENCH_JS"
	plainSubject = "bench.js"

	// DefaultPlainWindow is the reference's unacknowledged publishes. Larger
	// windows gained nothing measurable; smaller ones left the server idle
	// between acks.
	DefaultPlainWindow = 65536
)

// PlainSpec says what the plain reference publishes: N messages of Size
// body bytes, at most Window unacknowledged, over a loopback TCP
// connection, or with Pipe over nats.InProcessServer's in-memory pipe
// (only inside the server's process; the two were within noise of each
// other on the 2-core machine, TCP slightly ahead). It is a flag.Value,
// so that `tock serve --bench-plain n=…,window=…,size=…,conn=tcp|pipe`
// reads it.
type PlainSpec struct {
	N, Window, Size int
	Pipe            bool
}

// String formats the spec as --bench-plain reads it; "" for none.
func (s *PlainSpec) String() string {
	if s == nil || s.N == 0 {
		return ""
	}
	conn := "tcp"
	if s.Pipe {
		conn = "pipe"
	}
	return fmt.Sprintf("n=%d,window=%d,size=%d,conn=%s", s.N, s.Window, s.Size, conn)
}

// Set parses "n=1000000,window=65536,size=256,conn=tcp"; all but n are
// optional.
func (s *PlainSpec) Set(v string) error {
	out := PlainSpec{Window: DefaultPlainWindow, Size: 256}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if k == "conn" && (val == "tcp" || val == "pipe") {
			out.Pipe = val == "pipe"
			continue
		}
		n, err := strconv.Atoi(val)
		if !ok || err != nil {
			return fmt.Errorf("%q: want n=N,window=W,size=B,conn=tcp|pipe", v)
		}
		switch k {
		case "n":
			out.N = n
		case "window":
			out.Window = n
		case "size":
			out.Size = n
		default:
			return fmt.Errorf("%q: unknown key %q (want n, window, size, conn)", v, k)
		}
	}
	if out.N < 1 || out.Window < 1 || out.Size < 0 {
		return fmt.Errorf("%q: n and window must be positive, size not negative", v)
	}
	*s = out
	return nil
}

// PlainResult is what one run of the plain reference measured.
type PlainResult struct {
	Acked   int64   `json:"acked"`
	Failed  int64   `json:"failed"`
	Seconds float64 `json:"seconds"` // first publish to last PubAck
	Error   string  `json:"error,omitempty"`
}

// Rate is PubAcks per second, 0 without any.
func (r PlainResult) Rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Seconds
}

// plainLinePrefix starts the line with which a child reports its run.
const plainLinePrefix = "tock-bench-plain "

// Line is the result as the child prints it on stdout.
func (r PlainResult) Line() string {
	b, _ := json.Marshal(r)
	return plainLinePrefix + string(b)
}

// parsePlainLine reads a Line; ok is false for any other line.
func parsePlainLine(line string) (r PlainResult, ok bool, err error) {
	rest, ok := strings.CutPrefix(line, plainLinePrefix)
	if !ok {
		return r, false, nil
	}
	if err := json.Unmarshal([]byte(rest), &r); err != nil {
		return r, true, fmt.Errorf("plain reference result %q: %w", rest, err)
	}
	return r, true, nil
}

// RunPlain creates the reference's stream on nc's server and publishes
// spec to it. It is the child's side of --bench-plain.
func RunPlain(ctx context.Context, nc *nats.Conn, spec PlainSpec) PlainResult {
	if err := createStream(ctx, nc, plainStreamConfig()); err != nil {
		return PlainResult{Error: err.Error()}
	}
	return plainPublish(ctx, nc, plainSubject, spec.N, spec.Window, body(spec.Size), nil)
}

func plainStreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{Name: plainStream, Subjects: []string{plainSubject}, Storage: jetstream.FileStorage}
}

// plainPublish publishes n copies of a message with body data to subject,
// at most window unacknowledged, and counts the PubAcks on one inbox.
// Replies that are not a PubAck (a JetStream error, a 503 no-responders
// status) count as failed. It gives up when no reply came for
// requestTimeout.
func plainPublish(ctx context.Context, nc *nats.Conn, subject string, n, window int, data []byte, progress *atomic.Int64) PlainResult {
	var res PlainResult
	if n <= 0 {
		return res
	}
	var acked, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr string
	tokens := make(chan struct{}, window)
	done := make(chan struct{})
	ackPrefix := []byte(`{"stream":`)
	inbox := nc.NewInbox()
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		if bytes.HasPrefix(m.Data, ackPrefix) && !bytes.Contains(m.Data, []byte(`"error"`)) {
			acked.Add(1)
			if progress != nil {
				progress.Add(1)
			}
		} else {
			errMu.Lock()
			if firstErr == "" {
				firstErr = replyError(m)
			}
			errMu.Unlock()
			failed.Add(1)
		}
		<-tokens
		if acked.Load()+failed.Load() == int64(n) {
			close(done)
		}
	})
	if err != nil {
		res.Error = fmt.Sprintf("ack subscription: %v", err)
		return res
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		res.Error = err.Error()
		return res
	}
	if err := nc.Flush(); err != nil {
		res.Error = err.Error()
		return res
	}
	m := &nats.Msg{Subject: subject, Reply: inbox, Data: data}
	finish := func(start time.Time, err error) PlainResult {
		res.Seconds = time.Since(start).Seconds()
		res.Acked, res.Failed = acked.Load(), failed.Load()
		errMu.Lock()
		defer errMu.Unlock()
		switch {
		case err != nil:
			res.Error = err.Error()
		case firstErr != "":
			res.Error = firstErr
		}
		return res
	}
	start := time.Now()
	for i := range n {
		select {
		case tokens <- struct{}{}:
		case <-ctx.Done():
			return finish(start, fmt.Errorf("after %d of %d publishes: %w", i, n, ctx.Err()))
		}
		if err := nc.PublishMsg(m); err != nil {
			return finish(start, fmt.Errorf("publish %d: %w", i, err))
		}
	}
	if err := nc.Flush(); err != nil {
		return finish(start, fmt.Errorf("flush: %w", err))
	}
	for last, lastChange := int64(-1), time.Now(); ; {
		select {
		case <-done:
			return finish(start, nil)
		case <-ctx.Done():
			return finish(start, fmt.Errorf("waiting for %d PubAcks: %w", int64(n)-acked.Load()-failed.Load(), ctx.Err()))
		case <-time.After(100 * time.Millisecond):
		}
		if got := acked.Load() + failed.Load(); got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > requestTimeout {
			return finish(start, fmt.Errorf("no PubAck for %v with %d of %d outstanding", requestTimeout, int64(n)-got, n))
		}
	}
}

// replyError describes a reply that is not a PubAck.
func replyError(m *nats.Msg) string {
	if s := m.Header.Get("Status"); s != "" {
		return "status " + s + " " + m.Header.Get("Description")
	}
	var e struct {
		Error struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &e) == nil && e.Error.Description != "" {
		return e.Error.Description
	}
	return fmt.Sprintf("unexpected reply %q", m.Data)
}

// errNoPlainResult is returned when a child ended or the wait ended
// before it reported its plain reference.
var errNoPlainResult = errors.New("no plain reference result from the child")
