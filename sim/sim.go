// Package sim is tock's deterministic simulator. It runs the real actors
// (actors.Start: router, slot actors, protoactor mailboxes) on one
// goroutine with virtual time, drives a seeded workload and seeded faults
// through them, and checks the invariants of DESIGN.md on every step.
//
// Determinism: every mailbox run, journal completion, publisher
// confirmation, timer and producer request is a task in one run queue; the
// loop runs one task at a time, picked by the seeded RNG among all runnable
// tasks (so each seed explores its own interleaving), and advances the
// virtual clock only when nothing is runnable, straight to the next timer
// deadline. The same seed gives the same trace, byte for byte; the trace
// hash proves it.
//
// The gateway is not simulated: producer requests enter through
// actors.Scheduler's Schedule, Cancel and Get with reply callbacks.
package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// Config describes one simulation run.
type Config struct {
	Seed     uint64
	Messages int           // schedule requests
	Span     time.Duration // deliver times fall within [start, start+Span); also the max delay
	// Faults on enables every simulator failpoint the user has not set
	// (FaultRates, GO_FAILPOINTS, failpoint.Enable) at its default rate;
	// off leaves only the ones the user set. See FailpointPrefix.
	Faults bool
	// FaultRates sets fault probabilities by failpoint name (the names of
	// Failpoints without FailpointPrefix: "appendFail": 0.05, "crash":
	// 0.5, ...). A rate here beats one set through GO_FAILPOINTS, which
	// beats the default. Run's Report.Config holds every rate the run used.
	FaultRates map[string]float64
	// Workload mixes: uniform, burst, long, past (kinds of deliver time),
	// cancel, get, retention (follow-up requests). Empty means all.
	Workload []string

	// The scheduler's settings. Zero means the default given, or, with
	// Swarm, a value drawn from the seed.
	SlotWidth time.Duration // default 1 minute
	Horizon   time.Duration // default 10 s; NoHorizon for none
	Retention time.Duration // default 72 h
	// Flow limits of every slot (actors.Config); default the slot
	// package's, DefaultMaxInFlight and DefaultMaxPerStep.
	MaxInFlight, MaxPerStep int
	// SlotMemory is every slot's body budget (actors.Config.MaxBodyBytes):
	// bodies a load cannot keep are read back before they fire (refills).
	// Zero: no bound, or drawn with Swarm; negative: no bound.
	SlotMemory int
	// Bursts is the number of instants the burst workload's messages are
	// due at (so its burst size is their number over Bursts); default one
	// per 2,000 messages, at least one.
	Bursts int
	// Swarm draws from the seed every setting above left zero, the
	// workload mix if it is empty and, with Faults, the rate of every fault
	// not set otherwise (FaultRates, failpoints): see swarm.go. Report.Config
	// holds the drawn values.
	Swarm bool

	// Test hooks, to plant bugs without touching production code: they wrap
	// what the actors see.
	WrapJournal   func(journal.Journal) journal.Journal
	WrapPublisher func(actors.Publisher) actors.Publisher

	watch int        // op whose history is recorded (a rerun after a violation); -1 none
	rates faultRates // resolved once, by Run
}

// NoHorizon is Config.Horizon for no horizon at all: slots are loaded
// when their time starts, not before (zero means the default).
const NoHorizon time.Duration = -1

// Workloads lists the workload names Config.Workload accepts.
var Workloads = []string{"uniform", "burst", "long", "past", "cancel", "get", "retention"}

// start is the virtual time every run begins at.
var start = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// Report summarises a run.
type Report struct {
	// Config is the run's configuration with every default and fault rate
	// filled in; Config.RerunCommand replays the run.
	Config      Config
	Seed        uint64
	Messages    int
	Acked       int            // schedules answered OK
	Unavailable int            // schedules answered unavailable
	NoReply     int            // schedules whose reply died in a crash
	Delivered   int            // distinct messages delivered
	Deliveries  int            // publishes that reached the target
	Duplicates  map[string]int // extra deliveries by cause
	DeadLetters int            // dead letters stored (the target refused the message for good)
	// Cancels by answer (ok, conflict, notfound, unavailable, none);
	// cancel-ok-after-fire counts OK cancels of messages whose delivery
	// had begun before (only after a fault).
	Cancels      map[string]int
	Gets         int
	PurgedSlots  int
	Lateness     []Bucket // first deliveries of acked messages, virtual time
	Faults       map[string]int
	Crashes      int
	PeakResident int64 // entries held by loaded slots
	PeakSlots    int   // slots with records in the journal
	PeakEvents   int   // events in the journal
	FiredAcked   int   // messages whose Fired event the journal acknowledged
	// Injected counts the records the corrupt-record fault injected, by
	// kind; InjectedRead those a read went past, each of which the journal
	// must have quarantined; Quarantined the records it refused.
	Injected     map[string]int
	InjectedRead int
	Quarantined  int64
	// ClockBehind is how far the last incarnation's clock was behind the
	// true time (the sum of the clock-back steps).
	ClockBehind time.Duration
	// Slot steps whose firing stopped at MaxPerStep or MaxInFlight while
	// messages were due (actors.Scheduler.Limited): the backlog paths ran.
	LimitedPerStep, LimitedInFlight int64
	// Refills of slots loaded over their body budget (SlotMemory).
	Refills int64

	Steps       int64 // tasks run
	VirtualEnd  time.Time
	TraceEvents uint64
	TraceHash   uint64
}

// Bucket is one lateness histogram bin: messages with lateness ≤ Max
// (and above the previous bin).
type Bucket struct {
	Max   time.Duration
	Count int
}

var lateBins = []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond,
	time.Second, 10 * time.Second, time.Minute, time.Hour, 24 * time.Hour, 1 << 62}

// Violation is an invariant that failed.
type Violation struct {
	Seed      uint64
	Rerun     string // the command that replays this run
	Invariant string
	Op        int // the message's workload index; -1 if none
	At        time.Time
	Detail    string
	History   []string
}

func (v *Violation) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: invariant %s violated at %s: %s", v.Seed, v.Invariant, v.At.Format(time.RFC3339Nano), v.Detail)
	if v.Op >= 0 {
		fmt.Fprintf(&b, "\nhistory of message %d:", v.Op)
		for _, h := range v.History {
			b.WriteString("\n  " + h)
		}
	}
	if v.Rerun != "" {
		b.WriteString("\nrerun: " + v.Rerun)
	}
	return b.String()
}

// RerunCommand is the tock sim command line that replays cfg (defaults
// filled in as Run fills them). Of the fault rates it names those that
// differ from what --faults gives: those of Config.FaultRates, and, once
// Run resolved the config (Report.Config, Violation.Rerun), also those set
// through GO_FAILPOINTS, so the line replays the run without the
// environment.
func (c Config) RerunCommand() string {
	if err := c.resolve(); err != nil {
		return fmt.Sprintf("(no rerun command: %v)", err)
	}
	faults := "off"
	if c.Faults {
		faults = "on"
	}
	swarm := "off"
	if c.Swarm {
		swarm = "on"
	}
	cmd := fmt.Sprintf("go run ./cmd/tock sim --seed %d --messages %d --span %s --faults %s --swarm %s --workload %s "+
		"--slot-width %s --horizon %s --retention %s --max-in-flight %d --max-per-step %d --bursts %d --slot-memory %d",
		c.Seed, c.Messages, c.Span, faults, swarm, strings.Join(c.Workload, ","),
		c.SlotWidth, max(c.Horizon, 0), c.Retention, c.MaxInFlight, c.MaxPerStep, c.Bursts, max(c.SlotMemory, 0))
	if r := c.nonDefaultRates(); len(r) > 0 {
		cmd += " --fault-rates " + FormatFaultRates(r)
	}
	return cmd
}

// nonDefaultRates are the rates of c.FaultRates that differ from what
// c.Faults alone would give.
func (c Config) nonDefaultRates() map[string]float64 {
	m := map[string]float64{}
	for name, p := range c.FaultRates {
		k := faultByPoint(name)
		def := 0
		if c.Faults {
			def = defaultRates[k]
		}
		if k != faultNone && int(math.Round(p*perMillion)) != def {
			m[name] = p
		}
	}
	return m
}

// resolve fills in defaults and the fault rates; Run's config is resolved
// once, and everything after sees the same values.
//
// Resolving a resolved config changes nothing: every setting is then set,
// and FaultRates names every rate.
func (c *Config) resolve() error {
	var d swarmDraw
	if c.Swarm {
		d = drawSwarm(c.Seed, c.Messages)
		c.swarm(d)
	}
	if err := c.normalise(); err != nil {
		return err
	}
	rates, err := resolveRates(c.FaultRates, func(k fault) int {
		switch {
		case !c.Faults:
			return 0
		case c.Swarm:
			return d.rates[k]
		}
		return defaultRates[k]
	})
	if err != nil {
		return err
	}
	c.rates, c.FaultRates = rates, rates.byName()
	return nil
}

func (c *Config) normalise() error {
	if c.SlotWidth == 0 {
		c.SlotWidth = time.Minute
	}
	if c.Horizon == 0 {
		c.Horizon = 10 * time.Second
	}
	if c.Retention == 0 {
		c.Retention = 72 * time.Hour
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = slot.DefaultMaxInFlight
	}
	if c.MaxPerStep == 0 {
		c.MaxPerStep = slot.DefaultMaxPerStep
	}
	if c.Bursts == 0 {
		c.Bursts = max(1, c.Messages/2000)
	}
	if c.SlotMemory == 0 {
		c.SlotMemory = -1
	}
	if c.MaxInFlight < 0 || c.MaxPerStep < 0 || c.Bursts < 0 {
		return fmt.Errorf("sim: negative flow limit or burst count")
	}
	if c.Span < time.Second {
		return fmt.Errorf("sim: span %v is below 1s", c.Span)
	}
	if c.Messages < 0 {
		return fmt.Errorf("sim: negative message count")
	}
	if len(c.Workload) == 0 {
		c.Workload = Workloads
	}
	for _, w := range c.Workload {
		if !slices.Contains(Workloads, w) {
			return fmt.Errorf("sim: unknown workload %q (have %s)", w, strings.Join(Workloads, ","))
		}
	}
	return nil
}

// Run simulates cfg. A violated invariant returns the report so far and a
// *Violation, with the history of the message concerned (found by running
// the seed again, which determinism makes exact).
func Run(cfg Config) (Report, error) {
	cfg.watch = -1
	if err := cfg.resolve(); err != nil {
		return Report{}, err
	}
	rep, err := run(cfg)
	rep.Config = cfg // the caller's Faults: run adjusts its copy
	if v, ok := err.(*Violation); ok {
		v.Rerun = cfg.RerunCommand()
	}
	if v, ok := err.(*Violation); ok && v.Op >= 0 {
		again := cfg
		again.watch = v.Op
		if _, err2 := run(again); err2 != nil {
			if v2, ok := err2.(*Violation); ok && v2.Invariant == v.Invariant && v2.Op == v.Op {
				v.History = v2.History
			} else {
				v.History = []string{fmt.Sprintf("(rerun did not reproduce: %v)", err2)}
			}
		} else {
			v.History = []string{"(rerun did not reproduce: nondeterminism)"}
		}
	}
	return rep, err
}

// simulator is one run's state. Everything happens on the goroutine that
// called run.
type simulator struct {
	cfg    Config
	clk    *simClock
	queue  runQueue
	rng    *rand.Rand // task picks
	frng   *rand.Rand // fault plan and its details
	wrng   *rand.Rand // workload follow-ups
	idrng  *rand.Rand // the random parts of ids, for every incarnation
	faults faultPlan
	trace  tracer
	j      *simJournal
	pub    *publisher
	cur    *incarnation
	sched  *actors.Scheduler
	incs   int

	rejected map[msgid.ID]bool
	// downUntil: each target refuses every attempt before this time, ms
	// (faultTargetDown).
	downUntil map[string]int64
	// targetFaultsOnly: every enabled fault is a target's (rejecting a
	// message, being down), so the isolated invariant applies.
	targetFaultsOnly bool
	ops              []op
	ids              map[msgid.ID]int32 // every id answered, → its op
	wl               map[string]bool
	faultEnd         int64
	end              time.Time     // the run ends when nothing is runnable and no timer is due by then
	lag              time.Duration // how far the machine's clock is behind the true time (clock-back)
	backUntil        int64         // true time (ms) the clock will have caught up with the stamps of a clock-back
	slack            time.Duration
	violation        *Violation
	rep              Report
	history          []string
}

func run(cfg Config) (Report, error) {
	if err := cfg.normalise(); err != nil {
		return Report{}, err
	}
	// From here on Faults means "some failpoint is enabled": it relaxes the
	// checks that hold only without faults and plans crashes and pauses.
	cfg.Faults = cfg.rates.any()
	s := &simulator{
		cfg:  cfg,
		clk:  newSimClock(start),
		rng:  rand.New(rand.NewPCG(cfg.Seed, 1)),
		frng: rand.New(rand.NewPCG(cfg.Seed, 2)),
		wrng: rand.New(rand.NewPCG(cfg.Seed, 3)),
		// A stream of its own (swarm.go has 5), so ids change no other draw.
		idrng: rand.New(rand.NewPCG(cfg.Seed, 6)),
		wl:    map[string]bool{},
		ids:   map[msgid.ID]int32{},
		// Which messages their target refuses for good (faultPublishReject).
		rejected:  map[msgid.ID]bool{},
		downUntil: map[string]int64{},
	}
	s.targetFaultsOnly = cfg.Faults
	for k, r := range cfg.rates {
		if r > 0 && fault(k) != faultPublishReject && fault(k) != faultTargetDown {
			s.targetFaultsOnly = false
		}
	}
	for _, w := range cfg.Workload {
		s.wl[w] = true
	}
	s.faults = faultPlan{s: s, rng: s.frng, rates: cfg.rates}
	s.trace.init()
	s.j = newSimJournal(s)
	s.pub = &publisher{s: s}
	s.rep = Report{Seed: cfg.Seed, Messages: cfg.Messages, Duplicates: map[string]int{}, Cancels: map[string]int{}, Faults: map[string]int{}, Injected: map[string]int{}}
	s.faultEnd = start.Add(cfg.Span).UnixMilli()
	s.faults.active = cfg.Faults

	maxDeliver := s.plan(rand.New(rand.NewPCG(cfg.Seed, 4)))
	if err := s.startIncarnation(); err != nil {
		return s.rep, err
	}
	s.slack = cfg.Retention + 2*cfg.SlotWidth + max(cfg.Horizon, 0) + 10*time.Minute
	s.end = time.UnixMilli(max(maxDeliver, s.faultEnd)).Add(s.slack)
	s.loop()
	if s.violation == nil {
		s.finalChecks()
	}
	s.summarise()
	if s.violation != nil {
		return s.rep, s.violation
	}
	return s.rep, nil
}

// startIncarnation starts the real scheduler on the shared journal.
func (s *simulator) startIncarnation() error {
	s.incs++
	inc := &incarnation{n: s.incs, lag: s.lag, stampFloor: s.j.maxStamp}
	s.cur = inc
	var j journal.Journal = s.j
	if s.cfg.WrapJournal != nil {
		j = s.cfg.WrapJournal(j)
	}
	j = ackWatch{Journal: j, j: s.j}
	var p actors.Publisher = s.pub
	if s.cfg.WrapPublisher != nil {
		p = s.cfg.WrapPublisher(p)
	}
	sched, err := actors.Start(context.Background(), actors.Config{
		SlotWidth: s.cfg.SlotWidth, Horizon: max(s.cfg.Horizon, 0), Retention: s.cfg.Retention,
		// A clock behind takes deliver times for further ahead than they are.
		MaxDelay: s.cfg.Span + time.Hour + s.lag, MaxInFlight: s.cfg.MaxInFlight, MaxPerStep: s.cfg.MaxPerStep,
		MaxBodyBytes: max(s.cfg.SlotMemory, 0),
	}, actors.Deps{
		Journal: j, Publisher: p, Clock: &incClock{s: s, inc: inc},
		Dispatcher: &dispatcher{s: s, inc: inc},
		Supervisor: actor.NewRestartingStrategy(),
		Go:         func(f func()) { s.queue.push(task{inc: inc, fn: f}) },
		Random:     s.idrng,
	})
	if err != nil {
		return fmt.Errorf("sim: start incarnation %d: %w", inc.n, err)
	}
	s.sched = sched
	return nil
}

// crash kills the current incarnation at once: its queued tasks, timers,
// pending journal completions and publisher confirmations die with it; its
// appends not yet written are stored or lost (a seeded prefix). A new
// incarnation recovers from the journal.
func (s *simulator) crash() {
	if !s.faults.fire(faultCrash) {
		return
	}
	s.faults.note(faultCrash)
	s.restart(0)
}

// clockBack is a crash after which the process restarts with its clock
// behind the newest stamp stored, by behind: the new incarnation's clock
// reads earlier than ids already handed out, and only the journal
// (Newest) keeps its ids above theirs. A second crash follows before the
// clock has caught up, so the next incarnation must also count the ids the
// first stamped ahead of its clock.
func (s *simulator) clockBack(behind, again time.Duration) {
	if !s.faults.fire(faultClockBack) {
		return
	}
	s.faults.note(faultClockBack)
	clock := s.nowMs() - s.lag.Milliseconds()
	newest := clock // with no id stored yet, behind the clock
	if s.j.maxStamp != 0 {
		newest = int64(s.j.maxStamp >> 20) // the millisecond of the newest stamp
	}
	s.restart(max(0, time.Duration(clock-newest)*time.Millisecond) + behind)
	// Until the clock has caught up with the newest stamp, no pause.
	s.backUntil = max(s.backUntil, s.nowMs()+behind.Milliseconds())
	s.at(nil, again, func() {
		s.faults.note(faultCrash)
		s.restart(0)
	})
}

// restart kills the current incarnation and starts the next one, its
// clock back further behind the true time.
func (s *simulator) restart(back time.Duration) {
	old := s.cur
	old.dead = true
	s.clk.drop(old)
	s.countLimited()
	s.sched = nil
	s.rep.Crashes++
	stored, lost := s.j.crash(old)
	for range stored {
		s.faults.note(faultCrashWriteStored)
	}
	for range lost {
		s.faults.note(faultCrashWriteLost)
	}
	if back > 0 {
		// Everything due from now on happens back later in true time.
		s.lag += back
		s.end = s.end.Add(back)
	}
	s.extend(s.nowMs())
	s.hist(-1, "crash of incarnation %d (%d unwritten appends stored, %d lost)", old.n, stored, lost)
	if back > 0 {
		s.hist(-1, "the clock steps back %v: incarnation %d starts %v behind the true time", back, s.incs+1, s.lag)
	}
	if err := s.startIncarnation(); err != nil {
		s.fail("recovery", -1, "%s", err.Error())
	}
}

// at runs fn as a task of inc after d of virtual time.
func (s *simulator) at(inc *incarnation, d time.Duration, fn func()) {
	if d <= 0 {
		s.queue.push(task{inc: inc, fn: fn})
		return
	}
	s.clk.afterFunc(inc, d, func() {
		if inc == nil || !inc.dead {
			s.queue.push(task{inc: inc, fn: fn})
		}
	})
}

func (s *simulator) nowMs() int64 { return s.clk.NowMs() }

// extend makes sure the run lasts until retention ran out after ms (a
// time of the current incarnation's clock, or the true time: the later).
func (s *simulator) extend(ms int64) {
	if e := time.UnixMilli(ms).Add(s.lag + s.slack); e.After(s.end) {
		s.end = e
	}
}

// loop runs tasks until none is runnable and no timer is due by s.end.
func (s *simulator) loop() {
	pick := func(n int) int { return s.rng.IntN(n) }
	for s.violation == nil {
		if s.queue.len() > 0 {
			t := s.queue.take(pick)
			if t.inc != nil && t.inc.dead {
				continue
			}
			t.fn()
			s.rep.Steps++
			s.observeResident()
			continue
		}
		at, ok := s.clk.NextDeadline()
		if !ok || at.After(s.end) {
			break
		}
		s.clk.Set(at)
		s.faults.active = s.cfg.Faults && s.nowMs() < s.faultEnd
	}
	s.rep.VirtualEnd = s.clk.Now()
}

func (s *simulator) observeResident() {
	if s.sched != nil {
		s.rep.PeakResident = max(s.rep.PeakResident, s.sched.Resident())
	}
}

// countLimited adds the current incarnation's flow-limit counts to the
// report; called once per incarnation, when it ends.
func (s *simulator) countLimited() {
	perStep, inFlight := s.sched.Limited()
	s.rep.LimitedPerStep += perStep
	s.rep.LimitedInFlight += inFlight
	s.rep.Refills += s.sched.Refills()
}

func (s *simulator) observeStorage() {
	s.rep.PeakSlots = max(s.rep.PeakSlots, len(s.j.events))
	s.rep.PeakEvents = max(s.rep.PeakEvents, s.j.nEvents)
}

func (s *simulator) observePurge(slot int64) {
	s.rep.PurgedSlots++
	s.trace.event(evPurge, s.nowMs(), msgid.ID{}, uint64(slot))
}

// fail records the first violation.
func (s *simulator) fail(invariant string, op int, format string, args ...any) {
	if s.violation != nil {
		return
	}
	s.violation = &Violation{Seed: s.cfg.Seed, Invariant: invariant, Op: op, At: s.clk.Now(),
		Detail: fmt.Sprintf(format, args...), History: s.history}
}

// hist adds a line to the watched message's history (op -1: every
// message's, as crashes are).
func (s *simulator) hist(op int, format string, args ...any) {
	if s.cfg.watch < 0 || (op >= 0 && op != s.cfg.watch) {
		return
	}
	s.history = append(s.history, s.clk.Now().Format("2006-01-02T15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

func (s *simulator) summarise() {
	if s.sched != nil {
		s.countLimited()
	}
	s.rep.Lateness = make([]Bucket, len(lateBins))
	for i, b := range lateBins {
		s.rep.Lateness[i].Max = b
	}
	for i := range s.ops {
		o := &s.ops[i]
		switch o.status {
		case statusOK:
			s.rep.Acked++
		case statusUnavailable:
			s.rep.Unavailable++
		default:
			s.rep.NoReply++
		}
		if o.deliveries > 0 {
			s.rep.Delivered++
			if o.status == statusOK {
				late := time.Duration(o.firstAt-o.deliverAt) * time.Millisecond
				for j, b := range lateBins {
					if late <= b {
						s.rep.Lateness[j].Count++
						break
					}
				}
			}
		}
	}
	for k := fault(1); k < nFaults; k++ {
		if n := s.faults.counts[k]; n > 0 {
			s.rep.Faults[k.String()] = n
		}
	}
	s.rep.FiredAcked = len(s.j.firedAcked)
	for _, in := range s.j.injected {
		s.rep.Injected[in.kind.String()]++
	}
	s.rep.InjectedRead, s.rep.Quarantined = s.j.injRead, s.j.mem.Quarantined().Count
	s.rep.ClockBehind = s.lag
	s.rep.TraceEvents, s.rep.TraceHash = s.trace.n, s.trace.sum()
}

// guard runs a simulator callback that is called from actor code: a panic
// there would be caught by protoactor's supervision and disguised as an
// actor failure, so it is reported as what it is.
func (s *simulator) guard(f func()) {
	defer func() {
		if r := recover(); r != nil {
			s.fail("sim-internal", -1, "panic in the simulator: %v\n%s", r, debug.Stack())
		}
	}()
	f()
}
