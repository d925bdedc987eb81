package sim

import (
	"testing"
	"time"
)

// swarmed is small(seed, faults) with every setting left to the swarm.
func swarmed(seed uint64, faults bool) Config {
	return Config{Seed: seed, Messages: 300, Span: 2 * time.Hour, Faults: faults, Swarm: true}
}

// TestSwarmSeeds: swarmed seeds pass, faults on and off, and between them
// run the backlog paths (steps stopped at each flow limit) and the refill
// path (slots loaded over their body budget).
func TestSwarmSeeds(t *testing.T) {
	var perStep, inFlight, refills int64
	widths := map[time.Duration]bool{}
	for seed := uint64(1); seed <= 12; seed++ {
		for _, faults := range []bool{false, true} {
			rep, err := Run(swarmed(seed, faults))
			if err != nil {
				t.Fatalf("faults %v: %v", faults, err)
			}
			perStep += rep.LimitedPerStep
			inFlight += rep.LimitedInFlight
			refills += rep.Refills
			widths[rep.Config.SlotWidth] = true
			if !faults && (len(rep.Faults) > 0 || len(rep.Duplicates) > 0) {
				t.Errorf("seed %d swarmed without faults: faults %v, duplicates %v", seed, rep.Faults, rep.Duplicates)
			}
		}
	}
	t.Logf("swarmed seeds: %d steps at max-per-step, %d at max-in-flight, %d refills", perStep, inFlight, refills)
	if perStep == 0 || inFlight == 0 {
		t.Errorf("swarmed seeds never hit a flow limit: %d steps at max-per-step, %d at max-in-flight", perStep, inFlight)
	}
	if refills == 0 {
		t.Error("swarmed seeds never refilled a slot loaded over its body budget")
	}
	if len(widths) < 6 {
		t.Errorf("12 seeds drew only the slot widths %v", widths)
	}
}

// TestSwarmResolved: the drawn settings are in Report.Config; a config
// that pins them all (the rerun line's) replays the run without Swarm;
// a pinned setting is kept and does not change the other draws.
func TestSwarmResolved(t *testing.T) {
	rep := run1(t, swarmed(9, true))
	c := rep.Config
	if c.SlotWidth == 0 || c.Horizon == 0 || c.Retention == 0 || c.MaxInFlight == 0 || c.MaxPerStep == 0 || c.Bursts == 0 || len(c.Workload) == 0 {
		t.Fatalf("resolved config lacks drawn values: %+v", c)
	}
	pinned := c
	pinned.Swarm = false
	if again := run1(t, pinned); again.TraceHash != rep.TraceHash {
		t.Errorf("the resolved config without swarm: hash %x, swarmed: %x", again.TraceHash, rep.TraceHash)
	}
	one := swarmed(9, true)
	one.SlotWidth = 7 * time.Second
	o := run1(t, one).Config
	if o.SlotWidth != 7*time.Second {
		t.Errorf("pinned slot width 7s, ran with %v", o.SlotWidth)
	}
	if o.Retention != c.Retention || o.MaxInFlight != c.MaxInFlight || o.MaxPerStep != c.MaxPerStep ||
		o.Bursts != c.Bursts || FormatFaultRates(o.FaultRates) != FormatFaultRates(c.FaultRates) {
		t.Errorf("pinning the width changed other draws: %+v, was %+v", o, c)
	}
	other := run1(t, swarmed(10, true)).Config
	if other.SlotWidth == c.SlotWidth && other.Retention == c.Retention && other.MaxInFlight == c.MaxInFlight {
		t.Errorf("seeds 9 and 10 drew the same configuration: %+v", c)
	}
}

// TestFlowLimitsCounted: a run whose slots hand out one delivery at a time
// counts steps stopped at each limit; one at the defaults counts none.
func TestFlowLimitsCounted(t *testing.T) {
	cfg := small(3, false)
	cfg.Workload = []string{"burst"}
	cfg.MaxPerStep = 1
	if rep := run1(t, cfg); rep.LimitedPerStep == 0 || rep.LimitedInFlight != 0 {
		t.Errorf("max per step 1: %d steps at max-per-step, %d at max-in-flight", rep.LimitedPerStep, rep.LimitedInFlight)
	}
	cfg.MaxPerStep, cfg.MaxInFlight = 0, 2
	if rep := run1(t, cfg); rep.LimitedInFlight == 0 {
		t.Errorf("max in flight 2: %d steps at max-in-flight", rep.LimitedInFlight)
	}
	if rep := run1(t, small(3, false)); rep.LimitedPerStep != 0 || rep.LimitedInFlight != 0 {
		t.Errorf("default limits: %d, %d steps limited", rep.LimitedPerStep, rep.LimitedInFlight)
	}
}
