package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/pingcap/failpoint"

	"github.com/tockd/tock/msgid"
)

// fault is a kind of injected fault.
type fault int

const (
	faultNone             fault = iota
	faultAppendLost             // journal write failed: not stored, caller told
	faultAppendAckLost          // journal write stored, acknowledgement lost
	faultLoadFail               // journal read failed: the slot actor panics and restarts
	faultPublishFail            // delivery not made; the publisher retries
	faultPublishAckLost         // delivery made, its confirmation lost; retried (a duplicate)
	faultPublishSlow            // confirmation comes late (virtual delay)
	faultCrash                  // the process dies: all in-memory state lost, restart on the journal
	faultCrashWriteStored       // at a crash, an append not yet written reached the store after all
	faultCrashWriteLost         // at a crash, an append not yet written was lost
	faultClockJump              // the process pauses: time jumps ahead
	faultClockBack              // the process restarts with its clock behind: time steps back
	faultCorruptRecord          // a record no tock wrote appears in a slot's journal
	faultPublishReject          // the target refuses a message for good: it must be dead-lettered
	faultTargetDown             // a target refuses every attempt for up to 30 s; the publisher retries
	faultJournalFull            // the journal refuses every write for up to 30 s (max_bytes reached, disk full)
	nFaults
)

var faultNames = [nFaults]string{
	faultNone: "none", faultAppendLost: "append-lost", faultAppendAckLost: "append-ack-lost",
	faultLoadFail: "load-fail", faultPublishFail: "publish-fail", faultPublishAckLost: "publish-ack-lost",
	faultPublishSlow: "publish-slow", faultCrash: "crash", faultCrashWriteStored: "crash-write-stored",
	faultCrashWriteLost: "crash-write-lost", faultClockJump: "clock-jump", faultClockBack: "clock-back",
	faultCorruptRecord: "corrupt-record", faultPublishReject: "publish-reject", faultTargetDown: "target-down",
	faultJournalFull: "journal-full",
}

func (f fault) String() string { return faultNames[f] }

// FailpointPrefix is the package part of the simulator's failpoint names:
// a fault kind's failpoint is FailpointPrefix + its name in faultPoints,
// e.g. "github.com/tockd/tock/sim/crash".
const FailpointPrefix = "github.com/tockd/tock/sim/"

// faultPoints names the failpoint of each fault kind that has one (the
// crash-write outcomes are consequences of a crash, not faults of their own).
var faultPoints = [nFaults]string{
	faultAppendLost:     "appendFail",
	faultAppendAckLost:  "appendAckLost",
	faultLoadFail:       "loadFail",
	faultPublishFail:    "publishFail",
	faultPublishAckLost: "publishAckLost",
	faultPublishSlow:    "publishSlow",
	faultCrash:          "crash",
	faultClockJump:      "clockJump",
	faultClockBack:      "clockBack",
	faultCorruptRecord:  "corruptRecord",
	faultPublishReject:  "publishReject",
	faultTargetDown:     "targetDown",
	faultJournalFull:    "journalFull",
}

// Failpoints returns the full names of the simulator's failpoints.
func Failpoints() []string {
	var names []string
	for _, n := range faultPoints {
		if n != "" {
			names = append(names, FailpointPrefix+n)
		}
	}
	return names
}

// perMillion is the unit of faultRates: a rate of perMillion always fires.
const perMillion = 1_000_000

// faultRates are per-draw probabilities, in millionths, indexed by fault.
// Crash, clock jump and clock back are planned from the seed (2–6 crashes,
// 1–3 pauses, 1–2 backward steps a run); their rate is the probability that
// a planned one happens.
type faultRates [nFaults]int

// defaultRates apply to a failpoint whose value is return(true) (or just
// return): what --faults on enables.
var defaultRates = faultRates{
	faultAppendLost:     10_000,
	faultAppendAckLost:  10_000,
	faultLoadFail:       10_000,
	faultPublishFail:    20_000,
	faultPublishAckLost: 10_000,
	faultPublishSlow:    20_000,
	faultCrash:          perMillion,
	faultClockJump:      perMillion,
	faultClockBack:      perMillion,
	faultCorruptRecord:  5_000,
	faultPublishReject:  5_000,
	faultTargetDown:     2_000,
	faultJournalFull:    500,
}

// exclusive lists fault kinds decided by one draw: their rates must not add
// up to more than one.
var exclusive = [][]fault{
	{faultAppendLost, faultAppendAckLost},
	{faultPublishFail, faultPublishAckLost, faultPublishSlow},
}

func (r *faultRates) any() bool {
	for _, x := range r {
		if x > 0 {
			return true
		}
	}
	return false
}

// resolveRates gives the run's fault rates, per fault kind, in order of
// precedence: explicit (Config.FaultRates, by failpoint name), then the
// failpoint registry (GO_FAILPOINTS, failpoint.Enable), then fallback(k):
// the default rate with --faults on (or one drawn by swarm), 0 with off.
//
// The registry is only read, never changed, and is safe for concurrent
// use, so runs in parallel do not affect each other.
//
// A failpoint's value decides only its rate; whether it fires at a given
// point is drawn from the run's seeded random source. failpoint's own
// modifiers (N%, N*) and chains (->) are rejected: they are evaluated on
// failpoint's global state and could not be replayed.
func resolveRates(explicit map[string]float64, fallback func(fault) int) (faultRates, error) {
	var r faultRates
	for name := range explicit {
		if faultByPoint(name) == faultNone {
			return r, fmt.Errorf("sim: fault rate for %q: no such failpoint (have %s)", name, strings.Join(pointNames(), ", "))
		}
	}
	for k, name := range faultPoints {
		if name == "" {
			continue
		}
		if p, ok := explicit[name]; ok {
			if !(p >= 0 && p <= 1) { // also NaN
				return r, fmt.Errorf("sim: fault rate %s=%v: want a probability from 0 to 1", name, p)
			}
			r[k] = int(math.Round(p * perMillion))
			continue
		}
		full := FailpointPrefix + name
		if _, err := failpoint.Status(full); err != nil {
			r[k] = fallback(fault(k)) // not enabled by the user
			continue
		}
		rate, err := failpointRate(full, defaultRates[k])
		if err != nil {
			return r, err
		}
		r[k] = rate
	}
	for _, ks := range exclusive {
		sum, names := 0, []string{}
		for _, k := range ks {
			sum += r[k]
			names = append(names, faultPoints[k])
		}
		if sum > perMillion {
			return r, fmt.Errorf("sim: the probabilities of failpoints %s add up to more than 1", strings.Join(names, ", "))
		}
	}
	return r, nil
}

// faultByPoint is the fault kind whose failpoint is name, or faultNone.
func faultByPoint(name string) fault {
	for k, n := range faultPoints {
		if n != "" && n == name {
			return fault(k)
		}
	}
	return faultNone
}

func pointNames() []string {
	var names []string
	for _, n := range faultPoints {
		if n != "" {
			names = append(names, n)
		}
	}
	return names
}

// byName is r as Config.FaultRates spells it: probability by failpoint
// name, every fault kind that has a failpoint.
func (r *faultRates) byName() map[string]float64 {
	m := map[string]float64{}
	for k, name := range faultPoints {
		if name != "" {
			m[name] = float64(r[k]) / perMillion
		}
	}
	return m
}

// ParseFaultRates reads the --fault-rates flag: comma-separated
// name=probability pairs, names as in Failpoints without the prefix
// (appendFail, crash, ...), probabilities as fractions ("0.05") or
// percentages ("5%").
func ParseFaultRates(s string) (map[string]float64, error) {
	m := map[string]float64{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, v, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || faultByPoint(name) == faultNone {
			return nil, fmt.Errorf("fault rate %q: want name=probability, name one of %s", kv, strings.Join(pointNames(), ", "))
		}
		p, ok := parseProbability(v)
		if !ok {
			return nil, fmt.Errorf("fault rate %q: want a probability from 0 to 1, as 0.05 or 5%%", kv)
		}
		m[name] = p
	}
	return m, nil
}

// parseProbability reads "0.05" or "5%".
func parseProbability(v string) (float64, bool) {
	s, scale := strings.TrimSpace(v), 1.0
	if t, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = t, 100
	}
	p, err := strconv.ParseFloat(s, 64)
	if err != nil || !(p/scale >= 0 && p/scale <= 1) {
		return 0, false
	}
	return p / scale, true
}

// FormatFaultRates is the --fault-rates text of rates, in the order of
// Failpoints, each probability written exactly enough to parse back to the
// same rate.
func FormatFaultRates(rates map[string]float64) string {
	var parts []string
	for _, name := range pointNames() {
		if p, ok := rates[name]; ok {
			parts = append(parts, name+"="+strconv.FormatFloat(p, 'g', -1, 64))
		}
	}
	return strings.Join(parts, ",")
}

// failpointRate evaluates failpoint full once: not enabled, off or
// return(false) is 0; return, return(), return(true) is def; return(0) and
// return(1) are never and always; return("p") is probability p, a fraction
// ("0.05") or a percentage ("5%"). (failpoint cannot parse return(0.05).)
func failpointRate(full string, def int) (int, error) {
	desc, err := failpoint.Status(full)
	if err != nil {
		return 0, nil // not enabled: never fires
	}
	if desc != "off" && (!strings.HasPrefix(desc, "return") || strings.Contains(desc, "->")) {
		return 0, fmt.Errorf("sim: failpoint %s=%s: the simulator takes off or return(value): "+
			"it draws firing from its seeded random source, so failpoint's %% and * modifiers, "+
			"chains and other actions cannot be used", full, desc)
	}
	v, err := failpoint.Eval(full)
	if err != nil {
		return 0, nil // disabled meanwhile
	}
	bad := func() (int, error) {
		return 0, fmt.Errorf(`sim: failpoint %s=%s: want return(true), return(false), return(0), return(1) or a probability, return("0.05") or return("5%%")`, full, desc)
	}
	switch v := v.(type) {
	case nil: // off
		return 0, nil
	case struct{}:
		return def, nil
	case bool:
		if v {
			return def, nil
		}
		return 0, nil
	case int:
		switch v {
		case 0:
			return 0, nil
		case 1:
			return perMillion, nil
		}
		return bad()
	case string:
		p, ok := parseProbability(v)
		if !ok {
			return bad()
		}
		return int(math.Round(p * perMillion)), nil
	}
	return bad()
}

// faultPlan draws faults from its own RNG stream, only while active.
type faultPlan struct {
	s      *simulator
	rng    *rand.Rand
	rates  faultRates
	active bool // inside the fault window, and some fault enabled
	counts [nFaults]int
}

// draw returns one of kinds (or faultNone) and counts it. It takes one
// number from the plan's stream, unless none of kinds can fire.
func (p *faultPlan) draw(kinds ...fault) fault {
	if !p.active {
		return faultNone
	}
	sum := 0
	for _, k := range kinds {
		sum += p.rates[k]
	}
	if sum == 0 {
		return faultNone
	}
	x := p.rng.IntN(perMillion)
	for _, k := range kinds {
		if x < p.rates[k] {
			p.note(k)
			return k
		}
		x -= p.rates[k]
	}
	return faultNone
}

// fire reports whether a planned fault of kind k (a crash, a clock jump)
// happens. It takes a number from the plan's stream only if k's rate is
// strictly between never and always.
func (p *faultPlan) fire(k fault) bool {
	switch r := p.rates[k]; {
	case r <= 0:
		return false
	case r >= perMillion:
		return true
	default:
		return p.rng.IntN(perMillion) < r
	}
}

func (p *faultPlan) note(k fault) {
	p.counts[k]++
	p.s.trace.event(evFault, p.s.nowMs(), msgid.ID{}, uint64(k))
}
