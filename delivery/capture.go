package delivery

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/actors/slot"

	"github.com/tockd/tock/subject"
)

// captureSet is what the publisher knows of the account's streams: the
// subjects each one captures, listed in the background (refreshCaptures)
// so that deciding how to publish a delivery is a match in memory, never
// a JetStream request on the firing path. Per-target lookups cost one
// request per distinct target (a target per order id meant one per
// delivery) and stalled every delivery while JetStream was slow.
type captureSet struct {
	subjects []string  // every stream's subject filters
	listed   time.Time // when they were listed; zero: never
	// started is when the listing was asked for: it holds every stream
	// created before then.
	started time.Time
}

// captures reports whether a stream captures target. Unknown (never
// listed, or the listing is older than stale) counts as captured: the
// publish then waits for an ack and is retried, rather than risk a drop.
func (c *captureSet) captures(target string, now time.Time, stale time.Duration) bool {
	if c == nil || c.listed.IsZero() || now.Sub(c.listed) > stale {
		return true
	}
	for _, s := range c.subjects {
		if subject.Match(s, target) {
			return true
		}
	}
	return false
}

// listCaptures lists every stream's subjects.
func listCaptures(ctx context.Context, js jetstream.JetStream) ([]string, error) {
	l := js.ListStreams(ctx)
	var subjects []string
	for info := range l.Info() {
		subjects = append(subjects, info.Config.Subjects...)
	}
	if err := l.Err(); err != nil {
		return nil, err
	}
	return subjects, nil
}

// streamAdvisories are the JetStream advisories after which the listing
// is forgotten and redone at once (onStreamChange). Until the new listing
// lands every target counts as captured, so a stream created just before
// a delivery to it is waited for even when the delivery comes first: the
// server sends the advisory as it creates the stream, before the client
// that created it can schedule anything. Polling alone left up to
// StreamRefresh in which a full or refusing new stream got core
// publishes, which are not confirmed, so a refused message counted as
// delivered.
var streamAdvisories = []string{
	"$JS.EVENT.ADVISORY.STREAM.CREATED.*",
	"$JS.EVENT.ADVISORY.STREAM.UPDATED.*",
	"$JS.EVENT.ADVISORY.STREAM.DELETED.*",
}

// refreshCaptures keeps p.captures current: every StreamRefresh, at once
// after a stream advisory, and when a publish shows the set is wrong
// (p.relist).
func (p *Publisher) refreshCaptures() {
	defer p.wg.Done()
	t := time.NewTicker(p.cfg.StreamRefresh)
	defer t.Stop()
	for {
		p.listCaptures()
		select {
		case <-t.C:
		case <-p.relist:
		case <-p.quit:
			return
		}
	}
}

func (p *Publisher) listCaptures() {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.AckTimeout)
	defer cancel()
	changes, started := p.changes.Load(), p.clk.Now()
	subjects, err := listCaptures(ctx, p.js)
	if err != nil {
		// Keep the last listing: it goes stale by itself (captures).
		// Warn once per spell: a missing permission fails every time.
		if !p.listFailing {
			p.log.Warn("cannot list JetStream streams; deliveries wait for PubAcks until a listing succeeds", "err", err)
		}
		p.listFailing = true
		// Deliveries waiting for a listing look again later: once the
		// last listing is stale they go the PubAck way.
		p.clk.AfterFunc(p.cfg.StreamRefresh, p.resumeListed)
		return
	}
	if p.listFailing {
		p.log.Info("listing JetStream streams works again")
	}
	p.listFailing = false
	p.capMu.Lock()
	defer p.capMu.Unlock()
	if p.changes.Load() != changes {
		return // a stream changed while listing: the relist it asked for decides
	}
	p.captures.Store(&captureSet{subjects: subjects, listed: p.clk.Now(), started: started})
	go p.resumeListed()
}

// coreSure reports whether a delivery of d may go out as a core publish
// now that the listing says no stream captures its target: only if that
// listing was asked for after d was accepted. The producer scheduled d
// after every stream it had created was there, so such a listing holds
// them; an older one may predate a stream created just before the
// schedule (a stream advisory usually says so first, but it can come
// after the delivery).
func (p *Publisher) coreSure(d slot.Delivery) bool {
	c := p.captures.Load()
	return c != nil && c.started.UnixMilli() > d.ID.AcceptedAt()
}

// awaitListing holds j until the next listing, and asks for it.
func (p *Publisher) awaitListing(j *job) {
	p.mu.Lock()
	p.unlisted = append(p.unlisted, j)
	p.mu.Unlock()
	p.relistSoon()
}

// resumeListed hands the deliveries that waited for a listing back to the
// run loop.
func (p *Publisher) resumeListed() {
	p.mu.Lock()
	waiting := p.unlisted
	p.unlisted = nil
	p.mu.Unlock()
	for _, j := range waiting {
		p.enqueue(j)
	}
}

// onStreamChange forgets the listing (every target counts as captured
// until the next one) and asks for a new one.
func (p *Publisher) onStreamChange() {
	p.capMu.Lock()
	p.changes.Add(1)
	p.captures.Store(nil)
	p.capMu.Unlock()
	p.relistSoon()
}

// relistSoon asks refreshCaptures for a new listing.
func (p *Publisher) relistSoon() {
	select {
	case p.relist <- struct{}{}:
	default:
	}
}
