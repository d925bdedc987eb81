package slot

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// TestScenarios runs every testdata/*.txt script through a slot and
// compares the whole trace with its .golden file. A script line is one of
//
//	config width=W maxinflight=N maxpertarget=N maxperstep=N maxbody=N
//	NOW schedule NAME DELIVER_AT TARGET   (NAME names the message's id)
//	NOW cancel NAME | NOW get NAME | NOW tick | NOW published NAME
//	NOW dead NAME REASON...   the publisher dead-lettered it
//	persist       the events handed out reach the journal: Step Persisted
//	lose          they never do: Abandon, then a new slot recovers from
//	              what was persisted (as the actor reloads)
//	restart       a new slot recovers from what was persisted
//	refill        bring cold bodies back from the records the slot names,
//	              then tick
//	refill-begin, refill-end   the same in two steps, with others between
//	              (the actor reads while the slot goes on)
//	moved         the journal's layout moves every record (new sequences)
//
// Each persist stores one record, numbered from 1.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			got := runScript(t, f)
			golden := strings.TrimSuffix(f, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("trace differs from %s (-want +got):\n%s", golden, diff)
			}
		})
	}
}

type script struct {
	t       *testing.T
	cfg     Config
	s       *Slot
	ids     map[string]msgid.ID
	names   map[msgid.ID]string
	stamp   uint64
	records []record        // persisted
	unacked []journal.Event // handed out, not yet persisted
	seq     uint64          // last record sequence handed out
	now     int64           // the latest NOW of the script
	// refillSeqs: the records the refill in progress reads.
	refillSeqs []uint64
	out        strings.Builder
}

func runScript(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := &script{t: t, cfg: Config{Width: 1000}, ids: map[string]msgid.ID{}, names: map[msgid.ID]string{}}
	sc.s = New(sc.cfg)
	lines := bufio.NewScanner(f)
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSpace(lines.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			sc.out.WriteString(line + "\n")
			continue
		}
		fmt.Fprintf(&sc.out, "> %s\n", line)
		if err := sc.do(strings.Fields(line)); err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
	}
	return sc.out.String()
}

func (sc *script) do(f []string) error {
	switch f[0] {
	case "config":
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			if err != nil {
				return err
			}
			switch k {
			case "width":
				sc.cfg.Width = int64(n)
			case "index":
				sc.cfg.Index = int64(n)
			case "maxinflight":
				sc.cfg.MaxInFlight = n
			case "maxpertarget":
				sc.cfg.MaxInFlightPerTarget = n
			case "maxperstep":
				sc.cfg.MaxPerStep = n
			case "maxbody":
				sc.cfg.MaxBodyBytes = n
			default:
				return fmt.Errorf("unknown config %q", k)
			}
		}
		sc.s = New(sc.cfg)
		return nil
	case "persist":
		if len(sc.unacked) > 0 {
			sc.records = append(sc.records, record{seq: sc.nextSeq(), events: sc.unacked})
		}
		sc.unacked = nil
		n := 0
		for _, r := range sc.records {
			n += len(r.events)
		}
		fmt.Fprintf(&sc.out, "journal: %d events\n", n)
		sc.s.Step(sc.now, Persisted{})
		sc.print(sc.s.Ready())
		return nil
	case "lose":
		sc.unacked = nil
		for _, r := range sc.s.Abandon() {
			sc.printReply(r)
		}
		sc.recover()
		return nil
	case "refill", "refill-begin":
		// As the actor does: BeginRefill, then (refill-end, at once for
		// refill) the records named, the whole slot if some were not
		// found there, EndRefill and a Tick.
		sc.refillSeqs = sc.s.BeginRefill()
		fmt.Fprintf(&sc.out, "refill: records %v\n", sc.refillSeqs)
		if f[0] == "refill-begin" {
			return nil
		}
		fallthrough
	case "refill-end":
		for _, r := range sc.records {
			if slices.Contains(sc.refillSeqs, r.seq) {
				sc.s.RefillEvents(r.seq, r.events)
			}
		}
		if n := sc.s.Missing(); n > 0 {
			fmt.Fprintf(&sc.out, "refill: %d not there; the whole slot\n", n)
			for _, r := range sc.records {
				sc.s.RefillEvents(r.seq, r.events)
			}
		}
		inMem, cold := sc.s.BodyBytes()
		fmt.Fprintf(&sc.out, "refill: %d missing, %d body bytes in memory, %d cold\n", sc.s.EndRefill(), inMem, cold)
		sc.s.Step(sc.now, Tick{})
		sc.print(sc.s.Ready())
		return nil
	case "moved":
		for i := range sc.records {
			sc.records[i].seq = sc.nextSeq()
		}
		fmt.Fprintf(&sc.out, "journal: records moved\n")
		return nil
	case "restart":
		sc.recover()
		sc.now = sc.atoi(f, 1, 0)
		sc.s.Step(sc.now, Tick{})
		sc.print(sc.s.Ready())
		return nil
	}
	now, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || len(f) < 2 {
		return fmt.Errorf("want NOW VERB ...: %q", f)
	}
	sc.now = now
	var in Input
	switch f[1] {
	case "schedule":
		at := sc.atoi(f, 3, now)
		sc.stamp++
		id := msgid.New(at, sc.stamp)
		sc.ids[f[2]], sc.names[id] = id, f[2]
		in = Schedule{To: f[2], Event: journal.Event{
			Kind: journal.Scheduled, ID: id, At: now, Target: f[4], DeliverAt: at,
			Header: journal.Header{"K": {f[2]}}, Body: []byte("body-" + f[2]),
		}}
	case "adopt":
		at := sc.atoi(f, 3, now)
		sc.stamp++
		id := msgid.New(at, sc.stamp)
		sc.ids[f[2]], sc.names[id] = id, f[2]
		in = Adopt{Event: journal.Event{Kind: journal.Scheduled, ID: id, At: now, Target: f[4], DeliverAt: at}}
	case "cancel":
		in = Cancel{ID: sc.id(f[2]), To: "cancel " + f[2]}
	case "get":
		in = Get{ID: sc.id(f[2]), To: "get " + f[2]}
	case "published":
		in = Published{ID: sc.id(f[2])}
	case "dead":
		in = Published{ID: sc.id(f[2]), Dead: true, Reason: strings.Join(f[3:], " ")}
	case "tick":
		in = Tick{}
	default:
		return fmt.Errorf("unknown verb %q", f[1])
	}
	sc.s.Step(now, in)
	sc.print(sc.s.Ready())
	return nil
}

func (sc *script) atoi(f []string, i int, def int64) int64 {
	if len(f) <= i {
		return def
	}
	n, err := strconv.ParseInt(f[i], 10, 64)
	if err != nil {
		sc.t.Fatalf("not a number: %q", f[i])
	}
	return n
}

func (sc *script) id(name string) msgid.ID {
	if id, ok := sc.ids[name]; ok {
		return id
	}
	id := msgid.New(1, 1<<60) // an id nobody scheduled
	sc.names[id] = name
	return id
}

func (sc *script) name(id msgid.ID) string {
	if n, ok := sc.names[id]; ok {
		return n
	}
	return id.String()
}

func (sc *script) recover() {
	sc.s = New(sc.cfg)
	for _, r := range sc.records {
		for _, ev := range r.events {
			sc.s.Recover(r.seq, ev)
		}
	}
}

// record is one stored journal record of a script.
type record struct {
	seq    uint64
	events []journal.Event
}

func (sc *script) nextSeq() uint64 {
	sc.seq++
	return sc.seq
}

func (sc *script) printReply(r Reply) {
	rec := r.Result.Record
	fmt.Fprintf(&sc.out, "  reply %v: %s", r.To, statusName(r.Result.Status))
	if r.Result.Status != NotFound {
		fmt.Fprintf(&sc.out, " %s %s at=%d", sc.name(rec.ID), rec.State, rec.DeliverAt)
		if rec.DoneAt != 0 {
			fmt.Fprintf(&sc.out, " done=%d", rec.DoneAt)
		}
		if rec.Reason != "" {
			fmt.Fprintf(&sc.out, " reason=%q", rec.Reason)
		}
	}
	sc.out.WriteString("\n")
}

func (sc *script) print(rd Ready) {
	if len(rd.Events) > 0 {
		if len(sc.unacked) > 0 {
			sc.t.Fatalf("a Ready handed out events while %d were not yet persisted", len(sc.unacked))
		}
		sc.unacked = rd.Events
	}
	w := &sc.out
	for _, ev := range rd.Events {
		switch ev.Kind {
		case journal.Scheduled:
			fmt.Fprintf(w, "  event scheduled %s at=%d target=%s\n", sc.name(ev.ID), ev.DeliverAt, ev.Target)
		case journal.Closed:
			fmt.Fprintf(w, "  event closed at=%d\n", ev.At)
		case journal.Dead:
			fmt.Fprintf(w, "  event dead %s at=%d reason=%q\n", sc.name(ev.ID), ev.At, ev.Body)
		default:
			fmt.Fprintf(w, "  event %s %s at=%d\n", ev.Kind, sc.name(ev.ID), ev.At)
		}
	}
	for _, r := range rd.Replies {
		sc.printReply(r)
	}
	for _, d := range rd.Deliveries {
		keys := make([]string, 0, len(d.Header))
		for k := range d.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "  deliver %s target=%s at=%d body=%q headers=%v\n", sc.name(d.ID), d.Target, d.DeliverAt, d.Body, keys)
	}
	if rd.Refill {
		w.WriteString("  refill needed\n")
	}
	if rd.Limited != NoLimit {
		fmt.Fprintf(w, "  limited %s\n", rd.Limited)
	}
	fmt.Fprintf(w, "  wake=%d open=%d inflight=%d len=%d done=%v holding=%v\n", rd.WakeAt, sc.s.Pending(), sc.s.InFlight(), sc.s.Len(), sc.s.Done(), sc.s.Holding())
}

func statusName(s Status) string {
	switch s {
	case OK:
		return "ok"
	case NotFound:
		return "not-found"
	case Conflict:
		return "conflict"
	case Unavailable:
		return "unavailable"
	}
	return "?"
}
