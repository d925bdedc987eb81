package main

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// runSeeds emits in seed order whatever order runs finish in.
func TestRunSeedsOrder(t *testing.T) {
	run := func(seed uint64) seedResult {
		time.Sleep(time.Duration(13-seed) * time.Millisecond) // higher seeds finish first
		return seedResult{wall: time.Duration(seed)}
	}
	for _, k := range []int{1, 3, 12} {
		var begun, emitted []uint64
		runSeeds(1, 12, k, run, func(seed uint64) { begun = append(begun, seed) }, func(seed uint64, r seedResult) bool {
			if r.wall != time.Duration(seed) {
				t.Errorf("k %d: seed %d emitted with the result of seed %d", k, seed, r.wall)
			}
			emitted = append(emitted, seed)
			return true
		})
		want := "[1 2 3 4 5 6 7 8 9 10 11 12]"
		if fmt.Sprint(emitted) != want || fmt.Sprint(begun) != want {
			t.Errorf("k %d: emitted %v, begun %v, want %s", k, emitted, begun, want)
		}
	}
}

// runSeeds stops at the lowest failing seed, even when a higher one fails
// first, and starts no seed once a failure is known: seeds in flight then
// (at most k-1 besides the failing one) are the only ones above it.
func TestRunSeedsLowestFailure(t *testing.T) {
	const k = 4
	for _, failing := range [][]uint64{{5}, {5, 7}, {1}, {10}, {3, 4, 5, 6}} {
		t.Run(fmt.Sprint(failing), func(t *testing.T) {
			lowest := slices.Min(failing)
			var mu sync.Mutex
			started := map[uint64]bool{}
			// Seeds above the lowest failing one finish only once it was
			// emitted, so every one of them that ran was in flight when it
			// failed; a higher failing seed finishes first.
			emittedLowest := make(chan struct{})
			run := func(seed uint64) seedResult {
				mu.Lock()
				started[seed] = true
				mu.Unlock()
				if seed > lowest {
					<-emittedLowest
				}
				if slices.Contains(failing, seed) {
					return seedResult{err: errors.New("boom")}
				}
				return seedResult{}
			}
			var emitted []uint64
			runSeeds(1, 10, k, run, func(uint64) {}, func(seed uint64, r seedResult) bool {
				emitted = append(emitted, seed)
				if r.err != nil {
					close(emittedLowest)
					return false
				}
				return true
			})
			if got := emitted[len(emitted)-1]; got != lowest || len(emitted) != int(lowest) {
				t.Errorf("emitted %v, want 1..%d", emitted, lowest)
			}
			for s := range started {
				if s > lowest+k-1 {
					t.Errorf("seed %d started after seed %d failed", s, lowest)
				}
			}
		})
	}
}

// tock sim --parallel prints what a sequential run prints, wall times aside.
func TestSimParallelSameOutput(t *testing.T) {
	wall := regexp.MustCompile(`(, [0-9.]+(ms|s|µs)$| in [0-9.]+(ms|s|µs) \(parallel \d+\)$)`)
	out := func(parallel string) string {
		code, stdout, stderr := runCLI(t, "", "sim", "--seed", "3", "--seeds", "6", "--messages", "80", "--span", "2h", "--parallel", parallel)
		if code != 0 {
			t.Fatalf("--parallel %s: code %d, stderr %s", parallel, code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		for i, l := range lines {
			lines[i] = wall.ReplaceAllString(l, "")
		}
		return strings.Join(lines, "\n")
	}
	seq, par := out("1"), out("3")
	if seq != par {
		t.Errorf("--parallel 3 printed\n%s\nwant (as --parallel 1)\n%s", par, seq)
	}
	if strings.Count(seq, "\n  ok: ") != 6 {
		t.Errorf("want 6 seeds reported:\n%s", seq)
	}
}

// The rerun line of a report replays the run: same trace.
func TestSimRerunLineReplays(t *testing.T) {
	line := func(out, prefix string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no %q line in\n%s", prefix, out)
		return ""
	}
	// Swarmed (the default with faults on), with some settings pinned.
	code, out, stderr := runCLI(t, "", "sim", "--seed", "4", "--messages", "120", "--span", "2h",
		"--fault-rates", "crash=0.5,publishFail=10%,loadFail=0", "--slot-width", "7s", "--max-in-flight", "3")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	rerun := strings.TrimSpace(strings.TrimPrefix(line(out, "  rerun "), "  rerun "))
	for _, want := range []string{" --swarm on ", " --slot-width 7s ", " --max-in-flight 3 "} {
		if !strings.Contains(rerun, want) {
			t.Errorf("rerun line %q lacks %q", rerun, want)
		}
	}
	if _, flag, _ := strings.Cut(rerun, " --fault-rates "); !strings.Contains(","+flag+",", ",loadFail=0,") ||
		!strings.Contains(","+flag+",", ",publishFail=0.1,") || !strings.Contains(","+flag+",", ",crash=0.5,") {
		t.Errorf("rerun line %q lacks the fault rates given", rerun)
	}
	if c := line(out, "  config "); !strings.Contains(c, "slot width 7s,") || !strings.Contains(c, "max in flight 3,") {
		t.Errorf("config line %q lacks the pinned settings", c)
	}
	args, ok := strings.CutPrefix(rerun, "go run ./cmd/tock ")
	if !ok {
		t.Fatalf("rerun line %q", rerun)
	}
	code, again, stderr := runCLI(t, "", strings.Fields(args)...)
	if code != 0 {
		t.Fatalf("rerun: code %d: %s", code, stderr)
	}
	if a, b := line(out, "  trace "), line(again, "  trace "); a != b {
		t.Errorf("rerun: %q, first run: %q", b, a)
	}
}

func TestSimBadFaultRates(t *testing.T) {
	for _, v := range []string{"crash=2", "nope=0.1", "crash"} {
		code, _, stderr := runCLI(t, "", "sim", "--fault-rates", v)
		if code != 2 || !strings.Contains(stderr, "--fault-rates") {
			t.Errorf("--fault-rates %s: code %d, stderr %q", v, code, stderr)
		}
	}
}
