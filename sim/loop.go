package sim

import (
	"fmt"
	"sync"
	"time"

	"github.com/tockd/tock/clock"
)

// task is one unit of work on the simulator's goroutine: an actor's
// mailbox run, a journal completion, a publisher confirmation, a producer
// request. inc is the incarnation it belongs to (nil: the simulator's own,
// which survives crashes); tasks of a crashed incarnation are dropped.
type task struct {
	inc *incarnation
	fn  func()
}

// incarnation is one run of the scheduler between start and crash.
type incarnation struct {
	n    int
	dead bool
	// lag is how far the incarnation's clock is behind the simulator's
	// (the true time): the sum of the backward steps before it started.
	lag time.Duration
	// stampFloor is the largest stamp of the ids stored before it started:
	// every id it stamps must be above it, or ids could repeat.
	stampFloor uint64
}

// runQueue holds the runnable tasks. Everything enqueues here, also from
// inside a running task; the loop takes one at a time, chosen by the
// seeded RNG among all runnable ones. The mutex only guards against an
// unexpected goroutine (protoactor starts none on the simulated path);
// the loop itself is single-threaded.
type runQueue struct {
	mu    sync.Mutex
	tasks []task
}

func (q *runQueue) push(t task) {
	q.mu.Lock()
	q.tasks = append(q.tasks, t)
	q.mu.Unlock()
}

func (q *runQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.tasks)
}

// take removes the task at position pick(n), n = current length > 0.
func (q *runQueue) take(pick func(n int) int) task {
	q.mu.Lock()
	defer q.mu.Unlock()
	i := pick(len(q.tasks))
	t := q.tasks[i]
	last := len(q.tasks) - 1
	q.tasks[i] = q.tasks[last]
	q.tasks[last] = task{}
	q.tasks = q.tasks[:last]
	return t
}

// dispatcher is the protoactor Dispatcher of one incarnation: Schedule
// only queues the mailbox run.
type dispatcher struct {
	s   *simulator
	inc *incarnation
}

func (d *dispatcher) Schedule(fn func()) { d.s.queue.push(task{inc: d.inc, fn: fn}) }
func (d *dispatcher) Throughput() int    { return 300 }

// incClock is the clock an incarnation sees: the simulator's time less the
// incarnation's lag, with timers that die with the incarnation. A timer due at once is queued as
// a task (clock.Manual would start a goroutine for it).
type incClock struct {
	s   *simulator
	inc *incarnation
}

func (c *incClock) Now() time.Time { return c.s.clk.Now().Add(-c.inc.lag) }

func (c *incClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	inc := c.inc
	if d <= 0 {
		t := &nowTimer{}
		c.s.queue.push(task{inc: inc, fn: func() {
			if t.claim() {
				f()
			}
		}})
		return t
	}
	return c.s.clk.afterFunc(inc, d, func() {
		if !inc.dead {
			f() // protoactor sends only: this queues the work
		}
	})
}

// nowTimer is a timer due at once, queued as a task.
type nowTimer struct {
	mu   sync.Mutex
	done bool
}

func (t *nowTimer) claim() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	return true
}

func (t *nowTimer) Stop() bool { return t.claim() }

// simClock is the simulator's virtual clock: clock.Manual's semantics
// (timers run in deadline order, ties in arming order, Now reading each
// timer's deadline while it runs), without its locks and time.Time
// comparisons, which dominated the loop with a million timers armed. One
// difference: a timer armed with d ≤ 0 outside Set is not started in a
// goroutine (a data race with the loop, and nondeterministic) but is due at
// once, so the loop runs it next time nothing is runnable.
//
// Only the simulator's goroutine touches it.
type simClock struct {
	base    time.Time // Now() = base + now ns
	now     int64     // ns since base
	timers  []*simTimer
	created uint64
}

type simTimer struct {
	c     *simClock
	inc   *incarnation // the incarnation it belongs to; nil: the simulator's
	at    int64        // ns since base
	order uint64
	f     func()
	index int // position in c.timers; -1 once run or stopped
}

func newSimClock(start time.Time) *simClock { return &simClock{base: start} }

func (c *simClock) Now() time.Time { return c.base.Add(time.Duration(c.now)) }

// NowMs is Now as Unix milliseconds (clock.Millis(Now())).
func (c *simClock) NowMs() int64 { return c.base.Add(time.Duration(c.now)).UnixMilli() }

func (c *simClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.afterFunc(nil, d, f)
}

// afterFunc is AfterFunc for a timer of inc, which drop removes.
func (c *simClock) afterFunc(inc *incarnation, d time.Duration, f func()) *simTimer {
	c.created++
	t := &simTimer{c: c, inc: inc, at: c.now + int64(max(d, 0)), order: c.created, f: f}
	c.push(t)
	return t
}

// drop removes the timers of a crashed incarnation. They would do nothing
// when due, but until then they hold on to the incarnation's actor system
// (protoactor's process registry alone is 32,768 maps), which the garbage
// collector would trace through every cycle for days of virtual time.
// Only the moments the loop stops at in between change, and nothing runs
// at them.
func (c *simClock) drop(inc *incarnation) {
	live := c.timers[:0]
	for _, t := range c.timers {
		if t.inc == inc {
			t.index = -1
			continue
		}
		t.index = len(live)
		live = append(live, t)
	}
	clear(c.timers[len(live):])
	c.timers = live
	for i := len(live)/2 - 1; i >= 0; i-- {
		c.down(i)
	}
}

// NextDeadline is the earliest deadline of the armed timers; false if none.
func (c *simClock) NextDeadline() (time.Time, bool) {
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	return c.base.Add(time.Duration(c.timers[0].at)), true
}

// Set moves the clock forward to t, running the timers due by then, in
// order, each with Now reading its deadline; timers they arm run too if
// due by t. t before Now panics.
func (c *simClock) Set(t time.Time) {
	to := int64(t.Sub(c.base))
	if to < c.now {
		panic(fmt.Sprintf("sim: clock set to %v before now %v: time cannot go back", t, c.Now()))
	}
	for len(c.timers) > 0 && c.timers[0].at <= to {
		tm := c.timers[0]
		c.remove(0)
		if tm.at > c.now {
			c.now = tm.at
		}
		tm.f()
	}
	c.now = to
}

func (t *simTimer) Stop() bool {
	if t.index < 0 {
		return false
	}
	t.c.remove(t.index)
	return true
}

func (a *simTimer) before(b *simTimer) bool {
	return a.at < b.at || (a.at == b.at && a.order < b.order)
}

func (c *simClock) push(t *simTimer) {
	t.index = len(c.timers)
	c.timers = append(c.timers, t)
	c.up(t.index)
}

// remove takes the timer at i out of the heap.
func (c *simClock) remove(i int) {
	h := c.timers
	n := len(h) - 1
	t := h[i]
	if i != n {
		h[i] = h[n]
		h[i].index = i
	}
	h[n] = nil
	c.timers = h[:n]
	if i != n {
		if !c.down(i) {
			c.up(i)
		}
	}
	t.index = -1
}

func (c *simClock) up(i int) {
	h := c.timers
	t := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if !t.before(h[p]) {
			break
		}
		h[i] = h[p]
		h[i].index = i
		i = p
	}
	h[i] = t
	t.index = i
}

// down sifts the timer at i down; it reports whether it moved.
func (c *simClock) down(i0 int) bool {
	h := c.timers
	n := len(h)
	i := i0
	t := h[i]
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].before(h[l]) {
			m = r
		}
		if !h[m].before(t) {
			break
		}
		h[i] = h[m]
		h[i].index = i
		i = m
	}
	h[i] = t
	t.index = i
	return i > i0
}
