// Package bench is the benchmark harness behind `tock bench`: it runs tock
// (and its references, plain JetStream and NATS's native message schedules)
// as fresh child processes, drives them with pipelined nats.go clients, and
// reports every figure next to its reference and target.
package bench

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scenarios in the order they run.
var Scenarios = []string{"ingest", "burst", "precision", "isolation", "bigload", "bigslot", "capacity", "recovery", "durability"}

// fullSizes and quickSizes are the message counts of each scenario. For
// precision the count is rate × duration (10,000/s for 60 s; 1,000/s for 5 s);
// for bigload it is the big slot's (its neighbour gets one message per ms);
// bigslot's messages are 511 KiB each whatever --size says.
var (
	fullSizes = map[string]int{
		"ingest": 1_000_000, "burst": 1_000_000, "precision": 600_000, "isolation": 10_000, "bigload": 1_000_000, "bigslot": 4_200,
		"capacity": 10_000_000, "recovery": 1_000_000, "durability": 200_000,
	}
	quickSizes = map[string]int{
		"ingest": 20_000, "burst": 20_000, "precision": 5_000, "isolation": 1_000, "bigload": 20_000, "bigslot": 100,
		"capacity": 100_000, "recovery": 20_000, "durability": 5_000,
	}
)

// Options configure a run.
type Options struct {
	Scenarios   []string       // in run order
	Quick       bool           // tiny sizes, targets printed but not asserted
	JSONPath    string         // "" none, "-" stdout
	Inflight    int            // requests in flight per client
	PlainWindow int            // unacknowledged publishes of the plain JetStream reference
	Size        int            // body bytes
	Keep        bool           // keep the run directory
	Bin         string         // tock binary run as the server; "" = os.Executable()
	N           map[string]int // per-scenario size overrides
	Args        []string       // the command line, for the report
	ServeArgs   []string       // passed to every `tock serve` child, before the scenario's own flags
}

// Mode is "quick" or "full".
func (o *Options) Mode() string {
	if o.Quick {
		return "quick"
	}
	return "full"
}

// Size returns the message count of scenario name.
func (o *Options) SizeOf(name string) int {
	if n, ok := o.N[name]; ok {
		return n
	}
	if o.Quick {
		return quickSizes[name]
	}
	return fullSizes[name]
}

// UsageError is a mistake on the command line (exit status 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// flagValues holds the raw flags before validation.
type flagValues struct {
	all, quick, keep bool
	scenarios, n     string
	o                *Options
}

// FlagSet declares the flags of `tock bench` on o (and on hidden raw
// values); it is what `tock help bench` prints.
func FlagSet(o *Options) *flag.FlagSet {
	fs, _ := newFlagSet(o)
	return fs
}

func newFlagSet(o *Options) (*flag.FlagSet, *flagValues) {
	v := &flagValues{o: o}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&v.all, "all", false, "run every scenario at full size")
	fs.BoolVar(&v.quick, "quick", false, "tiny sizes (for CI): targets are printed, not asserted")
	fs.StringVar(&v.scenarios, "scenario", "", "comma-separated `list` of scenarios to run: "+strings.Join(Scenarios, ","))
	fs.StringVar(&o.JSONPath, "json", "", "write the JSON report to `file` (- for stdout; the table then goes to stderr)")
	fs.IntVar(&o.Inflight, "inflight", 4096, "requests in flight per client")
	fs.IntVar(&o.PlainWindow, "plain-window", DefaultPlainWindow, "unacknowledged publishes of the plain JetStream reference (JetStream refuses beyond 100,000 per stream)")
	fs.IntVar(&o.Size, "size", 256, "body size in `bytes`")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run directory (data dirs, child logs)")
	fs.StringVar(&o.Bin, "bin", "", "tock binary to run as the server (default: this executable)")
	fs.Func("serve-arg", "pass `arg` to every `tock serve` child (repeatable; the scenario's own flags come after), e.g. --serve-arg=--gc-percent=100", func(s string) error {
		o.ServeArgs = append(o.ServeArgs, s)
		return nil
	})
	fs.StringVar(&v.n, "n", "", "override scenario sizes: `name=N,...` (precision: total messages over its fixed duration; bigload: the big slot's messages)")
	return fs, v
}

// Parse parses the arguments of `tock bench`. Errors are *UsageError, or
// flag.ErrHelp for -h.
func Parse(args []string) (*Options, error) {
	o := &Options{Args: append([]string(nil), args...)}
	fs, v := newFlagSet(o)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, &UsageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case v.all && v.quick:
		return nil, usagef("--all and --quick exclude each other (--quick runs every scenario at tiny sizes)")
	case v.all && v.scenarios != "":
		return nil, usagef("--all and --scenario exclude each other")
	case !v.all && !v.quick && v.scenarios == "":
		return nil, usagef("say what to run: --all, --quick or --scenario LIST")
	}
	o.Quick = v.quick
	o.Scenarios = Scenarios
	if v.scenarios != "" {
		want := map[string]bool{}
		for _, s := range strings.Split(v.scenarios, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(Scenarios, s) {
				return nil, usagef("--scenario: unknown scenario %q (have %s)", s, strings.Join(Scenarios, ","))
			}
			want[s] = true
		}
		o.Scenarios = nil
		for _, s := range Scenarios {
			if want[s] {
				o.Scenarios = append(o.Scenarios, s)
			}
		}
	}
	var err error
	if o.N, err = parseSizes(v.n); err != nil {
		return nil, err
	}
	if o.Inflight < 1 {
		return nil, usagef("--inflight must be at least 1")
	}
	if o.PlainWindow < 1 {
		return nil, usagef("--plain-window must be at least 1")
	}
	if o.Size < 0 || o.Size > 256*1024 {
		return nil, usagef("--size must be between 0 and 262144")
	}
	return o, nil
}

// parseSizes parses "ingest=200000,capacity=1000000".
func parseSizes(s string) (map[string]int, error) {
	out := map[string]int{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, usagef("--n %q: want name=N", kv)
		}
		if !slices.Contains(Scenarios, name) {
			return nil, usagef("--n: unknown scenario %q", name)
		}
		n, err := strconv.Atoi(strings.ReplaceAll(val, "_", ""))
		if err != nil || n < 1 {
			return nil, usagef("--n %s: want a positive count, got %q", name, val)
		}
		out[name] = n
	}
	return out, nil
}

// durations and leads of the scenarios, full and quick.
func (o *Options) precisionSpan() time.Duration {
	if o.Quick {
		return 5 * time.Second
	}
	return 60 * time.Second
}

// leadFor is how far ahead a scenario schedules its first deliver time:
// long enough to accept n messages at 50,000/s, plus slack.
func (o *Options) leadFor(n int, fullSlack, quickSlack time.Duration) time.Duration {
	lead := time.Duration(float64(n) / 50_000 * float64(time.Second))
	if o.Quick {
		return lead + quickSlack
	}
	return lead + fullSlack
}

// window is the number of accepts over which capacity measures a rate.
func (o *Options) window() int {
	if o.Quick {
		return 1_000
	}
	// Long enough (about half a second) that one GC cycle or scheduler
	// hiccup does not decide a checkpoint's rate.
	return 50_000
}
