package actors

import "github.com/tockd/tock/journal"

// ScheduleRequest is a validated schedule command from a door (gateway).
// Header holds only what travels to the target: control headers are gone.
type ScheduleRequest struct {
	Target    string
	DeliverAt int64 // Unix ms; a time in the past means "at once"
	Header    journal.Header
	Body      []byte
}
