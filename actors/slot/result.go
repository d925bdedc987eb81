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
)

// Record is what tock tells about one message.
type Record struct {
	ID        msgid.ID
	Target    string
	DeliverAt int64 // Unix ms
	State     State
	DoneAt    int64 // Unix ms of delivery or cancel; 0 while pending
}

// Result answers a Schedule, Cancel or Get.
type Result struct {
	Status Status
	Record Record
}
