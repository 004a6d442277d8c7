package memory

import (
	"context"
	"errors"

	"github.com/footfall/footfall/streams"
)

// ---------------------------------------------------------------------------
// Subscriptions and delivery

// Subscribe delivers the events of community published after it returns
// to h, until cancel is called. ctx bounds only the call itself.
//
// Cancel is idempotent; once it returns h is not called again. Because it
// waits for a running call of h, h itself must not call cancel.
func (b *Bus) Subscribe(ctx context.Context, community string, h streams.Handler) (func(), error) {
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	if community == "" {
		return nil, errors.New("memory: subscribe: empty community")
	}
	if h == nil {
		return nil, errors.New("memory: subscribe: nil handler")
	}
	c := b.lookupOrCreate(community)
	// Under c.mu no event of c is queued: the subscription receives
	// exactly the events numbered after the community's seq now.
	c.mu.Lock()
	defer c.mu.Unlock()
	after := c.seq
	return c.subs.Add(func(e *streams.Event) {
		if e.Seq > after {
			h(e)
		}
	}), nil
}

// item is one unit of work of the delivery goroutine: an event of a
// community, or (c == nil) the revocation of a session.
type item struct {
	c       *community
	e       *streams.Event
	revoked string
}

// deliver is the delivery goroutine. It exits when Close closes b.stop.
func (b *Bus) deliver() {
	b.queue.Run(b.stop, func(it item) {
		if it.c != nil {
			it.c.subs.Call(it.e)
			return
		}
		b.revokers.Call(it.revoked)
	})
}
