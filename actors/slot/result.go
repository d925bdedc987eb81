package slot

import (
	"github.com/tockd/tock/msgid"
)

// State is where a message is in its life.
type State uint8

const (
	Pending    State = iota + 1 // waiting for its deliver time
	Delivering                  // handed to the publisher, not yet confirmed
	Delivered                   // confirmed published (PubAck'd for stream targets)
	Cancelled                   // cancelled before delivery began
	Dead                        // dead-lettered: stored in the dead-letter stream, not its target; Record.Reason says why
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Delivering:
		return "delivering"
	case Delivered:
		return "delivered"
	case Cancelled:
		return "cancelled"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// Status is the outcome of a command.
type Status uint8

const (
	OK          Status = iota + 1
	NotFound           // no message with that id (never existed, or purged after retention)
	Conflict           // cancel of a message no longer pending; Record says its state
	Unavailable        // the journal could not store the event; nothing is promised
	Busy               // too many slots loaded for lookups to load another now; retry
)

// Outcome is how the publisher settled a delivery: published, or (Dead)
// stored in the dead-letter stream instead, for Reason.
type Outcome struct {
	Dead   bool
	Reason string
}

// Record is what tock tells about one message.
type Record struct {
	ID        msgid.ID
	Target    string
	DeliverAt int64 // Unix ms
	State     State
	DoneAt    int64  // Unix ms of delivery, cancel or dead-lettering; 0 while pending
	Reason    string // why it was dead-lettered (State Dead)
}

// Result answers a Schedule, Cancel or Get.
type Result struct {
	Status Status
	Record Record
}
