package clock

import (
	"container/heap"
	"fmt"
	"sync"
	"time"
)

// Manual is a deterministic clock for tests: time stands still until
// Advance or Set moves it. Safe for concurrent use.
//
// Advance and Set run every timer that has come due, synchronously, in
// deadline order (ties in creation order), each outside the clock's lock
// and with Now reading that timer's deadline while it runs. A function may
// arm new timers; those due by the new time run in the same call, so a
// timer re-armed from its own function runs once per period passed. Calls
// of Advance and Set run one at a time; a timer's function must not call
// them itself.
//
// A timer armed with d ≤ 0 is due at once: during Advance or Set it runs in
// that call; otherwise it starts at once in its own goroutine, as
// time.AfterFunc would, since no later call would otherwise run it.
type Manual struct {
	step sync.Mutex // serialises Advance and Set

	mu        sync.Mutex
	now       time.Time
	timers    manualHeap
	created   uint64 // timers armed so far: the tie-break
	advancing bool   // an Advance or Set is running timers
}

var _ Clock = (*Manual)(nil)

// NewManual returns a Manual clock reading start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start}
}

// Now returns the clock's current time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc arms a timer that calls f once the clock reached Now()+d.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.created++
	t := &manualTimer{m: m, at: m.now.Add(d), order: m.created, f: f, index: -1}
	if d <= 0 && !m.advancing {
		go f()
		return t
	}
	heap.Push(&m.timers, t)
	return t
}

// Advance moves the clock forward by d, running the timers that come due.
func (m *Manual) Advance(d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("clock: Manual.Advance(%v): time cannot go back", d))
	}
	m.step.Lock()
	defer m.step.Unlock()
	m.mu.Lock()
	to := m.now.Add(d)
	m.mu.Unlock()
	m.runUntil(to)
}

// Set moves the clock forward to t, running the timers that come due. t
// before Now panics: time cannot go back.
func (m *Manual) Set(t time.Time) {
	m.step.Lock()
	defer m.step.Unlock()
	if now := m.Now(); t.Before(now) {
		panic(fmt.Sprintf("clock: Manual.Set(%v) before Now %v: time cannot go back", t, now))
	}
	m.runUntil(t)
}

func (m *Manual) runUntil(to time.Time) {
	m.mu.Lock()
	m.advancing = true
	defer func() {
		m.advancing = false
		m.mu.Unlock()
	}()
	for len(m.timers) > 0 && !m.timers[0].at.After(to) {
		t := heap.Pop(&m.timers).(*manualTimer)
		if t.at.After(m.now) {
			m.now = t.at
		}
		m.mu.Unlock()
		func() {
			defer m.mu.Lock() // also when f panics, for the deferred unlock above
			t.f()
		}()
	}
	m.now = to
}

// Pending is the number of armed timers that have neither run nor been stopped.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.timers)
}

// NextDeadline is the earliest deadline of the armed timers; false if none.
func (m *Manual) NextDeadline() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.timers) == 0 {
		return time.Time{}, false
	}
	return m.timers[0].at, true
}

type manualTimer struct {
	m     *Manual
	at    time.Time
	order uint64
	f     func()
	index int // position in m.timers; -1 once run, stopped or started at once
}

// Stop prevents the call if it has not started; it reports whether it did.
func (t *manualTimer) Stop() bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if t.index < 0 {
		return false
	}
	heap.Remove(&t.m.timers, t.index)
	return true
}

// manualHeap orders timers by deadline, then creation.
type manualHeap []*manualTimer

func (h manualHeap) Len() int { return len(h) }
func (h manualHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].order < h[j].order
}
func (h manualHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *manualHeap) Push(x any) {
	t := x.(*manualTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *manualHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}
