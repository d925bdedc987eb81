package sim

import (
	"math/rand/v2"
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
	nFaults
)

var faultNames = [nFaults]string{
	faultNone: "none", faultAppendLost: "append-lost", faultAppendAckLost: "append-ack-lost",
	faultLoadFail: "load-fail", faultPublishFail: "publish-fail", faultPublishAckLost: "publish-ack-lost",
	faultPublishSlow: "publish-slow", faultCrash: "crash", faultCrashWriteStored: "crash-write-stored",
	faultCrashWriteLost: "crash-write-lost", faultClockJump: "clock-jump",
}

func (f fault) String() string { return faultNames[f] }

// faultRates are per-draw probabilities, in millionths.
var faultRates = [nFaults]int{
	faultAppendLost:     10_000,
	faultAppendAckLost:  10_000,
	faultLoadFail:       10_000,
	faultPublishFail:    20_000,
	faultPublishAckLost: 10_000,
	faultPublishSlow:    20_000,
}

// faultPlan draws faults from its own RNG stream, only while active.
type faultPlan struct {
	s      *simulator
	rng    *rand.Rand
	on     bool // --faults on
	active bool // inside the fault window
	counts [nFaults]int
}

// draw returns one of kinds (or faultNone) and counts it.
func (p *faultPlan) draw(kinds ...fault) fault {
	if !p.on || !p.active {
		return faultNone
	}
	x := p.rng.IntN(1_000_000)
	for _, k := range kinds {
		if x < faultRates[k] {
			p.note(k)
			return k
		}
		x -= faultRates[k]
	}
	return faultNone
}

func (p *faultPlan) note(k fault) {
	p.counts[k]++
	p.s.trace.event(evFault, p.s.nowMs(), [16]byte{}, uint64(k))
}
