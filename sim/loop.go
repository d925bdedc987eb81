package sim

import (
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

// incClock is the clock an incarnation sees: clock.Manual's time, with
// timers that die with the incarnation. A timer due at once is queued as
// a task (clock.Manual would start a goroutine for it).
type incClock struct {
	s   *simulator
	inc *incarnation
}

func (c *incClock) Now() time.Time { return c.s.clk.Now() }

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
	return c.s.clk.AfterFunc(d, func() {
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
