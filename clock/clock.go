// Package clock is the time source of everything that schedules: the slot
// actors, the router and the delivery retries read time and arm timers only
// through a Clock, so the simulator can substitute virtual time.
package clock

import "time"

// Clock tells the time and runs functions later.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it did.
	Stop() bool
}

// Real is the wall clock.
type Real struct{}

func (Real) Now() time.Time { return time.Now() }

func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Millis is t as Unix milliseconds, truncated: a deadline compared with
// Millis(now) is never reached early.
func Millis(t time.Time) int64 { return t.UnixMilli() }
