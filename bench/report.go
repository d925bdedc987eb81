package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Units of a row's value; they decide how it is printed.
const (
	UnitRate    = "/s"
	UnitMs      = "ms"
	UnitSec     = "s"
	UnitBytes   = "B"
	UnitCount   = "count"
	UnitRatio   = "x"
	UnitBPerMsg = "B/msg"
)

// Op compares a value with a target limit.
type Op string

const (
	GE Op = "≥"
	GT Op = ">"
	LE Op = "≤"
	LT Op = "<"
	EQ Op = "="
)

// Target is a threshold on a row's value or on its ratio to the reference.
type Target struct {
	OnRatio bool
	Op      Op
	Limit   float64
}

func (t *Target) String(unit string) string {
	if t == nil {
		return ""
	}
	if t.OnRatio {
		return fmt.Sprintf("ratio %s %s", t.Op, trimFloat(t.Limit))
	}
	return fmt.Sprintf("%s %s", t.Op, formatValue(t.Limit, unit))
}

// holds reports whether v satisfies the target.
func (t *Target) holds(v float64) bool {
	switch t.Op {
	case GE:
		return v >= t.Limit
	case GT:
		return v > t.Limit
	case LE:
		return v <= t.Limit
	case LT:
		return v < t.Limit
	case EQ:
		return v == t.Limit
	}
	return false
}

// Row is one line of the report. Pointers are nil when there is no value
// (JSON cannot carry NaN).
type Row struct {
	Scenario string   `json:"scenario"`
	Metric   string   `json:"metric"`
	Unit     string   `json:"unit"`
	Value    *float64 `json:"value"`
	RefName  string   `json:"ref_name,omitempty"`
	RefValue *float64 `json:"ref_value,omitempty"`
	Ratio    *float64 `json:"ratio,omitempty"`
	Target   string   `json:"target,omitempty"`
	Met      string   `json:"met"` // yes, no or - (no target, no value, or quick mode)
	Note     string   `json:"note,omitempty"`
}

// Meta describes the machine and build of a run.
type Meta struct {
	Date        string   `json:"date"`
	GoVersion   string   `json:"go_version"`
	GOOS        string   `json:"goos"`
	GOARCH      string   `json:"goarch"`
	NumCPU      int      `json:"num_cpu"`
	CPUModel    string   `json:"cpu_model"`
	MemTotal    int64    `json:"mem_total"`
	Commit      string   `json:"commit"`
	CommandLine string   `json:"command_line"`
	Mode        string   `json:"mode"`
	ServeArgs   []string `json:"serve_args,omitempty"` // --serve-arg, given to every child
	WallSeconds float64  `json:"wall_seconds,omitempty"`
}

// Report is the whole result of a run.
type Report struct {
	Meta     Meta               `json:"meta"`
	Rows     []Row              `json:"rows"`
	Failures []string           `json:"failures"`
	Notes    []string           `json:"notes,omitempty"`
	Walls    map[string]float64 `json:"scenario_wall_seconds,omitempty"`
	quick    bool
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// ratio is a/b, or NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return a / b
}

// add appends a row with an optional reference and target; met is
// computed here so that every row follows the same rules.
func (r *Report) add(scenario, metric, unit string, value float64, refName string, refValue float64, t *Target, note string) {
	row := Row{Scenario: scenario, Metric: metric, Unit: unit, Value: ptr(value), Met: "-", Note: note}
	rat := math.NaN()
	if refName != "" {
		row.RefName, row.RefValue = refName, ptr(refValue)
		rat = ratio(value, refValue)
		row.Ratio = ptr(rat)
	}
	if t != nil {
		row.Target = t.String(unit)
		v := value
		if t.OnRatio {
			v = rat
		}
		if !r.quick && !math.IsNaN(v) {
			row.Met = "no"
			if t.holds(v) {
				row.Met = "yes"
			}
		}
	}
	r.Rows = append(r.Rows, row)
}

// value adds a row without a reference.
func (r *Report) value(scenario, metric, unit string, v float64, t *Target, note string) {
	r.add(scenario, metric, unit, v, "", 0, t, note)
}

func (r *Report) fail(format string, a ...any) {
	r.Failures = append(r.Failures, fmt.Sprintf(format, a...))
}

func (r *Report) note(format string, a ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, a...))
}

// WriteTable prints the rows, the failures and the notes.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Meta
	fmt.Fprintf(w, "tock bench (%s) %s, commit %s, %s %s/%s, %d CPU %s, %s RAM\n\n",
		m.Mode, m.Date, m.Commit, m.GoVersion, m.GOOS, m.GOARCH, m.NumCPU, m.CPUModel, formatValue(float64(m.MemTotal), UnitBytes))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\ttock\treference\tratio\ttarget\tmet\t")
	for _, row := range r.Rows {
		ref := ""
		if row.RefName != "" {
			ref = row.RefName + " " + formatPtr(row.RefValue, row.Unit)
		}
		rat := ""
		if row.RefName != "" {
			rat = formatPtr(row.Ratio, UnitRatio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Scenario, row.Metric,
			formatPtr(row.Value, row.Unit), ref, rat, row.Target, row.Met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, row := range r.Rows {
		if row.Note != "" {
			notes = append(notes, fmt.Sprintf("%s / %s: %s", row.Scenario, row.Metric, row.Note))
		}
	}
	notes = append(notes, r.Notes...)
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if len(r.Walls) > 0 {
		fmt.Fprint(w, "\nwall time:")
		for _, s := range Scenarios {
			if v, ok := r.Walls[s]; ok {
				fmt.Fprintf(w, " %s %.1fs", s, v)
			}
		}
		fmt.Fprintln(w)
	}
	if len(r.Failures) > 0 {
		fmt.Fprintln(w, "\nFAILURES:")
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  - %s\n", f)
		}
	} else {
		fmt.Fprintln(w, "\nno failures")
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	if r.Failures == nil {
		r.Failures = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func formatPtr(v *float64, unit string) string {
	if v == nil {
		return "n/a"
	}
	return formatValue(*v, unit)
}

// formatValue prints v in its unit, with thousands separators for counts
// and rates so that 1,000,000 reads at a glance.
func formatValue(v float64, unit string) string {
	switch unit {
	case UnitRate:
		return groupThousands(int64(math.Round(v))) + "/s"
	case UnitCount:
		return groupThousands(int64(math.Round(v)))
	case UnitMs:
		return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
	case UnitSec:
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	case UnitRatio:
		return strconv.FormatFloat(v, 'f', 2, 64) + "×"
	case UnitBPerMsg:
		return strconv.FormatFloat(v, 'f', 1, 64) + " B/msg"
	case UnitBytes:
		a := math.Abs(v)
		switch {
		case a >= 1<<30:
			return strconv.FormatFloat(v/(1<<30), 'f', 2, 64) + " GiB"
		case a >= 1<<20:
			return strconv.FormatFloat(v/(1<<20), 'f', 1, 64) + " MiB"
		case a >= 10<<10:
			return strconv.FormatFloat(v/(1<<10), 'f', 1, 64) + " KiB"
		}
		return strconv.FormatInt(int64(v), 10) + " B"
	}
	return trimFloat(v)
}

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }

func groupThousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// percentile returns the p-quantile (0..1) of sorted by the nearest-rank
// method; NaN for an empty slice.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p*float64(len(sorted)))) - 1
	rank = max(0, min(len(sorted)-1, rank))
	return float64(sorted[rank]) / float64(time.Millisecond)
}

// latencyStats summarises lateness samples in milliseconds.
type latencyStats struct {
	n                   int
	p50, p99, p999, max float64
}

func summarize(samples []time.Duration) latencyStats {
	s := slices.Clone(samples)
	slices.Sort(s)
	return latencyStats{n: len(s), p50: percentile(s, .5), p99: percentile(s, .99), p999: percentile(s, .999), max: percentile(s, 1)}
}

// collectMeta describes this machine and build.
func collectMeta(o *Options) Meta {
	m := Meta{
		Date:        time.Now().UTC().Format(time.RFC3339),
		GoVersion:   runtime.Version(),
		GOOS:        runtime.GOOS,
		GOARCH:      runtime.GOARCH,
		NumCPU:      runtime.NumCPU(),
		CPUModel:    "unknown",
		Commit:      commit(),
		CommandLine: strings.Join(append([]string{"tock", "bench"}, o.Args...), " "),
		Mode:        o.Mode(),
		ServeArgs:   o.ServeArgs,
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPUModel = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		f := strings.Fields(v) // "24000000 kB"
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			if len(f) > 1 && f[1] == "kB" {
				n *= 1024
			}
			m.MemTotal = n
		}
	}
	return m
}

// procField returns the value of the first "key : value" line in a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// commit is the VCS revision stamped into the build, else the checkout's
// HEAD (go run does not stamp), else "unknown".
func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if dirty {
				rev += "+dirty"
			}
			return rev
		}
	}
	if out, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "unknown"
}
