package sim

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Swarm testing: a swarmed run (Config.Swarm) draws from its seed the
// settings its config leaves unset — slot width, horizon, retention, the
// slots' flow limits, the burst instants, the workload mix and, with
// faults, the fault rates — so that every seed also explores its own
// configuration. One fixed configuration hides bugs that need a small slot,
// no horizon, a backlog behind a flow limit or one fault kind without the
// others; each seed drawing its own finds them without anyone choosing.
//
// The drawn values are resolved into Report.Config, so the report and the
// rerun line show them, and a flag pins any of them.

// swarmStream is the PCG stream of the swarm draws, apart from the task
// picks (1), the fault plan (2), the follow-ups (3) and the workload (4).
const swarmStream = 5

// swarmDraw is one seed's draw of every swarmed setting.
type swarmDraw struct {
	slotWidth   time.Duration
	horizon     float64 // in slot widths: the horizon follows the width, pinned or drawn
	retention   time.Duration
	maxInFlight int
	maxPerStep  int
	bursts      int
	workload    []string
	rates       faultRates
	slotMemory  int // 0: no bound
}

// drawSwarm draws every value, used or not, in a fixed order, so that
// pinning one setting does not change the others.
func drawSwarm(seed uint64, messages int) swarmDraw {
	rng := rand.New(rand.NewPCG(seed, swarmStream))
	var d swarmDraw
	// Width and retention bound how many (mostly empty) slots the horizon
	// activates over a run, which is most of a run's cost: it grows as
	// (span + retention) / width, so with a 24 h span a 1 s width costs
	// twenty times what 1 min does. Widths of 1–9 s are drawn for one seed
	// in 16 and 10 s–10 min otherwise, log-uniformly, and retention is
	// log-uniform over 1 min–72 h: a swarmed seed costs about what one at
	// the defaults does.
	if small := rng.IntN(16) == 0; small {
		d.slotWidth = time.Duration(logUniform(rng, 1, 9)) * time.Second
	} else {
		d.slotWidth = time.Duration(logUniform(rng, 10, 600)) * time.Second
	}
	if rng.IntN(5) > 0 {
		d.horizon = 3 * rng.Float64()
	}
	d.retention = time.Duration(logUniform(rng, 1, 72*60)) * time.Minute
	d.maxInFlight = limitDraw(rng, 256)
	d.maxPerStep = limitDraw(rng, 64)
	d.bursts = logUniform(rng, 1, max(1, messages/4))
	for {
		d.workload = d.workload[:0]
		for _, w := range Workloads {
			if rng.IntN(4) > 0 {
				d.workload = append(d.workload, w)
			}
		}
		if len(kindsOf(d.workload)) > 0 {
			break
		}
	}
	drawRate := func(k fault) {
		def := defaultRates[k]
		switch x := rng.IntN(6); {
		case def >= perMillion: // a planned fault: crash, clock jump
			d.rates[k] = [6]int{0, perMillion / 2, perMillion, perMillion, perMillion, perMillion}[x]
		case x == 0:
			d.rates[k] = 0
		default: // a quarter of the default up to four times it
			d.rates[k] = def << (x - 1) >> 2
		}
	}
	for k, name := range faultPoints {
		if name != "" && !lateFault(fault(k)) {
			drawRate(fault(k))
		}
	}
	// Drawn last, so the draws before it stay what they were. A third of
	// the seeds get a body budget of a few bodies to a few thousand (the
	// simulator's bodies are a few bytes), so slots load over it and the
	// refill path runs.
	if rng.IntN(3) == 0 {
		d.slotMemory = logUniform(rng, 8, 4096)
	}
	for k := range faultPoints {
		if lateFault(fault(k)) {
			drawRate(fault(k))
		}
	}
	// One seed in eight has faults only at targets, so that the isolated
	// invariant (check.go) applies.
	if rng.IntN(8) == 0 {
		for k := range d.rates {
			if fault(k) != faultPublishReject && fault(k) != faultTargetDown {
				d.rates[k] = 0
			}
		}
		d.rates[faultTargetDown] = max(d.rates[faultTargetDown], defaultRates[faultTargetDown])
	}
	return d
}

// lateFault reports whether k's rate is drawn after the other settings:
// fault kinds added later, so that adding them changed no earlier draw.
func lateFault(k fault) bool { return k == faultTargetDown || k == faultJournalFull }

// limitDraw is a flow limit: the slot package's default a quarter of the
// time, else 1..most, small values as likely as large ones, so that
// backlogs form.
func limitDraw(rng *rand.Rand, most int) int {
	if rng.IntN(4) == 0 {
		return 0
	}
	return logUniform(rng, 1, most)
}

// logUniform is an integer in [lo, hi] whose logarithm is uniform.
func logUniform(rng *rand.Rand, lo, hi int) int {
	v := math.Exp(math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi)+1)-math.Log(float64(lo))))
	return min(max(int(v), lo), hi)
}

// kindsOf lists the deliver-time kinds in a workload mix.
func kindsOf(workload []string) []opKind {
	var kinds []opKind
	for i, name := range []string{"uniform", "burst", "long", "past"} {
		if slices.Contains(workload, name) {
			kinds = append(kinds, opKind(i))
		}
	}
	return kinds
}

// swarm fills the settings c leaves unset from d.
func (c *Config) swarm(d swarmDraw) {
	if c.SlotWidth == 0 {
		c.SlotWidth = d.slotWidth
	}
	if c.Horizon == 0 {
		c.Horizon = time.Duration(d.horizon * float64(c.SlotWidth)).Truncate(time.Millisecond)
		if c.Horizon == 0 {
			c.Horizon = NoHorizon
		}
	}
	if c.Retention == 0 {
		c.Retention = d.retention
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.maxInFlight
	}
	if c.MaxPerStep == 0 {
		c.MaxPerStep = d.maxPerStep
	}
	if c.Bursts == 0 {
		c.Bursts = d.bursts
	}
	if c.SlotMemory == 0 && d.slotMemory > 0 {
		c.SlotMemory = d.slotMemory
	}
	if len(c.Workload) == 0 {
		c.Workload = d.workload
	}
}
