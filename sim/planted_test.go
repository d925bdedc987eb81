package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// The planted-bug tests: each wraps what the actors see (the journal or the
// publisher, through Config.WrapJournal and Config.WrapPublisher) to plant
// one bug of the kinds the simulator must catch, without touching
// production code, and asserts that the right invariant catches it, for
// several seeds, faults off and on, with the seed in the error.

// plantedSeeds are the seeds every planted bug must be caught with.
var plantedSeeds = []uint64{1, 2, 3, 4, 5, 6, 7, 8}

// expectCaught runs cfg for every seed of plantedSeeds, with each of
// faultModes, and asserts invariant caught each run; invariant may name
// alternatives, "a|b", when faults decide which check meets the bug first.
func expectCaught(t *testing.T, cfg Config, invariant string, faultModes ...bool) {
	t.Helper()
	for _, faults := range faultModes {
		for _, seed := range plantedSeeds {
			c := cfg
			c.Seed, c.Faults = seed, faults
			_, err := Run(c)
			var v *Violation
			if !errors.As(err, &v) {
				t.Errorf("seed %d faults %v: planted bug not caught: err = %v", seed, faults, err)
				continue
			}
			if !slices.Contains(strings.Split(invariant, "|"), v.Invariant) || v.Seed != seed {
				t.Errorf("seed %d faults %v: caught as %q (seed %d), want %q: %v", seed, faults, v.Invariant, v.Seed, invariant, v)
				continue
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, fmt.Sprintf("seed %d: invariant %s violated", seed, v.Invariant)) {
				t.Errorf("seed %d faults %v: the error does not lead with seed and invariant: %q", seed, faults, msg)
			}
			if v.Op >= 0 && len(v.History) == 0 {
				t.Errorf("seed %d faults %v: violation without the message's history: %v", seed, faults, v)
			}
			if seed == plantedSeeds[0] {
				t.Logf("faults %v: caught: %s", faults, strings.SplitN(msg, "\n", 2)[0])
			}
		}
	}
}

// plantedConfig is small() without seed and faults, which expectCaught sets.
func plantedConfig() Config { return small(0, false) }

// firedDroppingJournal acknowledges Fired events without storing them: the
// journal forgets that messages were delivered. Without faults, the next
// load of the slot (a get, a cancel, the horizon) fires them again, a
// duplicate without a fault. With faults, the refire after a crash or a
// reload would pass for the legitimate one of a message whose Fired append
// was caught by the crash; the checker tells them apart because it knows
// which Fired events the journal acknowledged.
type firedDroppingJournal struct{ journal.Journal }

func (j firedDroppingJournal) Append(slot int64, events []journal.Event, done func(uint64, error)) {
	kept := make([]journal.Event, 0, len(events))
	for _, ev := range events {
		if ev.Kind != journal.Fired {
			kept = append(kept, ev)
		}
	}
	j.Journal.Append(slot, kept, done)
}

func TestCheckerBitesDroppedFired(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return firedDroppingJournal{j} }
	expectCaught(t, cfg, "duplicate", false, true)
	cfg.Swarm = true
	expectCaught(t, cfg, "duplicate", false, true)
}

// TestFiredAckCheckClean: the check that no message is handed out again
// once its Fired event was acknowledged does not fire on the real code,
// although in the same runs Fired events are acknowledged and messages
// whose Fired event was not are fired again after crashes and reloads.
func TestFiredAckCheckClean(t *testing.T) {
	acked, refired := 0, 0
	for _, swarm := range []bool{false, true} {
		for _, faults := range []bool{false, true} {
			for _, seed := range plantedSeeds {
				c := plantedConfig()
				c.Seed, c.Faults, c.Swarm = seed, faults, swarm
				rep, err := Run(c)
				if err != nil {
					t.Fatalf("swarm %v faults %v: %v", swarm, faults, err)
				}
				acked += rep.FiredAcked
				refired += rep.Duplicates["crash"] + rep.Duplicates["reload"]
			}
		}
	}
	if acked == 0 || refired == 0 {
		t.Errorf("the check was not exercised: %d Fired events acknowledged, %d refires after a crash or reload", acked, refired)
	}
}

// firedIgnoringJournal reads slots back without their Fired events: a slot
// reloaded (after a crash, a failed append, or for a lookup) fires again
// what it had delivered and recorded.
type firedIgnoringJournal struct{ journal.Journal }

func (j firedIgnoringJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	return j.Journal.Scan(ctx, slot, func(seq uint64, evs []journal.Event) error {
		return fn(seq, without(evs, journal.Fired))
	})
}

// without returns evs less the events of kind k, in evs's memory.
func without(evs []journal.Event, k journal.Kind) []journal.Event {
	kept := evs[:0]
	for _, ev := range evs {
		if ev.Kind != k {
			kept = append(kept, ev)
		}
	}
	return kept
}

// TestCheckerBitesIgnoredFired: with faults on, the refire follows a crash,
// which excuses a duplicate only while the Fired event is not durable.
func TestCheckerBitesIgnoredFired(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return firedIgnoringJournal{j} }
	expectCaught(t, cfg, "duplicate", false, true)
}

// cancelForgettingJournal reads slots back without their Cancelled events:
// a slot reloaded after a cancel was acknowledged ignores it.
type cancelForgettingJournal struct{ journal.Journal }

func (j cancelForgettingJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	return j.Journal.Scan(ctx, slot, func(seq uint64, evs []journal.Event) error {
		return fn(seq, without(evs, journal.Cancelled))
	})
}

func TestCheckerBitesIgnoredCancel(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return cancelForgettingJournal{j} }
	expectCaught(t, cfg, "4-cancel-wins", false, true)
}

// purgeSkippingJournal answers every purge with success and removes
// nothing.
type purgeSkippingJournal struct{ journal.Journal }

func (purgeSkippingJournal) PurgeUpTo(context.Context, int64, uint64) error { return nil }

func TestCheckerBitesSkippedPurge(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return purgeSkippingJournal{j} }
	expectCaught(t, cfg, "6-retention", false, true)
}

// The three planted bugs of sim_test.go, for every planted seed.

func TestCheckerBitesEarlySeeds(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return earlyJournal{j} }
	// With faults, a shifted message that a fault delays past its true
	// time is not early, and integrity sees its deliver time is not its
	// id's.
	expectCaught(t, cfg, "2-never-early", false)
	expectCaught(t, cfg, "2-never-early|integrity", true)
}

func TestCheckerBitesLossSeeds(t *testing.T) {
	cfg := plantedConfig()
	cfg.Workload = []string{"uniform", "burst"}
	cfg.WrapPublisher = func(p actors.Publisher) actors.Publisher { return droppingPublisher{p} }
	expectCaught(t, cfg, "1-no-loss", false, true)
}

func TestCheckerBitesFalseAckSeeds(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return lyingJournal{j} }
	expectCaught(t, cfg, "5-no-false-acks", false, true)
}

// ackFirstJournal acknowledges every append at once, before it is written:
// the producer hears "ok" before the Scheduled event is durable.
type ackFirstJournal struct{ journal.Journal }

func (j ackFirstJournal) Append(slot int64, events []journal.Event, done func(uint64, error)) {
	done(0, nil)
	j.Journal.Append(slot, events, func(uint64, error) {})
}

func TestCheckerBitesAckBeforeAppend(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return ackFirstJournal{j} }
	expectCaught(t, cfg, "5-no-false-acks", false, true)
}

// newestForgettingJournal answers Newest with 0: a restarted scheduler
// then stamps ids from its clock alone. After a restart with the clock
// behind (clock-back), its stamps start below those of the ids stored
// before, and ids can repeat.
type newestForgettingJournal struct{ journal.Journal }

func (newestForgettingJournal) Newest(context.Context) (int64, error) { return 0, nil }

// TestCheckerBitesForgottenNewest: faults on only, since only faults bring
// restarts; every faults-on run steps the clock back at least once.
func TestCheckerBitesForgottenNewest(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return newestForgettingJournal{j} }
	expectCaught(t, cfg, "unique-ids", true)
}

// TestClockBack: faults-on runs step the clock back and restart behind
// the true time, and the real code keeps ids unique across them.
func TestClockBack(t *testing.T) {
	for _, seed := range plantedSeeds {
		rep := run1(t, small(seed, true))
		if rep.Faults["clock-back"] == 0 || rep.ClockBehind < time.Minute || rep.Crashes < 2 {
			t.Errorf("seed %d: %d clock-back steps, clock %v behind at the end, %d crashes", seed, rep.Faults["clock-back"], rep.ClockBehind, rep.Crashes)
		}
	}
}

// TestClockBackBeforeAnyID: a clock-back before any id was stored steps
// the clock back by its own amount, not to the epoch (the newest stamp of
// an empty journal is none, not 0).
func TestClockBackBeforeAnyID(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		cfg := small(seed, true)
		cfg.Messages = 0
		rep := run1(t, cfg)
		if rep.Faults["clock-back"] == 0 || rep.ClockBehind > cfg.Span || rep.VirtualEnd.After(start.Add(7*24*time.Hour)) {
			t.Errorf("seed %d: %d clock-backs, clock %v behind, virtual end %v", seed, rep.Faults["clock-back"], rep.ClockBehind, rep.VirtualEnd)
		}
	}
}

// forgingJournal lets one forged Scheduled event into every slot it
// reads, as a replay that trusted a record no tock wrote would: a message
// of an id no request got, in the slot, to a system subject.
type forgingJournal struct {
	journal.Journal
	widthMs int64
}

func (j forgingJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	id := msgid.Compose(slot*j.widthMs, 1, uint64(slot)|1)
	forged := []journal.Event{{Kind: journal.Scheduled, ID: id, At: id.DeliverAt(), Target: "$SYS.forged", DeliverAt: id.DeliverAt()}}
	if err := fn(0, forged); err != nil {
		return 0, err
	}
	return j.Journal.Scan(ctx, slot, fn)
}

func TestCheckerBitesForeignPublish(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal {
		return forgingJournal{Journal: j, widthMs: time.Minute.Milliseconds()}
	}
	expectCaught(t, cfg, "no-foreign-publish", false, true)
}

// retargetingJournal reads every Scheduled event back with a system
// subject for its target: a replay that trusted a forged copy of a real
// message's record.
type retargetingJournal struct{ journal.Journal }

func (j retargetingJournal) Scan(ctx context.Context, slot int64, fn func(uint64, []journal.Event) error) (uint64, error) {
	return j.Journal.Scan(ctx, slot, func(seq uint64, evs []journal.Event) error {
		for i := range evs {
			if evs[i].Kind == journal.Scheduled {
				evs[i].Target = "$SYS.x"
			}
		}
		return fn(seq, evs)
	})
}

func TestCheckerBitesRetargetedPublish(t *testing.T) {
	cfg := plantedConfig()
	cfg.WrapJournal = func(j journal.Journal) journal.Journal { return retargetingJournal{j} }
	expectCaught(t, cfg, "no-foreign-publish", false, true)
}

// serialPublisher hands the publisher one delivery at a time, the next once
// the one before is confirmed: tock's publisher before targets had their
// own budgets. A target that is down then holds up every other one.
type serialPublisher struct {
	inner actors.Publisher
	busy  bool
	queue []func()
}

func (p *serialPublisher) Publish(d slot.Delivery, done func(slot.Outcome)) {
	p.queue = append(p.queue, func() {
		p.inner.Publish(d, func(o slot.Outcome) { done(o); p.next() })
	})
	if !p.busy {
		p.next()
	}
}

func (p *serialPublisher) next() {
	if len(p.queue) == 0 {
		p.busy = false
		return
	}
	p.busy = true
	f := p.queue[0]
	p.queue = p.queue[1:]
	f()
}

// TestCheckerBitesSerialPublisher: with a target down now and then, a
// publisher that serialises targets is caught by isolated.
func TestCheckerBitesSerialPublisher(t *testing.T) {
	cfg := plantedConfig()
	cfg.Span = 20 * time.Minute
	cfg.FaultRates = map[string]float64{"targetDown": 0.05}
	// No cancels: one of a message the wrapper still queues (Delivering,
	// not yet handed to the target) would be caught first, as 4-cancel-wins.
	cfg.Workload = []string{"uniform", "burst", "long", "past", "get", "retention"}
	cfg.WrapPublisher = func(p actors.Publisher) actors.Publisher { return &serialPublisher{inner: p} }
	expectCaught(t, cfg, "isolated", false)
}

// TestTargetFaultsIsolated: the same faults without the planted bug pass.
func TestTargetFaultsIsolated(t *testing.T) {
	for _, seed := range plantedSeeds {
		cfg := plantedConfig()
		cfg.Seed, cfg.Span = seed, 20*time.Minute
		cfg.FaultRates = map[string]float64{"targetDown": 0.05, "publishReject": 0.03}
		rep, err := Run(cfg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if rep.Faults["target-down"] == 0 || rep.DeadLetters == 0 {
			t.Errorf("seed %d: faults %v, %d dead letters: the run did not exercise them", seed, rep.Faults, rep.DeadLetters)
		}
	}
}

// TestJournalFullNoStorm: a journal that refuses every write for up to
// 30 s at a time: slots back off before they reload and fire again
// (no-refire-storm), and nothing acknowledged is lost.
func TestJournalFullNoStorm(t *testing.T) {
	for _, seed := range plantedSeeds {
		cfg := plantedConfig()
		cfg.Seed = seed
		cfg.FaultRates = map[string]float64{"journalFull": 0.01}
		rep, err := Run(cfg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if rep.Faults["journal-full"] == 0 || rep.Delivered == 0 {
			t.Errorf("seed %d: faults %v, %d delivered: the run did not exercise a full journal", seed, rep.Faults, rep.Delivered)
		}
		// A slot that reloads carries over the outcomes it could not
		// store: a delivered message is recorded, not fired again.
		if n := rep.Duplicates["reload"]; n > 0 {
			t.Errorf("seed %d: %d messages delivered again after a reload", seed, n)
		}
	}
}
