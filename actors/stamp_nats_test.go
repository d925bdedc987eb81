package actors

import (
	"context"
	"testing"
	"time"

	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/journal/natsjournal"
	"github.com/tockd/tock/msgid"
)

// TestStampsSurviveClockStepBackOnNATS runs the scheduler on the real NATS
// journal while its clock is an hour ahead of the server's, then restarts
// it twice with the clock set right (stepped back an hour). Every id
// issued must carry a larger stamp than all before it: equal deliver times
// and stamps would be the same id. The server's time of the last write
// (an hour behind the stamps) cannot give that; the journal's Newest must
// bound the stored At itself, across both restarts.
func TestStampsSurviveClockStepBackOnNATS(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t, t.TempDir()))
	wall := time.Now().Truncate(time.Second)
	// The first run's clock is an hour ahead (wrong); then it is set right.
	clocks := []time.Time{wall.Add(time.Hour), wall, wall}
	due := wall.Add(3 * time.Hour)
	cfg := Config{SlotWidth: time.Second, Horizon: time.Second, Retention: time.Hour, MaxDelay: 48 * time.Hour}

	var last msgid.ID
	for run, at := range clocks {
		man := clock.NewManual(at)
		j, err := natsjournal.New(context.Background(), nc, natsjournal.Config{
			Stream: "STAMPS", Prefix: "stamps", SlotWidth: cfg.SlotWidth, Now: man.Now,
		})
		if err != nil {
			t.Fatal(err)
		}
		s, err := Start(context.Background(), cfg, Deps{Journal: j, Publisher: &testPublisher{clk: man}, Clock: man})
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			ch := make(chan slot.Result, 1)
			s.Schedule(ScheduleRequest{Target: "t", DeliverAt: due.UnixMilli()}, func(r slot.Result) { ch <- r })
			var r slot.Result
			select {
			case r = <-ch:
			case <-time.After(waitFor):
				t.Fatal("no schedule reply")
			}
			if r.Status != slot.OK {
				t.Fatalf("run %d: schedule status %v", run, r.Status)
			}
			if id := r.Record.ID; id.Stamp() <= last.Stamp() {
				t.Fatalf("run %d: id %s has stamp %d, not above the previous %d (%s)", run, id, id.Stamp(), last.Stamp(), last)
			}
			last = r.Record.ID
		}
		if err := s.Stop(waitFor); err != nil {
			t.Fatal(err)
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
