package clock

import (
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var epoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func TestManualNowMoves(t *testing.T) {
	m := NewManual(epoch)
	if got := m.Now(); !got.Equal(epoch) {
		t.Fatalf("Now = %v, want %v", got, epoch)
	}
	m.Advance(1500 * time.Millisecond)
	if got, want := m.Now(), epoch.Add(1500*time.Millisecond); !got.Equal(want) {
		t.Fatalf("after Advance: Now = %v, want %v", got, want)
	}
	m.Set(epoch.Add(time.Hour))
	if got, want := m.Now(), epoch.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("after Set: Now = %v, want %v", got, want)
	}
	m.Set(epoch.Add(time.Hour)) // the same time is allowed
}

func TestManualBackwardsPanics(t *testing.T) {
	for name, f := range map[string]func(m *Manual){
		"Advance": func(m *Manual) { m.Advance(-time.Millisecond) },
		"Set":     func(m *Manual) { m.Set(epoch.Add(-time.Millisecond)) },
	} {
		t.Run(name, func(t *testing.T) {
			m := NewManual(epoch)
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
				// The clock still works after the panic.
				m.Advance(time.Second)
			}()
			f(m)
		})
	}
}

// TestManualOrder: due timers run in deadline order, ties in creation
// order, each seeing its own deadline as Now; later ones wait.
func TestManualOrder(t *testing.T) {
	m := NewManual(epoch)
	type run struct {
		Name string
		Now  time.Duration
	}
	var got []run
	arm := func(name string, d time.Duration) {
		m.AfterFunc(d, func() { got = append(got, run{name, m.Now().Sub(epoch)}) })
	}
	arm("c", 3*time.Second)
	arm("a1", time.Second)
	arm("late", 10*time.Second)
	arm("b", 2*time.Second)
	arm("a2", time.Second)
	if n := m.Pending(); n != 5 {
		t.Fatalf("Pending = %d, want 5", n)
	}
	if at, ok := m.NextDeadline(); !ok || !at.Equal(epoch.Add(time.Second)) {
		t.Fatalf("NextDeadline = %v, %v; want %v, true", at, ok, epoch.Add(time.Second))
	}

	m.Advance(999 * time.Millisecond)
	if len(got) != 0 {
		t.Fatalf("ran before the deadline: %v", got)
	}
	m.Advance(4*time.Second + time.Millisecond) // to 5 s
	want := []run{{"a1", time.Second}, {"a2", time.Second}, {"b", 2 * time.Second}, {"c", 3 * time.Second}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	if got, want := m.Now(), epoch.Add(5*time.Second); !got.Equal(want) {
		t.Errorf("Now = %v, want %v", got, want)
	}
	if n := m.Pending(); n != 1 {
		t.Errorf("Pending = %d, want 1", n)
	}
	if at, ok := m.NextDeadline(); !ok || !at.Equal(epoch.Add(10*time.Second)) {
		t.Errorf("NextDeadline = %v, %v; want %v, true", at, ok, epoch.Add(10*time.Second))
	}
	m.Set(epoch.Add(10 * time.Second))
	if len(got) != 5 || got[4] != (run{"late", 10 * time.Second}) {
		t.Errorf("runs after Set: %v", got)
	}
	if _, ok := m.NextDeadline(); ok || m.Pending() != 0 {
		t.Errorf("timers left: %d", m.Pending())
	}
}

func TestManualStop(t *testing.T) {
	m := NewManual(epoch)
	var ran []string
	a := m.AfterFunc(time.Second, func() { ran = append(ran, "a") })
	b := m.AfterFunc(2*time.Second, func() { ran = append(ran, "b") })
	c := m.AfterFunc(3*time.Second, func() { ran = append(ran, "c") })
	if !b.Stop() {
		t.Error("first Stop of a pending timer = false")
	}
	if b.Stop() {
		t.Error("second Stop = true")
	}
	if n := m.Pending(); n != 2 {
		t.Errorf("Pending = %d, want 2", n)
	}
	m.Advance(time.Second)
	if a.Stop() {
		t.Error("Stop after the timer ran = true")
	}
	// A timer stopped by an earlier timer's function in the same Advance
	// does not run.
	m.AfterFunc(time.Second, func() {
		ran = append(ran, "stopper")
		c.Stop()
	})
	m.Advance(5 * time.Second)
	if diff := cmp.Diff([]string{"a", "stopper"}, ran); diff != "" {
		t.Errorf("runs (-want +got):\n%s", diff)
	}
	if n := m.Pending(); n != 0 {
		t.Errorf("Pending = %d, want 0", n)
	}
}

// TestManualRearm: a function may arm timers; those due by the target time
// run in the same Advance, at their own deadlines.
func TestManualRearm(t *testing.T) {
	m := NewManual(epoch)
	var ticks []time.Duration
	var tick func()
	tick = func() {
		ticks = append(ticks, m.Now().Sub(epoch))
		m.AfterFunc(time.Second, tick)
	}
	m.AfterFunc(time.Second, tick)
	m.Advance(3500 * time.Millisecond)
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
	if diff := cmp.Diff(want, ticks); diff != "" {
		t.Errorf("ticks (-want +got):\n%s", diff)
	}
	if at, ok := m.NextDeadline(); !ok || !at.Equal(epoch.Add(4*time.Second)) {
		t.Errorf("NextDeadline = %v, %v; want 4 s", at, ok)
	}

	// A function arming a timer already due (d ≤ 0) runs it in the same call,
	// after the ones already due at that time.
	var order []string
	m.AfterFunc(500*time.Millisecond, func() {
		order = append(order, "first")
		m.AfterFunc(0, func() { order = append(order, "zero") })
		m.AfterFunc(-time.Second, func() { order = append(order, "negative") })
	})
	m.Advance(500 * time.Millisecond) // to 4 s: the periodic tick is due too
	want2 := []string{"first", "negative", "zero"}
	if diff := cmp.Diff(want2, order); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if len(ticks) != 4 {
		t.Errorf("periodic ticks = %v, want 4 of them", ticks)
	}
}

// TestManualDueAtOnce: outside Advance, a timer armed with d ≤ 0 runs at
// once on its own goroutine, as time.AfterFunc would.
func TestManualDueAtOnce(t *testing.T) {
	m := NewManual(epoch)
	done := make(chan struct{})
	tm := m.AfterFunc(0, func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a timer due at once did not run")
	}
	if tm.Stop() {
		t.Error("Stop of a started timer = true")
	}
	if n := m.Pending(); n != 0 {
		t.Errorf("Pending = %d, want 0", n)
	}
}

// TestManualConcurrent arms and stops timers from many goroutines while
// another advances the clock; run with -race. Every timer either runs
// exactly once or was stopped before it ran.
func TestManualConcurrent(t *testing.T) {
	m := NewManual(epoch)
	const workers, perWorker = 8, 200
	var mu sync.Mutex
	runs := make(map[int]int)
	stopped := make(map[int]bool)

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				id := w*perWorker + i
				tm := m.AfterFunc(time.Duration(i%7)*time.Millisecond, func() {
					// Re-arming from f while others arm concurrently; counted
					// as run only afterwards, so the wait below covers it.
					if id%5 == 0 {
						m.AfterFunc(time.Millisecond, func() {})
					}
					mu.Lock()
					runs[id]++
					mu.Unlock()
				})
				if i%3 == 0 && tm.Stop() {
					mu.Lock()
					stopped[id] = true
					mu.Unlock()
				}
				_ = m.Now()
			}
		}()
	}
	stop := make(chan struct{})
	advancer := make(chan struct{})
	go func() {
		defer close(advancer)
		for {
			select {
			case <-stop:
				return
			default:
				m.Advance(time.Millisecond)
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-advancer
	m.Advance(time.Hour) // everything armed is due now

	// Timers armed with d = 0 outside an Advance run on their own
	// goroutines; wait for them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(runs) + len(stopped)
		mu.Unlock()
		if n == workers*perWorker || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	m.Advance(time.Hour) // the timers re-armed by goroutine-run f's
	mu.Lock()
	defer mu.Unlock()
	for id := range workers * perWorker {
		switch {
		case stopped[id] && runs[id] != 0:
			t.Errorf("timer %d stopped yet ran %d times", id, runs[id])
		case !stopped[id] && runs[id] != 1:
			t.Errorf("timer %d ran %d times, want 1", id, runs[id])
		}
	}
	if n := m.Pending(); n != 0 {
		t.Errorf("Pending = %d, want 0", n)
	}
}
