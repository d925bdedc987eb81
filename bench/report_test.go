package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	s := ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
	for _, c := range []struct {
		p    float64
		want float64
	}{{0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}, {0, 1}, {0.1, 1}, {0.11, 2}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", c.p, got, c.want)
		}
	}
	if !math.IsNaN(percentile(nil, .5)) {
		t.Error("percentile of nothing should be NaN")
	}
	st := summarize(ms(30, 10, 20)) // unsorted input
	if st.p50 != 20 || st.max != 30 || st.n != 3 {
		t.Errorf("summarize = %+v", st)
	}
	// A thousand samples: p99.9 is the 999th, not the max.
	big := make([]time.Duration, 1000)
	for i := range big {
		big[i] = time.Duration(i+1) * time.Millisecond
	}
	if got := summarize(big); got.p999 != 999 || got.p99 != 990 || got.max != 1000 {
		t.Errorf("summarize(1..1000) = %+v", got)
	}
}

func TestRatioAndTargets(t *testing.T) {
	if got := ratio(1, 4); got != 0.25 {
		t.Errorf("ratio = %v", got)
	}
	for _, b := range []float64{0, -1, math.NaN()} {
		if !math.IsNaN(ratio(1, b)) {
			t.Errorf("ratio(1, %v) should be NaN", b)
		}
	}
	cases := []struct {
		t    Target
		v    float64
		want bool
	}{
		{Target{Op: GE, Limit: 1}, 1, true}, {Target{Op: GE, Limit: 1}, 0.9, false},
		{Target{Op: GT, Limit: 1}, 1, false}, {Target{Op: LE, Limit: 5}, 5, true},
		{Target{Op: LT, Limit: 5}, 5, false}, {Target{Op: EQ, Limit: 0}, 0, true},
		{Target{Op: EQ, Limit: 0}, 1, false},
	}
	for _, c := range cases {
		if got := c.t.holds(c.v); got != c.want {
			t.Errorf("%v %v %v = %v", c.v, c.t.Op, c.t.Limit, got)
		}
	}
}

func TestReportRows(t *testing.T) {
	full := &Report{}
	full.add("ingest", "accepted/s", UnitRate, 50_000, "plain JetStream", 100_000, &Target{OnRatio: true, Op: GE, Limit: 0.4}, "")
	full.add("ingest", "accepted/s", UnitRate, 50_000, "native", 100_000, &Target{OnRatio: true, Op: GT, Limit: 1}, "")
	full.value("precision", "lateness p99", UnitMs, 7, &Target{Op: LE, Limit: 5}, "")
	full.value("precision", "lateness p50", UnitMs, 1, nil, "")
	full.add("capacity", "heap", UnitBPerMsg, 10, "native", math.NaN(), &Target{OnRatio: true, Op: LE, Limit: 0.1}, "")
	wantMet := []string{"yes", "no", "no", "-", "-"}
	for i, row := range full.Rows {
		if row.Met != wantMet[i] {
			t.Errorf("row %d (%s) met = %q, want %q", i, row.Metric, row.Met, wantMet[i])
		}
	}
	if r := full.Rows[0].Ratio; r == nil || *r != 0.5 {
		t.Errorf("ratio = %v", r)
	}
	if full.Rows[4].Ratio != nil || full.Rows[4].RefValue != nil {
		t.Error("a missing reference must have no ratio")
	}
	quick := &Report{quick: true}
	quick.value("precision", "lateness p99", UnitMs, 7, &Target{Op: LE, Limit: 5}, "")
	if quick.Rows[0].Met != "-" || quick.Rows[0].Target != "≤ 5.00 ms" {
		t.Errorf("quick row = %+v", quick.Rows[0])
	}
}

func TestTableAndJSON(t *testing.T) {
	r := &Report{Meta: Meta{Mode: "full", Commit: "abc", NumCPU: 2}}
	r.add("ingest", "accepted/s", UnitRate, 51234.4, "plain JetStream", 102468.8, &Target{OnRatio: true, Op: GE, Limit: 0.4}, "a note")
	r.value("capacity", "heap bytes/pending msg", UnitBPerMsg, math.NaN(), &Target{Op: LE, Limit: 40}, "")
	r.fail("burst: %d missing", 3)
	var tb bytes.Buffer
	if err := r.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	out := tb.String()
	for _, want := range []string{"scenario", "51,234/s", "plain JetStream 102,469/s", "0.50×", "ratio ≥ 0.4", "yes", "n/a", "a note", "FAILURES", "burst: 3 missing"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// The columns line up: "met" starts at the same rune offset on every row.
	lines := strings.Split(out, "\n")
	var col int
	for _, l := range lines {
		if strings.HasPrefix(l, "scenario") {
			col = strings.Index(l, "met")
		}
	}
	if col <= 0 {
		t.Fatal("no header")
	}

	var jb bytes.Buffer
	if err := r.WriteJSON(&jb); err != nil {
		t.Fatal(err) // NaN would fail here
	}
	var back struct {
		Meta     Meta
		Rows     []map[string]any
		Failures []string
	}
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 2 || back.Rows[1]["value"] != nil || back.Rows[0]["ratio"].(float64) != 0.5 || len(back.Failures) != 1 {
		t.Errorf("JSON round trip: %s", jb.String())
	}
	if back.Meta.Commit != "abc" {
		t.Errorf("meta = %+v", back.Meta)
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		unit string
		want string
	}{
		{1_234_567, UnitRate, "1,234,567/s"}, {999, UnitCount, "999"}, {1000, UnitCount, "1,000"},
		{-1234, UnitCount, "-1,234"}, {1.234, UnitMs, "1.23 ms"}, {512, UnitBytes, "512 B"},
		{3 << 20, UnitBytes, "3.0 MiB"}, {0.4, UnitRatio, "0.40×"}, {33.33, UnitBPerMsg, "33.3 B/msg"},
	} {
		if got := formatValue(c.v, c.unit); got != c.want {
			t.Errorf("formatValue(%v, %q) = %q, want %q", c.v, c.unit, got, c.want)
		}
	}
}

func TestParse(t *testing.T) {
	o, err := Parse([]string{"--quick"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.Quick || len(o.Scenarios) != len(Scenarios) || o.Inflight != 4096 || o.PlainWindow != DefaultPlainWindow || o.Size != 256 || o.SizeOf("capacity") != 100_000 {
		t.Errorf("--quick: %+v", o)
	}
	o, err = Parse([]string{"--scenario", "recovery,ingest", "--n", "ingest=200000,capacity=1_000_000", "--json", "-", "--inflight", "64", "--keep", "--bin", "/x/tock",
		"--serve-arg=--gc-percent=100", "--serve-arg", "--memory-limit=1GiB"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Quick || strings.Join(o.Scenarios, ",") != "ingest,recovery" || o.SizeOf("ingest") != 200_000 ||
		o.SizeOf("capacity") != 1_000_000 || o.SizeOf("burst") != 1_000_000 || o.JSONPath != "-" || o.Inflight != 64 || !o.Keep || o.Bin != "/x/tock" ||
		strings.Join(o.ServeArgs, " ") != "--gc-percent=100 --memory-limit=1GiB" {
		t.Errorf("scenario run: %+v", o)
	}
	if o, err := Parse([]string{"--all"}); err != nil || o.SizeOf("capacity") != 10_000_000 || o.Mode() != "full" {
		t.Errorf("--all: %+v, %v", o, err)
	}
	for _, bad := range [][]string{
		{}, {"--all", "--quick"}, {"--all", "--scenario", "ingest"}, {"--scenario", "nope"},
		{"--quick", "--n", "ingest"}, {"--quick", "--n", "ingest=0"}, {"--quick", "--n", "nope=5"},
		{"--quick", "--inflight", "0"}, {"--quick", "--plain-window", "0"}, {"--quick", "--size", "-1"}, {"--quick", "extra"}, {"--bogus"},
	} {
		_, err := Parse(bad)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("Parse(%q) = %v, want a usage error", bad, err)
		}
	}
	if _, err := Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

func TestSettled(t *testing.T) {
	m := func(heap, rss int64) memReading { return memReading{heapStats{alloc: heap}, rss} }
	const mib = 1 << 20
	for _, c := range []struct {
		a, b memReading
		want bool
	}{
		{m(100*mib, 500*mib), m(100*mib, 500*mib), true},
		{m(100*mib, 500*mib), m(101*mib, 495*mib), true},     // within 1%
		{m(100*mib, 500*mib), m(90*mib, 500*mib), false},     // the heap still shrinks
		{m(100*mib, 500*mib), m(100*mib, 520*mib), false},    // RSS still grows
		{m(2*mib, 30*mib), m(2*mib+mib/2, 30*mib+mib), true}, // small: within 1 MiB
	} {
		if got := settled(c.a, c.b); got != c.want {
			t.Errorf("settled(%+v, %+v) = %v", c.a, c.b, got)
		}
	}
}

func TestParseHeapProfile(t *testing.T) {
	prof := "heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 100\n# HeapAlloc = 4194304\n# Sys = 9999\n# HeapInuse = 5000\n# NumGC = 3\n"
	h, err := parseHeapProfile(strings.NewReader(prof))
	if err != nil || h.alloc != 4194304 || h.sys != 9999 || h.inuse != 5000 {
		t.Errorf("parseHeapProfile = %+v, %v", h, err)
	}
	if _, err := parseHeapProfile(strings.NewReader("garbage\n")); err == nil {
		t.Error("a profile without MemStats should fail")
	}
}
