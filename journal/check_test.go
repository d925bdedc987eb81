package journal

import (
	"errors"
	"runtime"
	"testing"

	"github.com/tockd/tock/msgid"
)

const testWidth = 1000

func TestCheck(t *testing.T) {
	id := msgid.New(5_500, 1)
	sched := Event{Kind: Scheduled, ID: id, At: 100, Target: "orders.x", DeliverAt: 5_500, Header: Header{"K": {"v"}}}
	ok := []Event{
		sched,
		{Kind: Fired, ID: id, At: 5_600},
		{Kind: Cancelled, ID: id, At: 200},
		{Kind: Closed, At: 6_000},
		{Kind: Dead, ID: id, At: 5_600, Body: []byte("the target refused it for good")},
	}
	for _, ev := range ok {
		if err := Check(5, testWidth, &ev); err != nil {
			t.Errorf("Check(%+v): %v", ev, err)
		}
	}
	with := func(f func(*Event)) Event { ev := sched; f(&ev); return ev }
	bad := map[string]Event{
		"other slot":       with(func(e *Event) { e.ID = msgid.New(6_000, 1); e.DeliverAt = 6_000 }),
		"deliver not id":   with(func(e *Event) { e.DeliverAt = 5_501 }),
		"no id":            with(func(e *Event) { e.ID = msgid.ID{} }),
		"empty target":     with(func(e *Event) { e.Target = "" }),
		"wildcard":         with(func(e *Event) { e.Target = "orders.*" }),
		"full wildcard":    with(func(e *Event) { e.Target = ">" }),
		"empty token":      with(func(e *Event) { e.Target = "a..b" }),
		"space":            with(func(e *Event) { e.Target = "a b" }),
		"system":           with(func(e *Event) { e.Target = "$JS.API.STREAM.DELETE.X" }),
		"tock":             with(func(e *Event) { e.Target = "tock.journal.5" }),
		"bad utf8":         with(func(e *Event) { e.Target = "a\xff" }),
		"header injection": with(func(e *Event) { e.Header = Header{"K": {"v\r\nNats-Rollup: all"}} }),
		"header colon":     with(func(e *Event) { e.Header = Header{"K:x": {"v"}} }),
		"fired elsewhere":  {Kind: Fired, ID: msgid.New(4_999, 1), At: 1},
		"fired with body":  {Kind: Fired, ID: id, At: 1, Body: []byte("x")},
		"closed early":     {Kind: Closed, At: 5_999},
		"closed with id":   {Kind: Closed, ID: id, At: 7_000},
		"unknown kind":     {Kind: 9, ID: id},
		"dead elsewhere":   {Kind: Dead, ID: msgid.New(6_000, 1), At: 1},
		"dead with target": {Kind: Dead, ID: id, At: 1, Target: "orders.x"},
		"dead long reason": {Kind: Dead, ID: id, At: 1, Body: make([]byte, MaxDeadReason+1)},
	}
	for name, ev := range bad {
		if err := Check(5, testWidth, &ev); !errors.Is(err, ErrForeign) {
			t.Errorf("%s: Check = %v, want ErrForeign", name, err)
		}
	}
}

func TestDecodeChecked(t *testing.T) {
	good := []Event{{Kind: Fired, ID: msgid.New(5_100, 1), At: 1}}
	mixed := append(good, Event{Kind: Fired, ID: msgid.New(9_000, 1), At: 2})
	dst := []Event{{Kind: Closed, At: 1}}
	out, err := DecodeChecked(dst, EncodeRecord(nil, mixed), false, SlotCheck(5, testWidth))
	if !errors.Is(err, ErrForeign) || len(out) != 1 {
		t.Fatalf("a record with one foreign event: %d events, %v; want the record refused whole", len(out), err)
	}
	if out, err = DecodeChecked(dst, EncodeRecord(nil, good), false, SlotCheck(5, testWidth)); err != nil || len(out) != 2 {
		t.Fatalf("a good record: %d events, %v", len(out), err)
	}
	if _, err := DecodeChecked(nil, []byte{1, 5}, false, nil); !errors.Is(err, ErrCorrupt) {
		t.Errorf("garbage: %v, want ErrCorrupt", err)
	}
}

// FuzzCheck: Check never panics, and whatever it accepts is an event the
// slot could own: its id in the slot, a deliver time that is its id's, a
// target that is a plain subject.
func FuzzCheck(f *testing.F) {
	f.Add(int64(5), uint8(Scheduled), int64(5_500), int64(5_500), int64(100), "orders.x", "K", "v")
	f.Add(int64(5), uint8(Closed), int64(0), int64(0), int64(6_000), "", "", "")
	f.Add(int64(-1), uint8(Fired), int64(-1), int64(0), int64(0), "", "", "")
	f.Add(int64(5), uint8(Dead), int64(5_500), int64(0), int64(5_600), "", "", "")
	f.Fuzz(func(t *testing.T, slot int64, kind uint8, idAt, deliverAt, at int64, target, hk, hv string) {
		ev := Event{Kind: Kind(kind), At: at, Target: target, DeliverAt: deliverAt}
		if idAt != 0 {
			ev.ID = msgid.New(idAt, 7)
		}
		if hk != "" {
			ev.Header = Header{hk: {hv}}
		}
		if Check(slot, testWidth, &ev) != nil {
			return
		}
		switch ev.Kind {
		case Scheduled, Fired, Cancelled, Dead:
			if SlotOf(ev.ID.DeliverAt(), testWidth) != slot {
				t.Fatalf("accepted %+v in slot %d", ev, slot)
			}
			if ev.Kind == Dead && (ev.Target != "" || ev.DeliverAt != 0 || len(ev.Header) > 0) {
				t.Fatalf("accepted a Dead with delivery fields: %+v", ev)
			}
		case Closed:
			if SlotOf(ev.At, testWidth) <= slot {
				t.Fatalf("accepted a Closed at %d in slot %d", ev.At, slot)
			}
		default:
			t.Fatalf("accepted kind %d", kind)
		}
		if ev.Kind == Scheduled && (ev.DeliverAt != ev.ID.DeliverAt() || CheckTarget(ev.Target) != nil) {
			t.Fatalf("accepted %+v", ev)
		}
	})
}

// FuzzDecodeBounded: no record decodes into more than the codec's bound
// of allocation, whatever its bytes, and DecodeChecked never panics.
func FuzzDecodeBounded(f *testing.F) {
	f.Add(EncodeRecord(nil, []Event{{Kind: Scheduled, ID: msgid.New(5_500, 1), At: 1, Target: "t", DeliverAt: 5_500, Header: Header{"a": {"b"}}}}))
	f.Add([]byte{1, 0x7f, 4, 0, 4, 0, 4, 0})
	f.Add([]byte{1, 2, 0x44, 0, 0, 0, 3, 1, 'a', 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		events, err := DecodeChecked(nil, b, false, SlotCheck(5, testWidth))
		runtime.ReadMemStats(&after)
		// TotalAlloc counts every goroutine's allocations; the fuzzer's
		// own are small next to the bound.
		if got, bound := after.TotalAlloc-before.TotalAlloc, uint64(2*(expansionSlack+maxExpansion*len(b))+(1<<20)); got > bound {
			t.Fatalf("%d bytes decoded into %d bytes of allocation, bound %d", len(b), got, bound)
		}
		if err == nil && len(events) > MaxRecordEvents {
			t.Fatalf("%d events", len(events))
		}
	})
}
