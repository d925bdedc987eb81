package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tockd/tock/sim"
)

type simOpts struct {
	seed, seeds        uint64
	parallel           int
	messages           int
	span               time.Duration
	faults             string
	faultRates         string
	swarm              string
	workload           string
	slotWidth, horizon time.Duration
	retention          time.Duration
	maxInFlight        int
	maxPerStep         int
	slotMemory         int
	bursts             int
	cpuProfile         string
	memProfile         string
}

func simFlags(o *simOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.Uint64Var(&o.seed, "seed", 1, "the `seed`: the same seed replays the same run, byte for byte")
	fs.Uint64Var(&o.seeds, "seeds", 1, "run `N` seeds, from --seed on; stops at the first violation")
	fs.IntVar(&o.parallel, "parallel", 1, "run seeds on `K` goroutines (0: GOMAXPROCS); results print in seed order")
	fs.IntVar(&o.messages, "messages", 1000, "schedule `N` messages")
	fs.Var(newDurationValue(&o.span, 24*time.Hour), "span", "deliver times fall within this `duration` of virtual time (also the max delay)")
	fs.StringVar(&o.faults, "faults", "on", "inject faults: `on|off`")
	fs.StringVar(&o.faultRates, "fault-rates", "", "fault probabilities by failpoint, `name=p,...` (e.g. appendFail=0.05,crash=50%); beat GO_FAILPOINTS and --faults")
	fs.StringVar(&o.swarm, "swarm", "", "swarm testing, `on|off` (default: as --faults): draw from the seed every setting not given (slot width, horizon, retention, flow limits, bursts, workload, fault rates)")
	fs.StringVar(&o.workload, "workload", strings.Join(sim.Workloads, ","), "comma-separated `mix` of "+strings.Join(sim.Workloads, ", ")+" (drawn with --swarm on unless given)")
	fs.Var(newDurationValue(&o.slotWidth, time.Minute), "slot-width", "slot `width` (drawn with --swarm on unless given)")
	fs.Var(newDurationValue(&o.horizon, 10*time.Second), "horizon", "activation `horizon`, 0 for none (drawn with --swarm on unless given)")
	fs.Var(newDurationValue(&o.retention, 72*time.Hour), "retention", "`retention` of finished slots (drawn with --swarm on unless given)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 0, "a slot's unconfirmed deliveries at most, `N` (0: the scheduler's default, or drawn with --swarm on)")
	fs.IntVar(&o.slotMemory, "slot-memory", 0, "body bytes a loaded slot keeps in memory, `N` (0: no bound, or drawn with --swarm on); bodies beyond it are read back as they come due")
	fs.IntVar(&o.maxPerStep, "max-per-step", 0, "deliveries a slot hands out per step at most, `N` (0: the scheduler's default, or drawn with --swarm on)")
	fs.IntVar(&o.bursts, "bursts", 0, "the burst workload's messages are due at `N` instants (0: one per 2,000 messages, or drawn with --swarm on)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the runs to `file` (go tool pprof)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write an allocation profile to `file` after the runs (go tool pprof -sample_index=alloc_space)")
	return fs
}

func runSim(_ context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("sim")
	var o simOpts
	fs := simFlags(&o)
	pos, err := parseArgs(fs, args)
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if !given["swarm"] {
		o.swarm = o.faults
	}
	if err == nil && len(pos) > 0 {
		err = usagef("unexpected argument %q", pos[0])
	}
	if err == nil && o.faults != "on" && o.faults != "off" {
		err = usagef("--faults must be on or off, not %q", o.faults)
	}
	var mix []string
	for _, w := range strings.Split(o.workload, ",") {
		if w = strings.TrimSpace(w); w == "" {
			continue
		}
		if err == nil && !slices.Contains(sim.Workloads, w) {
			err = usagef("unknown workload %q (have %s)", w, strings.Join(sim.Workloads, ","))
		}
		mix = append(mix, w)
	}
	rates, rerr := sim.ParseFaultRates(o.faultRates)
	if err == nil && rerr != nil {
		err = usagef("--fault-rates: %v", rerr)
	}
	if err == nil && o.swarm != "on" && o.swarm != "off" {
		err = usagef("--swarm must be on or off, not %q", o.swarm)
	}
	if err == nil && (o.maxInFlight < 0 || o.maxPerStep < 0 || o.bursts < 0 || o.parallel < 0 || o.slotMemory < 0) {
		err = usagef("--max-in-flight, --max-per-step, --bursts, --slot-memory and --parallel must not be negative")
	}
	if err == nil && o.seeds == 0 {
		err = usagef("--seeds must be at least 1")
	}
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	stop, err := startProfiles(o.cpuProfile, o.memProfile)
	if err != nil {
		fmt.Fprintf(stderr, "tock sim: %v\n", err)
		return 1
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(stderr, "tock sim: %v\n", err)
		}
	}()
	began := time.Now()
	k := o.parallel
	if k == 0 {
		k = runtime.GOMAXPROCS(0)
	}
	base := sim.Config{
		Messages: o.messages, Span: o.span, Faults: o.faults == "on", FaultRates: rates, Swarm: o.swarm == "on",
		MaxInFlight: o.maxInFlight, MaxPerStep: o.maxPerStep, Bursts: o.bursts, SlotMemory: o.slotMemory,
	}
	// Settings not given stay zero: the simulator's default, or drawn
	// from the seed with --swarm on. A given one is pinned.
	if given["workload"] {
		base.Workload = mix
	}
	if given["slot-width"] {
		base.SlotWidth = o.slotWidth
	}
	if given["horizon"] {
		base.Horizon = o.horizon
		if o.horizon == 0 {
			base.Horizon = sim.NoHorizon
		}
	}
	if given["retention"] {
		base.Retention = o.retention
	}
	run := func(seed uint64) seedResult {
		cfg := base
		cfg.Seed = seed
		return runSeed(cfg)
	}
	failed := false
	runSeeds(o.seed, o.seeds, k, run, func(seed uint64) { fmt.Fprintf(stdout, "seed %d\n", seed) },
		func(seed uint64, r seedResult) bool {
			if o.seeds == 1 || r.err != nil {
				printSimReport(stdout, r.rep, r.wall)
			} else {
				fmt.Fprintf(stdout, "  ok: %d scheduled, %d delivered, %d faults, trace %016x, %v\n",
					r.rep.Acked, r.rep.Delivered, total(r.rep.Faults), r.rep.TraceHash, r.wall.Round(time.Millisecond))
			}
			if r.err == nil {
				return true
			}
			failed = true
			var v *sim.Violation
			if errors.As(r.err, &v) {
				fmt.Fprintf(stderr, "VIOLATION %v\n", r.err) // ends with the rerun line
			} else {
				fmt.Fprintf(stderr, "tock sim: %v\n", r.err)
			}
			return false
		})
	if failed {
		return 1
	}
	if o.seeds > 1 {
		fmt.Fprintf(stdout, "%d seeds passed in %v (parallel %d)\n", o.seeds, time.Since(began).Round(time.Millisecond), min(uint64(k), o.seeds))
	}
	return 0
}

// seedResult is one seed's run.
type seedResult struct {
	rep  sim.Report
	err  error
	wall time.Duration
}

// runSeed runs cfg; a panic becomes the seed's error, so a parallel run
// still names the seed that broke (the simulator turns panics in its own
// callbacks into violations; one anywhere else would end the process
// without saying which of the seeds in flight it was).
func runSeed(cfg sim.Config) (r seedResult) {
	start := time.Now()
	defer func() {
		r.wall = time.Since(start)
		if p := recover(); p != nil {
			r.err = fmt.Errorf("seed %d: panic: %v\n%s", cfg.Seed, p, debug.Stack())
		}
	}()
	r.rep, r.err = sim.Run(cfg)
	return r
}

// runSeeds runs seeds first, first+1, ... (n of them) on k goroutines and
// hands the results to emit in seed order, whatever order they finish in,
// so the output is the same for every k. begin is called for a seed once
// every lower one was emitted: with k = 1 just before it runs, and in any
// case before its result, so the last seed printed is the one a hung run
// is stuck on. emit returns false to stop at that seed: no seed above it is
// started any more, and since seeds below it were emitted first, the one it
// stops at is the lowest failing seed.
//
// Each run is single-goroutine and deterministic, and runs share no
// mutable state (sim.Run reads the failpoint registry, which is safe for
// concurrent use, and nothing else global), so running them side by side
// changes nothing but the wall time.
func runSeeds(first, n uint64, k int, run func(seed uint64) seedResult, begin func(seed uint64), emit func(seed uint64, r seedResult) bool) {
	type done struct {
		seed uint64
		r    seedResult
	}
	k = int(min(uint64(max(k, 1)), n))
	var (
		mu   sync.Mutex
		next = first
		stop = first + n // no seed at or above it is started
	)
	results := make(chan done)
	var wg sync.WaitGroup
	for range k {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= stop {
					mu.Unlock()
					return
				}
				seed := next
				next++
				mu.Unlock()
				r := run(seed)
				if r.err != nil {
					mu.Lock()
					stop = min(stop, seed+1) // seeds below it still run: one may fail too
					mu.Unlock()
				}
				results <- done{seed, r}
			}
		})
	}
	go func() {
		wg.Wait()
		close(results)
	}()
	waiting := map[uint64]seedResult{}
	want, stopped := first, false
	if n > 0 {
		begin(want)
	}
	for d := range results { // drained to the end, so no worker is left blocked
		if stopped {
			continue
		}
		waiting[d.seed] = d.r
		for !stopped {
			r, ok := waiting[want]
			if !ok {
				break
			}
			delete(waiting, want)
			if !emit(want, r) {
				stopped = true
				mu.Lock()
				stop = min(stop, want)
				mu.Unlock()
				break
			}
			if want++; want < first+n {
				begin(want)
			}
		}
	}
}

// startProfiles starts a CPU profile to cpuFile (if set); the returned stop
// ends it and writes the allocation profile to memFile (if set). Profiles
// are how the simulator's own cost is found: a run exercises the slot
// store and the actors at a scale no unit benchmark does.
func startProfiles(cpuFile, memFile string) (stop func() error, err error) {
	var cpu *os.File
	if cpuFile != "" {
		if cpu, err = os.Create(cpuFile); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, fmt.Errorf("cpu profile %s: %w", cpuFile, err)
		}
	}
	return func() error {
		var errs []error
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				errs = append(errs, fmt.Errorf("cpu profile %s: %w", cpuFile, err))
			}
		}
		if memFile != "" {
			if err := writeHeapProfile(memFile); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}, nil
}

func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("memory profile: %w", err)
	}
	runtime.GC() // up-to-date in-use figures; allocation totals are kept anyway
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return fmt.Errorf("memory profile %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("memory profile %s: %w", file, err)
	}
	return nil
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func printSimReport(w io.Writer, r sim.Report, wall time.Duration) {
	fmt.Fprintf(w, "  scheduled    %d acked, %d unavailable, %d unanswered (crash) of %d\n", r.Acked, r.Unavailable, r.NoReply, r.Messages)
	fmt.Fprintf(w, "  delivered    %d messages, %d publishes; %d dead letters (refused by the target)\n", r.Delivered, r.Deliveries, r.DeadLetters)
	fmt.Fprintf(w, "  duplicates   %d", total(r.Duplicates))
	for _, k := range sortedKeys(r.Duplicates) {
		fmt.Fprintf(w, "  %s=%d", k, r.Duplicates[k])
	}
	fmt.Fprintf(w, "\n  cancels      %d", total(r.Cancels))
	for _, k := range sortedKeys(r.Cancels) {
		fmt.Fprintf(w, "  %s=%d", k, r.Cancels[k])
	}
	fmt.Fprintf(w, "\n  gets         %d answered\n", r.Gets)
	fmt.Fprintf(w, "  purged       %d slots\n", r.PurgedSlots)
	fmt.Fprintf(w, "  lateness     (first delivery of acked messages, virtual time)\n")
	for _, b := range r.Lateness {
		if b.Count == 0 {
			continue
		}
		label := "≤ " + b.Max.String()
		if b.Max > 1000*time.Hour {
			label = "> 24h"
		}
		fmt.Fprintf(w, "    %-10s %d\n", label, b.Count)
	}
	fmt.Fprintf(w, "  faults       %d", total(r.Faults))
	for _, k := range sortedKeys(r.Faults) {
		fmt.Fprintf(w, "  %s=%d", k, r.Faults[k])
	}
	fmt.Fprintf(w, "\n  records      %d injected", total(r.Injected))
	for _, k := range sortedKeys(r.Injected) {
		fmt.Fprintf(w, "  %s=%d", k, r.Injected[k])
	}
	fmt.Fprintf(w, "; %d read back, %d quarantined", r.InjectedRead, r.Quarantined)
	fmt.Fprintf(w, "\n  backlog      %d slot steps stopped at max-per-step, %d at max-in-flight; %d refills\n", r.LimitedPerStep, r.LimitedInFlight, r.Refills)
	c := r.Config
	swarm := ""
	if c.Swarm {
		swarm = " (swarm)"
	}
	memory := "no bound"
	if c.SlotMemory > 0 {
		memory = fmt.Sprintf("%d B", c.SlotMemory)
	}
	fmt.Fprintf(w, "  config       slot width %v, horizon %v, retention %v, max in flight %d, max per step %d, %d bursts, slot memory %s%s\n",
		c.SlotWidth, max(c.Horizon, 0), c.Retention, c.MaxInFlight, c.MaxPerStep, c.Bursts, memory, swarm)
	fmt.Fprintf(w, "  workload     %s\n", strings.Join(c.Workload, ","))
	fmt.Fprintf(w, "  rates       ")
	any := false
	for _, kv := range strings.Split(sim.FormatFaultRates(r.Config.FaultRates), ",") {
		if kv != "" && !strings.HasSuffix(kv, "=0") {
			fmt.Fprintf(w, " %s", kv)
			any = true
		}
	}
	if !any {
		fmt.Fprintf(w, " none")
	}
	fmt.Fprintf(w, "\n  peak         %d resident entries, %d journal slots, %d journal events\n", r.PeakResident, r.PeakSlots, r.PeakEvents)
	fmt.Fprintf(w, "  run          %d tasks, virtual end %s, wall %v\n", r.Steps, r.VirtualEnd.UTC().Format(time.RFC3339), wall.Round(time.Millisecond))
	fmt.Fprintf(w, "  trace        %d events, hash %016x\n", r.TraceEvents, r.TraceHash)
	fmt.Fprintf(w, "  rerun        %s\n", r.Config.RerunCommand())
}
