// Package actors runs tock's time slots as protoactor-go actors.
//
// A router actor owns every slot actor. Each slot actor is a thin shell
// around the pure state machine in actors/slot: it persists the events the
// machine hands out and tells it when the journal acknowledged them, arms
// timers through the injected clock, sends the replies and hands due
// messages to the Publisher as the machine releases them (a reply only
// once the events it rests on are durable, a delivery once its own
// Scheduled event is). docs/ARCHITECTURE.md has the whole picture.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// loadTimeout bounds one journal read (load, tail, purge).
const loadTimeout = 30 * time.Second

// Publisher delivers due messages to their targets.
type Publisher interface {
	// Publish sends d, retrying until it is confirmed (PubAck'd for stream
	// targets) or dead-lettered, then calls done exactly once with how it
	// ended. It must not block for long: slow targets queue inside the
	// publisher, not in the actor.
	Publish(d slot.Delivery, done func(slot.Outcome))
}

// Config tunes the scheduler.
type Config struct {
	SlotWidth time.Duration // span of deliver times per slot actor
	Horizon   time.Duration // how long before its start a slot is loaded
	Retention time.Duration // how long finished slots stay queryable
	MaxDelay  time.Duration // the furthest deliver time the gateway accepts
	// Flow limits per slot; zero means the slot package's defaults.
	MaxInFlight, MaxPerStep int
	// MaxBodyBytes is each slot's body budget (slot.Config.MaxBodyBytes):
	// a load keeps at most this many body bytes in memory and brings the
	// rest back from the journal as they come due. Zero: no bound.
	MaxBodyBytes int
	// MaxLookupSlots bounds the slots loaded at once only to answer gets
	// and cancels (0: DefaultMaxLookupSlots; negative: no bound). Lookups
	// of further slots wait for one of them to leave, up to
	// lookupQueuePerSlot per slot of the bound; beyond, they are answered
	// Busy. A client asking for ids all over the year so cannot make tock
	// load slot after slot without bound.
	MaxLookupSlots int
}

// DefaultMaxLookupSlots is Config.MaxLookupSlots's default: room for many
// clients' gets at once, each slot a load's worth of memory.
const DefaultMaxLookupSlots = 64

// lookupQueuePerSlot sizes the queue of lookups waiting for a slot.
const lookupQueuePerSlot = 16

// Deps are the scheduler's connections to the world.
type Deps struct {
	Journal   journal.Journal
	Publisher Publisher
	Clock     clock.Clock
	Logger    *slog.Logger
	// Dispatcher, when set, runs every actor's mailbox (the simulator
	// passes a deterministic one); nil means protoactor's default.
	Dispatcher actor.Dispatcher
	// Supervisor, when set, supervises the slot actors; nil means an
	// exponential back-off (which waits in wall time: the simulator passes
	// actor.NewRestartingStrategy()).
	Supervisor actor.SupervisorStrategy
	// Go, when set, runs the router's background journal work (purges);
	// nil means a new goroutine. The simulator queues it.
	Go func(func())
	// Random, when set, draws the random part of new ids; it is used by
	// the router alone, so it need not be safe for concurrent use. nil
	// means crypto/rand (msgid.Crypto); the simulator draws from its seed.
	Random msgid.Source
}

type env struct {
	cfg                                         Config
	widthMs, horizonMs, retentionMs, maxDelayMs int64
	journal                                     journal.Journal
	publisher                                   Publisher
	clock                                       clock.Clock
	goFunc                                      func(func())
	random                                      msgid.Source
	log                                         *slog.Logger
	system                                      *actor.ActorSystem
	stats                                       stats
}

// Scheduler is the running set of actors. Its methods are safe for
// concurrent use; each reply func is called exactly once, from an actor's
// goroutine, unless the scheduler is stopped first.
type Scheduler struct {
	env    *env
	system *actor.ActorSystem
	router *actor.PID
}

// ErrConfig reports an unusable configuration.
var ErrConfig = errors.New("invalid scheduler config")

// Start recovers from the journal and starts the actors: slots whose time
// has come near, or passed without finishing, are loaded at once; finished
// slots only have their purge planned.
func Start(ctx context.Context, cfg Config, deps Deps) (*Scheduler, error) {
	if cfg.SlotWidth < time.Millisecond || cfg.Horizon < 0 || cfg.Retention < 0 || cfg.MaxDelay <= 0 {
		return nil, fmt.Errorf("%w: slot width %v, horizon %v, retention %v, max delay %v",
			ErrConfig, cfg.SlotWidth, cfg.Horizon, cfg.Retention, cfg.MaxDelay)
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxLookupSlots == 0 {
		cfg.MaxLookupSlots = DefaultMaxLookupSlots
	}
	e := &env{
		cfg: cfg, widthMs: cfg.SlotWidth.Milliseconds(), horizonMs: cfg.Horizon.Milliseconds(),
		retentionMs: cfg.Retention.Milliseconds(), maxDelayMs: cfg.MaxDelay.Milliseconds(),
		journal: deps.Journal, publisher: deps.Publisher, clock: deps.Clock, log: deps.Logger,
		goFunc: deps.Go, random: deps.Random,
	}
	if e.goFunc == nil {
		e.goFunc = func(f func()) { go f() }
	}
	if e.random == nil {
		e.random = msgid.Crypto
	}
	r := &router{env: e, active: make(map[int64]*slotRef)}
	if err := r.recover(ctx); err != nil {
		return nil, err
	}
	e.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return deps.Logger.With("lib", "protoactor")
	}))
	r.root = e.system.Root

	slotSupervisor := deps.Supervisor
	if slotSupervisor == nil {
		slotSupervisor = actor.NewExponentialBackoffStrategy(time.Minute, 100*time.Millisecond)
	}
	r.props = func(idx int64, pinned bool) *actor.Props {
		opts := []actor.PropsOption{}
		if deps.Dispatcher != nil {
			opts = append(opts, actor.WithDispatcher(deps.Dispatcher))
		}
		handled := new(uint64) // one count per activation, kept across restarts
		return actor.PropsFromProducer(func() actor.Actor { return newSlotActor(e, idx, pinned, handled) }, opts...)
	}
	opts := []actor.PropsOption{actor.WithSupervisor(slotSupervisor)}
	if deps.Dispatcher != nil {
		opts = append(opts, actor.WithDispatcher(deps.Dispatcher))
	}
	pid, err := e.system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return r }, opts...), "router")
	if err != nil {
		return nil, fmt.Errorf("spawn router: %w", err)
	}
	return &Scheduler{env: e, system: e.system, router: pid}, nil
}

// recover plans the start from the journal's slot list.
func (r *router) recover(ctx context.Context) error {
	slots, err := r.env.journal.Slots(ctx)
	if err != nil {
		return fmt.Errorf("list journal slots: %w", err)
	}
	// Stamps of new ids must exceed those of ids accepted before the
	// restart, even if the wall clock stepped back meanwhile: start above
	// the newest stored event. It also bounds every genuine Closed.
	newest, err := r.env.journal.Newest(ctx)
	if err != nil {
		return fmt.Errorf("read the journal's newest time: %w", err)
	}
	now := r.now()
	current := r.slotOf(now)
	r.horizon = r.slotOf(now + r.env.horizonMs)
	for _, idx := range slots {
		switch {
		case idx > r.horizon:
			// Far future: loaded when the horizon reaches it.
		case idx < current:
			// Its time is over. A Closed tail means finished, if it can be
			// believed: its purge is planned without loading, after a
			// replay in the background confirms nothing is pending
			// (purgeDue). Anything else is overdue work.
			tail, seq, err := r.env.journal.Tail(ctx, idx)
			if err != nil {
				return fmt.Errorf("read tail of slot %d: %w", idx, err)
			}
			if at, ok := closedTail(tail, newest); ok {
				r.initialPurge = append(r.initialPurge, purgeEntry{at: now, index: idx, seq: seq, closedAt: at, verifyOnly: true})
				continue
			}
			r.initial = append(r.initial, idx)
		default:
			r.initial = append(r.initial, idx)
		}
	}
	r.stamper.Next(max(now, newest+1))
	return nil
}

// closedTail reports whether a past slot's last record says it is
// finished, and when it closed. The journal returns only records that
// pass its checks (a Closed after the slot's end, no id); a Closed beyond
// every time ever stored (newest) is not one tock wrote, and would put
// the slot's purge, and so its verification, off forever.
func closedTail(tail []journal.Event, newest int64) (int64, bool) {
	n := len(tail)
	if n == 0 || tail[n-1].Kind != journal.Closed || tail[n-1].At > newest {
		return 0, false
	}
	return tail[n-1].At, true
}

// Schedule accepts a message; reply gets its record once it is durable.
func (s *Scheduler) Schedule(req ScheduleRequest, reply func(slot.Result)) {
	s.system.Root.Send(s.router, &scheduleCmd{req: req, reply: orDiscard(reply)})
}

// Cancel cancels a pending message.
func (s *Scheduler) Cancel(id msgid.ID, reply func(slot.Result)) {
	s.system.Root.Send(s.router, &lookupCmd{id: id, cancel: true, reply: orDiscard(reply)})
}

// Get looks a message up.
func (s *Scheduler) Get(id msgid.ID, reply func(slot.Result)) {
	s.system.Root.Send(s.router, &lookupCmd{id: id, reply: orDiscard(reply)})
}

func orDiscard(reply func(slot.Result)) func(slot.Result) {
	if reply == nil {
		return func(slot.Result) {}
	}
	return reply
}

// Stats is a snapshot of the scheduler's counters.
type Stats struct {
	ActiveSlots     int   `json:"active_slots"`
	ResidentEntries int64 `json:"resident_entries"`
	Scheduled       int64 `json:"scheduled"`
	Cancelled       int64 `json:"cancelled"`
	Fired           int64 `json:"fired"`
	Dead            int64 `json:"dead"` // dead-lettered
	SlotLoads       int64 `json:"slot_loads"`
	SlotsPurged     int64 `json:"slots_purged"`
	AppendErrors    int64 `json:"append_errors"`
	// Refills counts the reads of a slot's records for bodies left in the
	// journal by its body budget; RefillScans those of them that had to
	// read the whole slot, the records named having moved.
	Refills     int64 `json:"refills"`
	RefillScans int64 `json:"refill_scans"`
	// LookupSlots is the slots loaded now only to answer gets and cancels
	// (Config.MaxLookupSlots), LookupsWaiting the lookups queued for room
	// among them, LookupsRefused those answered Busy since start.
	LookupSlots    int   `json:"lookup_slots"`
	LookupsWaiting int   `json:"lookups_waiting"`
	LookupsRefused int64 `json:"lookups_refused"`
}

// Stats asks the router for a snapshot.
func (s *Scheduler) Stats(timeout time.Duration) (Stats, error) {
	res, err := s.system.Root.RequestFuture(s.router, &statsReq{}, timeout).Result()
	if err != nil {
		return Stats{}, fmt.Errorf("stats: %w", err)
	}
	return res.(Stats), nil
}

// Resident is the number of entries the loaded slots hold now: a
// lock-free read for callers that cannot wait on Stats (the simulator).
func (s *Scheduler) Resident() int64 { return s.env.stats.resident.Load() }

// Refills counts slot refills (Stats.Refills); a lock-free read.
func (s *Scheduler) Refills() int64 { return s.env.stats.refills.Load() }

// Limited counts the slot steps that stopped firing at a flow limit while
// messages were still due (Config.MaxPerStep, Config.MaxInFlight): how
// often the backlog paths ran. A lock-free read, like Resident.
func (s *Scheduler) Limited() (perStep, inFlight int64) {
	return s.env.stats.limitedPerStep.Load(), s.env.stats.limitedInFlight.Load()
}

// Stop stops every actor, waiting at most timeout (on the scheduler's
// clock) for the router and its slots to finish what they are processing.
// Commands still in flight get no reply; nothing acknowledged is affected,
// since acknowledgements follow durability.
func (s *Scheduler) Stop(timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- s.system.Root.PoisonFuture(s.router).Wait() }()
	expired := make(chan struct{})
	t := s.env.clock.AfterFunc(timeout, func() { close(expired) })
	defer t.Stop()
	var err error
	select {
	case err = <-done:
	case <-expired:
		err = fmt.Errorf("actors still running after %v", timeout)
	}
	s.system.Shutdown()
	if err != nil {
		return fmt.Errorf("stop router: %w", err)
	}
	return nil
}

type stats struct {
	resident, scheduled, cancelled, fired, dead, loads, purged, appendErrors atomic.Int64
	limitedPerStep, limitedInFlight, refills, refillScans, lookupsRefused    atomic.Int64
}

func (st *stats) limit(l slot.Limit) {
	switch l {
	case slot.LimitPerStep:
		st.limitedPerStep.Add(1)
	case slot.LimitInFlight:
		st.limitedInFlight.Add(1)
	}
}

func (st *stats) count(k journal.Kind) {
	switch k {
	case journal.Scheduled:
		st.scheduled.Add(1)
	case journal.Cancelled:
		st.cancelled.Add(1)
	case journal.Fired:
		st.fired.Add(1)
	case journal.Dead:
		st.dead.Add(1)
	}
}

func (st *stats) snapshot(active int) Stats {
	return Stats{
		ActiveSlots: active, ResidentEntries: st.resident.Load(),
		Scheduled: st.scheduled.Load(), Cancelled: st.cancelled.Load(), Fired: st.fired.Load(), Dead: st.dead.Load(),
		SlotLoads: st.loads.Load(), SlotsPurged: st.purged.Load(), AppendErrors: st.appendErrors.Load(),
		Refills: st.refills.Load(), RefillScans: st.refillScans.Load(), LookupsRefused: st.lookupsRefused.Load(),
	}
}
