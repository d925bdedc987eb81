package gateway

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/msgid"
)

var testID = msgid.Compose(ms("2026-11-21T10:05:00.250Z"), 42, 0x0123456789abcdef)

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replyCase is one result and the reply it must turn into: JSON text, or
// an error from the catalogue.
type replyCase struct {
	name    string
	res     slot.Result
	want    string
	wantErr *Error
}

func checkReplies(t *testing.T, tests []replyCase, reply func(slot.Result) (any, *Error)) {
	t.Helper()
	for _, tt := range tests {
		got, gotErr := reply(tt.res)
		if diff := cmp.Diff(tt.wantErr, gotErr); diff != "" {
			t.Errorf("%s: error (-want +got):\n%s", tt.name, diff)
			continue
		}
		if gotErr == nil {
			if got := jsonOf(t, got); got != tt.want {
				t.Errorf("%s: got %s\nwant %s", tt.name, got, tt.want)
			}
		}
	}
}

func TestScheduleReply(t *testing.T) {
	rec := slot.Record{ID: testID, Target: "orders.remind", DeliverAt: ms("2026-11-21T10:05:00.250Z"), State: slot.Pending}
	tests := []replyCase{
		{
			name: "ok",
			res:  slot.Result{Status: slot.OK, Record: rec},
			want: `{"id":"` + testID.String() + `","target":"orders.remind","deliver_at":"2026-11-21T10:05:00.250Z"}`,
		},
		{name: "unavailable", res: slot.Result{Status: slot.Unavailable}, wantErr: &Error{Code: 503, Description: "journal cannot take writes; retry"}},
		{name: "not found makes no sense", res: slot.Result{Status: slot.NotFound}, wantErr: &Error{Code: 500, Description: "internal error: scheduler answered schedule with unexpected status 2"}},
		{name: "zero status", res: slot.Result{}, wantErr: &Error{Code: 500, Description: "internal error: scheduler answered schedule with unexpected status 0"}},
		{name: "ok without id", res: slot.Result{Status: slot.OK}, wantErr: &Error{Code: 500, Description: "internal error: scheduler accepted a message without an id"}},
	}
	checkReplies(t, tests, func(res slot.Result) (any, *Error) { return ScheduleReply(res) })
}

func TestCancelReply(t *testing.T) {
	id := testID.String()
	tests := []replyCase{
		{name: "ok", res: slot.Result{Status: slot.OK}, want: `{"id":"` + id + `","state":"cancelled"}`},
		{name: "not found", res: slot.Result{Status: slot.NotFound}, wantErr: &Error{Code: 404, Description: `no message with id "` + id + `"`}},
		{
			name:    "conflict delivered",
			res:     slot.Result{Status: slot.Conflict, Record: slot.Record{ID: testID, State: slot.Delivered}},
			wantErr: &Error{Code: 409, Description: `message "` + id + `" is delivered; only a pending message can be cancelled`, State: "delivered"},
		},
		{
			name:    "conflict delivering",
			res:     slot.Result{Status: slot.Conflict, Record: slot.Record{ID: testID, State: slot.Delivering}},
			wantErr: &Error{Code: 409, Description: `message "` + id + `" is delivering; only a pending message can be cancelled`, State: "delivering"},
		},
		{
			name:    "conflict without a state",
			res:     slot.Result{Status: slot.Conflict},
			wantErr: &Error{Code: 500, Description: "internal error: scheduler reported a conflict in state 0"},
		},
		{name: "unavailable", res: slot.Result{Status: slot.Unavailable}, wantErr: &Error{Code: 503, Description: "journal cannot take writes; retry"}},
		{name: "busy", res: slot.Result{Status: slot.Busy}, wantErr: &Error{Code: 503, Description: "tock is overloaded: too many slots loaded to answer gets and cancels (--max-lookup-slots); retry with back-off"}},
		{name: "unexpected", res: slot.Result{Status: 9}, wantErr: &Error{Code: 500, Description: "internal error: scheduler answered cancel with unexpected status 9"}},
	}
	checkReplies(t, tests, func(res slot.Result) (any, *Error) { return CancelReply(testID, res) })
}

func TestGetReply(t *testing.T) {
	id := testID.String()
	rec := func(st slot.State, done int64) slot.Record {
		return slot.Record{ID: testID, Target: "a.b", DeliverAt: ms("2026-11-21T10:05:00.250Z"), State: st, DoneAt: done}
	}
	head := `{"id":"` + id + `","target":"a.b","deliver_at":"2026-11-21T10:05:00.250Z",`
	tests := []replyCase{
		{name: "pending", res: slot.Result{Status: slot.OK, Record: rec(slot.Pending, 0)}, want: head + `"state":"pending"}`},
		{name: "delivering", res: slot.Result{Status: slot.OK, Record: rec(slot.Delivering, 0)}, want: head + `"state":"delivering"}`},
		{
			name: "delivered",
			res:  slot.Result{Status: slot.OK, Record: rec(slot.Delivered, ms("2026-11-21T10:05:00.263Z"))},
			want: head + `"state":"delivered","delivered_at":"2026-11-21T10:05:00.263Z"}`,
		},
		{
			name: "cancelled",
			res:  slot.Result{Status: slot.OK, Record: rec(slot.Cancelled, ms("2026-11-21T10:01:02.003Z"))},
			want: head + `"state":"cancelled","cancelled_at":"2026-11-21T10:01:02.003Z"}`,
		},
		{name: "not found", res: slot.Result{Status: slot.NotFound}, wantErr: &Error{Code: 404, Description: `no message with id "` + id + `"`}},
		{name: "unavailable", res: slot.Result{Status: slot.Unavailable}, wantErr: &Error{Code: 503, Description: "journal cannot take writes; retry"}},
		{name: "busy", res: slot.Result{Status: slot.Busy}, wantErr: &Error{Code: 503, Description: "tock is overloaded: too many slots loaded to answer gets and cancels (--max-lookup-slots); retry with back-off"}},
		{name: "conflict makes no sense", res: slot.Result{Status: slot.Conflict}, wantErr: &Error{Code: 500, Description: "internal error: scheduler answered get with unexpected status 3"}},
		{name: "unknown state", res: slot.Result{Status: slot.OK, Record: rec(7, 0)}, wantErr: &Error{Code: 500, Description: "internal error: scheduler reported state 7"}},
	}
	checkReplies(t, tests, func(res slot.Result) (any, *Error) { return GetReply(testID, res) })
}

func TestErrorBody(t *testing.T) {
	for _, tt := range []struct {
		e    *Error
		want string
	}{
		{&Error{Code: 400, Description: `bad "x"`}, `{"error":{"code":400,"description":"bad \"x\""}}`},
		{Conflict("abc", slot.Cancelled), `{"error":{"code":409,"description":"message \"abc\" is cancelled; only a pending message can be cancelled"},"state":"cancelled"}`},
		{Internal("a\r\nb"), `{"error":{"code":500,"description":"internal error: a  b"}}`},
	} {
		if got := string(ErrorBody(tt.e)); got != tt.want {
			t.Errorf("ErrorBody(%+v) = %s\nwant %s", tt.e, got, tt.want)
		}
	}
}

// AppendScheduleReply must write exactly what encoding/json writes for
// ScheduleReply's response: clients see one reply format whichever path
// built it.
func TestAppendScheduleReplyMatchesJSON(t *testing.T) {
	targets := []string{
		"orders.remind", "a", "x.y.z-1_2", "quote\"d", `back\slash`, "<html>&amp;", "ünï.cödé",
		"emoji.😀", "line\u2028sep", "bad\xffutf8", "~tilde", "del\x7f", "tab\t", "",
	}
	times := []int64{
		0, 1, 999, 1000, ms("2026-11-21T10:05:00.250Z"), ms("1999-12-31T23:59:59.999Z"),
		ms("9999-12-31T23:59:59.999Z"), ms("9999-12-31T23:59:59.999Z") + 1, -1, -62167219200001,
	}
	for _, target := range targets {
		for _, at := range times {
			rec := slot.Record{ID: msgid.New(at, 1<<40+7), Target: target, DeliverAt: at, State: slot.Pending}
			want, e := ScheduleReply(slot.Result{Status: slot.OK, Record: rec})
			if e != nil {
				t.Fatalf("ScheduleReply(%q, %d): %v", target, at, e)
			}
			if got, want := string(AppendScheduleReply(nil, rec)), jsonOf(t, want); got != want {
				t.Errorf("AppendScheduleReply(%q, %d) = %s\nwant %s", target, at, got, want)
			}
		}
	}
}

func TestFormatMillisMatchesTimeFormat(t *testing.T) {
	for _, at := range []int64{0, 1, 59_999, 86_399_999, ms("2026-02-28T23:59:59.001Z"), ms("2028-02-29T12:00:00Z"),
		ms("9999-12-31T23:59:59.999Z"), ms("9999-12-31T23:59:59.999Z") + 1, -1, -62135596800000, -62167219200001} {
		want := time.UnixMilli(at).UTC().Format(millisLayout)
		if got := FormatMillis(at); got != want {
			t.Errorf("FormatMillis(%d) = %q, want %q", at, got, want)
		}
	}
}

func FuzzAppendScheduleReply(f *testing.F) {
	f.Add("orders.remind", int64(1795255500250))
	f.Add("<&>\"\\", int64(-1))
	f.Fuzz(func(t *testing.T, target string, at int64) {
		rec := slot.Record{ID: msgid.New(at, 3), Target: target, DeliverAt: at}
		want, _ := ScheduleReply(slot.Result{Status: slot.OK, Record: rec})
		if got, want := string(AppendScheduleReply(nil, rec)), jsonOf(t, want); got != want {
			t.Fatalf("AppendScheduleReply(%q, %d) = %s\nwant %s", target, at, got, want)
		}
	})
}
