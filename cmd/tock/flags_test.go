package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/bench"
	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/service"
	"github.com/tockd/tock/subject"
)

// runCLI runs the whole command line as main does.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestDispatch(t *testing.T) {
	code, out, errs := runCLI(t, "")
	if code != 2 || out != "" || !strings.Contains(errs, "usage:") {
		t.Errorf("no verb: code %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = runCLI(t, "", "frobnicate", "x")
	if code != 2 || out != "" || !strings.Contains(errs, `unknown command "frobnicate"`) || !strings.Contains(errs, "usage:") {
		t.Errorf("unknown verb: code %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, errs = runCLI(t, "", args...)
		if code != 0 || errs != "" {
			t.Errorf("%v: code %d, stderr %q", args, code, errs)
		}
		for _, verb := range []string{"serve", "schedule", "cancel", "get", "watch"} {
			if !strings.Contains(out, "tock "+verb) {
				t.Errorf("%v: overview lacks %q:\n%s", args, verb, out)
			}
		}
	}
	code, out, _ = runCLI(t, "", "help", "all")
	if code != 0 || !strings.Contains(out, "-max-delay") || !strings.Contains(out, "-count") {
		t.Errorf("help all: code %d:\n%s", code, out)
	}
	code, _, errs = runCLI(t, "", "help", "nope")
	if code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("help nope: code %d, stderr %q", code, errs)
	}
	code, out, _ = runCLI(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "tock ") {
		t.Errorf("version: code %d, stdout %q", code, out)
	}
}

// Every verb prints its own usage and flags for -h and "help VERB".
func TestVerbHelp(t *testing.T) {
	for _, c := range []struct{ verb, flag string }{
		{"serve", "-max-payload"}, {"serve", "-memory-limit"}, {"schedule", "-in"}, {"cancel", "-timeout"},
		{"get", "-nats-url"}, {"watch", "-count"},
	} {
		for _, args := range [][]string{{c.verb, "-h"}, {c.verb, "--help"}, {"help", c.verb}} {
			code, out, errs := runCLI(t, "", args...)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: tock "+c.verb) || !strings.Contains(out, c.flag) {
				t.Errorf("%v: code %d, stderr %q, stdout:\n%s", args, code, errs, out)
			}
		}
		code, out, errs := runCLI(t, "", c.verb, "--no-such-flag")
		if code != 2 || out != "" || !strings.Contains(errs, "-no-such-flag") || !strings.Contains(errs, "usage: tock "+c.verb) {
			t.Errorf("%s --no-such-flag: code %d, stdout %q, stderr %q", c.verb, code, out, errs)
		}
	}
}

func TestParseArgsInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	a := fs.String("a", "", "")
	b := fs.Bool("b", false, "")
	pos, err := parseArgs(fs, []string{"one", "-a", "A", "two", "-b", "-", "--", "-a", "three"})
	if err != nil {
		t.Fatal(err)
	}
	if *a != "A" || !*b {
		t.Errorf("flags: a=%q b=%v", *a, *b)
	}
	if diff := cmp.Diff([]string{"one", "two", "-", "-a", "three"}, pos); diff != "" {
		t.Errorf("positional (-want +got):\n%s", diff)
	}
	if _, err := parseArgs(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	var ue *usageError
	if _, err := parseArgs(fs, []string{"-zz"}); !errors.As(err, &ue) {
		t.Errorf("-zz: %v", err)
	}
}

func TestParseSchedule(t *testing.T) {
	t.Setenv(envNATSURL, "")
	r, err := parseSchedule([]string{"--to", "orders.created", "--in", "2d", "-H", "X-A: 1", "--header", "X-A:2", "-H", "x-b:", "hi"})
	if err != nil {
		t.Fatal(err)
	}
	want := nats.Header{"Tock-Delay": {"48h0m0s"}, "X-A": {"1", "2"}, "x-b": {""}}
	if diff := cmp.Diff(want, r.msg.Header); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if r.msg.Subject != "tock.schedule.orders.created" || string(r.msg.Data) != "hi" || r.bodyStdin {
		t.Errorf("subject %q body %q stdin %v", r.msg.Subject, r.msg.Data, r.bodyStdin)
	}
	if r.opts.url != defaultNATSURL || r.opts.timeout != defaultTimeout {
		t.Errorf("client defaults: %q %v", r.opts.url, r.opts.timeout)
	}

	r, err = parseSchedule([]string{"-", "--to=a", "--at", "1893596645123", "--timeout", "1m", "--nats-url", "nats://h:1"})
	if err != nil {
		t.Fatal(err)
	}
	if r.msg.Header.Get(hdrDeliverAt) != "1893596645123" || r.msg.Header.Get(hdrDelay) != "" || !r.bodyStdin || len(r.msg.Data) != 0 {
		t.Errorf("got header %v body %q stdin %v", r.msg.Header, r.msg.Data, r.bodyStdin)
	}
	if r.opts.url != "nats://h:1" || r.opts.timeout != time.Minute {
		t.Errorf("client flags: %q %v", r.opts.url, r.opts.timeout)
	}

	for _, at := range []string{"2030-01-02T15:04:05Z", "2030-01-02T15:04:05.123Z", "2030-01-02T15:04:05.123456789+02:00", "0"} {
		r, err := parseSchedule([]string{"--to", "a", "--at", at})
		if err != nil || r.msg.Header.Get(hdrDeliverAt) != at {
			t.Errorf("--at %q: %v", at, err)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--in", "1s", "body"}, "--to is required"},
		{[]string{"--to", "", "--in", "1s"}, "--to is required"},
		{[]string{"--to", "a"}, "exactly one of --at and --in"},
		{[]string{"--to", "a", "--in", "1s", "--at", "2030-01-02T15:04:05Z"}, "exactly one of --at and --in"},
		{[]string{"--to", "a", "--in", "soon"}, "invalid duration"},
		{[]string{"--to", "a", "--at", "tomorrow"}, "invalid --at"},
		{[]string{"--to", "a", "--at", "2030-01-02 15:04:05"}, "invalid --at"},
		{[]string{"--to", "a", "--at", "-5"}, "invalid --at"},
		{[]string{"--to", "a.*", "--in", "1s"}, "invalid subject"},
		{[]string{"--to", "a..b", "--in", "1s"}, "invalid subject"},
		{[]string{"--to", "a b", "--in", "1s"}, "invalid subject"},
		{[]string{"--to", "a", "--in", "1s", "one", "two"}, "more than one BODY"},
		{[]string{"--to", "a", "--in", "1s", "-H", "novalue"}, "want KEY:VALUE"},
		{[]string{"--to", "a", "--in", "1s", "-H", ":v"}, "want KEY:VALUE"},
		{[]string{"--to", "a", "--in", "1s", "-H", "bad key:v"}, "invalid header name"},
		{[]string{"--to", "a", "--in", "1s", "-H", "tock-delay: 5s"}, "with --at or --in"},
		{[]string{"--to", "a", "--in", "1s", "-H", "Tock-Deliver-At:0"}, "with --at or --in"},
		{[]string{"--to", "a", "--in", "1s", "--timeout", "x"}, "invalid duration"},
	} {
		_, err := parseSchedule(tc.args)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want a usage error with %q", tc.args, err, tc.want)
		}
		// The same through the command line: status 2, the reason and the synopsis.
		code, out, errs := runCLI(t, "", append([]string{"schedule"}, tc.args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, tc.want) || !strings.Contains(errs, "usage: tock schedule --to SUBJECT") {
			t.Errorf("tock schedule %q: code %d, stdout %q, stderr %q", tc.args, code, out, errs)
		}
	}
}

func TestParseIDAndWatchErrors(t *testing.T) {
	for _, args := range [][]string{
		{"cancel"},
		{"cancel", "a", "b"},
		{"cancel", "not-an-id"},
		{"get", "tock.>"},
		{"get", "--timeout", "-"},
		{"watch"},
		{"watch", "a", "b"},
		{"watch", "--count", "-1", "a"},
		{"watch", "--for", "never", "a"},
	} {
		code, out, errs := runCLI(t, "", args...)
		if code != 2 || out != "" || !strings.Contains(errs, "usage: tock "+args[0]) {
			t.Errorf("%q: code %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
}

func TestParseServe(t *testing.T) {
	o, err := parseServe(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := service.Config{
		DataDir:    service.DefaultDataDir,
		Listen:     service.DefaultListen,
		MaxDelay:   service.DefaultMaxDelay,
		MaxPayload: service.DefaultMaxPayload,
		Retention:  service.DefaultRetention,
		SlotWidth:  service.DefaultSlotWidth,
		Horizon:    service.DefaultHorizon,
		SlotMemory: service.DefaultSlotMemory, MaxLookupSlots: actors.DefaultMaxLookupSlots,
		MaxInFlight: service.DefaultMaxInFlight, MaxInFlightBytes: service.DefaultMaxInFlightBytes,
		DeliveryMaxAttempts: -1, DeliveryMaxAge: service.DefaultDeliveryMaxAge, DeadRetention: service.DefaultDeadRetention,
	}
	if diff := cmp.Diff(want, o.cfg, allowByText); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if o.cfg.MaxDelay != 8760*time.Hour || o.cfg.MaxPayload != 524288 || o.cfg.Retention != 72*time.Hour ||
		o.cfg.SlotWidth != time.Minute || o.cfg.Horizon != 10*time.Second {
		t.Errorf("defaults differ from the documented ones: %+v", o.cfg)
	}
	if o.logLevel != slog.LevelInfo || o.logFormat != "text" || o.pprofAddr != "" || o.shutdownTimeout != 10*time.Second || o.gcPercent != 400 ||
		o.memoryLimit != 0 {
		t.Errorf("defaults: %+v", o)
	}

	o, err = parseServe([]string{
		"--data", "/var/lib/tock", "--nats-listen", "0.0.0.0:-1", "--max-delay", "30d",
		"--max-payload", "1MiB", "--retention", "1d12h", "--slot-width", "30s", "--horizon", "2s",
		"--log-level", "debug", "--log-format", "json", "--pprof", "127.0.0.1:6060", "--shutdown-timeout", "3s",
		"--sync", "always", "--gc-percent", "150", "--memory-limit", "768MiB", "--slot-memory", "64MiB", "--max-lookup-slots", "8",
		"--allow-targets", "orders.>, audit.*", "--max-inflight", "100", "--max-inflight-bytes", "0",
		"--delivery-max-attempts", "5", "--delivery-max-age", "0", "--dlq-retention", "7d",
		"--dead-letter", "ORDERS:workers", "--dead-letter", "AUDIT:readers", "--dead-letter", "ORDERS:workers",
	})
	if err != nil {
		t.Fatal(err)
	}
	want = service.Config{
		DataDir: "/var/lib/tock", Listen: "0.0.0.0:-1", MaxDelay: 30 * 24 * time.Hour, MaxPayload: 1 << 20,
		Retention: 36 * time.Hour, SlotWidth: 30 * time.Second, Horizon: 2 * time.Second, SyncAlways: true,
		SlotMemory: 64 << 20, MaxLookupSlots: 8, AllowTargets: mustAllow(t, "orders.>,audit.*"), MaxInFlight: 100, MaxInFlightBytes: -1,
		DeliveryMaxAttempts: 5, DeliveryMaxAge: -1, DeadRetention: 7 * 24 * time.Hour,
		DeadLetters: []deadletter.Source{{Stream: "ORDERS", Consumer: "workers"}, {Stream: "AUDIT", Consumer: "readers"}},
	}
	if diff := cmp.Diff(want, o.cfg, allowByText); diff != "" {
		t.Errorf("flags (-want +got):\n%s", diff)
	}
	if o.logLevel != slog.LevelDebug || o.logFormat != "json" || o.pprofAddr != "127.0.0.1:6060" || o.shutdownTimeout != 3*time.Second || o.gcPercent != 150 ||
		o.memoryLimit != 768<<20 || !o.set["memory-limit"] {
		t.Errorf("flags: %+v", o)
	}

	o, err = parseServe([]string{"--nats-url", "nats://nats:4222", "--max-payload=512kB", "--log-level=WARN"})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.NATSURL != "nats://nats:4222" || o.cfg.MaxPayload != 512000 || o.logLevel != slog.LevelWarn {
		t.Errorf("got %+v", o)
	}
	if !o.set["nats-url"] || o.set["data"] {
		t.Errorf("set = %v", o.set)
	}
}

// allowByText compares allow-lists by what they allow, as written.
var allowByText = cmp.Comparer(func(a, b subject.Allow) bool { return a.String() == b.String() })

func mustAllow(t *testing.T, list string) subject.Allow {
	t.Helper()
	a, err := subject.ParseAllow(list)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// --bench-plain is a bench aid: parsed, but not in `tock help serve`.
func TestServeBenchAidHidden(t *testing.T) {
	o, err := parseServe([]string{"--bench-plain", "n=10,window=4,size=8,conn=pipe"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (bench.PlainSpec{N: 10, Window: 4, Size: 8, Pipe: true}); o.benchPlain != want {
		t.Errorf("--bench-plain = %+v, want %+v", o.benchPlain, want)
	}
	if o, _ := parseServe(nil); o.benchPlain.N != 0 {
		t.Errorf("bench aid on by default: %+v", o.benchPlain)
	}
	code, out, _ := runCLI(t, "", "help", "serve")
	if code != 0 || strings.Contains(out, "bench-plain") {
		t.Errorf("help serve lists the bench aid (code %d):\n%s", code, out)
	}
	if code, _, errs := runCLI(t, "", "serve", "--bench-plain", "n=0"); code != 2 || !strings.Contains(errs, "bench-plain") {
		t.Errorf("--bench-plain n=0: code %d, stderr %q", code, errs)
	}
}

func TestParseServeErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-delay", "0"}, "--max-delay must be positive"},
		{[]string{"--max-delay", "-1d"}, "--max-delay must be positive"},
		{[]string{"--retention", "1y"}, "invalid duration"},
		{[]string{"--slot-width", "0s"}, "--slot-width must be positive"},
		{[]string{"--horizon", "-1s"}, "--horizon must be positive"},
		{[]string{"--max-payload", "0"}, "--max-payload must be positive"},
		{[]string{"--max-payload", "big"}, "invalid size"},
		{[]string{"--log-level", "loud"}, "log-level"},
		{[]string{"--log-format", "xml"}, "want text or json"},
		{[]string{"--sync", "sometimes"}, "want interval or always"},
		{[]string{"--gc-percent", "0"}, "--gc-percent must be positive"},
		{[]string{"--memory-limit", "-1"}, "invalid size"},
		{[]string{"--memory-limit", "lots"}, "invalid size"},
		{[]string{"--nats-listen", "4222"}, "want host:port"},
		{[]string{"--data", ""}, "--data must not be empty"},
		{[]string{"--max-inflight", "-1"}, "must not be negative"},
		{[]string{"--delivery-max-attempts", "-2"}, "must not be negative"},
		{[]string{"--dlq-retention", "0"}, "--dlq-retention must be positive"},
		{[]string{"--dead-letter", "ORDERS"}, "want STREAM:CONSUMER"},
		{[]string{"--dead-letter", "ORD.ERS:workers"}, `"ORD.ERS:workers"`},
		{[]string{"--allow-targets", "orders..x"}, `allowed target pattern "orders..x": empty token`},
		{[]string{"--allow-targets", "tock.>"}, "tock's own subjects"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		_, err := parseServe(tc.args)
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want a usage error with %q", tc.args, err, tc.want)
		}
		code, _, errs := runCLI(t, "", append([]string{"serve"}, tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("tock serve %q: code %d, stderr %q", tc.args, code, errs)
		}
	}
}

// --slot-memory 0 means no bound, which the service spells as negative
// (its zero is the default).
func TestParseServeSlotMemoryUnbounded(t *testing.T) {
	o, err := parseServe([]string{"--slot-memory", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.SlotMemory >= 0 {
		t.Errorf("--slot-memory 0 gave %d, want a negative (no bound)", o.cfg.SlotMemory)
	}
}

func TestParseRedrive(t *testing.T) {
	id := "000038hodbej06h3gqmp8s0001nv1vtg60sh94o"
	_, m, err := parseRedrive([]string{id})
	if err != nil || m.Subject != "tock.redrive."+id || len(m.Header) != 0 {
		t.Fatalf("plain: %v %v", m, err)
	}
	_, m, err = parseRedrive([]string{"--in", "2d", id})
	if err != nil || m.Header.Get("Tock-Delay") != "48h0m0s" {
		t.Fatalf("--in: %v %v", m, err)
	}
	_, m, err = parseRedrive([]string{id, "--at", "2030-01-02T15:04:05Z"})
	if err != nil || m.Header.Get("Tock-Deliver-At") != "2030-01-02T15:04:05Z" {
		t.Fatalf("--at: %v %v", m, err)
	}
	for _, args := range [][]string{{}, {id, id}, {"nope"}, {"--at", "x", id}, {"--in", "-1s", id}, {"--at", "1", "--in", "1s", id}} {
		if _, _, err := parseRedrive(args); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}
