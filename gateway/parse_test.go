package gateway

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/subject"
)

// testNow has a sub-millisecond part so rounding up shows.
var testNow = time.Date(2026, 11, 21, 10, 0, 0, 250_000, time.UTC) // 10:00:00.000250Z

var testCfg = Config{MaxDelay: 24 * time.Hour, MaxPayload: 1024, Version: "1.2.3"}

// ms is an exact RFC 3339 time in Unix milliseconds.
func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func bad(desc string) *Error { return &Error{Code: CodeBadRequest, Description: desc} }

const (
	wantAtForm    = `want RFC 3339 (e.g. 2026-11-21T10:05:00.250Z) or Unix milliseconds`
	notAtForm     = `is not RFC 3339 (e.g. 2026-11-21T10:05:00.250Z) or Unix milliseconds`
	notDelayForm  = `is not a Go duration such as 1500ms, 5m or 24h, or is out of range`
	missingHeader = `missing time header: set exactly one of Tock-Deliver-At (RFC 3339 or Unix ms) or Tock-Delay (Go duration)`
)

func TestParseDeliverAt(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr *Error
	}{
		{in: "2026-11-21T10:05:00Z", want: ms("2026-11-21T10:05:00Z")},
		{in: "2026-11-21T10:05:00.250Z", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "2026-11-21T10:05:00.25Z", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "2026-11-21T10:05:00.250000000000Z", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "2026-11-21T10:05:00,250Z", want: ms("2026-11-21T10:05:00.250Z")}, // time.Parse takes a comma too
		// Rounded up to a whole millisecond: never early.
		{in: "2026-11-21T10:05:00.2501Z", want: ms("2026-11-21T10:05:00.251Z")},
		{in: "2026-11-21T10:05:00.250000001Z", want: ms("2026-11-21T10:05:00.251Z")},
		{in: "2026-11-21T10:05:00.2500000000001Z", want: ms("2026-11-21T10:05:00.251Z")}, // below a nanosecond
		{in: "2026-11-21T10:05:00.999999Z", want: ms("2026-11-21T10:05:01Z")},
		// Offsets.
		{in: "2026-11-21T11:05:00+01:00", want: ms("2026-11-21T10:05:00Z")},
		{in: "2026-11-21T04:35:00.250-05:30", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "2026-11-21T10:05:00-00:00", want: ms("2026-11-21T10:05:00Z")},
		// Unix milliseconds.
		{in: "1795255500250", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "0001795255500250", want: ms("2026-11-21T10:05:00.250Z")},
		{in: "0", want: 0},
		{in: "9223372036854775807", want: 9223372036854775807},
		// The past passes through.
		{in: "1970-01-01T00:00:00Z", want: 0},
		{in: "2000-01-01T00:00:00.001Z", want: 946684800001},
		{in: "946684800001", want: 946684800001},

		{in: "", wantErr: bad(`Tock-Deliver-At "" is empty: ` + wantAtForm)},
		{in: "tomorrow", wantErr: bad(`Tock-Deliver-At "tomorrow" ` + notAtForm)},
		{in: "2026-11-21 10:05:00Z", wantErr: bad(`Tock-Deliver-At "2026-11-21 10:05:00Z" ` + notAtForm)},
		{in: "2026-11-21T10:05:00", wantErr: bad(`Tock-Deliver-At "2026-11-21T10:05:00" ` + notAtForm)},
		{in: "2026-11-21T10:05Z", wantErr: bad(`Tock-Deliver-At "2026-11-21T10:05Z" ` + notAtForm)},
		{in: "2026-11-21", wantErr: bad(`Tock-Deliver-At "2026-11-21" ` + notAtForm)},
		{in: "2026-11-21T10:05:60Z", wantErr: bad(`Tock-Deliver-At "2026-11-21T10:05:60Z" ` + notAtForm + ` (second out of range)`)},
		{in: "2026-13-01T00:00:00Z", wantErr: bad(`Tock-Deliver-At "2026-13-01T00:00:00Z" ` + notAtForm + ` (month out of range)`)},
		{in: "2026-02-30T00:00:00Z", wantErr: bad(`Tock-Deliver-At "2026-02-30T00:00:00Z" ` + notAtForm + ` (day out of range)`)},
		{in: " 1795255500250", wantErr: bad(`Tock-Deliver-At " 1795255500250" ` + notAtForm)},
		{in: "+1795255500250", wantErr: bad(`Tock-Deliver-At "+1795255500250" ` + notAtForm)},
		{in: "1.7e12", wantErr: bad(`Tock-Deliver-At "1.7e12" ` + notAtForm)},
		{in: "-1", wantErr: bad(`Tock-Deliver-At "-1" is before the Unix epoch`)},
		{in: "1969-12-31T23:59:59.999Z", wantErr: bad(`Tock-Deliver-At "1969-12-31T23:59:59.999Z" is before the Unix epoch`)},
		{in: "0000-01-01T00:00:00Z", wantErr: bad(`Tock-Deliver-At "0000-01-01T00:00:00Z" is before the Unix epoch`)},
		{in: "9223372036854775808", wantErr: bad(`Tock-Deliver-At "9223372036854775808" is out of range as Unix milliseconds`)},
		{in: "\n\xff", wantErr: bad(`Tock-Deliver-At "\n\xff" ` + notAtForm)},
		{
			in:      "2026-11-21T10:05:00.250Z-and-a-long-tail-that-goes-on-and-on-and-on",
			wantErr: bad(`Tock-Deliver-At "2026-11-21T10:05:00.250Z-and-a-long-tail-that-goes-on-and-on-and"… ` + notAtForm),
		},
	}
	for _, tt := range tests {
		got, gotErr := ParseDeliverAt(tt.in)
		if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
			t.Errorf("ParseDeliverAt(%q) error (-want +got):\n%s", tt.in, diff)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDeliverAt(%q) = %d (%s), want %d (%s)", tt.in, got, FormatMillis(got), tt.want, FormatMillis(tt.want))
		}
	}
}

func TestParseDelay(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr *Error
	}{
		{in: "1500ms", want: 1500 * time.Millisecond},
		{in: "5m", want: 5 * time.Minute},
		{in: "24h", want: 24 * time.Hour},
		{in: "1h30m10s", want: time.Hour + 30*time.Minute + 10*time.Second},
		{in: "1.5s", want: 1500 * time.Millisecond},
		{in: "250us", want: 250 * time.Microsecond},
		{in: "250µs", want: 250 * time.Microsecond},
		{in: "1ns", want: 1},
		{in: "0", want: 0},
		{in: "0s", want: 0},
		{in: "-0s", want: 0},
		{in: "+5s", want: 5 * time.Second},

		{in: "", wantErr: bad(`Tock-Delay "" is empty: want a Go duration such as 1500ms, 5m or 24h`)},
		{in: "-1s", wantErr: bad(`Tock-Delay "-1s" is negative`)},
		{in: "-1ns", wantErr: bad(`Tock-Delay "-1ns" is negative`)},
		{in: "5", wantErr: bad(`Tock-Delay "5" has no unit: want a Go duration such as 1500ms, 5m or 24h`)},
		{in: "1d", wantErr: bad(`Tock-Delay "1d" has an unknown unit: want ns, us, ms, s, m or h`)},
		{in: "5 m", wantErr: bad(`Tock-Delay "5 m" has an unknown unit: want ns, us, ms, s, m or h`)},
		{in: "abc", wantErr: bad(`Tock-Delay "abc" ` + notDelayForm)},
		{in: "9999999999999h", wantErr: bad(`Tock-Delay "9999999999999h" ` + notDelayForm)},
		{in: "2026-11-21T10:05:00Z", wantErr: bad(`Tock-Delay "2026-11-21T10:05:00Z" has an unknown unit: want ns, us, ms, s, m or h`)},
	}
	for _, tt := range tests {
		got, gotErr := ParseDelay(tt.in)
		if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
			t.Errorf("ParseDelay(%q) error (-want +got):\n%s", tt.in, diff)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDelay(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestValidateTarget(t *testing.T) {
	tests := []struct {
		in   string
		want *Error // nil: valid
	}{
		{in: "orders"},
		{in: "orders.remind"},
		{in: "a.b.c.d.e"},
		{in: "_INBOXES.abc"},
		{in: "x._INBOX.abc"},
		{in: "tockx.a"},
		{in: "a.tock"},
		{in: "a.tock.b"},
		{in: "Tock.a"}, // subjects are case-sensitive: only tock.> is tock's
		{in: "a$b.c"},
		{in: "a.$b"},
		{in: "ü.ñ.日本"},
		{in: "a-b_c.1:2"},

		{in: "", want: bad(`invalid target "": empty subject`)},
		{in: ".", want: bad(`invalid target ".": empty token`)},
		{in: "a..b", want: bad(`invalid target "a..b": empty token`)},
		{in: "a.", want: bad(`invalid target "a.": empty token`)},
		{in: ".a", want: bad(`invalid target ".a": empty token`)},
		{in: "*", want: bad(`invalid target "*": wildcards (* and >) are not allowed`)},
		{in: ">", want: bad(`invalid target ">": wildcards (* and >) are not allowed`)},
		{in: "a.*", want: bad(`invalid target "a.*": wildcards (* and >) are not allowed`)},
		{in: "a.>", want: bad(`invalid target "a.>": wildcards (* and >) are not allowed`)},
		{in: "a*b", want: bad(`invalid target "a*b": wildcards (* and >) are not allowed`)},
		{in: "a.b>", want: bad(`invalid target "a.b>": wildcards (* and >) are not allowed`)},
		{in: "a b", want: bad(`invalid target "a b": whitespace is not allowed`)},
		{in: "a\tb", want: bad(`invalid target "a\tb": whitespace is not allowed`)},
		{in: "a\r\nb", want: bad(`invalid target "a\r\nb": whitespace is not allowed`)},
		{in: "a\u00a0b", want: bad(`invalid target "a\u00a0b": whitespace is not allowed`)},
		{in: "a\x00b", want: bad(`invalid target "a\x00b": control characters are not allowed`)},
		{in: "a\x7fb", want: bad(`invalid target "a\x7fb": control characters are not allowed`)},
		{in: "a\xffb", want: bad(`invalid target "a\xffb": not valid UTF-8`)},
		{in: "$JS.API.INFO", want: bad(`invalid target "$JS.API.INFO": $-prefixed system subjects are not allowed`)},
		{in: "$SYS", want: bad(`invalid target "$SYS": $-prefixed system subjects are not allowed`)},
		{in: "$SRV.PING", want: bad(`invalid target "$SRV.PING": $-prefixed system subjects are not allowed`)},
		{in: "tock", want: bad(`invalid target "tock": tock's own subjects (tock.>) are not allowed`)},
		{in: "tock.schedule.x", want: bad(`invalid target "tock.schedule.x": tock's own subjects (tock.>) are not allowed`)},
		{in: "tock.journal.5", want: bad(`invalid target "tock.journal.5": tock's own subjects (tock.>) are not allowed`)},
		{in: "_INBOX.abc", want: bad(`invalid target "_INBOX.abc": reply subjects (_INBOX.>) are not allowed`)},
		{in: "_R_.abc.x", want: bad(`invalid target "_R_.abc.x": reply subjects (_R_.>) are not allowed`)},
		{in: "_GR_.abc.x", want: bad(`invalid target "_GR_.abc.x": reply subjects (_GR_.>) are not allowed`)},
		{in: "_TOCK.abc.1", want: bad(`invalid target "_TOCK.abc.1": tock's inboxes (_TOCK.>) are not allowed`)},
		{in: "orders.\u202eesolc", want: bad(`invalid target "orders.\u202eesolc": Unicode format characters (bidi controls, zero-width characters) are not allowed`)},
		{in: "pay\u200bments.x", want: bad(`invalid target "pay\u200bments.x": Unicode format characters (bidi controls, zero-width characters) are not allowed`)},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ValidateTarget(tt.in)); diff != "" {
			t.Errorf("ValidateTarget(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseSchedule(t *testing.T) {
	at := func(v string) nats.Header { return nats.Header{HeaderDeliverAt: {v}} }
	delay := func(v string) nats.Header { return nats.Header{HeaderDelay: {v}} }
	tests := []struct {
		name    string
		subject string
		header  nats.Header
		body    []byte
		cfg     *Config // testCfg if nil
		want    actors.ScheduleRequest
		wantErr *Error
	}{
		{
			name:    "deliver at RFC 3339",
			subject: "tock.schedule.orders.remind",
			header:  at("2026-11-21T10:05:00.250Z"),
			body:    []byte("hi"),
			want:    actors.ScheduleRequest{Target: "orders.remind", DeliverAt: ms("2026-11-21T10:05:00.250Z"), Body: []byte("hi")},
		},
		{
			name:    "deliver at Unix ms",
			subject: "tock.schedule.a",
			header:  at("1795255500250"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: 1795255500250},
		},
		{
			name:    "deliver at rounded up",
			subject: "tock.schedule.a",
			header:  at("2026-11-21T10:05:00.2500001Z"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:05:00.251Z")},
		},
		{
			name:    "deliver at in the past passes through",
			subject: "tock.schedule.a",
			header:  at("2020-01-01T00:00:00Z"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2020-01-01T00:00:00Z")},
		},
		{
			name:    "deliver at the limit",
			subject: "tock.schedule.a",
			header:  at("2026-11-22T10:00:00.001Z"), // now+24h = 10:00:00.000250, rounded up
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-22T10:00:00.001Z")},
		},
		{
			name:    "delay rounded up from now",
			subject: "tock.schedule.a",
			header:  delay("5m"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:05:00.001Z")},
		},
		{
			name:    "delay of whole nanos",
			subject: "tock.schedule.a",
			header:  delay("749us"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:00:00.001Z")},
		},
		{
			name:    "delay 750us lands on a whole ms",
			subject: "tock.schedule.a",
			header:  delay("750us"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:00:00.001Z")},
		},
		{
			name:    "zero delay",
			subject: "tock.schedule.a",
			header:  delay("0s"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:00:00.001Z")},
		},
		{
			name:    "delay of exactly MaxDelay",
			subject: "tock.schedule.a",
			header:  delay("24h"),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-22T10:00:00.001Z")},
		},
		{
			name:    "other headers travel, control headers do not",
			subject: "tock.schedule.a.b",
			header: nats.Header{
				HeaderDelay: {"1s"},
				"X-Trace":   {"t1"},
				"Multi":     {"1", "2"},
				"X-Dedupe":  {"dedupe-1"},
				"Empty":     {""},
				"No-Values": {},
			},
			body: []byte(`{"x":1}`),
			want: actors.ScheduleRequest{
				Target:    "a.b",
				DeliverAt: ms("2026-11-21T10:00:01.001Z"),
				Header: journal.Header{
					"X-Trace":  {"t1"},
					"Multi":    {"1", "2"},
					"X-Dedupe": {"dedupe-1"},
					"Empty":    {""},
				},
				Body: []byte(`{"x":1}`),
			},
		},
		{
			name:    "control headers match in any case",
			subject: "tock.schedule.a",
			header:  nats.Header{"tock-delay": {"1s"}, "X-TOCK-DELIVER-AT": {"y"}},
			want: actors.ScheduleRequest{
				Target: "a", DeliverAt: ms("2026-11-21T10:00:01.001Z"),
				Header: journal.Header{"X-TOCK-DELIVER-AT": {"y"}},
			},
		},
		{
			name:    "body exactly MaxPayload",
			subject: "tock.schedule.a",
			header:  delay("1s"),
			body:    make([]byte, 1024),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:00:01.001Z"), Body: make([]byte, 1024)},
		},
		{
			name:    "body plus header exactly MaxPayload",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, "K": {"v"}}, // "NATS/1.0\r\n" + "K: v\r\n" + "\r\n" = 18
			body:    make([]byte, 1024-18),
			want: actors.ScheduleRequest{
				Target: "a", DeliverAt: ms("2026-11-21T10:00:01.001Z"),
				Header: journal.Header{"K": {"v"}}, Body: make([]byte, 1024-18),
			},
		},

		// Errors.
		{
			name:    "not a schedule subject",
			subject: "tock.cancel.x",
			header:  delay("1s"),
			wantErr: bad(`invalid target "tock.cancel.x": subject is not under tock.schedule.`),
		},
		{
			name:    "no target",
			subject: "tock.schedule.",
			header:  delay("1s"),
			wantErr: bad(`invalid target "": empty subject`),
		},
		{
			name:    "target checked first",
			subject: "tock.schedule.tock.get.x",
			wantErr: bad(`invalid target "tock.get.x": tock's own subjects (tock.>) are not allowed`),
		},
		{
			name:    "empty token",
			subject: "tock.schedule.a..b",
			header:  delay("1s"),
			wantErr: bad(`invalid target "a..b": empty token`),
		},
		{
			name:    "missing time header",
			subject: "tock.schedule.a",
			header:  nats.Header{"X": {"1"}},
			wantErr: bad(missingHeader),
		},
		{
			name:    "no headers at all",
			subject: "tock.schedule.a",
			wantErr: bad(missingHeader),
		},
		{
			name:    "time header without values",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {}},
			wantErr: bad(missingHeader),
		},
		{
			name:    "both time headers",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, HeaderDeliverAt: {"1795255500250"}},
			wantErr: bad(`both Tock-Deliver-At and Tock-Delay are set; set exactly one`),
		},
		{
			name:    "both time headers, odd case",
			subject: "tock.schedule.a",
			header:  nats.Header{"TOCK-DELAY": {"1s"}, "tock-deliver-at": {"1795255500250"}},
			wantErr: bad(`both Tock-Deliver-At and Tock-Delay are set; set exactly one`),
		},
		{
			name:    "Tock-Delay twice",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s", "2s"}},
			wantErr: bad(`Tock-Delay is set 2 times; set it once`),
		},
		{
			name:    "Tock-Deliver-At twice in two cases",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDeliverAt: {"1"}, "tock-deliver-at": {"1"}},
			wantErr: bad(`Tock-Deliver-At is set 2 times; set it once`),
		},
		{
			name:    "unparsable Tock-Deliver-At",
			subject: "tock.schedule.a",
			header:  at("next tuesday"),
			wantErr: bad(`Tock-Deliver-At "next tuesday" ` + notAtForm),
		},
		{
			name:    "unparsable Tock-Delay",
			subject: "tock.schedule.a",
			header:  delay("soon"),
			wantErr: bad(`Tock-Delay "soon" ` + notDelayForm),
		},
		{
			name:    "negative Tock-Delay",
			subject: "tock.schedule.a",
			header:  delay("-5m"),
			wantErr: bad(`Tock-Delay "-5m" is negative`),
		},
		{
			name:    "deliver at beyond MaxDelay",
			subject: "tock.schedule.a",
			header:  at("2026-11-22T10:00:00.002Z"),
			wantErr: bad(`Tock-Deliver-At "2026-11-22T10:00:00.002Z" is beyond the maximum delay of 1d from now (latest 2026-11-22T10:00:00.001Z)`),
		},
		{
			name:    "deliver at far beyond MaxDelay",
			subject: "tock.schedule.a",
			header:  at("9223372036854775807"),
			wantErr: bad(`Tock-Deliver-At "9223372036854775807" is beyond the maximum delay of 1d from now (latest 2026-11-22T10:00:00.001Z)`),
		},
		{
			name:    "delay beyond MaxDelay",
			subject: "tock.schedule.a",
			header:  delay("24h0m0.000000001s"),
			wantErr: bad(`Tock-Delay "24h0m0.000000001s" is beyond the maximum delay of 1d`),
		},
		{
			name:    "body over MaxPayload",
			subject: "tock.schedule.a",
			header:  delay("1s"),
			body:    make([]byte, 1025),
			wantErr: &Error{Code: CodeTooLarge, Description: "message is 1025 bytes (1025 body + 0 header), over the limit of 1024 bytes"},
		},
		{
			name:    "body plus header over MaxPayload",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, "K": {"v"}},
			body:    make([]byte, 1024-17),
			wantErr: &Error{Code: CodeTooLarge, Description: "message is 1025 bytes (1007 body + 18 header), over the limit of 1024 bytes"},
		},
		{
			name:    "control headers do not count",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}},
			body:    make([]byte, 1024),
			want:    actors.ScheduleRequest{Target: "a", DeliverAt: ms("2026-11-21T10:00:01.001Z"), Body: make([]byte, 1024)},
		},
		{
			name:    "header value with CR LF",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, "X": {"a\r\nInjected: 1"}},
			wantErr: bad(`invalid header "X": value holds CR or LF`),
		},
		{
			name:    "header name with colon",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, "X:Y": {"1"}},
			wantErr: bad(`invalid header "X:Y": name holds ':', CR or LF`),
		},
		{
			name:    "empty header name",
			subject: "tock.schedule.a",
			header:  nats.Header{HeaderDelay: {"1s"}, "": {"1"}},
			wantErr: bad(`invalid header "": empty name`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testCfg
			if tt.cfg != nil {
				cfg = *tt.cfg
			}
			got, gotErr := ParseSchedule(tt.subject, tt.header, tt.body, testNow, cfg)
			if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
				t.Fatalf("error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseScheduleCopiesHeaderValues(t *testing.T) {
	h := nats.Header{HeaderDelay: {"1s"}, "X": {"a"}}
	got, e := ParseSchedule("tock.schedule.a", h, nil, testNow, testCfg)
	if e != nil {
		t.Fatal(e)
	}
	h["X"][0] = "changed"
	if got.Header["X"][0] != "a" {
		t.Errorf("ScheduleRequest.Header aliases the request's header values")
	}
}

func TestParseID(t *testing.T) {
	id, e := ParseID(testID.String())
	if e != nil || id != testID {
		t.Fatalf("ParseID(%s) = %v, %v", testID, id, e)
	}
	for _, in := range []string{"", "x", "*", testID.String() + "0", testID.String()[1:], "ZZZZZZZZZZZZZZZZZZZZZZZZZZ", testID.String()[:25] + "1"} {
		_, e := ParseID(in)
		want := &Error{Code: CodeNotFound, Description: "no message with id " + quote(in)}
		if diff := cmp.Diff(want, e); diff != "" {
			t.Errorf("ParseID(%q) (-want +got):\n%s", in, diff)
		}
	}
}

func TestFormatMillis(t *testing.T) {
	for in, want := range map[int64]string{
		0:                                   "1970-01-01T00:00:00.000Z",
		ms("2026-11-21T10:05:00.250Z"):      "2026-11-21T10:05:00.250Z",
		ms("2026-11-21T10:05:00Z"):          "2026-11-21T10:05:00.000Z",
		ms("2026-11-21T11:05:00.007+01:00"): "2026-11-21T10:05:00.007Z",
	} {
		if got := FormatMillis(in); got != want {
			t.Errorf("FormatMillis(%d) = %s, want %s", in, got, want)
		}
	}
}

func TestHeaderSize(t *testing.T) {
	for _, tt := range []struct {
		h    map[string][]string
		want int
	}{
		{nil, 0},
		{map[string][]string{}, 0},
		{map[string][]string{"K": {}}, 0},
		{map[string][]string{"K": {"v"}}, len("NATS/1.0\r\nK: v\r\n\r\n")},
		{map[string][]string{"K": {"v", "w"}, "Long": {""}}, len("NATS/1.0\r\nK: v\r\nK: w\r\nLong: \r\n\r\n")},
	} {
		if got := HeaderSize(tt.h); got != tt.want {
			t.Errorf("HeaderSize(%v) = %d, want %d", tt.h, got, tt.want)
		}
	}
}

// Deliver times as clients format them take parseUTC's fast path; its
// answers must equal the time.Parse path's for every fraction length.
func TestParseUTCMatchesTimeParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		ns := rng.Int64N(math.MaxInt64) // 1970 to 2262, any nanosecond
		switch i % 3 {
		case 1:
			ns -= ns % int64(time.Millisecond)
		case 2:
			ns -= ns % int64(time.Second)
		}
		tm := time.Unix(0, ns).UTC()
		for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04:05.000Z", "2006-01-02T15:04:05.000000000Z", "2006-01-02T15:04:05.0Z"} {
			v := tm.Format(layout)
			got, ok := parseUTC(v)
			if !ok {
				t.Fatalf("parseUTC(%q) declined", v)
			}
			pt, err := time.Parse(time.RFC3339, v)
			if err != nil || got != CeilMillis(pt) {
				t.Fatalf("parseUTC(%q) = %d, time.Parse path %d (%v)", v, got, CeilMillis(pt), err)
			}
		}
	}
}

// TestReservedHeaders is docs/SECURITY.md's header table: each reserved
// name, in any case, is refused with 400 and says why; application
// headers that merely look alike travel.
func TestReservedHeaders(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	refused := map[string]string{
		"Nats-Msg-Id":                 "Nats-* headers are reserved by NATS",
		"nats-msg-id":                 "Nats-* headers are reserved by NATS",
		"Nats-Expected-Stream":        "Nats-* headers are reserved by NATS",
		"Nats-Expected-Last-Sequence": "Nats-* headers are reserved by NATS",
		"Nats-Expected-Last-Msg-Id":   "Nats-* headers are reserved by NATS",
		"Nats-Rollup":                 "Nats-* headers are reserved by NATS",
		"Nats-TTL":                    "Nats-* headers are reserved by NATS",
		"Nats-Schedule":               "Nats-* headers are reserved by NATS",
		"Nats-Incr":                   "Nats-* headers are reserved by NATS",
		"Nats-Batch-Id":               "Nats-* headers are reserved by NATS",
		"NATS-REQUIRED-API-LEVEL":     "Nats-* headers are reserved by NATS",
		"Nats-Service-Error-Code":     "Nats-* headers are reserved by NATS",
		"Tock-Id":                     "Tock-* headers other than",
		"tock-id":                     "Tock-* headers other than",
		"Tock-Retries":                "Tock-* headers other than",
		"Status":                      "status replies",
		"status":                      "status replies",
		"Description":                 "status replies",
		"KV-Operation":                "key-value",
	}
	for k, why := range refused {
		_, e := ParseSchedule("tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, k: {"x"}}, nil, now, testCfg)
		if e == nil || e.Code != CodeBadRequest || !strings.Contains(e.Description, why) || !strings.Contains(e.Description, strconv.Quote(k)) {
			t.Errorf("header %q: got %v, want 400 naming it and saying %q", k, e, why)
		}
	}
	travels := nats.Header{HeaderDelay: {"1s"}, "Natsy": {"1"}, "X-Nats-Msg-Id": {"1"}, "Tocker": {"1"}, "Statuses": {"1"}, "Content-Type": {"text/plain"}}
	req, e := ParseSchedule("tock.schedule.a", travels, nil, now, testCfg)
	if e != nil {
		t.Fatalf("application headers refused: %v", e)
	}
	if len(req.Header) != len(travels)-1 {
		t.Fatalf("headers that travel: %v", req.Header)
	}
}

func TestAllowTargets(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	cfg := testCfg
	var err error
	if cfg.AllowTargets, err = subject.ParseAllow("orders.>,audit"); err != nil {
		t.Fatal(err)
	}
	for target, code := range map[string]int{
		"orders.close": 0,
		"audit":        0,
		"payments.x":   CodeForbidden,
		"orders":       CodeForbidden,
		"audit.x":      CodeForbidden,
		"$SYS.x":       CodeBadRequest, // always refused: 400 before the policy
		"_INBOX.x":     CodeBadRequest,
	} {
		_, e := ParseSchedule("tock.schedule."+target, nats.Header{HeaderDelay: {"1s"}}, nil, now, cfg)
		switch {
		case code == 0 && e != nil:
			t.Errorf("%s: refused: %v", target, e)
		case code != 0 && (e == nil || e.Code != code):
			t.Errorf("%s: got %v, want %d", target, e, code)
		case code == CodeForbidden && e.Description != `target "`+target+`" is not allowed: this tock delivers only to orders.>,audit (--allow-targets)`:
			t.Errorf("%s: description %q", target, e.Description)
		}
	}
}

// The retry policy headers: checked, stored under tock's spelling whatever
// the producer's, and refused with a clear 400 when malformed.
func TestPolicyHeaders(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	req, e := ParseSchedule("tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, "tock-max-attempts": {"5"}, "TOCK-MAX-AGE": {"90m"}}, nil, now, testCfg)
	if e != nil {
		t.Fatal(e)
	}
	if diff := cmp.Diff(journal.Header{"Tock-Max-Attempts": {"5"}, "Tock-Max-Age": {"90m"}}, req.Header); diff != "" {
		t.Errorf("stored headers (-want +got):\n%s", diff)
	}
	for h, want := range map[string]string{
		"Tock-Max-Attempts: 0":    `Tock-Max-Attempts "0" is not a whole number from 1 to 1000000`,
		"Tock-Max-Attempts: -3":   `Tock-Max-Attempts "-3" is not a whole number`,
		"Tock-Max-Attempts: many": `Tock-Max-Attempts "many" is not a whole number`,
		"Tock-Max-Age: 0s":        `Tock-Max-Age "0s" is not a Go duration above 0 and at most 365d`,
		"Tock-Max-Age: 400d":      `Tock-Max-Age "400d" is not a Go duration`,
		"Tock-Max-Age: 9000h":     `Tock-Max-Age "9000h" is not a Go duration above 0 and at most 365d`,
	} {
		k, v, _ := strings.Cut(h, ": ")
		_, e := ParseSchedule("tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, k: {v}}, nil, now, testCfg)
		if e == nil || e.Code != CodeBadRequest || !strings.HasPrefix(e.Description, want) {
			t.Errorf("%s: got %v, want 400 %q", h, e, want)
		}
	}
	_, e = ParseSchedule("tock.schedule.a", nats.Header{HeaderDelay: {"1s"}, "Tock-Max-Attempts": {"1", "2"}}, nil, now, testCfg)
	if e == nil || !strings.Contains(e.Description, "set 2 times") {
		t.Errorf("a repeated policy header: %v", e)
	}
}
