package gateway

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
)

// checkError holds for every error a parser returns: a code from the
// catalogue and a one-line description that survives JSON and headers.
func checkError(t *testing.T, e *Error, codes ...int) {
	t.Helper()
	ok := false
	for _, c := range codes {
		ok = ok || e.Code == c
	}
	if !ok {
		t.Fatalf("code %d, want one of %v (%s)", e.Code, codes, e.Description)
	}
	if e.Description == "" || strings.ContainsAny(e.Description, "\r\n") || !utf8.ValidString(e.Description) {
		t.Fatalf("description %q is empty, multi-line or not UTF-8", e.Description)
	}
	var back ErrorResponse
	if err := json.Unmarshal(ErrorBody(e), &back); err != nil || back.Error == nil || back.Error.Code != e.Code || back.Error.Description != e.Description {
		t.Fatalf("error body %s does not round-trip: %v", ErrorBody(e), err)
	}
}

var deliverAtSeeds = []string{
	"", "0", "1", "-1", "1795255500250", "9223372036854775807", "9223372036854775808", "-0",
	"2026-11-21T10:05:00Z", "2026-11-21T10:05:00.250Z", "2026-11-21T10:05:00.2501Z",
	"2026-11-21T10:05:00.2500000000001Z", "2026-11-21T10:05:00,999999999999Z",
	"2026-11-21T11:05:00+01:00", "2026-11-21T04:35:00.250-05:30", "2026-11-21T10:05:00+24:00",
	"1969-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
	"2026-11-21T10:05:60Z", "2026-13-01T00:00:00Z", "2026-11-21 10:05:00Z", "tomorrow", "\xff",
}

func FuzzParseDeliverAt(f *testing.F) {
	for _, s := range deliverAtSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, e := ParseDeliverAt(v)
		if e != nil {
			checkError(t, e, CodeBadRequest)
			return
		}
		if got < 0 {
			t.Fatalf("ParseDeliverAt(%q) = %d, before the epoch", v, got)
		}
		if isDigits(v) {
			want, err := strconv.ParseInt(v, 10, 64)
			if err != nil || got != want {
				t.Fatalf("ParseDeliverAt(%q) = %d, want %d (%v)", v, got, want, err)
			}
			return
		}
		tm, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("ParseDeliverAt(%q) accepted what time.Parse refuses: %v", v, err)
		}
		// Rounded up to the millisecond: not early, and less than 1ms late.
		// time.Parse drops digits past the nanosecond; if any is non-zero
		// the true time is a little later than tm.
		if time.UnixMilli(got).Before(tm) {
			t.Fatalf("ParseDeliverAt(%q) = %s, before %s", v, FormatMillis(got), tm.Format(time.RFC3339Nano))
		}
		late := time.UnixMilli(got - 1)
		if late.After(tm) || (late.Equal(tm) && !subNanos(v)) {
			t.Fatalf("ParseDeliverAt(%q) = %s, not %s rounded up", v, FormatMillis(got), tm.Format(time.RFC3339Nano))
		}
	})
}

// parseUTC is ParseDeliverAt's fast path: wherever it answers, the
// answer must be what the time.Parse path gives.
func FuzzParseUTC(f *testing.F) {
	for _, s := range deliverAtSeeds {
		f.Add(s)
	}
	for _, s := range []string{"2026-02-29T00:00:00Z", "2028-02-29T23:59:59.999999999Z", "1970-01-01T00:00:00.0000001Z",
		"2026-11-21T10:05:00.Z", "2026-11-21T10:05:00.1234567890Z", "+026-11-21T10:05:00Z", "2026-11-21T10:05:00.-1Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := parseUTC(v)
		if !ok {
			return
		}
		tm, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t.Fatalf("parseUTC(%q) = %d, but time.Parse refuses it: %v", v, got, err)
		}
		want := CeilMillis(tm)
		if subNanos(v) && tm.Nanosecond()%int(time.Millisecond) == 0 {
			want++
		}
		if tm.Before(time.Unix(0, 0)) || got != want {
			t.Fatalf("parseUTC(%q) = %d, the time.Parse path gives %d (%s)", v, got, want, tm.Format(time.RFC3339Nano))
		}
	})
}

func FuzzParseDelay(f *testing.F) {
	for _, s := range []string{"", "0", "0s", "-0s", "1500ms", "5m", "24h", "1h30m", "1.5h", "250us", "250µs", "1ns", "-1s", "+5s", "5", "1d", "9999999999999h", "9223372036854775807ns", ".5s", "1e3s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, e := ParseDelay(v)
		want, err := time.ParseDuration(v)
		if e != nil {
			checkError(t, e, CodeBadRequest)
			if err == nil && want >= 0 && v != "" {
				t.Fatalf("ParseDelay(%q) refused the good duration %s: %s", v, want, e.Description)
			}
			return
		}
		if err != nil || got != want || got < 0 {
			t.Fatalf("ParseDelay(%q) = %s, time.ParseDuration = %s, %v", v, got, want, err)
		}
	})
}

func FuzzParseSchedule(f *testing.F) {
	type seed struct {
		subject, k1, v1, k2, v2 string
		body                    []byte
		now                     int64
	}
	now := testNow.UnixNano()
	for _, s := range []seed{
		{"tock.schedule.orders.remind", HeaderDeliverAt, "2026-11-21T10:05:00.250Z", "X-Trace", "t", []byte("hi"), now},
		{"tock.schedule.a", HeaderDelay, "5m", "", "", nil, now},
		{"tock.schedule.a", "tock-delay", "24h", "tock-deliver-at", "1", nil, now},
		{"tock.schedule.a", HeaderDelay, "24h0m0.000000001s", "K", "v", nil, now},
		{"tock.schedule.a", HeaderDeliverAt, "2026-11-22T10:00:00.001Z", "", "", nil, now},
		{"tock.schedule.a", HeaderDeliverAt, "2026-11-22T10:00:00.002Z", "", "", nil, now},
		{"tock.schedule.a", HeaderDeliverAt, "9223372036854775807", "", "", nil, now},
		{"tock.schedule.a", HeaderDeliverAt, "0", "", "", nil, 0},
		{"tock.schedule.a", HeaderDelay, "1s", "K", "v", make([]byte, 1007), now},
		{"tock.schedule.a", HeaderDelay, "1s", "K", "v\r\n", nil, now},
		{"tock.schedule.a..b", HeaderDelay, "1s", "", "", nil, now},
		{"tock.schedule.tock.x", HeaderDelay, "1s", "", "", nil, now},
		{"tock.schedule.$SYS.x", HeaderDelay, "1s", "", "", nil, now},
		{"tock.schedule.a.*", HeaderDelay, "1s", "", "", nil, now},
		{"tock.schedule.", HeaderDelay, "1s", "", "", nil, now},
		{"tock.cancel.x", HeaderDelay, "1s", "", "", nil, now},
		{"tock.schedule.a", "", "", "", "", nil, now},
		{"tock.schedule.a", HeaderDelay, "-1s", "", "", nil, -1},
	} {
		f.Add(s.subject, s.k1, s.v1, s.k2, s.v2, s.body, s.now)
	}
	cfg := testCfg
	f.Fuzz(func(t *testing.T, subject, k1, v1, k2, v2 string, body []byte, nowNanos int64) {
		// Any instant from 1970 to 2262: time.Unix(0, n) spans that.
		if nowNanos < 0 {
			nowNanos = -(nowNanos + 1)
		}
		now := time.Unix(0, nowNanos)
		h := nats.Header{}
		h.Add(k1, v1)
		if k2 != "" || v2 != "" {
			h.Add(k2, v2)
		}
		got, e := ParseSchedule(subject, h, body, now, cfg)
		if e != nil {
			checkError(t, e, CodeBadRequest, CodeTooLarge)
			return
		}
		if subject != PrefixSchedule+got.Target {
			t.Fatalf("target %q from subject %q", got.Target, subject)
		}
		if e := ValidateTarget(got.Target); e != nil {
			t.Fatalf("accepted an invalid target: %s", e.Description)
		}
		if got.DeliverAt < 0 {
			t.Fatalf("deliver at %d is before the epoch", got.DeliverAt)
		}
		if latest := CeilMillis(now.Add(cfg.MaxDelay)); got.DeliverAt > latest {
			t.Fatalf("deliver at %s is beyond now+MaxDelay %s", FormatMillis(got.DeliverAt), FormatMillis(latest))
		}
		if n := len(body) + HeaderSize(got.Header); n > cfg.MaxPayload {
			t.Fatalf("accepted %d bytes, over MaxPayload %d", n, cfg.MaxPayload)
		}
		var at, delay []string
		for k, vs := range h {
			switch {
			case strings.EqualFold(k, HeaderDeliverAt):
				at = append(at, vs...)
			case strings.EqualFold(k, HeaderDelay):
				delay = append(delay, vs...)
			default:
				if len(vs) > 0 && strings.Join(got.Header[k], "\x00") != strings.Join(vs, "\x00") {
					t.Fatalf("header %q = %q did not travel: %q", k, vs, got.Header[k])
				}
			}
		}
		for k := range got.Header {
			if strings.EqualFold(k, HeaderDeliverAt) || strings.EqualFold(k, HeaderDelay) {
				t.Fatalf("control header %q travels", k)
			}
		}
		switch {
		case len(at) == 1 && len(delay) == 0:
			if want, _ := ParseDeliverAt(at[0]); got.DeliverAt != want {
				t.Fatalf("deliver at %d, want %d", got.DeliverAt, want)
			}
		case len(delay) == 1 && len(at) == 0:
			d, _ := ParseDelay(delay[0])
			// Never early, less than a millisecond late.
			if due := now.Add(d); time.UnixMilli(got.DeliverAt).Before(due) || !time.UnixMilli(got.DeliverAt-1).Before(due) {
				t.Fatalf("deliver at %s for now %s + %s", FormatMillis(got.DeliverAt), now.Format(time.RFC3339Nano), d)
			}
		default:
			t.Fatalf("accepted with time headers %q and %q", at, delay)
		}
	})
}
